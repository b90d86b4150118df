#!/usr/bin/env node
// Changing the partition count under load (deploy/README.md, "Repartitioning"): real
// flushout proxies edit models while a processor serves topics of 4 partitions; the
// processor is stopped, the proxies' gateway switches to new topics of 8 partitions,
// `flushout-processor repartition` moves every model (and the flushes left
// unprocessed), and a processor started on the new topics with an empty state
// directory carries on. Checked:
//   - repartition exits 0, having moved every model and forwarded flushes;
//   - a processor started on the old state directory with the new topics refuses to
//     run, naming the procedure;
//   - every proxy's document equals its model's snapshot from the new processor, which
//     equals flushout@1.1.1's Master fed the flushes each layout applied, in order;
//   - the change records of both layouts form one chain per model, each command once;
//   - a quiet model, untouched since the move, is still there for a later instance with
//     an empty state directory, once its new partition has change records of a model
//     created after the move (none that would show a gap and so force a restore).
'use strict';

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const h = require('./harness.js');
// kafkajs' default partitioner, as the proxies' producer uses it.
const murmur2 = require('kafkajs/src/producer/partitioners/default/murmur2');

const MODELS = Number(h.option('--models', 12));
const CLIENTS = Number(h.option('--clients', 2)); // proxies per model
const PHASE_MS = Number(h.option('--phase-ms', 4000));
const SEED = Number(h.option('--seed', 7));

const OLD = { flushes: 'flushout.flushes', changes: 'flushout.changes', snapshots: 'flushout.snapshots' };
const NEW = { flushes: 'v2.flushes', changes: 'v2.changes', snapshots: 'v2.snapshots' };
const NEW_TOPIC_ARGS = ['--flushes-topic', NEW.flushes, '--changes-topic', NEW.changes, '--snapshots-topic', NEW.snapshots];
// Small, so that the old layout's models are in both its snapshots and changes topics.
const SNAPSHOT_EVERY = ['--snapshot-topic-every', '7'];

