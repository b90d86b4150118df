#!/usr/bin/env node
// tests/faults/crashes.js - kill -9 under load. Two processor instances serve six
// models edited by twelve real flushout proxies (kafkajs), while instances die again
// and again: killed with SIGKILL at random moments, or dying on purpose right after a
// step's store commit and before its produce (FLUSHOUT_FAILPOINT=after-commit:N), or
// while catching a partition up (catch-up:N). Each comes back on the same state
// directory. Clients resend unanswered flushes with the same seq. Afterwards, as
// Kafka's EosTestDriver checks (harness.js verify()): every flush applied exactly once
// (documents and counts equal flushout's Master fed each distinct flush once), every
// flush answered, every command once in the changes topic.
//
//   node tests/faults/crashes.js [--bin PATH] [--kills N (20)] [--seed S]
'use strict';

const assert = require('assert');
const { Rng } = require('../common/rng.js');
const h = require('../kafka/harness.js');

const KILLS = Number(h.option('--kills', process.env.FAULT_KILLS || 20));
const SEED = Number(h.option('--seed', 7));

async function main(run) {
  const rng = new Rng(SEED);
  const bootstrap = await run.startBroker(4);
  const kafka = h.connect(bootstrap, 'crash-test');
  const { producer, clients, checker, replies } = await h.startEditors(kafka, { models: 6, clientsPerModel: 2, seed: SEED, replyTimeoutMs: 8000 });

  // Instances by name; one that dies (killed, or at its failpoint) is restarted by the
  // loop below.
  const instances = new Map();
  const crashes = { sigkill: 0, 'after-commit': 0, 'catch-up': 0 };
  let starts = 0;
  let unexpected = null; // an instance that died of anything but our kills
  const start = async (name, failpoint) => {
    const roll = starts++ % 3; /* each kind of death in turn */
    const env = failpoint !== undefined ? (failpoint ? { FLUSHOUT_FAILPOINT: failpoint } : {})
      : roll === 0 ? { FLUSHOUT_FAILPOINT: `after-commit:${rng.int(1, 8)}` }
      : roll === 1 ? { FLUSHOUT_FAILPOINT: `catch-up:${rng.int(1, 3)}` } : {};
    // To die while catching up, it must have something to catch up: it comes back only
    // after the other instance took its partitions over and moved them on.
    if (failpoint === undefined && roll === 1) await h.sleep(9000);
    const p = run.startProcessor(name, bootstrap, env);
    p.failpoint = env.FLUSHOUT_FAILPOINT;
    p.exited.then(({ code, signal }) => {
      if (signal === 'SIGKILL') crashes.sigkill++;
      else if (code === 137 && p.failpoint) crashes[p.failpoint.split(':')[0]]++;
      else if (!p.stopping) unexpected = `${name} exited with ${code} (${signal}) on its own: see ${p.logFile}`;
    });
    instances.set(name, p);
  };
  // First a alone, with no failpoint; then b, which dies catching up the partitions it
  // is given (a has moved them on by then).
  await start('a', '');
  starts = 0;
  let editing = true;
  const runs = clients.map((c) => c.run(() => editing));
  await h.sleep(8000); // the first join waits out the broker's rebalance delay
  await start('b', 'catch-up:1');
  const total = () => crashes.sigkill + crashes['after-commit'] + crashes['catch-up'];
  while (total() < KILLS) {
    if (unexpected) throw new Error(unexpected);
    await h.sleep(rng.int(1500, 3500));
    for (const [name, p] of instances) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) {
        h.log(`${name} died at its failpoint ${p.failpoint}`);
        await start(name);
      }
    }
    const name = rng.pick(['a', 'b']);
    const p = instances.get(name);
    const alive = () => p.child.exitCode === null && p.child.signalCode === null;
    // An instance with a failpoint armed gets a while to reach it; then, as any other,
    // it is killed.
    for (let waited = 0; p.failpoint && alive() && waited < 6000; waited += 200) await h.sleep(200);
    if (alive()) {
      p.child.kill('SIGKILL');
      await p.exited;
      h.log(`killed ${name} (crashes so far: ${JSON.stringify(crashes)})`);
    } else {
      await p.exited;
      h.log(`${name} died at its failpoint ${p.failpoint} (crashes so far: ${JSON.stringify(crashes)})`);
    }
    await h.sleep(rng.int(200, 1200));
    await start(name);
  }
  // The end: both instances up without failpoints, until everything is answered.
  for (const [name, p] of instances) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill('SIGKILL');
      await p.exited;
    }
    instances.set(name, run.startProcessor(name, bootstrap));
  }
  editing = false;
  await Promise.all(runs);
  const models = [...new Set(clients.map((cl) => cl.model))];
  const snapshots = await h.converge(clients, checker, models);
  if (unexpected) throw new Error(unexpected);
  for (const p of instances.values()) await run.stopProcessor(p);
  await replies.consumer.disconnect();

  const f = await h.verify(kafka, clients, snapshots);
  assert.ok(total() >= KILLS, `${total()} crashes`);
  console.log(
    `crashes: ${total()} crashes (${crashes.sigkill} SIGKILL at random, ${crashes['after-commit']} between store ` +
      `commit and produce, ${crashes['catch-up']} while catching up); ${f.flushes} flushes from 12 proxies, ` +
      `all answered (${f.retries} resent after a timeout); every flush applied exactly once (flushout's Master ` +
      `agrees on all 6 models), ${f.changes} change records (${f.rewritten} written twice, identical), none missing`
  );
  await producer.disconnect();
}

h.runMain('crashes', main);
