#!/usr/bin/env node
// End to end with real clients: real flushout Proxy objects edit models concurrently,
// their flushes and replies carried by kafkajs, while processor instances in one
// consumer group go from one to three and back to one (partitions handed over
// through the changes topic). Afterwards:
//   - every proxy's document equals its model's snapshot from the processor;
//   - the snapshot equals flushout@1.1.1's Master fed the same per-model flushes as
//     they stand in the flushes topic (retries, same client and seq, counted once);
//   - the changes topic holds each command exactly once, as one chain per model, and
//     any change record written twice (a flush processed again after a handoff) is
//     byte-for-byte the same;
//   - every flush was answered, and every instance exited cleanly on SIGTERM.
'use strict';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { spawn } = require('child_process');
const { Kafka, logLevel } = require('kafkajs');
const { encode, decode } = require('@msgpack/msgpack');
const { Master, Proxy } = require('flushout');
const { Rng } = require('../common/rng.js');

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const BIN = path.resolve(opt('--bin', path.join(__dirname, '..', '..', 'build', 'bin', 'flushout-processor')));
const MODELS = Number(opt('--models', 6));
const CLIENTS = Number(opt('--clients', 3)); // proxies per model
const PHASE_MS = Number(opt('--phase-ms', 4000));
const SEED = Number(opt('--seed', 1));
const PARTITIONS = 6;
const REPLY_TIMEOUT_MS = 10000;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'flushout-scaling-'));
const children = [];
let shuttingDown = false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(`[${(Date.now() % 100000) / 1000}]`, ...a);

function canonical(x) {
  if (Array.isArray(x)) return `[${x.map(canonical).join(',')}]`;
  if (x && typeof x === 'object')
    return `{${Object.keys(x).sort().map((k) => `${JSON.stringify(k)}:${canonical(x[k])}`).join(',')}}`;
  return JSON.stringify(x);
}

// ---- processes --------------------------------------------------------------

function startBroker() {
  const child = spawn(BIN, ['dev', '--broker-only', '--partitions', String(PARTITIONS)], {
    stdio: ['ignore', 'pipe', fs.openSync(path.join(tmp, 'broker.log'), 'w')],
  });
  children.push(child);
  child.once('exit', (code, signal) => {
    if (!shuttingDown) console.error(`scaling: the broker exited early: code ${code}, signal ${signal}`);
  });
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.once('line', (line) => {
      const m = /^bootstrap\.servers=(.+)$/.exec(line);
      if (m) resolve(m[1]);
      else reject(new Error(`dev printed ${line}`));
    });
    child.once('exit', (code) => reject(new Error(`dev exited with ${code}`)));
  });
}

function startProcessor(name, bootstrap) {
  const logFile = path.join(tmp, `${name}.log`);
  const child = spawn(
    BIN,
    ['run', '--bootstrap-servers', bootstrap, '--state-dir', path.join(tmp, name), '--ids', 'sequential',
      '--threads', '2', '-X', 'fetch.wait.max.ms=10', '-X', 'session.timeout.ms=6000',
      ...(process.env.SCALING_KAFKA_DEBUG ? ['-X', `debug=${process.env.SCALING_KAFKA_DEBUG}`, '--log-level', 'debug'] : [])],
    { stdio: ['ignore', 'ignore', fs.openSync(logFile, 'w')] }
  );
  children.push(child);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  log(`started ${name}`);
  return { name, child, exited, logFile };
}

async function stopProcessor(p) {
  p.child.kill('SIGTERM');
  const { code, signal } = await p.exited;
  log(`${p.name} exited with ${code}${signal ? ` (${signal})` : ''}`);
  assert.strictEqual(code, 0, `${p.name} exits 0 on SIGTERM (see ${p.logFile})`);
}

// ---- clients: flushout proxies over kafkajs ------------------------------------

class Client {
  constructor(name, model, rng, producer) {
    this.name = name;
    this.model = model;
    this.rng = rng;
    this.producer = producer;
    this.proxy = new Proxy({ commandCount: 0, document: {} }, { sequentialIds: true });
    this.seq = 0;
    this.waiting = null; // {seq, resolve}
    this.flushes = 0;
    this.retries = 0;
  }

