#!/usr/bin/env node
// The gateway with real clients: flushout@1.1.1 Proxies edit models concurrently
// through two gateways side by side (one --gateway-group), over HTTP keep-alive and
// over WebSocket, each client with its own user's HS256 token (half of the proxies
// start from the snapshot they fetch, half from an empty model); subscribers listen
// over Server-Sent Events and WebSocket. Checks:
//   - every proxy's document equals the snapshot every gateway serves, which equals
//     flushout's Master fed the flushes as they stand in the flushes topic, and the
//     history replayed from 0 (created IDs collide: each proxy proposes "1", "2", ...);
//   - every subscriber was told of every applied change, in order, and of nothing else;
//   - time travel: GET ?at=N for every N equals the history replayed up to N, over
//     HTTP and WebSocket, on both gateways; at beyond the count is 400 bad_range;
//   - each gateway read only its own replies: the reply partitions its requests named
//     (kafka_replyPartition) are disjoint from the other's, correlation ids unique.
'use strict';

const { decode } = require('@msgpack/msgpack');
const { Master } = require('flushout');
const h = require('./harness.js');

const { assert } = h;
const MODELS = Number(h.option('--models', 3));
const EDITORS = Number(h.option('--editors', 4)); // proxies per model: half HTTP, half WebSocket
const EDIT_MS = Number(h.option('--edit-ms', 3000));
const SEED = Number(h.option('--seed', 1));

async function warmUp(gw, token) {
  await h.waitUntil(`${gw.name} answering snapshots`, async () => {
    const r = await h.httpRequest(gw, 'GET', h.modelPath('warm-up'), { token, timeoutMs: 10000 });
    return r.status === 200;
  }, 60000, 200);
}

// A subscriber on each gateway per model over SSE, and one WebSocket per gateway on
// every model. Each waits for its `subscribed` (GATEWAY.md: from then on every change
// is told); then one probe flush per model, the first change all of them must hear.
async function subscribe(gateways, models, keys) {
  const subs = [];
  for (const gw of gateways) {
    for (const model of models) {
      const sse = await h.openEvents(gw, model, { token: keys.token('HS256', `sse-${gw.name}`) });
      assert.strictEqual(sse.status, 200, `events of ${model} on ${gw.name}: ${sse.text}`);
      assert.match(String(sse.headers['content-type']), /^text\/event-stream/);
      await sse.waitFor(`${model} subscribed on ${gw.name}`, (evs) => evs.some((e) => e.event === 'subscribed' && e.json.model === model));
      subs.push({ name: `sse ${gw.name} ${model}`, model, counts: () => sse.events.filter((e) => e.event === 'changed').map((e) => e.json), close: sse.close });
    }
    const conn = await h.WsConn.open(gw, { token: keys.token('HS256', `ws-sub-${gw.name}`), tokenInQuery: true });
    for (const model of models) {
      await conn.subscribe(model);
      subs.push({ name: `ws ${gw.name} ${model}`, model, counts: () => conn.changed.filter((c) => c.model === model), close: () => conn.close() });
    }
  }
  const probe = new h.HttpTransport(gateways[0], keys.token('HS256', 'prober'));
  const probes = new Map(); // model -> the command count after its probe
  for (const model of models) {
    const { status, reply } = await probe.flush(model, {
      client: 'probe', seq: 1, from: 0,
      completions: [{ command: { action: 'create', path: ['probes'], parentDefault: {}, props: { seq: 1 } }, createdId: 'probe-1' }],
    });
    assert.strictEqual(status, 200, JSON.stringify(reply));
    probes.set(model, reply.applied.from + reply.applied.completions.length);
  }
  probe.close();
  return { subs, probes };
}

