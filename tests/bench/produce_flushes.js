#!/usr/bin/env node
// tests/bench/produce_flushes.js - fills the flushes topic with N flushes for the
// restore benchmark: M models, each flush two commands (a create and an update of it)
// from the model's current count, so that every flush applies as sent.
//
//   node produce_flushes.js BOOTSTRAP N M [FIRST]
//
// FIRST (0): produce flushes FIRST..N-1 only, as the same run would have made them
// (counts and seqs go on from the flushes before FIRST): the rest of an earlier call
// with N = FIRST.
'use strict';
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');
const { encode } = require('@msgpack/msgpack');

async function main() {
  const [bootstrap, n, m] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
  const first = Number(process.argv[5] || 0);
  const kafka = new Kafka({ clientId: 'bench-producer', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const counts = new Array(m).fill(0);
  const batch = [];
  for (let i = 0; i < n; i++) {
    const model = i % m;
    const from = counts[model];
    counts[model] += 2;
    const id = `i${from}`;
    if (i < first) continue;
    batch.push({
      key: `model-${model}`,
      value: Buffer.from(encode({
        type: 'flush', client: `c${model % 7}`, seq: i + 1, from,
        completions: [
          { command: { action: 'create', path: ['items'], parentDefault: {}, props: { title: `item ${i}`, done: false } }, createdId: id },
          { command: { action: 'update', path: ['items', id], props: { done: i % 3 === 0 } } },
        ],
      })),
    });
    if (batch.length === 2000 || i === n - 1) {
      await producer.send({ topic: 'flushout.flushes', messages: batch.splice(0), compression: CompressionTypes.None });
    }
  }
  await producer.disconnect();
}
main().catch((e) => { console.error(e); process.exit(1); });
