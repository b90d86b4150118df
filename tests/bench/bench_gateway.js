#!/usr/bin/env node
// tests/bench/bench_gateway.js - what the gateway costs: flushes per second and the
// round trip's p50/p99 of (a) direct Kafka clients (kafkajs producing flushes and
// reading their replies), (b) HTTP keep-alive clients and (c) WebSocket clients, all
// on the same kind of cluster: `dev --broker-only`, `run` and `gateway --no-auth` as
// children (tests/gateway/harness.js). The three kinds alternate in short rounds, each
// on a fresh cluster, because the mock broker slows down the longer it runs.
//
// Each round has two phases: a light one (--latency-clients clients, one flush in
// flight each) whose round trips give p50/p99, and a loaded one (--clients clients)
// whose flushes per second give the throughput. Every reply is checked (the right
// client and seq, both commands applied as sent, no errors); a wrong or missing reply
// fails the run (exit 1). The figures are printed with the ratios against (a): the
// p99 the gateway adds (target <= 2 ms) and its throughput ratio (target >= 0.8x).
//
//   node tests/bench/bench_gateway.js [--bin B] [--rounds 3] [--seconds 4] [--warmup-s 1]
//                                     [--clients 128] [--latency-clients 8] [--json FILE]
'use strict';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const assert = require('assert');
const fs = require('fs');
const http = require('http');
const path = require('path');
const { spawn } = require('child_process');
const WebSocket = require('ws');
const { Kafka, logLevel } = require('kafkajs');
const { encode, decode } = require('@msgpack/msgpack');
const h = require('../gateway/harness.js');

const BIN = path.resolve(h.option('--bin', path.join(__dirname, '..', '..', 'build', 'bin', 'flushout-processor')));
const ROUNDS = Number(h.option('--rounds', 3));
const SECONDS = Number(h.option('--seconds', 4));
const WARMUP_S = Number(h.option('--warmup-s', 1));
const CLIENTS = Number(h.option('--clients', 256));
const LOADGEN = path.resolve(h.option('--loadgen', path.join(path.dirname(BIN), '..', 'tests', 'loadgen')));
const LATENCY_CLIENTS = Number(h.option('--latency-clients', 8));
const JSON_OUT = h.option('--json', null);
// (a) is kafkajs, a Node client as the gateway's users would otherwise write; (a')
// is the project's C load generator on librdkafka (tests/bench/loadgen.c), the
// fastest direct client there is here, so the gateway is held to both.
const KINDS = ['kafka', 'loadgen', 'http', 'ws'];
const TICKS = 100; // clock ticks per second in /proc/<pid>/stat (USER_HZ)

// ---- the three kinds of client: send(request) resolves with the reply ----