  edit() {
    const doc = this.proxy.getDocument();
    const items = doc.items ? Object.keys(doc.items) : [];
    const roll = this.rng.int(0, 10 - 1);
    let command;
    if (items.length === 0 || roll < 5) {
      command = { action: 'create', path: ['items'], parentDefault: {}, props: { by: this.name, n: this.rng.int(0, 1000 - 1) } };
    } else if (roll < 9) {
      const id = items[this.rng.int(0, items.length - 1)];
      command = { action: 'update', path: ['items', id], props: { [`k${this.rng.int(0, 3 - 1)}`]: this.rng.int(0, 100 - 1), by: this.name } };
    } else {
      command = { action: 'detete', path: ['items', items[this.rng.int(0, items.length - 1)]] };
    }
    this.proxy.apply(command);
  }

  onReply(reply) {
    if (!this.waiting || reply.seq !== this.waiting.seq || reply.model !== this.model) return;
    const w = this.waiting;
    this.waiting = null;
    w.resolve(reply);
  }

  async send(request) {
    await this.producer.send({
      topic: 'flushout.flushes',
      messages: [{ key: this.model, value: Buffer.from(encode(request, { ignoreUndefined: true })) }],
    });
  }

  // One flush cycle: beginFlush, send, wait for the reply (resending the same seq
  // when it is late), endFlush.
  async flush() {
    const batch = this.proxy.beginFlush();
    const seq = ++this.seq;
    const request = { type: 'flush', client: this.name, seq, from: batch.from, completions: batch.completions };
    for (;;) {
      const reply = new Promise((resolve) => (this.waiting = { seq, resolve }));
      await this.send(request);
      const timeout = sleep(REPLY_TIMEOUT_MS).then(() => null);
      const got = await Promise.race([reply, timeout]);
      if (!got) {
        this.retries++;
        log(`${this.name}: no reply to seq ${seq} in ${REPLY_TIMEOUT_MS} ms, sending it again`);
        continue;
      }
      if (got.type !== 'flushResult') throw new Error(`${this.name} seq ${seq}: ${JSON.stringify(got)}`);
      const res = this.proxy.endFlush(got.sync);
      if (res.error) throw new Error(`${this.name}: endFlush: ${res.error}`);
      this.flushes++;
      return;
    }
  }

  async run(isEditing) {
    while (isEditing()) {
      const edits = 1 + this.rng.int(0, 3 - 1);
      for (let i = 0; i < edits; i++) this.edit();
      await this.flush();
      await sleep(this.rng.int(0, 40 - 1));
    }
  }
}

// ---- reading a topic to its end ------------------------------------------------

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
        records.push({ partition, offset: Number(message.offset), key: message.key && message.key.toString(), value: message.value });
        if (Number(message.offset) + 1 >= remaining.get(partition)) remaining.delete(partition);
        if (remaining.size === 0) resolve();
      },
    });
  });
  await consumer.disconnect();
  records.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
  return records;
}

// ---- the test -----------------------------------------------------------------

