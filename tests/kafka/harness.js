// tests/kafka/harness.js - what the end-to-end tests share: the embedded broker and
// processor instances as child processes, flushout proxies as clients over kafkajs,
// reading topics back, and the checks that every run must pass (Kafka's EosTestDriver
// style: every flush applied exactly once, every flush answered, no change missing).
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
const { sleep, log, canonical, option, readAll, randomCommand, leaveRunDir, checkSanitizerReports } = require('../common/util.js');


// A test run: a temporary folder, the child processes, and cleanup.
class Run {
  constructor(name, bin) {
    this.name = name;
    this.bin = bin;
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `flushout-${name}-`));
    this.children = [];
    this.shuttingDown = false;
  }

  startBroker(partitions, extraArgs = []) {
    const child = spawn(this.bin, ['dev', '--broker-only', '--partitions', String(partitions), ...extraArgs], {
      stdio: ['ignore', 'pipe', fs.openSync(path.join(this.tmp, 'broker.log'), 'w')],
    });
    this.children.push(child);
    child.once('exit', (code, signal) => {
      if (!this.shuttingDown) console.error(`${this.name}: the broker exited early: code ${code}, signal ${signal}`);
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

  // A processor instance with its own state directory (kept across restarts), env for
  // failpoints, and more options.
  startProcessor(name, bootstrap, env = {}, extraArgs = []) {
    const logFile = path.join(this.tmp, `${name}.log`);
    const child = spawn(
      this.bin,
      ['run', '--bootstrap-servers', bootstrap, '--state-dir', path.join(this.tmp, name), '--ids', 'sequential',
        '--threads', '2', '-X', 'fetch.wait.max.ms=10', '-X', 'session.timeout.ms=6000',
        ...(process.env.KAFKA_DEBUG ? ['-X', `debug=${process.env.KAFKA_DEBUG}`, '--log-level', 'debug'] : []),
        ...extraArgs],
      { stdio: ['ignore', 'ignore', fs.openSync(logFile, 'a')], env: { ...process.env, ...env } }
    );
    this.children.push(child);
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    log(`started ${name}`);
    return { name, child, exited, logFile };
  }

  // Runs a command of the binary to completion: its exit code, stdout and log (stderr).
  runTool(name, args) {
    const logFile = path.join(this.tmp, `${name}.log`);
    const child = spawn(this.bin, args, { stdio: ['ignore', 'pipe', fs.openSync(logFile, 'w')] });
    this.children.push(child);
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    return new Promise((resolve) =>
      child.once('close', (code) => resolve({ code, stdout, log: fs.readFileSync(logFile, 'utf8'), logFile })));
  }

  async stopProcessor(p) {
    p.child.kill('SIGTERM');
    const { code, signal } = await p.exited;
    log(`${p.name} exited with ${code}${signal ? ` (${signal})` : ''}`);
    assert.strictEqual(code, 0, `${p.name} exits 0 on SIGTERM (see ${p.logFile})`);
  }

  cleanup(ok) {
    this.shuttingDown = true;
    for (const ch of this.children) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGKILL');
    leaveRunDir(this.tmp, ok);
  }
}

// A flushout Proxy editing one model, flushing over Kafka, resending a flush (same
// seq) whose reply is late.
class Client {
  constructor(name, model, rng, producer, replyTimeoutMs = 10000) {
    this.name = name;
    this.model = model;
    this.rng = rng;
    this.producer = producer;
    this.replyTimeoutMs = replyTimeoutMs;
    this.proxy = new Proxy({ commandCount: 0, document: {} }, { sequentialIds: true });
    this.seq = 0;
    this.waiting = null; // {seq, resolve}
    this.flushes = 0;
    this.retries = 0;
    this.topic = 'flushout.flushes'; // where flushes go (a gateway's setting)
    this.sending = 0; // sends not yet acknowledged by the broker
  }

  edit() {
    const command = randomCommand(this.proxy.getDocument(), this.rng, this.name);
    this.proxy.apply(command);
  }

  onReply(reply) {
    if (!this.waiting || reply.seq !== this.waiting.seq || reply.model !== this.model) return;
    const w = this.waiting;
    this.waiting = null;
    w.resolve(reply);
  }

  async send(request) {
    this.sending++;
    try {
      await this.producer.send({
        topic: this.topic,
        messages: [{ key: this.model, value: Buffer.from(encode(request, { ignoreUndefined: true })) }],
      });
    } finally {
      this.sending--;
    }
  }

  // Sends request and waits for its reply, resending it when late.
  async request(request) {
    for (;;) {
      const reply = new Promise((resolve) => (this.waiting = { seq: request.seq, resolve }));
      await this.send(request);
      const got = await Promise.race([reply, sleep(this.replyTimeoutMs).then(() => null)]);
      if (got) return got;
      this.retries++;
      log(`${this.name}: no reply to seq ${request.seq} in ${this.replyTimeoutMs} ms, sending it again`);
    }
  }

  // One flush cycle: beginFlush, request, endFlush.
  async flush() {
    const batch = this.proxy.beginFlush();
    const seq = ++this.seq;
    const got = await this.request({ type: 'flush', client: this.name, seq, from: batch.from, completions: batch.completions });
    if (got.type !== 'flushResult') throw new Error(`${this.name} seq ${seq}: ${JSON.stringify(got)}`);
    const res = this.proxy.endFlush(got.sync);
    if (res.error) throw new Error(`${this.name}: endFlush: ${res.error}`);
    this.flushes++;
  }

  async run(isEditing) {
    while (isEditing()) {
      const edits = 1 + this.rng.int(0, 2);
      for (let i = 0; i < edits; i++) this.edit();
      await this.flush();
      await sleep(this.rng.int(0, 39));
    }
  }
}

function connect(bootstrap, clientId) {
  return new Kafka({ clientId, brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
}

// Proxies editing models (clientsPerModel each, seeded from seed), a checker client
// for converge(), and the replies routed to all of them.
async function startEditors(kafka, { models, clientsPerModel, seed, replyTimeoutMs }) {
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const clients = [];
  for (let m = 0; m < models; m++)
    for (let c = 0; c < clientsPerModel; c++)
      clients.push(new Client(`client-${m}-${c}`, `model-${m}`, new Rng(seed * 1000 + clients.length), producer, replyTimeoutMs));
  const checker = new Client('checker', '', new Rng(seed), producer, replyTimeoutMs);
  const replies = await listenForReplies(kafka, [...clients, checker]);
  return { producer, clients, checker, replies };
}

// Routes the replies topic to the clients by key.
async function listenForReplies(kafka, clients) {
  const byName = new Map(clients.map((c) => [c.name, c]));
  const consumer = kafka.consumer({ groupId: `replies-${process.pid}-${Date.now()}`, maxWaitTimeInMs: 20 });
  await consumer.connect();
  await consumer.subscribe({ topic: 'flushout.replies', fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const client = byName.get(message.key && message.key.toString());
      if (client) client.onReply(decode(message.value));
    },
  });
  return { consumer, add: (c) => byName.set(c.name, c) };
}


// Flushes what the proxies hold, then one empty flush each so that every proxy syncs
// to the latest state; then asks the processor for each model's snapshot.
async function converge(clients, checker, models) {
  for (const cl of clients) if (cl.proxy.hasUnflushedCommands()) await cl.flush();
  for (const cl of clients) await cl.flush();
  const snapshots = new Map();
  for (const model of models) {
    checker.model = model;
    const r = await checker.request({ type: 'snapshot', client: checker.name, seq: ++checker.seq });
    assert.ok(r.type === 'snapshot', `snapshot of ${model}: ${JSON.stringify(r)}`);
    snapshots.set(model, r.snapshot);
  }
  return snapshots;
}

// The checks of every run. Returns figures for the summary line. layouts: the topics
// the models lived in, oldest first (see repartition.js); of an older layout only the
// flushes it applied count, the others were carried over to the next.
async function verify(kafka, clients, snapshots, layouts = [{ flushes: 'flushout.flushes', changes: 'flushout.changes' }]) {
  // 1. Every proxy holds its model's snapshot.
  for (const cl of clients) {
    const snap = snapshots.get(cl.model);
    assert.strictEqual(cl.proxy.getCommandCount(), snap.commandCount, `${cl.name} command count`);
    assert.strictEqual(canonical(cl.proxy.getDocument()), canonical(snap.document), `${cl.name} document`);
  }

  // 2. flushout's own Master, fed the flushes as they stand in the topic; a flush sent
  //    again (same model, client and seq) counts once.
  const masters = new Map();
  const seen = new Set();
  let resent = 0;
  const changes = [];
  const flushes = [];
  for (const [i, layout] of layouts.entries()) {
    const layoutChanges = await readAll(kafka, layout.changes);
    changes.push(...layoutChanges);
    const applied = new Set(layoutChanges.map((rec) => { const ch = decode(rec.value); return `${ch.model}/${ch.client}/${ch.seq}`; }));
    for (const rec of await readAll(kafka, layout.flushes)) {
      const req = decode(rec.value);
      if (i < layouts.length - 1 && !applied.has(`${rec.key}/${req.client}/${req.seq}`)) continue;
      flushes.push({ rec, req });
    }
  }
  for (const { rec, req } of flushes) {
    if (req.type !== 'flush') continue;
    const id = `${rec.key}/${req.client}/${req.seq}`;
    if (seen.has(id)) { resent++; continue; }
    seen.add(id);
    if (!masters.has(rec.key)) masters.set(rec.key, new Master({ commandCount: 0, document: {} }, { sequentialIds: true }));
    await masters.get(rec.key).apply({ from: req.from, completions: req.completions });
  }
  for (const [model, snap] of snapshots) {
    const ref = masters.get(model).getSnapshot();
    assert.strictEqual(snap.commandCount, ref.commandCount, `${model}: command count vs flushout's Master (applied exactly once)`);
    assert.strictEqual(canonical(snap.document), canonical(ref.document), `${model}: document vs flushout's Master`);
  }

  // 3. The changes topic: one chain of commands per model, each exactly once; a change
  //    record written twice is byte-for-byte the same.
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
  return {
    flushes: clients.reduce((n, cl) => n + cl.flushes, 0),
    retries: clients.reduce((n, cl) => n + cl.retries, 0),
    resent,
    changes: changes.length,
    rewritten,
  };
}

// Runs main(run) and exits 0, or prints the failure, keeps the logs and exits 1.
function runMain(name, main) {
  const run = new Run(name, path.resolve(option('--bin', path.join(__dirname, '..', '..', 'build', 'bin', 'flushout-processor'))));
  main(run)
    .then(() => {
      // A report from a processor that kept running (UBSan without halting, a leak
      // found at a clean exit) fails the test too.
      checkSanitizerReports(run.tmp);
      run.cleanup(true);
      process.exit(0);
    })
    .catch((e) => {
      console.error(`${name}: FAILED: ${e.stack || e}`);
      run.cleanup(false);
      process.exit(1);
    });
}

module.exports = { option, runMain, Run, Client, connect, startEditors, listenForReplies, readAll, converge, verify, canonical, sleep, log };
