#!/usr/bin/env node
// SIGTERM stops the processor when the whole cluster went away a moment before, with
// an offset not yet committed: the revokes give up on deliveries and commits, and the
// process exits. (A hang in librdkafka 2.0's consumer close, seen once in ab.sh when
// the broker and the processor were stopped together under load, did not reproduce
// here; processor/README.md, "Stopping".)
'use strict';

const assert = require('assert');
const { encode, decode } = require('@msgpack/msgpack');
const h = require('./harness.js');

async function main(run) {
  const bootstrap = await run.startBroker(2);
  const kafka = h.connect(bootstrap, 'stop-test');
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const replies = [];
  const consumer = kafka.consumer({ groupId: `stop-replies-${process.pid}`, maxWaitTimeInMs: 20 });
  await consumer.connect();
  await consumer.subscribe({ topic: 'flushout.replies', fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => { replies.push(decode(message.value)); } });

  const p = run.startProcessor('a', bootstrap);
  const flush = (seq) => producer.send({ topic: 'flushout.flushes', messages: [{ key: 'list', value: Buffer.from(encode({
    type: 'flush', client: 'c', seq, from: seq - 1,
    completions: [{ command: { action: 'create', path: ['items'], parentDefault: {}, props: { t: seq } } }] })) }] });
  const reply = async (seq) => {
    for (const until = Date.now() + 60000; !replies.some((r) => r.seq === seq);) {
      if (Date.now() > until) throw new Error(`no reply to flush ${seq}`);
      await h.sleep(5);
    }
  };
  await flush(1);
  await reply(1);
  // A second flush answered just now: its offset is not committed yet (every second),
  // which is what the consumer's close then waits to do.
  await flush(2);
  await reply(2);

  // The broker goes, and the processor is told to stop.
  run.children[0].kill('SIGKILL');
  const started = Date.now();
  p.child.kill('SIGTERM');
  const timer = h.sleep(120000).then(() => 'timeout');
  const outcome = await Promise.race([p.exited, timer]);
  assert.notStrictEqual(outcome, 'timeout', 'the processor stops within 120 s of SIGTERM without a cluster');
  h.log(`stopped in ${((Date.now() - started) / 1000).toFixed(1)} s: code ${outcome.code}, signal ${outcome.signal}`);
  assert.strictEqual(outcome.signal, null, 'it exits, it is not killed');
}

h.runMain('stop-without-cluster', main);