async function main(run) {
  const keys = h.makeKeys(run.tmp);
  const bootstrap = await run.startBroker(4);
  h.log(`broker at ${bootstrap}`);
  run.startProcessor('processor', bootstrap);
  const auth = ['--jwt-key-file', keys.files.HS256, '--jwt-alg', 'HS256'];
  const gwArgs = ['--gateway-group', 'gateways-side-by-side', '--rate-limit', '0'];
  const gateways = await Promise.all(['gw-a', 'gw-b'].map((n) => run.startGateway(n, bootstrap, auth, gwArgs)));
  // Both joined: wait until each answers (the group has rebalanced, the processor owns
  // the flushes partitions).
  for (const gw of gateways) await warmUp(gw, keys.token('HS256', 'warm-up'));
  const checks = new h.Checks();

  const models = Array.from({ length: MODELS }, (_, m) => `doc/${m} ü`); // percent-encoded in paths
  const { subs, probes } = await subscribe(gateways, models, keys);
  h.log('subscribers ready');

  // The editors: user u-m-i, client id c-i (the same client ids on every model and for
  // several users: bound to the user, they do not collide), alternating gateways and
  // HTTP / WebSocket.
  const editors = [];
  for (const [m, model] of models.entries()) {
    for (let i = 0; i < EDITORS; i++) {
      const gw = gateways[(m + i) % gateways.length];
      const token = keys.token('HS256', `u-${m}-${i}`);
      const transport = i % 2 === 0 ? new h.HttpTransport(gw, token) : new h.WsTransport(await h.WsConn.open(gw, { token }));
      editors.push(new h.Editor(`c-${i}`, model, SEED * 1000 + editors.length, transport, gw.name));
      editors[editors.length - 1].user = `u-${m}-${i}`;
    }
  }
  // Half start from the snapshot (GET, or a WebSocket snapshot request), half from an
  // empty model at 0 (their first flush gets the whole state in its sync).
  await Promise.all(editors.filter((e, i) => i % 4 < 2).map((e) => e.init()));
  await h.editAndSettle(editors, EDIT_MS);
  h.log(`${editors.reduce((n, e) => n + e.flushes, 0)} flushes answered, ${editors.reduce((n, e) => n + e.timeouts, 0)} timeouts`);

  const snapshots = new Map();
  await checks.check('every proxy converges to the snapshot each gateway serves (HTTP and WebSocket)', async () => {
    for (const model of models) {
      const views = [];
      for (const gw of gateways) {
        const r = await h.httpRequest(gw, 'GET', h.modelPath(model), { token: keys.token('HS256', 'reader') });
        assert.strictEqual(r.status, 200, r.text);
        views.push(r.json);
        const conn = await h.WsConn.open(gw, { token: keys.token('HS256', 'reader') });
        const ws = await conn.snapshot(model);
        conn.close();
        assert.strictEqual(ws.type, 'snapshot', JSON.stringify(ws));
        assert.strictEqual(ws.model, model);
        views.push(ws.snapshot);
      }
      for (const v of views) assert.strictEqual(h.canonical(v), h.canonical(views[0]), `${model}: every gateway and transport serve one snapshot`);
      snapshots.set(model, views[0]);
      const items = Object.keys(views[0].document.items || {});
      assert.ok(items.length > EDITORS, `${model}: ${items.length} items created`);
    }
    const remaps = editors.reduce((n, e) => n + e.remaps, 0);
    assert.ok(remaps > 0, 'colliding created IDs were renamed by the master');
    h.log(`${remaps} created IDs renamed`);
    for (const e of editors) {
      const snap = snapshots.get(e.model);
      assert.strictEqual(e.proxy.getCommandCount(), snap.commandCount, `${e.user}/${e.name} (${e.transport.kind} via ${e.gatewayName}): command count`);
      assert.strictEqual(h.canonical(e.proxy.getDocument()), h.canonical(snap.document), `${e.user}/${e.name}: document`);
    }
  });

  const kafka = h.connect(bootstrap);
  const flushRecords = (await h.readAll(kafka, 'flushout.flushes')).map((rec) => ({ ...rec, req: decode(rec.value) }));
  await checks.check("the snapshot equals flushout's Master fed the flushes topic (a flush resent with the same seq counts once)", async () => {
    const masters = new Map();
    const seen = new Set();
    for (const { key, req } of flushRecords) {
      if (req.type !== 'flush' || !snapshots.has(key)) continue;
      const id = `${key}/${req.client}/${req.seq}`;
      if (seen.has(id)) continue;
      seen.add(id);
      if (!masters.has(key)) masters.set(key, new Master({ commandCount: 0, document: {} }, { sequentialIds: true }));
      await masters.get(key).apply({ from: req.from, completions: req.completions });
    }
    for (const [model, snap] of snapshots) {
      const ref = masters.get(model).getSnapshot();
      assert.strictEqual(snap.commandCount, ref.commandCount, `${model}: command count vs flushout's Master`);
      assert.strictEqual(h.canonical(snap.document), h.canonical(ref.document), `${model}: document vs flushout's Master`);
    }
  });

  await checks.check('client ids are bound to the user on Kafka (<length of sub>:<sub>/<client>): same client id, different users, no collision', async () => {
    const clientsOnKafka = new Set(flushRecords.filter((r) => r.req.type === 'flush').map((r) => `${r.key}|${r.req.client}`));
    for (const e of editors) {
      const bound = `${e.user.length}:${e.user}/${e.name}`;
      assert.ok(clientsOnKafka.has(`${e.model}|${bound}`), `${e.model}: a flush from ${bound} on Kafka`);
    }
    // Several users flushed as c-0 seq 1 on one model, and each flush applied (each
    // recorded a change), which they could not if the seqs were shared.
    for (const model of models) {
      const firsts = editors.filter((e) => e.model === model && e.name === 'c-0');
      for (const e of firsts) assert.ok(e.appliedCounts.length > 0, `${e.user}: flushes applied`);
    }
  });

  await checks.check('each gateway reads only its own replies: disjoint kafka_replyPartition sets, unique correlation ids', async () => {
    const gatewayOf = new Map(editors.map((e) => [`${e.user.length}:${e.user}/${e.name}`, e.gatewayName]));
    const partitions = new Map(gateways.map((g) => [g.name, new Set()]));
    const correlations = new Set();
    for (const { req, headers } of flushRecords) {
      const gw = gatewayOf.get(req.client);
      if (!gw) continue;
      assert.ok(headers.kafka_replyTopic, `a request from ${req.client} names its reply topic`);
      assert.ok(headers.kafka_replyPartition && headers.kafka_replyPartition.length === 4, 'kafka_replyPartition is 4 bytes');
      partitions.get(gw).add(headers.kafka_replyPartition.readInt32BE(0));
      const corr = headers.kafka_correlationId.toString('hex');
      assert.ok(!correlations.has(corr), `correlation id ${corr} used twice`);
      correlations.add(corr);
    }
    const [a, b] = [...partitions.values()];
    assert.ok(a.size > 0 && b.size > 0, 'both gateways sent requests');
    for (const p of a) assert.ok(!b.has(p), `reply partition ${p} used by both gateways: ${[...a]} / ${[...b]}`);
    h.log(`reply partitions: ${[...partitions].map(([g, s]) => `${g} ${[...s].join(',')}`).join('; ')}`);
  });

  await checks.check('subscribers (SSE and WebSocket, on both gateways) are told of every change applied after their `subscribed`, in order, and nothing else', async () => {
    for (const model of models) {
      const expected = [probes.get(model), ...editors.filter((e) => e.model === model).flatMap((e) => e.appliedCounts)].sort((x, y) => x - y);
      const final = snapshots.get(model).commandCount;
      assert.strictEqual(expected[expected.length - 1], final, `${model}: the last applied change ends at the final count`);
      for (const s of subs.filter((x) => x.model === model)) {
        await h.waitUntil(`${s.name} hearing count ${final}`, () => s.counts().some((c) => c.commandCount === final), 15000);
        const seen = s.counts().map((c) => {
          assert.strictEqual(c.type, 'changed');
          assert.strictEqual(c.model, model);
          return c.commandCount;
        });
        for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1], `${s.name}: counts in order (${seen[i - 1]} then ${seen[i]})`);
        assert.deepStrictEqual(seen, expected, `${s.name}: the changes heard are the changes applied`);
      }
    }
    for (const s of subs) s.close();
  });

  const histories = new Map();
  await checks.check("GET /history?from=0 replayed by flushout's Master gives the snapshot", async () => {
    for (const model of models) {
      const r = await h.httpRequest(gateways[1], 'GET', h.modelPath(model, '/history?from=0'), { token: keys.token('HS256', 'reader') });
      assert.strictEqual(r.status, 200, r.text);
      assert.strictEqual(r.json.type, 'history');
      assert.strictEqual(r.json.model, model);
      assert.strictEqual(r.json.from, 0);
      const snap = snapshots.get(model);
      assert.strictEqual(r.json.completions.length, snap.commandCount);
      assert.strictEqual(h.canonical(await h.replay(r.json.completions, snap.commandCount)), h.canonical(snap));
      histories.set(model, r.json.completions);
      const part = await h.httpRequest(gateways[0], 'GET', h.modelPath(model, '/history?from=3&to=7'), { token: keys.token('HS256', 'reader') });
      assert.strictEqual(part.status, 200, part.text);
      assert.strictEqual(h.canonical(part.json.completions), h.canonical(r.json.completions.slice(3, 7)), 'history from=3&to=7');
    }
  });

  await checks.check('time travel: GET ?at=N (HTTP, both gateways) and WebSocket snapshot at N equal the history replayed up to N, for every N; at beyond the count is 400 bad_range', async () => {
    const reader = keys.token('HS256', 'time-traveller');
    const conns = await Promise.all(gateways.map((gw) => h.WsConn.open(gw, { token: reader })));
    for (const model of models) {
      const completions = histories.get(model);
      const count = snapshots.get(model).commandCount;
      const versions = Array.from({ length: count + 1 }, (_, n) => n);
      await h.inParallel(versions, 8, async (n) => {
        const want = h.canonical(await h.replay(completions, n));
        const gw = gateways[n % 2];
        const r = await h.httpRequest(gw, 'GET', h.modelPath(model, `?at=${n}`), { token: reader });
        assert.strictEqual(r.status, 200, `${model} at ${n} via ${gw.name}: ${r.text}`);
        assert.strictEqual(h.canonical(r.json), want, `${model} at ${n} via ${gw.name}`);
        if (n % 4 === 0) {
          const w = await conns[(n / 4) % 2].snapshot(model, n);
          assert.strictEqual(w.type, 'snapshot', JSON.stringify(w));
          assert.strictEqual(h.canonical(w.snapshot), want, `${model} at ${n} over WebSocket`);
        }
      });
      const beyond = await h.httpRequest(gateways[0], 'GET', h.modelPath(model, `?at=${count + 1}`), { token: reader });
      assert.strictEqual(beyond.status, 400, beyond.text);
      assert.strictEqual(beyond.json.type, 'error');
      assert.strictEqual(beyond.json.error.code, 'bad_range', beyond.text);
      const wsBeyond = await conns[1].snapshot(model, count + 5);
      assert.strictEqual(wsBeyond.type, 'error', JSON.stringify(wsBeyond));
      assert.strictEqual(wsBeyond.error.code, 'bad_range');
    }
    for (const c of conns) c.close();
  });

  for (const e of editors) e.transport.close();
  await checks.check('both gateways exit 0 on SIGTERM', async () => {
    await Promise.all(gateways.map((g) => run.stopProcess(g)));
  });
  checks.finish('gateway converge');
}

h.runMain('gateway-converge', main);
