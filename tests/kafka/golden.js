#!/usr/bin/env node
// Outputs stay byte-identical: a fixed input (flushes recorded from real flushout
// proxies by tests/bench/workload.js, plus snapshot and history requests, a retry, a
// stale seq, Spring reply headers and bad records) is produced in order with fixed
// timestamps, one processor answers it, and every record it wrote (replies, change
// records, dead letters: topic, partition, key, value and headers) is
// compared with tests/kafka/golden-outputs.txt, which an earlier build wrote from the
// same input (`golden.js --bin B --write`). A change that alters any output byte fails
// here; a deliberate one rewrites the file and says why in its commit.
//
// Records are compared as a sorted multiset of lines, so the interleaving of replies from
// different input partitions on one replies partition does not matter; the order per
// key is checked by the other end-to-end tests.
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const { encode } = require('@msgpack/msgpack');
const h = require('./harness.js');

const GOLDEN = path.join(__dirname, 'golden-outputs.txt');
// Not the snapshots topic: a snapshot record is published once per step for a model
// that passed --snapshot-topic-every, so how many there are depends on how records
// were grouped into steps.
const TOPICS = ['flushout.replies', 'flushout.changes', 'flushout.dlq'];
const T0 = 1767225600000; // record timestamps: fixed, since dead letters carry them

function digest(buf) {
  return buf === null || buf === undefined ? '-' : crypto.createHash('sha256').update(buf).digest('hex').slice(0, 24);
}

// The input: [{key, value (Buffer), headers?, partition?}], the same on every run.
function input() {
  const workload = path.join(__dirname, '..', 'bench', 'workload.js');
  const lines = execFileSync(process.execPath, [workload, '--models', '12', '--clients', '3', '--flushes', '600',
    '--seed', '18'], { encoding: 'utf8', maxBuffer: 64 << 20 }).trim().split('\n').map((l) => JSON.parse(l));
  const rec = (req, extra = {}) => ({ key: req.model, value: Buffer.from(encode(req)), ...extra });
  const out = lines.map((req) => rec(req));
  const models = [...new Set(lines.map((l) => l.model))].sort();
  const first = lines[0];
  out.push(rec(first)); // the same client and seq again: a retry or a stale seq
  for (const model of models.slice(0, 3)) out.push(rec({ type: 'snapshot', model, client: 'reader', seq: 1 }));
  out.push(rec({ type: 'history', model: models[0], client: 'reader', seq: 2, from: 0, to: 5 }));
  out.push(rec({ type: 'history', model: models[0], client: 'reader', seq: 3, from: 0, to: 1e6 }));
  out.push(rec({ type: 'snapshot', model: models[1], client: 'spring', seq: 1 }, {
    headers: { kafka_replyTopic: 'flushout.replies', kafka_correlationId: Buffer.from('corr-0001') },
  }));
  out.push({ key: models[2], value: Buffer.from([0xc1, 0x00, 0xff]) }); // not msgpack
  // No key (on a given partition: a producer would pick one at random).
  out.push({ key: null, partition: 1, value: Buffer.from(encode({ type: 'snapshot', client: 'nokey', seq: 1 })) });
  out.push(rec({ type: 'flush', model: models[3], client: 'bad', seq: 1, from: 0, completions: 'no' }));
  return out;
}

async function readTopic(kafka, topic) {
  return (await h.readAll(kafka, topic)).map((r) => {
    const headers = Object.keys(r.headers).sort().map((k) => `${k}=${digest(r.headers[k])}`).join(',');
    // A record without a key goes to a partition the producer picks at random.
    const where = r.key === null ? '*' : r.partition;
    return `${topic} ${where} ${digest(r.key)} ${digest(r.value)} ${headers || '-'}`;
  });
}

async function main(run) {
  const write = process.argv.includes('--write');
  const bootstrap = await run.startBroker(4);
  const kafka = h.connect(bootstrap, 'golden-test');
  const producer = kafka.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 1 });
  await producer.connect();
  const records = input();
  // One at a time in order: the offsets, which change records carry, are the same.
  for (let i = 0; i < records.length; i++) {
    const r = records[i];
    await producer.send({ topic: 'flushout.flushes', acks: -1,
      messages: [{ key: r.key, value: r.value, headers: r.headers, partition: r.partition, timestamp: String(T0 + i) }] });
  }
  // One key on every partition: on all but one, it is on the wrong one.
  for (let partition = 0; partition < 4; partition++)
    await producer.send({ topic: 'flushout.flushes', acks: -1,
      messages: [{ key: 'wrong-partition', partition, timestamp: String(T0 + records.length + partition),
        value: Buffer.from(encode({ type: 'snapshot', client: 'lost', seq: partition + 1 })) }] });
  h.log(`produced ${records.length + 4} records`);

  const p = run.startProcessor('golden', bootstrap, {}, ['--group-id', 'golden']);
  // Wait until every record is answered: the processor's committed offsets reach the end.
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets('flushout.flushes');
  for (const until = Date.now() + 120000; ;) {
    const [committed] = await admin.fetchOffsets({ groupId: 'golden', topics: ['flushout.flushes'] });
    const done = ends.every((e) => {
      const c = committed.partitions.find((x) => x.partition === e.partition);
      return c && Number(c.offset) >= Number(e.high);
    });
    if (done) break;
    if (Date.now() > until) throw new Error('the processor did not commit every record in 120 s');
    await h.sleep(200);
  }
  await admin.disconnect();
  await run.stopProcessor(p);

  const lines = [];
  for (const topic of TOPICS) lines.push(...(await readTopic(kafka, topic)));
  lines.sort();
  const text = `${lines.join('\n')}\n`;
  await producer.disconnect();
  if (write) {
    fs.writeFileSync(GOLDEN, text);
    h.log(`wrote ${lines.length} lines to ${GOLDEN}`);
    return;
  }
  const want = fs.readFileSync(GOLDEN, 'utf8').trim().split('\n');
  const missing = want.filter((l) => !lines.includes(l));
  const extra = lines.filter((l) => !want.includes(l));
  for (const l of missing.slice(0, 10)) console.error(`expected, not written: ${l}`);
  for (const l of extra.slice(0, 10)) console.error(`written, not expected:  ${l}`);
  for (const topic of TOPICS) {
    const n = lines.filter((l) => l.startsWith(`${topic} `)).length;
    h.log(`${topic}: ${n} records`);
  }
  assert.strictEqual(lines.length, want.length, `${lines.length} output records, the golden file has ${want.length}`);
  assert.deepStrictEqual(lines, want, 'the outputs differ from tests/kafka/golden-outputs.txt');
  h.log(`all ${lines.length} output records byte-identical to the golden file`);
}

h.runMain('golden', main);
