// tests/common/util.js - small helpers every Node test suite here shares: sleeping,
// log lines stamped with the seconds since start, JSON with sorted keys, command-line
// options, a free TCP port, reading a whole topic, and random edits.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);

// JSON with sorted keys: documents are compared as objects, not as key orders.
function canonical(x) {
  if (Array.isArray(x)) return `[${x.map(canonical).join(',')}]`;
  if (x && typeof x === 'object')
    return `{${Object.keys(x).sort().map((k) => `${JSON.stringify(k)}:${canonical(x[k])}`).join(',')}}`;
  return JSON.stringify(x);
}

// The value after name on the command line, or def.
function option(name, def) {
  const args = process.argv.slice(2);
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}

// A port nobody listens on now (the OS's choice), for a child process to take.
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Every record of a topic (kafka: a kafkajs client), partition by partition in
// offset order.
async function readAll(kafka, topic) {
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const remaining = new Map(ends.filter((e) => Number(e.high) > 0).map((e) => [e.partition, Number(e.high)]));
  const records = [];
  if (remaining.size === 0) return records;
  const consumer = kafka.consumer({ groupId: `read-${topic}-${process.pid}-${Date.now()}`, maxWaitTimeInMs: 50 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        records.push({ partition, offset: Number(message.offset), key: message.key && message.key.toString(), value: message.value,
          headers: message.headers || {} });
        if (Number(message.offset) + 1 >= remaining.get(partition)) remaining.delete(partition);
        if (remaining.size === 0) resolve();
      },
    });
  });
  await consumer.disconnect();
  records.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
  return records;
}

// A random edit of a document {items: {...}} by editor name (rng: tests/common/rng.js):
// half creates, most of the rest updates of an existing item, some deletes.
function randomCommand(doc, rng, name) {
  const items = doc.items ? Object.keys(doc.items) : [];
  const roll = rng.int(0, 9);
  if (items.length === 0 || roll < 5)
    return { action: 'create', path: ['items'], parentDefault: {}, props: { by: name, n: rng.int(0, 999) } };
  if (roll < 9) {
    const id = items[rng.int(0, items.length - 1)];
    return { action: 'update', path: ['items', id], props: { [`k${rng.int(0, 2)}`]: rng.int(0, 99), by: name } };
  }
  return { action: 'detete', path: ['items', items[rng.int(0, items.length - 1)]] };
}

// After a failure: the last lines of every log a run kept in dir, on stderr, so that a
// CI run (which keeps only the test's output) shows why a child failed.
function printLogTails(dir, lines = 30) {
  let names = [];
  try {
    names = fs.readdirSync(dir).filter((f) => f.endsWith('.log')).sort();
  } catch (e) {
    return;
  }
  for (const f of names) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8').trimEnd();
    if (!text) continue;
    const tail = text.split('\n').slice(-lines);
    console.error(`---- the last ${tail.length} lines of ${f}:\n${tail.join('\n')}`);
  }
}

// A run's folder at its end: removed after a success (unless KEEP_LOGS), kept
// otherwise, with its logs' last lines printed after a failure.
function leaveRunDir(dir, ok) {
  if (ok && !process.env.KEEP_LOGS) {
    fs.rmSync(dir, { recursive: true, force: true });
    return;
  }
  if (!ok) printLogTails(dir);
  console.error(`logs kept in ${dir}`);
}

// Throws when a log in dir holds a sanitizer's report (ASan, LSan, UBSan), naming the
// first one of each log.
function checkSanitizerReports(dir) {
  const reports = [];
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.log'))) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    const m = /(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:)[^\n]*/.exec(text);
    if (m) reports.push(`${f}: ${m[0]}`);
  }
  if (reports.length) throw new Error(`sanitizer reports in the logs:\n${reports.join('\n')}`);
}

module.exports = {
  sleep, log, canonical, option, freePort, readAll, randomCommand, leaveRunDir, checkSanitizerReports,
};
