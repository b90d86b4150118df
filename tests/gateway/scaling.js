#!/usr/bin/env node
// Gateways joining and leaving under load (GATEWAY.md, "Replies and changes at
// scale"): flushout Proxies edit through two gateways of one group; a third joins
// (the replies topic's partitions move: a reply in flight to a moved partition is
// dropped, its request ends in 503 timeout and is sent again with the same seq), then
// one of the first two stops on SIGTERM while requests are in flight (its clients move
// to the others and send again). Afterwards every proxy holds the snapshot, which
// equals flushout's Master fed the flushes topic with each (model, client, seq) once:
// whatever was resent was applied exactly once.
'use strict';

const { decode } = require('@msgpack/msgpack');
const { Master } = require('flushout');
const h = require('./harness.js');

const { assert } = h;
const MODELS = 3;
const EDITORS = 4;
const PHASE_MS = Number(h.option('--phase-ms', 2500));

async function main(run) {
  const keys = h.makeKeys(run.tmp);
  const bootstrap = await run.startBroker(4);
  run.startProcessor('processor', bootstrap);
  const auth = ['--jwt-key-file', keys.files.HS256];
  // A short timeout: requests whose replies a rebalance drops are sent again sooner.
  const gwArgs = ['--gateway-group', 'gateways-scaling', '--rate-limit', '0', '--timeout-ms', '2000'];
  const gateways = await Promise.all(['gw-a', 'gw-b'].map((n) => run.startGateway(n, bootstrap, auth, gwArgs)));
  for (const gw of gateways)
    await h.waitUntil(`${gw.name} answering`, async () => (await h.httpRequest(gw, 'GET', h.modelPath('warm-up'), { token: keys.token('HS256', 'w'), timeoutMs: 10000 })).status === 200, 60000, 200);
  const checks = new h.Checks();

  const editors = [];
  for (let m = 0; m < MODELS; m++) {
    for (let i = 0; i < EDITORS; i++) {
      const gw = gateways[(m + i) % 2];
      const user = `u-${m}-${i}`;
      const token = keys.token('HS256', user);
      const transport = i % 2 === 0 ? new h.HttpTransport(gw, token, gateways)
        : new h.WsTransport(await h.WsConn.open(gw, { token }), { gw, token, gateways });
      const e = new h.Editor(`c-${i}`, `scaled-${m}`, 7000 + editors.length, transport, gw.name);
      e.failover = true;
      e.user = user;
      editors.push(e);
    }
  }
  let editing = true;
  const runs = editors.map((e) => e.run(() => editing));
  await h.sleep(PHASE_MS);
  gateways.push(await run.startGateway('gw-c', bootstrap, auth, gwArgs, { ready: false }));
  h.log('gw-c started (joining the group)');
  await h.sleep(PHASE_MS + 2000);
  const leaving = gateways[0];
  leaving.stopped = true; // clients move away from it from now on
  h.log('gw-a stopping');
  await run.stopProcess(leaving);
  await h.sleep(PHASE_MS);
  editing = false;
  await Promise.all(runs);
  for (const e of editors) if (e.proxy.hasUnflushedCommands()) await e.flush();
  for (const e of editors) await e.flush();
  const sum = (f) => editors.reduce((n, e) => n + f(e), 0);
  h.log(`${sum((e) => e.flushes)} flushes answered; ${sum((e) => e.timeouts)} timeouts, ${sum((e) => e.unavailable)} unavailable, ` +
    `${sum((e) => e.failovers)} moves to another gateway`);

  // When the group had no partition to give: the spans of 503 unavailable answers.
  const times = editors.flatMap((e) => e.unavailableAt).sort((a, b) => a - b);
  const spans = [];
  for (const t of times) {
    if (spans.length && t - spans[spans.length - 1][1] < 1000) spans[spans.length - 1][1] = t;
    else spans.push([t, t]);
  }
  h.log(`503 unavailable answered during ${spans.map(([a, b]) => `${(a / 1000).toFixed(1)}-${(b / 1000).toFixed(1)} s`).join(', ') || 'never'}`);

  const snapshots = new Map();
  await checks.check('every proxy converges to the snapshot, through whichever gateway it ended on', async () => {
    assert.ok(editors.filter((e) => e.transport.gw === leaving).length === 0, 'nobody is left on the stopped gateway');
    assert.ok(sum((e) => e.failovers) > 0, 'the clients of the stopped gateway moved');
    for (let m = 0; m < MODELS; m++) {
      const model = `scaled-${m}`;
      const views = [];
      for (const gw of gateways.filter((g) => !g.stopped)) {
        // The group may still be settling after the leave: 503 unavailable until then.
        const r = await h.waitUntil(`${gw.name} serving ${model}`, async () => {
          const got = await h.httpRequest(gw, 'GET', h.modelPath(model), { token: keys.token('HS256', 'reader') });
          if (got.status === 503 && got.json && got.json.error.code === 'unavailable') return null;
          assert.strictEqual(got.status, 200, got.text);
          return got;
        }, 30000, 100);
        views.push(r.json);
      }
      for (const v of views) assert.strictEqual(h.canonical(v), h.canonical(views[0]), `${model}: one snapshot on every gateway`);
      snapshots.set(model, views[0]);
    }
    for (const e of editors) {
      const snap = snapshots.get(e.model);
      assert.strictEqual(e.proxy.getCommandCount(), snap.commandCount, `${e.user}/${e.name} (${e.transport.kind}, now via ${e.gatewayName})`);
      assert.strictEqual(h.canonical(e.proxy.getDocument()), h.canonical(snap.document), `${e.user}/${e.name}: document`);
    }
  });

  await checks.check("each flush applied exactly once: the snapshot equals flushout's Master fed the flushes topic, each (model, client, seq) once", async () => {
    const records = await h.readAll(h.connect(bootstrap), 'flushout.flushes');
    const masters = new Map();
    const seen = new Set();
    let resent = 0;
    for (const rec of records) {
      const req = decode(rec.value);
      if (req.type !== 'flush' || !snapshots.has(rec.key)) continue;
      const id = `${rec.key}/${req.client}/${req.seq}`;
      if (seen.has(id)) {
        resent++;
        continue;
      }
      seen.add(id);
      if (!masters.has(rec.key)) masters.set(rec.key, new Master({ commandCount: 0, document: {} }, { sequentialIds: true }));
      await masters.get(rec.key).apply({ from: req.from, completions: req.completions });
    }
    for (const [model, snap] of snapshots) {
      const ref = masters.get(model).getSnapshot();
      assert.strictEqual(snap.commandCount, ref.commandCount, `${model}: command count vs flushout's Master`);
      assert.strictEqual(h.canonical(snap.document), h.canonical(ref.document), `${model}: document vs flushout's Master`);
    }
    h.log(`${resent} flushes were on Kafka more than once`);
  });

  for (const e of editors) e.transport.close();
  await checks.check('the remaining gateways exit 0 on SIGTERM', async () => {
    await Promise.all(gateways.filter((g) => !g.stopped).map((g) => run.stopProcess(g)));
  });
  checks.finish('gateway scaling');
}

h.runMain('gateway-scaling', main);
