#!/usr/bin/env node
// The processor's HTTP endpoint (--http-port) scraped while it works: /readyz says 503
// before the group has assigned anything (and while an assignment is being registered:
// FLUSHOUT_FAILPOINT=assign-slow) and 200 once every partition caught up,
// /healthz says 200 throughout, and /metrics (Prometheus text format, checked for
// well-formedness) counts exactly what was sent: flushes and commands applied, errors
// and dead letters by code, latency histograms, per-partition lag and readiness, the
// model cache and RocksDB figures, and no partition failed or retried. The server
// listens on --http-address 127.0.0.1 only.
'use strict';

const assert = require('assert');
const http = require('http');
const { encode } = require('@msgpack/msgpack');
const h = require('./harness.js');
const { freePort } = require('../common/util.js');

const FLUSHES = Number(h.option('--flushes', 200)); // per round
const MODELS = 4;

function get(port, path, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.end();
  });
}

// Parses the Prometheus text format strictly enough to catch malformed output:
// returns Map(sample name with labels -> number) and checks TYPE lines and histograms.
function parseMetrics(text) {
  const samples = new Map();
  const types = new Map();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m;
    if ((m = /^# TYPE (\w+) (counter|gauge|histogram)$/.exec(line))) {
      assert.ok(!types.has(m[1]), `TYPE of ${m[1]} given once`);
      types.set(m[1], m[2]);
      continue;
    }
    if (/^# HELP \w+ .+$/.test(line)) continue;
    m = /^(\w+)(\{[^}]*\})? (-?[0-9.e+]+)$/.exec(line);
    assert.ok(m, `a well-formed sample line: ${JSON.stringify(line)}`);
    const base = m[1].replace(/_(bucket|sum|count)$/, '');
    assert.ok(types.has(m[1]) || types.get(base) === 'histogram', `${m[1]} has a TYPE line`);
    samples.set(m[1] + (m[2] || ''), Number(m[3]));
  }
  for (const [name, type] of types) {
    if (type !== 'histogram') continue;
    let last = -1;
    for (const [k, v] of samples) {
      if (!k.startsWith(`${name}_bucket{`)) continue;
      assert.ok(v >= last, `${name} buckets are cumulative`);
      last = v;
    }
    assert.strictEqual(samples.get(`${name}_bucket{le="+Inf"}`), samples.get(`${name}_count`), `${name}: +Inf bucket = count`);
  }
  return samples;
}

const value = (s, name) => s.get(name) || 0;

async function scrape(port) {
  const r = await get(port, '/metrics');
  assert.strictEqual(r.status, 200);
  assert.ok(/^text\/plain; version=0\.0\.4/.test(r.type), `Prometheus content type, got ${r.type}`);
  return parseMetrics(r.body);
}

async function waitFor(what, timeoutMs, check) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const got = await check();
    if (got) return got;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await h.sleep(100);
  }
}