async function kafkaClients(bootstrap, names) {
  const kafka = new Kafka({ clientId: 'bench-gateway', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const waiting = new Map(); // client id -> resolve
  const consumer = kafka.consumer({ groupId: `bench-replies-${process.pid}-${Date.now()}`, maxWaitTimeInMs: 10, minBytes: 1 });
  await consumer.connect();
  await consumer.subscribe({ topic: 'flushout.replies', fromBeginning: true });
  const joined = new Promise((resolve) => consumer.on(consumer.events.GROUP_JOIN, resolve));
  await consumer.run({
    eachMessage: async ({ message }) => {
      const reply = decode(message.value);
      const resolve = waiting.get(reply.client);
      if (resolve) {
        waiting.delete(reply.client);
        resolve(reply);
      }
    },
  });
  await joined;
  return {
    senders: names.map(() => (model, req) => {
      const reply = new Promise((resolve) => waiting.set(req.client, resolve));
      return producer
        .send({ topic: 'flushout.flushes', messages: [{ key: model, value: Buffer.from(encode({ type: 'flush', ...req })) }] })
        .then(() => reply);
    }),
    close: async () => {
      await consumer.disconnect();
      await producer.disconnect();
    },
  };
}

async function httpClients(gw, names) {
  const agents = names.map(() => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  return {
    senders: agents.map((agent) => async (model, req) => {
      const r = await h.httpRequest(gw, 'POST', h.modelPath(model, '/flush'), { body: req, agent });
      return r.json || { type: 'http', status: r.status, text: r.text };
    }),
    close: async () => agents.forEach((a) => a.destroy()),
  };
}

async function wsClients(gw, names) {
  const sockets = await Promise.all(names.map(() => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${gw.host}:${gw.port}/v1/ws`, { perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  })));
  return {
    senders: sockets.map((ws) => {
      let pending = null;
      ws.on('message', (data) => {
        const p = pending;
        pending = null;
        if (p) p(JSON.parse(data.toString('utf8')));
      });
      return (model, req) => new Promise((resolve) => {
        pending = resolve;
        ws.send(JSON.stringify({ type: 'flush', model, ...req }));
      });
    }),
    close: async () => sockets.forEach((ws) => ws.close()),
  };
}

// ---- one closed-loop phase ----

// Each client owns a model and flushes a create and an update of the created item
// from the model's exact count, so every command applies as sent: the same work for
// every kind. Returns the flushes finished in the measured window and their round trips.
async function phase(senders, label, warmupMs, measureMs) {
  let stop = false;
  const start = Date.now() + warmupMs;
  const end = start + measureMs;
  const latencies = [];
  let done = 0;
  let total = 0;
  const loops = senders.map(async (send, i) => {
    const client = `${label}-c${i}`;
    const model = `${label}-m${i}`;
    let count = 0;
    let seq = 0;
    while (!stop) {
      seq++;
      const id = `i${seq}`;
      const req = {
        client, seq, from: count,
        completions: [
          { command: { action: 'create', path: ['items'], parentDefault: {}, props: { title: `item ${seq}`, done: false } }, createdId: id },
          { command: { action: 'update', path: ['items', id], props: { done: true } } },
        ],
      };
      const t0 = process.hrtime.bigint();
      const sentAt = Date.now();
      const reply = await send(model, req);
      const rtt = Number(process.hrtime.bigint() - t0) / 1e6;
      const now = Date.now();
      assert.ok(reply.type === 'flushResult' && reply.client === client && reply.seq === seq && reply.model === model,
        `${label} ${client} seq ${seq}: ${JSON.stringify(reply).slice(0, 300)}`);
      assert.ok(reply.applied.from === count && reply.applied.completions.length === 2 && !reply.errors && !reply.sync && !reply.duplicate,
        `${label} ${client} seq ${seq}: not applied as sent: ${JSON.stringify(reply).slice(0, 300)}`);
      count += 2;
      total++;
      if (sentAt >= start && now <= end) {
        latencies.push(rtt);
        done++;
      }
      if (now > end) stop = true;
    }
  });
  await Promise.all(loops);
  latencies.sort((x, y) => x - y);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
  return { flushes: done, total, perSecond: done / (measureMs / 1000), p50: pct(50), p99: pct(99) };
}

function cpuTicks(pid) {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch (e) {
    return NaN;
  }
}

// (a'): tests/bench/loadgen.c in the same closed loop (one model per client, two
// commands per flush, one in flight each); it checks every reply itself.
function loadgenPhase(run, bootstrap, clients, name) {
  const json = path.join(run.tmp, `${name}.json`);
  return new Promise((resolve, reject) => {
    const child = spawn(LOADGEN, ['--bootstrap-servers', bootstrap, '--models', String(clients), '--clients-per-model', '1',
      '--commands', '2', '--outstanding', '1', '--window', String(clients), '--warmup', String(WARMUP_S), '--duration', String(SECONDS),
      '--label', name, '--json', json, '-X', 'fetch.wait.max.ms=10'],
    { stdio: ['ignore', 'ignore', fs.openSync(path.join(run.tmp, `${name}.log`), 'w')] });
    run.children.push(child);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`loadgen ${name} exited with ${code}: ${fs.readFileSync(path.join(run.tmp, `${name}.log`), 'utf8').slice(-1500)}`));
      const r = JSON.parse(fs.readFileSync(json, 'utf8'));
      assert.ok(r.ok && r.lost === 0 && r.wrong === 0, `loadgen ${name}: ${JSON.stringify(r)}`);
      resolve({ flushes: Math.round(r.flushes_per_s * r.measured_s), total: r.replies, perSecond: r.flushes_per_s, p50: r.latency_ms.p50, p99: r.latency_ms.p99 });
    });
  });
}

// ---- one measurement: a fresh cluster, one kind, one phase ----

async function measure(kind, phaseName, clientCount, index) {
  const run = new h.Run(`bench-gateway-${index}-${kind}-${phaseName}`, BIN);
  try {
    const bootstrap = await run.startBroker(8);
    const proc = run.startProcessor('processor', bootstrap);
    const gw = await run.startGateway('gateway', bootstrap, ['--no-auth'], ['--rate-limit', '0']);
    // Ready when the processor answers through the gateway (it owns its partitions).
    await h.waitUntil('the processor answering', async () => (await h.httpRequest(gw, 'GET', h.modelPath('warm-up'), { timeoutMs: 10000 })).status === 200, 60000, 200);
    let result;
    let cpu0;
    if (kind === 'loadgen') {
      cpu0 = { gateway: cpuTicks(gw.child.pid), processor: cpuTicks(proc.child.pid) };
      result = await loadgenPhase(run, bootstrap, clientCount, phaseName);
    } else {
      const names = Array.from({ length: clientCount }, (_, i) => `c${i}`);
      const make = { kafka: () => kafkaClients(bootstrap, names), http: () => httpClients(gw, names), ws: () => wsClients(gw, names) }[kind];
      const clients = await make();
      cpu0 = { gateway: cpuTicks(gw.child.pid), processor: cpuTicks(proc.child.pid) };
      result = await phase(clients.senders, `${kind}-${phaseName}`, WARMUP_S * 1000, SECONDS * 1000);
      await clients.close();
    }
    const cpu1 = { gateway: cpuTicks(gw.child.pid), processor: cpuTicks(proc.child.pid) };
    // CPU over the phase (warm-up included) per flush answered in it.
    const usPerFlush = (k) => (((cpu1[k] - cpu0[k]) / TICKS) * 1e6) / Math.max(1, result.total);
    result.cpuUsPerFlush = { gateway: usPerFlush('gateway'), processor: usPerFlush('processor') };
    run.cleanup(true);
    return result;
  } catch (e) {
    run.cleanup(false);
    throw e;
  }
}

async function round(kind, index) {
  const light = await measure(kind, 'light', LATENCY_CLIENTS, index);
  const loaded = await measure(kind, 'loaded', CLIENTS, index);
  h.log(`round ${index} ${kind}: light p50 ${light.p50.toFixed(2)} ms p99 ${light.p99.toFixed(2)} ms (${light.perSecond.toFixed(0)}/s); ` +
    `loaded ${loaded.perSecond.toFixed(0)} flushes/s p50 ${loaded.p50.toFixed(1)} p99 ${loaded.p99.toFixed(1)} ms; ` +
    `CPU/flush gateway ${loaded.cpuUsPerFlush.gateway.toFixed(0)} us, processor ${loaded.cpuUsPerFlush.processor.toFixed(0)} us`);
  return { kind, index, light, loaded, cpuUsPerFlush: loaded.cpuUsPerFlush };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  const results = [];
  for (let i = 0; i < ROUNDS; i++) {
    // Alternate the order too, so that no kind always runs first or last.
    const order = i % 2 === 0 ? KINDS : [...KINDS].reverse();
    for (const kind of order) results.push(await round(kind, i));
  }
  const by = (kind, f) => median(results.filter((r) => r.kind === kind).map(f));
  const rows = KINDS.map((kind) => ({
    kind,
    p50: by(kind, (r) => r.light.p50),
    p99: by(kind, (r) => r.light.p99),
    perSecond: by(kind, (r) => r.loaded.perSecond),
    loadedP99: by(kind, (r) => r.loaded.p99),
    gatewayCpu: by(kind, (r) => r.cpuUsPerFlush.gateway),
    processorCpu: by(kind, (r) => r.cpuUsPerFlush.processor),
  }));
  const row = (kind) => rows.find((r) => r.kind === kind);
  const label = { kafka: "(a) Kafka, kafkajs", loadgen: "(a') Kafka, C loadgen", http: '(b) HTTP keep-alive', ws: '(c) WebSocket' };
  console.log(`\nMedians of ${ROUNDS} round(s) per kind, each on a fresh cluster; light: ${LATENCY_CLIENTS} clients, loaded: ${CLIENTS} clients, ` +
    `one flush in flight each; ${SECONDS} s measured after ${WARMUP_S} s of warm-up per phase.\n`);
  console.log('| clients | p50 ms (light) | p99 ms (light) | flushes/s (loaded) | p99 ms (loaded) | gateway CPU us/flush | processor CPU us/flush |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${label[r.kind]} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.perSecond.toFixed(0)} | ${r.loadedP99.toFixed(1)} | ` +
      `${r.kind === 'http' || r.kind === 'ws' ? r.gatewayCpu.toFixed(0) : '-'} | ${r.processorCpu.toFixed(0)} |`);
  }
  console.log('\n| through the gateway | against | added p50 ms | added p99 ms (target <= 2) | throughput ratio (target >= 0.8) |');
  console.log('|---|---|---|---|---|');
  for (const g of ['http', 'ws']) {
    for (const b of ['kafka', 'loadgen']) {
      const added = row(g).p99 - row(b).p99;
      const ratio = row(g).perSecond / row(b).perSecond;
      console.log(`| ${label[g]} | ${label[b]} | ${(row(g).p50 - row(b).p50).toFixed(2)} | ${added.toFixed(2)}${added <= 2 ? '' : ' (missed)'} | ` +
        `${ratio.toFixed(2)}x${ratio >= 0.8 ? '' : ' (missed)'} |`);
    }
  }
  const range = (kind, f, digits) => {
    const xs = results.filter((r) => r.kind === kind).map(f);
    return `${Math.min(...xs).toFixed(digits)}-${Math.max(...xs).toFixed(digits)}`;
  };
  console.log('\nRanges over the rounds: ' +
    KINDS.map((k) => `${k} p99 ${range(k, (r) => r.light.p99, 1)} ms, ${range(k, (r) => r.loaded.perSecond, 0)} flushes/s`).join('; '));
  if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify({ rows, results }, null, 2));
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(`bench_gateway: FAILED: ${e.stack || e}`);
  process.exit(1);
});
