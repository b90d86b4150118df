#!/usr/bin/env node
// An interrupted first catch-up starts again as new. After `repartition`, a quiet model
// lives in the new snapshots topic alone, while the new changes topic fills with
// records of a model created after the move (from its start: no gap, no retention, so
// nothing makes catching up read the snapshots first). A new instance is killed
// (failpoint catch-up:1100) after applying more than 1000 of them, past an intermediate
// commit. Restarted on the same state directory, it must still install the quiet
// model: a store that had recorded its changes position would count as caught up
// before, skip the snapshots and serve the quiet model empty.
'use strict';

const assert = require('assert');
const { encode, decode } = require('@msgpack/msgpack');
const h = require('./harness.js');

const SMALL = 1300;

async function main(run) {
  const bootstrap = await run.startBroker(1, ['--extra-topics', 'v2.flushes:1,v2.changes:1,v2.snapshots:1']);
  const kafka = h.connect(bootstrap, 'first-catch-up-test');
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const admin = kafka.admin();
  await admin.connect();
  const sweep = ['--snapshot-topic-interval-ms', '1000'];

  const replies = new Map();
  const consumer = kafka.consumer({ groupId: `fcu-replies-${process.pid}`, maxWaitTimeInMs: 20 });
  await consumer.connect();
  await consumer.subscribe({ topic: 'flushout.replies', fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => { const r = decode(message.value); replies.set(`${r.client}/${r.seq}`, r); } });
  let seq = 0;
  const flush = (model, from, props) => ({
    key: model,
    value: Buffer.from(encode({ type: 'flush', client: 'tester', seq: ++seq, from,
      completions: [{ command: { action: 'create', path: ['items'], parentDefault: {}, props } }] })),
  });
  const awaitReply = async (s) => {
    const until = Date.now() + 60000;
    while (!replies.has(`tester/${s}`)) {
      if (Date.now() > until) throw new Error(`no reply to seq ${s}`);
      await h.sleep(10);
    }
    return replies.get(`tester/${s}`);
  };
  const snapshot = async (model, topic) => {
    await producer.send({ topic, messages: [{ key: model, value: Buffer.from(encode({ type: 'snapshot', client: 'tester', seq: ++seq })) }] });
    return (await awaitReply(seq)).snapshot;
  };

  const NEW = ['--flushes-topic', 'v2.flushes', '--changes-topic', 'v2.changes', '--snapshots-topic', 'v2.snapshots'];
  const a = run.startProcessor('a', bootstrap, {}, sweep);
  for (let i = 0; i < 3; i++) {
    await producer.send({ topic: 'flushout.flushes', messages: [flush('quiet', i, { i })] });
    await awaitReply(seq);
  }
  const quiet = await snapshot('quiet', 'flushout.flushes');
  await run.stopProcessor(a);
  const moved = await run.runTool('repartition', ['repartition', '--bootstrap-servers', bootstrap,
    '--state-dir', `${run.tmp}/scratch`, '--ids', 'sequential', '--to-flushes-topic', 'v2.flushes', '--to-changes-topic', 'v2.changes',
    '--to-snapshots-topic', 'v2.snapshots']);
  assert.strictEqual(moved.code, 0, `repartition (see ${moved.logFile})`);

  // The new layout: a model created after the move, many small change records.
  const b = run.startProcessor('b', bootstrap, {}, [...sweep, ...NEW]);
  const messages = [];
  for (let i = 0; i < SMALL; i++) messages.push(flush('small', i, { i }));
  await producer.send({ topic: 'v2.flushes', messages });
  await awaitReply(seq);
  await run.stopProcessor(b);
  const [changes] = await admin.fetchTopicOffsets('v2.changes');
  assert.strictEqual(Number(changes.low), 0);
  assert.ok(Number(changes.high) > 1100, 'enough change records for the failpoint');

  const c = run.startProcessor('c', bootstrap, { FLUSHOUT_FAILPOINT: 'catch-up:1100' }, [...sweep, ...NEW]);
  const died = await c.exited;
  assert.notStrictEqual(died.code, 0, 'the failpoint killed the first catch-up');
  const again = run.startProcessor('c', bootstrap, {}, [...sweep, ...NEW]);
  const got = await snapshot('quiet', 'v2.flushes');
  assert.strictEqual(h.canonical(got), h.canonical(quiet), 'the quiet model after the interrupted catch-up');
  assert.strictEqual((await snapshot('small', 'v2.flushes')).commandCount, SMALL);
  await run.stopProcessor(again);
  await consumer.disconnect();
  await admin.disconnect();
  await producer.disconnect();
  console.log(`first-catch-up: interrupted after 1100 of ${changes.high} change records; ` +
    'restarted, the quiet model came back from its snapshot record');
}

h.runMain('first-catch-up', main);