async function main() {
  const bootstrap = await startBroker();
  log(`broker at ${bootstrap}`);
  const kafka = new Kafka({ clientId: 'scaling-test', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();

  const clients = [];
  for (let m = 0; m < MODELS; m++)
    for (let c = 0; c < CLIENTS; c++) clients.push(new Client(`client-${m}-${c}`, `model-${m}`, new Rng(SEED * 1000 + clients.length), producer));
  const byName = new Map(clients.map((c) => [c.name, c]));

  const replies = kafka.consumer({ groupId: `replies-${process.pid}`, maxWaitTimeInMs: 20 });
  await replies.connect();
  await replies.subscribe({ topic: 'flushout.replies', fromBeginning: true });
  await replies.run({
    eachMessage: async ({ message }) => {
      const client = byName.get(message.key && message.key.toString());
      if (client) client.onReply(decode(message.value));
    },
  });

  const a = startProcessor('a', bootstrap);
  let editing = true;
  const runs = clients.map((c) => c.run(() => editing));
  await sleep(PHASE_MS + 4000); // the first join waits out the broker's rebalance delay
  const b = startProcessor('b', bootstrap);
  const c = startProcessor('c', bootstrap);
  await sleep(PHASE_MS + 6000);
  await Promise.all([stopProcessor(a), stopProcessor(b)]);
  await sleep(PHASE_MS);
  editing = false;
  await Promise.all(runs);

  // Converge: flush what is left, then one more empty flush each so that every proxy
  // syncs to the latest state.
  for (const cl of clients) if (cl.proxy.hasUnflushedCommands()) await cl.flush();
  for (const cl of clients) await cl.flush();

  // The processor's snapshots, asked for like any client would.
  const checker = new Client('checker', '', new Rng(SEED), producer);
  byName.set('checker', checker);
  const snapshots = new Map();
  for (let m = 0; m < MODELS; m++) {
    checker.model = `model-${m}`;
    const seq = ++checker.seq;
    const reply = new Promise((resolve) => (checker.waiting = { seq, resolve }));
    await checker.send({ type: 'snapshot', client: 'checker', seq });
    const r = await Promise.race([reply, sleep(REPLY_TIMEOUT_MS).then(() => null)]);
    assert.ok(r && r.type === 'snapshot', `snapshot of model-${m}: ${JSON.stringify(r)}`);
    snapshots.set(checker.model, r.snapshot);
  }
  await stopProcessor(c);
  await replies.disconnect();

  // 1. Every proxy holds its model's snapshot.
  for (const cl of clients) {
    const snap = snapshots.get(cl.model);
    assert.strictEqual(cl.proxy.getCommandCount(), snap.commandCount, `${cl.name} command count`);
    assert.strictEqual(canonical(cl.proxy.getDocument()), canonical(snap.document), `${cl.name} document`);
  }

  // 2. flushout's own Master, fed the flushes as they stand in the topic.
  const flushes = await readAll(kafka, 'flushout.flushes');
  const masters = new Map();
  const seen = new Set();
  let duplicates = 0;
  for (const rec of flushes) {
    const req = decode(rec.value);
    if (req.type !== 'flush') continue;
    const id = `${rec.key}/${req.client}/${req.seq}`;
    if (seen.has(id)) { duplicates++; continue; }
    seen.add(id);
    if (!masters.has(rec.key)) masters.set(rec.key, new Master({ commandCount: 0, document: {} }, { sequentialIds: true }));
    await masters.get(rec.key).apply({ from: req.from, completions: req.completions });
  }
  for (const [model, snap] of snapshots) {
    const ref = masters.get(model).getSnapshot();
    assert.strictEqual(snap.commandCount, ref.commandCount, `${model}: command count vs flushout's Master`);
    assert.strictEqual(canonical(snap.document), canonical(ref.document), `${model}: document vs flushout's Master`);
  }

  // 3. The changes topic: one chain of commands per model, each exactly once.
  const changes = await readAll(kafka, 'flushout.changes');
  const chains = new Map();
  let rewritten = 0;
  for (const rec of changes) {
    const ch = decode(rec.value);
    assert.strictEqual(ch.model, rec.key);
    const chain = chains.get(ch.model) || new Map();
    chains.set(ch.model, chain);
    const key = `${ch.applied.from}/${ch.client}/${ch.seq}`;
    const bytes = Buffer.from(rec.value).toString('hex');
    if (chain.has(key)) {
      assert.strictEqual(chain.get(key).bytes, bytes, `${ch.model}: change record ${key} written twice differently`);
      rewritten++;
      continue;
    }
    chain.set(key, { ch, bytes });
  }
  for (const [model, snap] of snapshots) {
    const entries = [...(chains.get(model) || new Map()).values()].map((e) => e.ch);
    let count = 0;
    for (const ch of entries) {
      assert.strictEqual(ch.applied.from, count, `${model}: change records continue at ${count}`);
      count += ch.applied.completions.length;
    }
    assert.strictEqual(count, snap.commandCount, `${model}: the changes hold every command once`);
  }

  // 4. The partitions moved through the changes topic.
  const cLog = fs.readFileSync(c.logFile, 'utf8');
  assert.ok(/caught up/.test(cLog), 'instance c caught partitions up from the changes topic');

  const total = clients.reduce((n, cl) => n + cl.flushes, 0);
  const retries = clients.reduce((n, cl) => n + cl.retries, 0);
  console.log(
    `scaling: ${clients.length} proxies on ${MODELS} models, ${total} flushes answered (${retries} resent, ` +
      `${duplicates} duplicate records), ${changes.length} change records (${rewritten} written twice, identical); ` +
      'instances 1 -> 3 -> 1: every proxy, snapshot and flushout Master agree'
  );
  await producer.disconnect();
}

function cleanup() {
  shuttingDown = true;
  for (const ch of children) if (ch.exitCode === null) ch.kill('SIGKILL');
}

main()
  .then(() => {
    cleanup();
    if (process.env.KEEP_LOGS) console.log(`logs kept in ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
    process.exit(0);
  })
  .catch((e) => {
    console.error(`scaling: FAILED: ${e.stack || e}`);
    console.error(`logs kept in ${tmp}`);
    cleanup();
    process.exit(1);
  });