async function main(run) {
  const bootstrap = await run.startBroker(2);
  const port = await freePort();
  const kafka = h.connect(bootstrap, 'metrics-test');
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();

  // A snapshot record every 50 commands (each model makes 200; a step publishes a model
  // at most once, however many multiples it passed).
  // The assignment waits 1.5 s before its partitions are registered
  // (FLUSHOUT_FAILPOINT=assign-slow): /readyz must not say ready in between.
  const p = run.startProcessor('a', bootstrap, { FLUSHOUT_FAILPOINT: 'assign-slow:1500' },
    ['--http-port', String(port), '--http-address', '127.0.0.1', '--snapshot-topic-every', '50']);
  // Before the group answers (the broker delays the first join by 3 s): alive, not ready.
  const early = await waitFor('the HTTP endpoint', 10000, () => get(port, '/readyz').catch(() => null));
  assert.strictEqual(early.status, 503, `not ready before joining: ${early.body}`);
  const health = await get(port, '/healthz');
  assert.strictEqual(health.status, 200, health.body);
  const ready = await waitFor('/readyz 200', 30000, async () => {
    const r = await get(port, '/readyz');
    return r.status === 200 ? r : null;
  });
  assert.strictEqual(ready.body, 'ready: 2 partitions caught up\n', 'ready once both partitions are served');
  h.log('ready');
  assert.strictEqual((await get(port, '/nothing-here')).status, 404);
  assert.strictEqual((await get(port, '/metrics', 'POST')).status, 405);

  const before = await scrape(port);
  assert.strictEqual(value(before, 'flushout_assigned_partitions'), 2);
  assert.strictEqual(value(before, 'flushout_flushes_applied_total'), 0);
  for (const name of ['flushout_partitions_failed', 'flushout_partitions_retrying', 'flushout_takeover_retries_total']) {
    assert.ok(before.has(name), `${name} is exported`);
    assert.strictEqual(value(before, name), 0, name);
  }

  // Two rounds of flushes of 2 creates each, a second apart (cache figures are
  // refreshed once a second), then two bad records.
  let seq = 0;
  const send = async () => {
    const messages = [];
    for (let i = 0; i < FLUSHES; i++) {
      const model = `model-${i % MODELS}`;
      const completions = [0, 1].map((k) => ({ command: { action: 'create', path: ['items'], props: { i, k }, parentDefault: {} } }));
      messages.push({ key: model, value: Buffer.from(encode({ type: 'flush', client: `client-${i}`, seq: ++seq, from: 0, completions })) });
    }
    await producer.send({ topic: 'flushout.flushes', messages });
  };
  await send();
  await waitFor('round 1', 30000, async () => value(await scrape(port), 'flushout_records_total') === FLUSHES);
  await h.sleep(1200);
  await send();
  await producer.send({
    topic: 'flushout.flushes',
    messages: [
      { key: 'model-0', value: Buffer.from([0xc1]) }, // msgpack's reserved byte
      { key: null, value: Buffer.from(encode({ type: 'flush', client: 'no-key', seq: 1, from: 0, completions: [] })) },
    ],
  });
  const total = 2 * FLUSHES + 2;
  const s = await waitFor('every record counted and delivered', 30000, async () => {
    const m = await scrape(port);
    const lagging = [0, 1].some((q) => value(m, `flushout_consumer_lag{partition="${q}"}`) !== 0);
    return value(m, 'flushout_records_total') === total && !lagging ? m : null;
  });

  assert.strictEqual(value(s, 'flushout_flushes_applied_total'), 2 * FLUSHES, 'flushes applied');
  assert.strictEqual(value(s, 'flushout_commands_applied_total'), 4 * FLUSHES, 'commands applied');
  assert.strictEqual(value(s, 'flushout_errors_total{code="reserved_byte"}'), 1);
  assert.strictEqual(value(s, 'flushout_dead_letters_total{code="reserved_byte"}'), 1);
  assert.strictEqual(value(s, 'flushout_errors_total{code="missing_key"}'), 1);
  assert.strictEqual(value(s, 'flushout_dead_letters_total{code="missing_key"}'), 1);
  const errors = [...s].filter(([k]) => k.startsWith('flushout_errors_total{'));
  assert.strictEqual(errors.length, 2, `no other error codes: ${JSON.stringify(errors)}`);
  assert.strictEqual(value(s, 'flushout_record_latency_seconds_count'), total, 'one latency per record');
  // Snapshot records are produced after their step, outside the lag: wait for them.
  const published = value(s, 'flushout_snapshot_records_total');
  assert.ok(published >= MODELS, `every model has had a snapshot record (${published})`);
  await waitFor(`${published} snapshot records in the topic`, 20000,
    async () => (await h.readAll(kafka, 'flushout.snapshots')).length === published);
  assert.ok(value(s, 'flushout_step_duration_seconds_count') >= 2, 'steps timed');
  assert.ok(value(s, 'flushout_step_duration_seconds_sum') > 0);
  for (const q of [0, 1]) {
    assert.strictEqual(value(s, `flushout_partition_ready{partition="${q}"}`), 1);
    assert.strictEqual(value(s, `flushout_catch_up_remaining{partition="${q}"}`), 0);
    assert.ok(value(s, `flushout_rocksdb_estimated_keys{partition="${q}"}`) > 0, `partition ${q} stores keys`);
    assert.ok(value(s, `flushout_rocksdb_memtable_bytes{partition="${q}"}`) > 0);
    assert.ok(s.has(`flushout_outbox_records{partition="${q}"}`));
  }
  assert.strictEqual(value(s, 'flushout_cache_models'), MODELS, 'every model cached');
  assert.ok(value(s, 'flushout_cache_bytes') > 0);
  assert.ok(value(s, 'flushout_cache_misses_total') >= MODELS, 'each model loaded once at least');
  assert.ok(value(s, 'flushout_cache_hits_total') >= FLUSHES, 'later flushes found their model cached');
  assert.strictEqual((await get(port, '/readyz')).status, 200);
  assert.strictEqual((await get(port, '/healthz')).status, 200);

  await run.stopProcessor(p);
  await producer.disconnect();
  console.log(
    `metrics: ${total} records scraped as ${value(s, 'flushout_flushes_applied_total')} flushes, ` +
      `${value(s, 'flushout_commands_applied_total')} commands, 2 errors/dead letters by code; ` +
      `cache ${value(s, 'flushout_cache_hits_total')} hits / ${value(s, 'flushout_cache_misses_total')} misses; readiness 503 -> 200`
  );
}

h.runMain('metrics', main);