async function main(run) {
  const bootstrap = await run.startBroker(4, ['--extra-topics', `${NEW.flushes}:8,${NEW.changes}:8,${NEW.snapshots}:8`]);
  h.log(`broker at ${bootstrap}`);
  const kafka = h.connect(bootstrap, 'repartition-test');
  const { clients, checker, replies } = await h.startEditors(kafka, { models: MODELS, clientsPerModel: CLIENTS, seed: SEED });

  const a = run.startProcessor('a', bootstrap, {}, SNAPSHOT_EVERY);
  let editing = true;
  const runs = clients.map((c) => c.run(() => editing));
  await h.sleep(PHASE_MS + 4000); // the first join waits out the broker's rebalance delay
  // A quiet model: edited once before the move, never after, in a new partition that
  // no edited model moves to; a newcomer, created after the move, shares it.
  const newPartition = (key) => (murmur2(key) & 0x7fffffff) % 8;
  const busy = new Set(clients.map((cl) => newPartition(cl.model)));
  let quiet = 'quiet-0';
  for (let i = 1; busy.has(newPartition(quiet)) && i < 1000; i++) quiet = `quiet-${i}`;
  assert.ok(!busy.has(newPartition(quiet)), 'a new partition without edited models (fewer --models)');
  let newcomer = 'newcomer-0';
  for (let i = 1; newPartition(newcomer) !== newPartition(quiet); i++) newcomer = `newcomer-${i}`;
  checker.model = quiet;
  const quietFlush = await checker.request({ type: 'flush', client: checker.name, seq: ++checker.seq, from: 0,
    completions: [1, 2, 3].map((n) => ({ command: { action: 'create', path: ['items'], parentDefault: {}, props: { n } } })) });
  assert.strictEqual(quietFlush.type, 'flushResult', JSON.stringify(quietFlush));
  const quietBefore = (await checker.request({ type: 'snapshot', client: checker.name, seq: ++checker.seq })).snapshot;
  assert.strictEqual(quietBefore.commandCount, 3);

  // 1. Stop the old layout's processor while the proxies keep editing; flushes sent
  //    now stay unprocessed in the old topic. 2. The gateway switches topics.
  await run.stopProcessor(a);
  await h.sleep(500);
  for (const c of [...clients, checker]) c.topic = NEW.flushes;
  while (clients.some((c) => c.sending > 0)) await h.sleep(20);

  // 3. Move the models.
  const moved = await run.runTool('repartition', ['repartition', '--bootstrap-servers', bootstrap,
    '--state-dir', path.join(run.tmp, 'scratch'), '--ids', 'sequential',
    '--to-flushes-topic', NEW.flushes, '--to-changes-topic', NEW.changes, '--to-snapshots-topic', NEW.snapshots]);
  assert.strictEqual(moved.code, 0, `repartition exits 0 (see ${moved.logFile})`);
  const done = /done: (\d+) models moved to \S+ \(8 partitions\), (\d+) flushes forwarded/.exec(moved.log);
  assert.ok(done, `repartition reports what it moved (see ${moved.logFile})`);
  assert.strictEqual(Number(done[1]), MODELS + 1, 'every model moved (the quiet one too)');
  assert.ok(Number(done[2]) > 0, 'the flushes sent while no processor ran were forwarded');
  h.log(`repartition: ${done[1]} models moved, ${done[2]} flushes forwarded`);

  // The old state directory on the new topics: refused before joining the group.
  const refused = await run.runTool('refused', ['run', '--bootstrap-servers', bootstrap,
    '--state-dir', path.join(run.tmp, 'a'), '--ids', 'sequential', ...NEW_TOPIC_ARGS, ...SNAPSHOT_EVERY]);
  assert.strictEqual(refused.code, 1, `a processor on the old state and the new topics exits 1 (see ${refused.logFile})`);
  assert.ok(/built for 4 partitions of v2\.flushes, which has 8: .*flushout-processor repartition/.test(refused.log),
    `the refusal names the layouts and the procedure (see ${refused.logFile})`);

  // 4. The new layout's processor, empty state: restores the models, then processes.
  const b = run.startProcessor('b', bootstrap, {}, [...NEW_TOPIC_ARGS, ...SNAPSHOT_EVERY]);
  checker.model = newcomer;
  const created = await checker.request({ type: 'flush', client: checker.name, seq: ++checker.seq, from: 0,
    completions: [{ command: { action: 'create', path: ['items'], parentDefault: {}, props: { n: 0 } } }] });
  assert.strictEqual(created.type, 'flushResult', JSON.stringify(created));
  await h.sleep(PHASE_MS + 4000);
  editing = false;
  await Promise.all(runs);

  const models = [...new Set(clients.map((cl) => cl.model))];
  const snapshots = await h.converge(clients, checker, models);
  await run.stopProcessor(b);
  const restored = /(\d+) snapshot records installed/g;
  let installed = 0;
  for (const m of fs.readFileSync(b.logFile, 'utf8').matchAll(restored)) installed += Number(m[1]);
  assert.strictEqual(installed, MODELS + 1, 'the new processor restored every model from the new snapshots topic');

  // 5. Later, another empty state directory: the quiet model's changes partition has the
  //    newcomer's records, the quiet model is in the snapshots topic alone.
  const c = run.startProcessor('c', bootstrap, {}, [...NEW_TOPIC_ARGS, ...SNAPSHOT_EVERY]);
  checker.model = quiet;
  const quietAfter = (await checker.request({ type: 'snapshot', client: checker.name, seq: ++checker.seq })).snapshot;
  assert.strictEqual(h.canonical(quietAfter), h.canonical(quietBefore), 'the quiet model survives a later restore');
  checker.model = 'model-0';
  const busyAfter = (await checker.request({ type: 'snapshot', client: checker.name, seq: ++checker.seq })).snapshot;
  assert.strictEqual(h.canonical(busyAfter), h.canonical(snapshots.get('model-0')), 'and so does an edited one');
  await run.stopProcessor(c);
  await replies.consumer.disconnect();
  const f = await h.verify(kafka, clients, snapshots, [OLD, NEW]);
  console.log(
    `repartition: ${clients.length} proxies on ${MODELS} models moved from 4 to 8 partitions under load ` +
      `(${done[2]} unprocessed flushes carried over); ${f.flushes} flushes answered (${f.retries} resent), ` +
      `${f.changes} change records in both layouts; every proxy, snapshot and flushout Master agree`
  );
}

h.runMain('repartition', main);
