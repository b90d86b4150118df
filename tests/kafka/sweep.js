#!/usr/bin/env node
// The snapshot sweep (--snapshot-topic-interval-ms) makes a finite retention of the
// changes topic safe for quiet models. Quiet models make a few commands (far fewer
// than --snapshot-topic-every, so no count-based snapshot record); the sweep publishes
// one snapshot record per changed model and none for unchanged ones. Then a busy model
// writes enough change records that the broker deletes the partition's oldest ones,
// the quiet models' included (the embedded broker keeps about 5 MiB per partition,
// as retention would). A new instance with an empty state directory must still
// restore every quiet model exactly: from its swept snapshot record.
'use strict';

const assert = require('assert');
const path = require('path');
const { encode, decode } = require('@msgpack/msgpack');
const h = require('./harness.js');

const QUIET = 5;
const INTERVAL_MS = 1500;

async function main(run) {
  const bootstrap = await run.startBroker(1);
  const kafka = h.connect(bootstrap, 'sweep-test');
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const admin = kafka.admin();
  await admin.connect();
  const sweepArgs = ['--snapshot-topic-interval-ms', String(INTERVAL_MS)];

  // Replies by client and seq.
  const replies = new Map();
  const consumer = kafka.consumer({ groupId: `sweep-replies-${process.pid}`, maxWaitTimeInMs: 20 });
  await consumer.connect();
  await consumer.subscribe({ topic: 'flushout.replies', fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => { const r = decode(message.value); replies.set(`${r.client}/${r.seq}`, r); } });
  let seq = 0;
  const request = async (model, body) => {
    const req = { client: 'tester', seq: ++seq, ...body };
    await producer.send({ topic: 'flushout.flushes', messages: [{ key: model, value: Buffer.from(encode(req)) }] });
    const until = Date.now() + 20000;
    while (!replies.has(`tester/${req.seq}`)) {
      if (Date.now() > until) throw new Error(`no reply to ${model} seq ${req.seq}`);
      await h.sleep(10);
    }
    const r = replies.get(`tester/${req.seq}`);
    assert.ok(r.type !== 'error', JSON.stringify(r));
    return r;
  };
  const snapshot = async (model) => (await request(model, { type: 'snapshot' })).snapshot;
  const create = (model, from, props) =>
    request(model, { type: 'flush', from, completions: [{ command: { action: 'create', path: ['items'], parentDefault: {}, props } }] });
  const snapshotRecords = async () => {
    const counts = new Map();
    for (const rec of await h.readAll(kafka, 'flushout.snapshots')) {
      const v = decode(rec.value);
      counts.set(rec.key, [...(counts.get(rec.key) || []), v.commandCount]);
    }
    return counts;
  };

  const a = run.startProcessor('a', bootstrap, {}, sweepArgs);
  for (let q = 0; q < QUIET; q++) for (let i = 0; i < 3; i++) await create(`quiet-${q}`, i, { q, i });
  const before = new Map();
  for (let q = 0; q < QUIET; q++) before.set(`quiet-${q}`, await snapshot(`quiet-${q}`));

  // Each changed model's latest record is at its count, from the sweep alone (a pass
  // may have caught a model between two of its creates: then it has two records).
  await h.sleep(INTERVAL_MS * 2.5);
  const first = await snapshotRecords();
  for (let q = 0; q < QUIET; q++) {
    const counts = first.get(`quiet-${q}`) || [];
    assert.strictEqual(counts[counts.length - 1], 3, `quiet-${q} swept at count 3: ${counts}`);
  }
  // Unchanged models are not published again; a changed one is, once.
  await create('quiet-0', 3, { again: true });
  before.set('quiet-0', await snapshot('quiet-0'));
  await h.sleep(INTERVAL_MS * 2.5);
  const second = await snapshotRecords();
  assert.deepStrictEqual(second.get('quiet-0'), [...first.get('quiet-0'), 4], 'quiet-0 published again after its change');
  for (let q = 1; q < QUIET; q++)
    assert.deepStrictEqual(second.get(`quiet-${q}`), first.get(`quiet-${q}`), `quiet-${q} not published again`);

  // A busy model pushes the quiet models' change records out of the changes topic:
  // each flush creates a 256 KB item and the next deletes it (a small document, large
  // change records).
  const big = 'x'.repeat(256 * 1024);
  let count = (await snapshot('busy')).commandCount;
  for (let i = 0; i < 30; i++) {
    const r = await create('busy', count, { big });
    const id = Object.keys((await snapshot('busy')).document.items)[0];
    await request('busy', { type: 'flush', from: r.applied.from + 1, completions: [{ command: { action: 'delete', path: ['items', id] } }] });
    count = r.applied.from + 2;
  }
  const [changes] = await admin.fetchTopicOffsets('flushout.changes');
  h.log(`changes partition 0: offsets ${changes.low}..${changes.high}`);
  assert.ok(Number(changes.low) > QUIET * 3 + 1, `the oldest change records were deleted (low ${changes.low})`);
  await run.stopProcessor(a);

  // Offline, `rebuild --from changes` must find the quiet models too (it restores from
  // the snapshots topic when the changes do not reach back). With the processors'
  // settings (the harness gives them --ids sequential): records written under other
  // settings are refused.
  const scratch = path.join(run.tmp, 'rebuilt');
  const rebuilt = await run.runTool('rebuild', ['rebuild', '--bootstrap-servers', bootstrap, '--state-dir', scratch, '--from', 'changes',
    '--ids', 'sequential']);
  assert.strictEqual(rebuilt.code, 0, `rebuild exits 0 (see ${rebuilt.logFile})`);
  for (const [model, snap] of before) {
    const shown = await run.runTool(`inspect-${model}`, ['inspect', '--state-dir', `${scratch}/partition-0`, '--model', model]);
    assert.strictEqual(shown.code, 0, `inspect ${model} (see ${shown.logFile})`);
    const got = JSON.parse(shown.stdout);
    assert.strictEqual(got.commandCount, snap.commandCount, `${model} command count, rebuilt`);
    assert.strictEqual(h.canonical(got.document), h.canonical(snap.document), `${model} document, rebuilt`);
  }

  // A new instance, empty state: restores the quiet models from their swept records.
  const b = run.startProcessor('b', bootstrap, {}, sweepArgs);
  for (const [model, snap] of before) {
    const got = await snapshot(model);
    assert.strictEqual(got.commandCount, snap.commandCount, `${model} command count after the restore`);
    assert.strictEqual(h.canonical(got.document), h.canonical(snap.document), `${model} document after the restore`);
  }
  await run.stopProcessor(b);
  await consumer.disconnect();
  await admin.disconnect();
  await producer.disconnect();
  console.log(
    `sweep: ${QUIET} quiet models swept once each (one again after a change), their change records deleted ` +
      `(changes start at ${changes.low}); a new instance restored all of them exactly`
  );
}

h.runMain('sweep', main);
