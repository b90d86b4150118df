#!/usr/bin/env node
// The quickstart's path: one `flushout-processor dev` (broker, processor and its
// --no-auth gateway in one process). Real flushout@1.1.1 Proxies edit one model over
// HTTP and WebSocket while an SSE stream and a WebSocket subscriber listen; every
// proxy ends on the snapshot, which equals the history replayed by flushout's Master;
// the listeners heard every applied change; dev exits 0 on SIGTERM.
'use strict';

const h = require('./harness.js');

const { assert } = h;
const EDIT_MS = Number(h.option('--edit-ms', 2000));

async function main(run) {
  const gw = await run.startDev(['--ids', 'sequential', '--partitions', '2']);
  const checks = new h.Checks();
  const model = 'quickstart';
  const sse = await h.openEvents(gw, model);
  assert.strictEqual(sse.status, 200, sse.text);
  await sse.waitFor('the event stream subscribed', (evs) => evs.some((e) => e.event === 'subscribed' && e.json.model === model));
  const listener = await h.WsConn.open(gw);
  await listener.subscribe(model);
  // From `subscribed` on every change is told (GATEWAY.md): nothing before it here.
  const baseline = 0;

  const editors = [];
  for (let i = 0; i < 4; i++) {
    const transport = i % 2 === 0 ? new h.HttpTransport(gw) : new h.WsTransport(await h.WsConn.open(gw));
    editors.push(new h.Editor(`tab-${i}`, model, 100 + i, transport, 'dev'));
  }
  await Promise.all(editors.map((e) => e.init()));
  await h.editAndSettle(editors, EDIT_MS);

  await checks.check("dev's gateway: proxies over HTTP and WebSocket converge on the snapshot, which is the history replayed by flushout's Master", async () => {
    const snap = (await h.httpRequest(gw, 'GET', h.modelPath(model))).json;
    for (const e of editors) {
      assert.strictEqual(e.proxy.getCommandCount(), snap.commandCount, `${e.name} (${e.transport.kind})`);
      assert.strictEqual(h.canonical(e.proxy.getDocument()), h.canonical(snap.document), `${e.name} (${e.transport.kind}) document`);
    }
    assert.ok(editors.reduce((n, e) => n + e.remaps, 0) > 0, 'colliding created IDs were renamed');
    const hist = await h.httpRequest(gw, 'GET', h.modelPath(model, '/history?from=0'));
    assert.strictEqual(hist.status, 200, hist.text);
    assert.strictEqual(h.canonical(await h.replay(hist.json.completions, snap.commandCount)), h.canonical(snap));
    const half = Math.floor(snap.commandCount / 2);
    const past = await h.httpRequest(gw, 'GET', h.modelPath(model, `?at=${half}`));
    assert.strictEqual(past.status, 200, past.text);
    assert.strictEqual(h.canonical(past.json), h.canonical(await h.replay(hist.json.completions, half)), `at=${half}`);

    const expected = editors.flatMap((e) => e.appliedCounts).sort((a, b) => a - b);
    await h.waitUntil('the listeners hearing the last change', () => sse.events.some((e) => e.event === 'changed' && e.json.commandCount === snap.commandCount) &&
      listener.changed.some((c) => c.commandCount === snap.commandCount), 10000);
    assert.deepStrictEqual(sse.events.filter((e) => e.event === 'changed').map((e) => e.json.commandCount).filter((c) => c > baseline), expected, 'SSE heard every change');
    assert.deepStrictEqual(listener.changed.map((c) => c.commandCount).filter((c) => c > baseline), expected, 'the WebSocket heard every change');
    h.log(`${editors.reduce((n, e) => n + e.flushes, 0)} flushes, ${snap.commandCount} commands`);
  });

  sse.close();
  listener.close();
  for (const e of editors) e.transport.close();
  await checks.check('dev exits 0 on SIGTERM', async () => {
    await run.stopProcess(gw);
  });
  checks.finish('gateway dev');
}

h.runMain('gateway-dev', main);
