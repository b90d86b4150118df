#!/usr/bin/env node
// End to end with real clients: real flushout Proxy objects edit models concurrently,
// their flushes and replies carried by kafkajs, while processor instances in one
// consumer group go from one to three and back to one (partitions handed over
// through the changes topic). Afterwards (harness.js verify()):
//   - every proxy's document equals its model's snapshot from the processor;
//   - the snapshot equals flushout@1.1.1's Master fed the same per-model flushes as
//     they stand in the flushes topic (resent flushes, same client and seq, count once);
//   - the changes topic holds each command exactly once, as one chain per model, and
//     any change record written twice is byte-for-byte the same;
//   - every flush was answered, and every instance exited cleanly on SIGTERM;
//   - the instance left at the end caught partitions up from the changes topic.
'use strict';

const assert = require('assert');
const fs = require('fs');
const h = require('./harness.js');

const MODELS = Number(h.option('--models', 6));
const CLIENTS = Number(h.option('--clients', 3)); // proxies per model
const PHASE_MS = Number(h.option('--phase-ms', 4000));
const SEED = Number(h.option('--seed', 1));

async function main(run) {
  const bootstrap = await run.startBroker(6);
  h.log(`broker at ${bootstrap}`);
  const kafka = h.connect(bootstrap, 'scaling-test');
  const { producer, clients, checker, replies } = await h.startEditors(kafka, { models: MODELS, clientsPerModel: CLIENTS, seed: SEED });

  const a = run.startProcessor('a', bootstrap);
  let editing = true;
  const runs = clients.map((c) => c.run(() => editing));
  await h.sleep(PHASE_MS + 4000); // the first join waits out the broker's rebalance delay
  const b = run.startProcessor('b', bootstrap);
  const c = run.startProcessor('c', bootstrap);
  await h.sleep(PHASE_MS + 6000);
  await Promise.all([run.stopProcessor(a), run.stopProcessor(b)]);
  await h.sleep(PHASE_MS);
  editing = false;
  await Promise.all(runs);

  const models = [...new Set(clients.map((cl) => cl.model))];
  const snapshots = await h.converge(clients, checker, models);
  await run.stopProcessor(c);
  await replies.consumer.disconnect();
  const f = await h.verify(kafka, clients, snapshots);
  assert.ok(/caught up/.test(fs.readFileSync(c.logFile, 'utf8')), 'instance c caught partitions up from the changes topic');
  console.log(
    `scaling: ${clients.length} proxies on ${MODELS} models, ${f.flushes} flushes answered (${f.retries} resent), ` +
      `${f.changes} change records (${f.rewritten} written twice, identical); ` +
      'instances 1 -> 3 -> 1: every proxy, snapshot and flushout Master agree'
  );
  await producer.disconnect();
}

h.runMain('scaling', main);
