#!/usr/bin/env node
// Warm standbys (--standby-interval-ms): instance b owns every partition, then hands
// some to a joining instance a; their stores go back to b's standby, which keeps them
// caught up from the changes topic while a works. a is then killed (SIGKILL: no
// handoff, its last offsets not committed), and b's takeover of a's partitions must
// replay none of their change records: its standby already applied all of them (its
// /metrics count at least every change record a wrote). The models then carry on under b
// alone, and everything agrees (harness.js verify()): every proxy's document, each
// model's snapshot, flushout's Master fed the same flushes, and the changes topic
// holding each command exactly once, including the flushes a had applied after its
// last committed offset, which b answers again as duplicates from the client records
// its standby restored.
'use strict';

const assert = require('assert');
const fs = require('fs');
const http = require('http');
const h = require('./harness.js');
const { freePort } = require('../common/util.js');

const MODELS = Number(h.option('--models', 8));
const CLIENTS = Number(h.option('--clients', 2));
const PHASE_MS = Number(h.option('--phase-ms', 4000));
const SEED = Number(h.option('--seed', 3));
const PARTITIONS = 4;

// One counter or gauge of the instance's /metrics.
function metric(port, name) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(body);
        if (m) resolve(Number(m[1]));
        else reject(new Error(`no ${name} in /metrics`));
      });
    }).on('error', reject);
  });
}

// The partitions an instance's log says it holds: assigned, and not revoked or lost
// since.
function ownedPartitions(logText) {
  const owned = new Set();
  for (const m of logText.matchAll(/partition (\d+) (assigned|revoked|lost)$/gm)) {
    if (m[2] === 'assigned') owned.add(Number(m[1]));
    else owned.delete(Number(m[1]));
  }
  return owned;
}

async function waitFor(what, check, timeoutMs = 60000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await h.sleep(100);
  }
}

async function edit(clients, ms) {
  let editing = true;
  const runs = clients.map((c) => c.run(() => editing));
  await h.sleep(ms);
  editing = false;
  await Promise.all(runs);
}

async function main(run) {
  const bootstrap = await run.startBroker(PARTITIONS);
  const kafka = h.connect(bootstrap, 'standby-test');
  const admin = kafka.admin();
  await admin.connect();
  const { producer, clients, checker, replies } = await h.startEditors(kafka, { models: MODELS, clientsPerModel: CLIENTS, seed: SEED });

  const port = await freePort();
  const b = run.startProcessor('b', bootstrap, {},
    ['--standby-interval-ms', '200', '--http-port', String(port), '--http-address', '127.0.0.1']);
  const owns = (p) => ownedPartitions(fs.readFileSync(p.logFile, 'utf8'));
  // b alone first (after the broker's first rebalance delay), owning everything.
  await waitFor('b to own every partition', () => owns(b).size === PARTITIONS);
  await edit(clients, PHASE_MS / 2);
  // a joins: b hands it some partitions, whose stores go back to b's standby.
  const a = run.startProcessor('a', bootstrap);
  await waitFor('a to serve partitions', () => {
    const text = fs.readFileSync(a.logFile, 'utf8');
    const held = ownedPartitions(text);
    return held.size > 0 && [...held].every((n) => new RegExp(`partition ${n}: processing from offset`).test(text));
  });
  const aParts = owns(a);
  assert.ok(aParts.size < PARTITIONS, `a and b share the partitions (a holds ${[...aParts]})`);
  assert.deepStrictEqual([...owns(b)].sort(), [...Array(PARTITIONS).keys()].filter((n) => !aParts.has(n)),
    'b kept the partitions it did not hand over');
  const atHandover = await admin.fetchTopicOffsets('flushout.changes');
  await edit(clients, PHASE_MS);

  assert.strictEqual(await metric(port, 'flushout_standby_partitions'), aParts.size, 'b keeps the partitions it does not own');
  // Every flush was answered; two more passes once the last change records are in.
  const passes = await metric(port, 'flushout_standby_passes_total');
  await waitFor('two standby passes', async () => (await metric(port, 'flushout_standby_passes_total')) >= passes + 2);
  const ends = await admin.fetchTopicOffsets('flushout.changes');
  const high = (list, n) => Number(list.find((e) => e.partition === n).high);
  const aRecords = [...aParts].reduce((sum, n) => sum + high(ends, n) - high(atHandover, n), 0);
  assert.ok(aRecords > 0, 'a wrote change records');
  const applied = await metric(port, 'flushout_standby_change_records_applied_total');
  assert.ok(applied >= aRecords, `b's standby applied ${applied} change records, a wrote ${aRecords}`);

  // a dies; b takes its partitions over once the group notices (session.timeout.ms).
  const before = fs.readFileSync(b.logFile, 'utf8').length;
  a.child.kill('SIGKILL');
  await a.exited;
  const since = () => fs.readFileSync(b.logFile, 'utf8').slice(before);
  await waitFor("b to serve a's partitions", () =>
    [...aParts].every((n) => new RegExp(`partition ${n}: processing from offset`).test(since())));
  const takeover = since();
  const timings = [];
  for (const n of aParts) {
    const m = new RegExp(`partition ${n}: caught up: (\\d+) change records applied`).exec(takeover);
    assert.ok(m, `partition ${n}: b's takeover caught it up (see ${b.logFile})`);
    assert.strictEqual(Number(m[1]), 0, `partition ${n}: the takeover replayed nothing, the standby had applied it all`);
    const t = (re) => Date.parse(new RegExp(`^(\\S+) .*${re}`, 'm').exec(takeover)[1]);
    timings.push(t(`partition ${n} assigned`) <= t(`partition ${n}: processing from offset`) ?
      t(`partition ${n}: processing from offset`) - t(`partition ${n} assigned`) : NaN);
  }

  // b alone from here, on models half of which it took over.
  await edit(clients, PHASE_MS);
  const models = [...new Set(clients.map((cl) => cl.model))];
  const snapshots = await h.converge(clients, checker, models);
  await run.stopProcessor(b);
  await replies.consumer.disconnect();
  const f = await h.verify(kafka, clients, snapshots);
  console.log(
    `standby: ${clients.length} proxies on ${MODELS} models, ${f.flushes} flushes answered (${f.retries} resent); ` +
      `b handed partitions ${[...aParts]} to a, which wrote ${aRecords} change records there, all applied by b's standby ` +
      `(${applied} in all); a killed, b's takeover replayed none and served them ${timings.map((ms) => `${ms} ms`).join(', ')} ` +
      'after their assignment; every proxy, snapshot and flushout Master agree'
  );
  await admin.disconnect();
  await producer.disconnect();
}

h.runMain('standby', main);
