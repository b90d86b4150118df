#!/usr/bin/env node
// The gateway's answers to what goes wrong, and its tokens (processor/GATEWAY.md):
// every error status of the table that a client can bring about, each with its code;
// HS256, RS256 and ES256 tokens, and the forgeries a gateway must refuse; context.user
// stamped from the token's sub (an interceptor writes it into what is created); client
// ids bound to users; the models claim and read-only tokens; the rate limit; the
// in-flight cap; time travel older than the history kept; and a processor that stops
// answering (503 timeout, then the retry with the same seq answered as a duplicate).
'use strict';

const fs = require('fs');
const path = require('path');
const { decode } = require('@msgpack/msgpack');
const { Master } = require('flushout');
const h = require('./harness.js');

const { assert } = h;
const HISTORY = 20; // the processor's --history: "long" goes well beyond it
// More than three of the store's history keys of 64 commands: a trim keeps the whole
// key holding the oldest command kept, so fewer would all stay.
const LONG_FLUSHES = 200;


// Stamps the flush's context.user and context.claims.role into what is created: the
// stored document shows which user the gateway vouched for.
const STAMP_LUA = `
function intercept(document, command, context, meta)
  if command.action ~= "create" then return nil end
  local props = {}
  for k, v in pairs(command.props or {}) do props[k] = v end
  props.by = (context and context.user) or "nobody"
  props.role = (context and context.claims and context.claims.role) or "none"
  return {newProps = props}
end
`;

// The same interceptor for flushout's Master, to replay what the processor stored.
function stampJs(document, command, context) {
  if (command.action !== 'create') return undefined;
  return { newProps: { ...(command.props || {}), by: (context && context.user) || 'nobody', role: (context && context.claims && context.claims.role) || 'none' } };
}

// At the root: an interceptor's newProps drop parentDefault (as flushout's do), so a
// create under a parent that does not exist yet would fail.
const create = (id, props) => ({ command: { action: 'create', path: [], props }, createdId: id });

// GET /metrics of a gateway: {name{labels}: value}.
async function scrape(g) {
  const r = await h.httpRequest(g, 'GET', '/metrics', { agent: false });
  assert.strictEqual(r.status, 200, r.text);
  const values = {};
  for (const line of r.text.split('\n')) {
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) values[m[1]] = Number(m[2]);
  }
  return values;
}

function expectError(r, status, code, what) {
  assert.strictEqual(r.status, status, `${what}: status ${r.status}, body ${r.text}`);
  assert.ok(r.json, `${what}: the body is JSON: ${r.text}`);
  assert.strictEqual(r.json.type, 'error', `${what}: ${r.text}`);
  assert.strictEqual(r.json.error.code, code, `${what}: ${r.text}`);
  assert.ok(typeof r.json.error.message === 'string' && r.json.error.message.length > 0, `${what}: a message`);
}

// A WebSocket with a bad token: its upgrade refused with 401, or (as the gateway does)
// accepted, answered with one unauthorized error frame, and closed; either way no
// request of it is served.
async function expectWsRefused(g, opts, what) {
  let conn;
  try {
    conn = await h.WsConn.open(g, opts);
  } catch (e) {
    assert.strictEqual(e.status, 401, `${what}: ${e.message}`);
    return;
  }
  conn.send({ type: 'snapshot', model: 'secret', client: 'x', seq: 1 });
  await h.waitUntil(`${what}: closed`, () => conn.closed, 5000);
  assert.strictEqual(conn.stray.length, 1, `${what}: one frame: ${JSON.stringify(conn.stray)}`);
  assert.strictEqual(conn.stray[0].type, 'error');
  assert.strictEqual(conn.stray[0].error.code, 'unauthorized', `${what}: ${JSON.stringify(conn.stray[0])}`);
}

async function main(run) {
  const keys = h.makeKeys(run.tmp);
  const interceptor = path.join(run.tmp, 'stamp.lua');
  fs.writeFileSync(interceptor, STAMP_LUA);
  const bootstrap = await run.startBroker(2);
  h.log(`broker at ${bootstrap}`);
  const procArgs = ['--history', String(HISTORY), '--snapshot-every', '10', '--interceptor', interceptor];
  let processor = run.startProcessor('processor', bootstrap, procArgs);
  const jwt = (alg) => ['--jwt-key-file', keys.files[alg], '--jwt-alg', alg];
  // One consumer group each: every gateway owns every reply partition, no rebalances.
  const gw = (name, auth, more = []) => run.startGateway(name, bootstrap, auth, ['--gateway-group', `group-${name}`, '--rate-limit', '0', ...more]);
  const [hs, rs, es, limited, slow] = await Promise.all([
    gw('hs256', jwt('HS256')),
    gw('rs256', jwt('RS256')),
    gw('es256', jwt('ES256'), ['--max-connections', '4']),
    gw('limited', jwt('HS256'), ['--rate-limit', '1', '--rate-burst', '2']),
    gw('no-auth', ['--no-auth'], ['--timeout-ms', '1500', '--max-in-flight', '2']),
  ]);
  const alice = keys.token('HS256', 'alice', { role: 'editor' });
  await h.waitUntil('the processor answering', async () => (await h.httpRequest(hs, 'GET', h.modelPath('warm-up'), { token: alice, timeoutMs: 10000 })).status === 200, 60000, 200);
  assert.match(fs.readFileSync(slow.logFile, 'utf8'), /no-auth/i, '--no-auth is announced at startup');
  const checks = new h.Checks();
  const get = (g, p, token) => h.httpRequest(g, 'GET', p, { token });
  const post = (g, model, body, token) => h.httpRequest(g, 'POST', h.modelPath(model, '/flush'), { token, body });

  await checks.check('HS256, RS256 and ES256 tokens: context.user is the sub, claims under context.claims, a client-sent context replaced', async () => {
    for (const [alg, g] of [['HS256', hs], ['RS256', rs], ['ES256', es]]) {
      const sub = `writer-${alg}`;
      const model = `stamped-${alg}`;
      const r = await post(g, model, { client: 'tab', seq: 1, from: 0, completions: [create('a', { title: alg })], context: { user: 'mallory', claims: { role: 'admin' } } },
        keys.token(alg, sub, { role: 'editor' }));
      assert.strictEqual(r.status, 200, r.text);
      assert.strictEqual(r.json.type, 'flushResult');
      assert.strictEqual(r.json.client, 'tab', 'the reply names the client id as sent');
      assert.strictEqual(r.json.applied.completions.length, 1, r.text);
      // The token may come in ?access_token= too (browsers' EventSource and WebSocket).
      const snap = await get(g, h.modelPath(model, `?access_token=${keys.token(alg, 'reader')}`));
      assert.strictEqual(snap.status, 200, snap.text);
      assert.deepStrictEqual(snap.json.document.a, { title: alg, by: sub, role: 'editor' }, `${alg}: stored as stamped from the token`);
    }
    // Over the WebSocket the same.
    const conn = await h.WsConn.open(hs, { token: keys.token('HS256', 'ws-writer', { role: 'viewer' }) });
    const reply = await conn.request({ type: 'flush', model: 'stamped-ws', client: 'tab', seq: 1, from: 0, completions: [create('w', {})], context: { user: 'mallory' } });
    assert.strictEqual(reply.type, 'flushResult', JSON.stringify(reply));
    const snap = await conn.snapshot('stamped-ws');
    assert.deepStrictEqual(snap.snapshot.document.w, { by: 'ws-writer', role: 'viewer' });
    conn.close();
  });

  await checks.check('--no-auth passes the client context and client id through', async () => {
    const r = await post(slow, 'open-model', { client: 'tab', seq: 1, from: 0, completions: [create('a', {})], context: { user: 'dev-user', claims: { role: 'tester' } } });
    assert.strictEqual(r.status, 200, r.text);
    const snap = await get(slow, h.modelPath('open-model'));
    assert.deepStrictEqual(snap.json.document.a, { by: 'dev-user', role: 'tester' });
  });

  await checks.check('client ids are bound to users: two users flushing as the same client and seq are both applied', async () => {
    const bob = keys.token('HS256', 'bob');
    const one = await post(hs, 'shared', { client: 'tab-1', seq: 1, from: 0, completions: [create('x', { n: 1 })] }, alice);
    const two = await post(hs, 'shared', { client: 'tab-1', seq: 1, from: 0, completions: [create('x', { n: 2 })] }, bob);
    for (const r of [one, two]) {
      assert.strictEqual(r.status, 200, r.text);
      assert.ok(!r.json.duplicate, `not a duplicate: ${r.text}`);
      assert.strictEqual(r.json.applied.completions.length, 1, r.text);
      assert.strictEqual(r.json.client, 'tab-1');
    }
    const again = await post(hs, 'shared', { client: 'tab-1', seq: 1, from: 0, completions: [create('x', { n: 1 })] }, alice);
    assert.strictEqual(again.status, 200, again.text);
    assert.strictEqual(again.json.duplicate, true, `alice's own retry is a duplicate: ${again.text}`);
    // Mallory naming alice's client id as it stands on Kafka gets one of her own.
    const mallory = await post(hs, 'shared', { client: '5:alice/tab-1', seq: 1, from: 0, completions: [create('x', { n: 3 })] }, keys.token('HS256', 'mallory'));
    assert.strictEqual(mallory.status, 200, mallory.text);
    assert.ok(!mallory.json.duplicate, `mallory's flush is not taken for alice's retry: ${mallory.text}`);
    assert.strictEqual(mallory.json.applied.completions.length, 1);
    // The length prefix keeps "ab" + "c/d" apart from "ab/c" + "d" (both "ab/c/d" without it).
    for (const [sub, client] of [['ab', 'c/d'], ['ab/c', 'd']]) {
      const r = await post(hs, 'prefixed', { client, seq: 1, from: 0, completions: [create(`${sub}|${client}`, {})] }, keys.token('HS256', sub));
      assert.strictEqual(r.status, 200, r.text);
      assert.ok(!r.json.duplicate && r.json.applied.completions.length === 1, `${sub} as ${client}: ${r.text}`);
    }
    const snap = await get(hs, h.modelPath('shared'), alice);
    assert.strictEqual(snap.json.commandCount, 3);
    const by = Object.values(snap.json.document).map((i) => `${i.by}:${i.n}`).sort();
    assert.deepStrictEqual(by, ['alice:1', 'bob:2', 'mallory:3']);
  });

  await checks.check('400: malformed JSON, wrong types, missing fields, bad query values and model ids, bad_range', async () => {
    let r = await h.httpRequest(hs, 'POST', h.modelPath('m400', '/flush'), { token: alice, body: '{"client": "c", "seq": 1, from: 0}' });
    expectError(r, 400, 'invalid_json', 'a key without quotes');
    r = await h.httpRequest(hs, 'POST', h.modelPath('m400', '/flush'), { token: alice, body: '{"client": "c", "seq": 1,' });
    expectError(r, 400, 'truncated', 'JSON cut short (the codec says truncated, as apply does)');
    r = await post(hs, 'm400', { client: 'c', seq: '1', from: 0, completions: [] }, alice);
    expectError(r, 400, 'wrong_type', 'seq as a string');
    r = await post(hs, 'm400', { client: 'c', seq: 1, from: 0, completions: [{ command: { action: 'create', path: 'items' } }] }, alice);
    expectError(r, 400, 'wrong_type', 'a path that is not an array');
    r = await post(hs, 'm400', { client: 'c', seq: 1, from: 0 }, alice);
    expectError(r, 400, 'missing_field', 'no completions');
    r = await post(hs, 'm400', { client: 'c', seq: 1, from: 0, completions: [{ command: { action: 'explode' } }] }, alice);
    expectError(r, 400, 'unknown_action', 'an unknown action');
    r = await post(hs, 'm400', { client: 'c', seq: 1, from: 0, completions: [create('__proto__', {})] }, alice);
    expectError(r, 400, 'forbidden_key', '__proto__ as a created id');
    for (const q of ['?at=soon', '?at=', '?at=-1', '?at=1.5', '?at=99999999999999999999', '/history?from=0&to=abc', '/history?from=']) {
      r = await get(hs, h.modelPath('m400', q), alice);
      expectError(r, 400, 'bad_request', q);
    }
    r = await get(hs, h.modelPath('m400', '/history?from=-1'), alice);
    expectError(r, 400, 'bad_request', 'history?from=-1');
    r = await get(hs, h.modelPath('m'.repeat(2000)), alice);
    expectError(r, 413, 'too_large', 'a model id beyond --max-id-bytes');
    r = await get(hs, '/v1/models/%FF%FE', alice);
    // GATEWAY.md's bad_request names "a model id that is not valid"; not UTF-8 has
    // the protocol's own code, as the processor gives it for such a record key.
    expectError(r, 400, 'invalid_utf8', 'a model id that is not UTF-8');
    r = await get(hs, h.modelPath('shared', '/history?from=4'), alice); // "shared" holds 3 commands
    expectError(r, 400, 'bad_range', 'history from beyond the count');
    r = await get(hs, h.modelPath('shared', '/history?from=2&to=1'), alice);
    expectError(r, 400, 'bad_range', 'history to before from');
    const conn = await h.WsConn.open(hs, { token: alice });
    conn.send('{"type": "flush", model: "m400"}');
    const bad = await conn.nextStray('an error frame for invalid JSON', (m) => m.type === 'error');
    assert.strictEqual(bad.error.code, 'invalid_json', JSON.stringify(bad));
    conn.send({ type: 'teleport', model: 'm400', client: 'c', seq: 1 });
    const unknown = await conn.nextStray('an error frame for an unknown type', (m) => m.type === 'error');
    assert.strictEqual(unknown.error.code, 'unknown_type', JSON.stringify(unknown));
    conn.close();
  });

  await checks.check('401: no token, bad signature, alg none, HS256 signed with the RS256 public key, expired, not yet valid, no sub', async () => {
    const now = h.nowSeconds();
    const cases = [
      ['no token', hs, undefined],
      ['not a JWT', hs, 'not.a.token'],
      ['signed with another secret', hs, h.signJwt('HS256', 'another secret', { sub: 'alice', exp: now + 3600 })],
      ['alg none', hs, keys.sign('none', { sub: 'alice', exp: now + 3600 })],
      ['alg none with the RS256 gateway', rs, h.signJwt('none', null, { sub: 'alice', exp: now + 3600 })],
      ['HS256 signed with the RS256 public key text', rs, h.signJwt('HS256', keys.rsaPublicPem, { sub: 'alice', exp: now + 3600 })],
      ['an RS256 token at the ES256 gateway', es, keys.token('RS256', 'alice')],
      ['expired', hs, keys.sign('HS256', { sub: 'alice', exp: now - 60 })],
      ['not yet valid (nbf)', hs, keys.sign('HS256', { sub: 'alice', exp: now + 3600, nbf: now + 600 })],
      ['no sub', hs, keys.sign('HS256', { exp: now + 3600 })],
      ['a tampered ES256 payload', es, (() => {
        const [head, , sig] = keys.token('ES256', 'alice').split('.');
        return `${head}.${Buffer.from(JSON.stringify({ sub: 'root', exp: now + 3600 })).toString('base64url')}.${sig}`;
      })()],
    ];
    for (const [what, g, token] of cases) {
      expectError(await get(g, h.modelPath('secret'), token), 401, 'unauthorized', `GET with ${what}`);
      expectError(await post(g, 'secret', { client: 'c', seq: 1, from: 0, completions: [create('a', {})] }, token), 401, 'unauthorized', `flush with ${what}`);
    }
    // Server-Sent Events and the WebSocket, and the token in ?access_token=.
    const sse = await h.openEvents(hs, 'secret', {});
    assert.strictEqual(sse.status, 401, 'events without a token');
    const expired = keys.sign('HS256', { sub: 'alice', exp: now - 60 });
    const sseQuery = await h.openEvents(hs, 'secret', { query: `?access_token=${expired}` });
    assert.strictEqual(sseQuery.status, 401, 'events with an expired token in the query');
    await expectWsRefused(hs, {}, 'a WebSocket without a token');
    await expectWsRefused(hs, { token: expired, tokenInQuery: true }, 'a WebSocket with an expired token in the query');
    await expectWsRefused(rs, { token: h.signJwt('HS256', keys.rsaPublicPem, { sub: 'alice', exp: now + 3600 }) }, 'a WebSocket with HS256 signed by the RS256 public key');
    // Nothing reached the model.
    const snap = await get(hs, h.modelPath('secret'), alice);
    assert.strictEqual(snap.json.commandCount, 0);
  });

  await checks.check('401 on a WebSocket whose token expires while it is open: requests after exp are refused', async () => {
    const conn = await h.WsConn.open(hs, { token: keys.sign('HS256', { sub: 'brief', exp: h.nowSeconds() + 2 }) });
    const before = await conn.snapshot('shared');
    assert.strictEqual(before.type, 'snapshot', JSON.stringify(before));
    await h.sleep(3100);
    const after = await conn.request({ type: 'snapshot', model: 'shared', client: 'reader', seq: 99 }).catch((e) => ({ closed: e.message }));
    conn.close();
    assert.ok(after.closed || (after.type === 'error' && after.error.code === 'unauthorized'), `after exp: ${JSON.stringify(after)}`);
  });

  await checks.check('403: the models claim (HTTP, events, WebSocket) and read-only tokens (write: false)', async () => {
    const team = keys.token('HS256', 'teamer', { models: ['team-*', 'exact'] });
    assert.strictEqual((await get(hs, h.modelPath('team-1'), team)).status, 200);
    assert.strictEqual((await get(hs, h.modelPath('exact'), team)).status, 200);
    expectError(await get(hs, h.modelPath('other'), team), 403, 'forbidden', 'GET outside the models claim');
    expectError(await get(hs, h.modelPath('other', '/history?from=0'), team), 403, 'forbidden', 'history outside the models claim');
    expectError(await post(hs, 'other', { client: 'c', seq: 1, from: 0, completions: [create('a', {})] }, team), 403, 'forbidden', 'flush outside the models claim');
    const sse = await h.openEvents(hs, 'other', { token: team });
    assert.strictEqual(sse.status, 403, 'events outside the models claim');
    const conn = await h.WsConn.open(hs, { token: team });
    conn.send({ type: 'subscribe', model: 'other' });
    const refused = await conn.nextStray('subscribe outside the claim refused', (m) => m.type === 'error' || m.type === 'subscribed');
    assert.strictEqual(refused.type, 'error', JSON.stringify(refused));
    assert.strictEqual(refused.error.code, 'forbidden');
    const wsFlush = await conn.request({ type: 'flush', model: 'other', client: 'c', seq: 1, from: 0, completions: [create('a', {})] });
    assert.strictEqual(wsFlush.type, 'error');
    assert.strictEqual(wsFlush.error.code, 'forbidden');
    conn.close();

    const reader = keys.token('HS256', 'reader', { write: false });
    const ok = await post(hs, 'read-only', { client: 'c', seq: 1, from: 0, completions: [create('a', {})] }, alice);
    assert.strictEqual(ok.status, 200, ok.text);
    assert.strictEqual((await get(hs, h.modelPath('read-only'), reader)).status, 200);
    assert.strictEqual((await get(hs, h.modelPath('read-only', '/history?from=0'), reader)).status, 200);
    const events = await h.openEvents(hs, 'read-only', { token: reader });
    assert.strictEqual(events.status, 200, 'a read-only token may listen');
    events.close();
    expectError(await post(hs, 'read-only', { client: 'c', seq: 1, from: 1, completions: [create('b', {})] }, reader), 403, 'read_only', 'flush with write: false');
    const roConn = await h.WsConn.open(hs, { token: reader });
    const roFlush = await roConn.request({ type: 'flush', model: 'read-only', client: 'c', seq: 2, from: 1, completions: [create('b', {})] });
    assert.strictEqual(roFlush.type, 'error');
    assert.strictEqual(roFlush.error.code, 'read_only');
    const roSnap = await roConn.snapshot('read-only');
    assert.strictEqual(roSnap.snapshot.commandCount, 1, 'the read-only flushes applied nothing');
    roConn.close();
  });

  await checks.check('--max-connections 4: a fifth connection is closed at once; served again once one closes', async () => {
    const token = keys.token('ES256', 'listener');
    const streams = [];
    for (let i = 0; i < 4; i++) {
      const sse = await h.openEvents(es, 'crowded', { token });
      assert.strictEqual(sse.status, 200, sse.text);
      streams.push(sse);
    }
    const agent = new (require('http').Agent)({ keepAlive: false });
    const fifth = await h.httpRequest(es, 'GET', h.modelPath('crowded'), { token, agent, timeoutMs: 5000 }).then((r) => r, (e) => e);
    assert.ok(fifth instanceof Error, `the fifth connection is closed, not answered: ${fifth.status} ${fifth.text}`);
    assert.doesNotMatch(fifth.message, /no answer in/, 'closed at once, not left waiting');
    // A connection the client closed is no longer open: its slot is free (the gateway
    // writes a keep-alive comment on event streams only every 15 s; it must not
    // take that long to notice).
    streams.pop().close();
    await h.waitUntil('a connection served again within 5 s of one closing', async () => {
      const r = await h.httpRequest(es, 'GET', h.modelPath('crowded'), { token, agent, timeoutMs: 5000 }).catch(() => null);
      return r && r.status === 200;
    }, 5000);
    for (const sse of streams) sse.close();
  });

  await checks.check('404 not_found and 405 method_not_allowed', async () => {
    for (const p of ['/', '/v1', '/v1/nothing', '/v2/models/m']) expectError(await get(hs, p, alice), 404, 'not_found', `GET ${p}`);
    // Model ids may hold "/" (GATEWAY.md: everything between /v1/models/ and a trailing
    // action), percent-encoded or not; one ending in /history is reached over the
    // WebSocket, which takes any id.
    const conn = await h.WsConn.open(hs, { token: alice });
    for (const model of ['notes/2024', 'notes/history']) {
      const made = await conn.request({ type: 'flush', model, client: 'c', seq: 1, from: 0, completions: [create('a', {})] });
      assert.strictEqual(made.type, 'flushResult', JSON.stringify(made));
    }
    const ws = await conn.snapshot('notes/history');
    assert.strictEqual(ws.snapshot.commandCount, 1, JSON.stringify(ws));
    conn.close();
    for (const p of ['/v1/models/notes/2024', '/v1/models/notes%2F2024']) {
      const r = await get(hs, p, alice);
      assert.strictEqual(r.status, 200, r.text);
      assert.strictEqual(r.json.commandCount, 1, `GET ${p} is the snapshot of "notes/2024": ${r.text}`);
    }
    const hist = await get(hs, '/v1/models/notes/2024/history?from=0', alice);
    assert.strictEqual(hist.status, 200, hist.text);
    assert.strictEqual(hist.json.model, 'notes/2024');
    assert.strictEqual(hist.json.completions.length, 1);
    const asAction = await get(hs, h.modelPath('notes/history'), alice);
    assert.strictEqual(asAction.status, 200, asAction.text);
    assert.strictEqual(asAction.json.type, 'history', asAction.text);
    assert.strictEqual(asAction.json.model, 'notes', `GET /v1/models/notes%2Fhistory is the history of "notes": ${asAction.text}`);
    const slashed = await post(hs, 'doc/1', { client: 'c', seq: 1, from: 0, completions: [create('a', {})] }, alice);
    assert.strictEqual(slashed.status, 200, slashed.text);
    assert.strictEqual(slashed.json.model, 'doc/1', slashed.text);
    const slashedGet = await get(hs, h.modelPath('doc/1'), alice);
    assert.strictEqual(slashedGet.json.commandCount, 1, `GET /v1/models/doc%2F1 is the snapshot of "doc/1": ${slashedGet.text}`);
    for (const [method, p] of [['DELETE', h.modelPath('m')], ['POST', h.modelPath('m')], ['PUT', h.modelPath('m', '/flush')], ['GET', h.modelPath('m', '/flush')], ['POST', h.modelPath('m', '/events')]])
      expectError(await h.httpRequest(hs, method, p, { token: alice, body: method === 'GET' ? undefined : {} }), 405, 'method_not_allowed', `${method} ${p}`);
  });

  await checks.check('411 length_required: every flush body sent chunked (no Content-Length) is answered, nothing applied; a keep-alive client is told the connection closes', async () => {
    const body = { client: 'c', seq: 1, from: 0, completions: [create('a', {})] };
    const answers = [];
    for (let k = 0; k < 4; k++) {
      const r = await h.httpRequest(hs, 'POST', h.modelPath('chunked', '/flush'), { token: alice, chunked: true, body, agent: false, timeoutMs: 3000 })
        .catch((e) => ({ status: e.message }));
      answers.push(r.status);
      if (r.status === 411) expectError(r, 411, 'length_required', 'a chunked body');
    }
    assert.deepStrictEqual(answers, [411, 411, 411, 411], 'four chunked flushes on fresh connections, one after the other');
    // On a keep-alive connection: the gateway does not read the chunked body, so it
    // must close the connection, and say so (Connection: close), or the client's
    // next request on it fails.
    const agent = new (require('http').Agent)({ keepAlive: true, maxSockets: 1 });
    const r = await h.httpRequest(hs, 'POST', h.modelPath('chunked', '/flush'), { token: alice, chunked: true, body, agent, timeoutMs: 3000 });
    expectError(r, 411, 'length_required', 'a chunked body on a keep-alive connection');
    const next = await h.httpRequest(hs, 'GET', h.modelPath('chunked'), { token: alice, agent, timeoutMs: 3000 }).catch((e) => ({ status: e.message }));
    agent.destroy();
    assert.ok(r.headers.connection === 'close' || next.status === 200,
      `after a 411 without "Connection: close" the next request on the connection fails: ${next.status}`);
    assert.strictEqual((await get(hs, h.modelPath('chunked'), alice)).json.commandCount, 0);
  });

  await checks.check('409 stale_seq, naming the model, client and seq', async () => {
    const first = await post(hs, 'stale', { client: 'tab', seq: 5, from: 0, completions: [create('a', {})] }, alice);
    assert.strictEqual(first.status, 200, first.text);
    const r = await post(hs, 'stale', { client: 'tab', seq: 3, from: 1, completions: [create('b', {})] }, alice);
    expectError(r, 409, 'stale_seq', 'seq 3 after 5');
    assert.strictEqual(r.json.model, 'stale');
    assert.strictEqual(r.json.client, 'tab', 'the client id as sent');
    assert.strictEqual(r.json.seq, 3);
    assert.strictEqual((await get(hs, h.modelPath('stale'), alice)).json.commandCount, 1);
  });

  await checks.check('410 history_unavailable: ?at= and history older than the history kept name the oldest version; that one and later rebuild', async () => {
    const historian = keys.token('HS256', 'historian');
    const sent = [];
    for (let k = 0; k < LONG_FLUSHES; k++) {
      const c = create(`i${k}`, { k });
      const r = await post(hs, 'long', { client: 'tab', seq: k + 1, from: k, completions: [c] }, historian);
      assert.strictEqual(r.status, 200, r.text);
      sent.push(c);
    }
    // The document at n: flushout's Master with the same interceptor, given the flushes.
    const at = async (n) => {
      const master = new Master({ commandCount: 0, document: {} }, { sequentialIds: true, interceptor: stampJs });
      for (let k = 0; k < n; k++) await master.apply({ from: k, completions: [sent[k]] }, { user: 'historian' });
      return master.getSnapshot();
    };
    assert.strictEqual(h.canonical((await get(hs, h.modelPath('long'), historian)).json), h.canonical(await at(LONG_FLUSHES)), 'the latest');
    const history = await get(hs, h.modelPath('long', '/history?from=0'), historian);
    expectError(history, 410, 'history_unavailable', 'history from 0');
    const old = await get(hs, h.modelPath('long', '?at=0'), historian);
    expectError(old, 410, 'history_unavailable', 'at=0');
    const named = old.json.error.message.match(/\d+/g);
    assert.ok(named, `the message names the oldest version: ${old.json.error.message}`);
    const oldest = Number(named[named.length - 1]);
    assert.strictEqual(old.json.error.oldest, oldest, `the error object carries it as "oldest": ${old.text}`);
    assert.ok(oldest > 0 && oldest <= LONG_FLUSHES - HISTORY, `oldest ${oldest} within (0, ${LONG_FLUSHES - HISTORY}]: ${old.json.error.message}`);
    h.log(`"long" (${LONG_FLUSHES} commands, --history ${HISTORY}): ${old.json.error.message}`);
    expectError(await get(hs, h.modelPath('long', `?at=${oldest - 1}`), historian), 410, 'history_unavailable', `at=${oldest - 1}`);
    const conn = await h.WsConn.open(hs, { token: historian });
    const wsOld = await conn.snapshot('long', oldest - 1);
    assert.strictEqual(wsOld.type, 'error', JSON.stringify(wsOld));
    assert.strictEqual(wsOld.error.code, 'history_unavailable', JSON.stringify(wsOld));
    const wsOldest = await conn.snapshot('long', oldest);
    conn.close();
    assert.strictEqual(h.canonical(wsOldest.snapshot), h.canonical(await at(oldest)), `at=${oldest} over the WebSocket`);
    for (let n = oldest; n <= LONG_FLUSHES; n++) {
      const r = await get(hs, h.modelPath('long', `?at=${n}`), historian);
      assert.strictEqual(r.status, 200, `at=${n}: ${r.text}`);
      assert.strictEqual(h.canonical(r.json), h.canonical(await at(n)), `at=${n}`);
    }
    expectError(await get(hs, h.modelPath('long', `?at=${LONG_FLUSHES + 1}`), historian), 400, 'bad_range', 'at beyond the count');
  });

  await checks.check('413 too_large: a string beyond --max-string-bytes, more completions than --max-completions; nothing applied', async () => {
    const big = 'x'.repeat(1200 * 1024);
    let r = await post(hs, 'big', { client: 'c', seq: 1, from: 0, completions: [create('a', { big })] }, alice);
    expectError(r, 413, 'too_large', '1.2 MB string');
    const many = Array.from({ length: 10001 }, (_, i) => ({ command: { action: 'update', path: [], props: { i } } }));
    r = await post(hs, 'big', { client: 'c', seq: 2, from: 0, completions: many }, alice);
    expectError(r, 413, 'too_large', '10,001 completions');
    // A body beyond what the gateway reads at all (twice --max-record-bytes).
    r = await post(hs, 'big', { client: 'c', seq: 4, from: 0, completions: [create('a', { s: 'y'.repeat(900 * 1024) }), create('b', { s: 'y'.repeat(900 * 1024) }), create('c', { s: 'y'.repeat(900 * 1024) })] }, alice);
    expectError(r, 413, 'too_large', 'a 2.7 MB body');
    const conn = await h.WsConn.open(hs, { token: alice });
    const ws = await conn.request({ type: 'flush', model: 'big', client: 'c', seq: 3, from: 0, completions: [create('a', { big })] }, 5000);
    assert.strictEqual(ws.type, 'error');
    assert.strictEqual(ws.error.code, 'too_large');
    conn.close();
    assert.strictEqual((await get(hs, h.modelPath('big'), alice)).json.commandCount, 0);
  });

  await checks.check("429 rate_limited with Retry-After, per user (--rate-limit 1 --rate-burst 2)", async () => {
    const hasty = keys.token('HS256', 'hasty');
    const answers = await Promise.all(Array.from({ length: 6 }, () => get(limited, h.modelPath('limited'), hasty)));
    const ok = answers.filter((r) => r.status === 200).length;
    const limitedAnswers = answers.filter((r) => r.status === 429);
    assert.ok(ok >= 2 && ok <= 3, `the burst of 2 (and at most one more token) answered: ${answers.map((r) => r.status)}`);
    assert.strictEqual(ok + limitedAnswers.length, 6, `the rest limited: ${answers.map((r) => r.status)}`);
    for (const r of limitedAnswers) {
      expectError(r, 429, 'rate_limited', 'over the rate');
      assert.ok(Number(r.headers['retry-after']) >= 1, `Retry-After: ${r.headers['retry-after']}`);
    }
    assert.strictEqual((await get(limited, h.modelPath('limited'), keys.token('HS256', 'patient'))).status, 200, 'another user has a bucket of their own');
    await h.sleep(Number(limitedAnswers[0].headers['retry-after']) * 1000 + 100);
    assert.strictEqual((await get(limited, h.modelPath('limited'), hasty)).status, 200, 'after Retry-After');
    // The same bucket for WebSocket requests, answered by frames matched to them.
    const conn = await h.WsConn.open(limited, { token: keys.token('HS256', 'hasty-ws') });
    const frames = await Promise.all([1, 2, 3, 4, 5].map((seq) => conn.request({ type: 'snapshot', model: 'limited', client: 'w', seq })));
    conn.close();
    const wsOk = frames.filter((f) => f.type === 'snapshot').length;
    assert.ok(wsOk >= 1 && wsOk <= 3, `the WebSocket's burst answered: ${JSON.stringify(frames)}`);
    for (const f of frames.filter((x) => x.type !== 'snapshot')) assert.strictEqual(f.error.code, 'rate_limited', JSON.stringify(f));
    // This gateway has answered nothing else (its /healthz probes are not counted);
    // answers count both HTTP answers and WebSocket reply frames.
    const m = await scrape(limited);
    assert.strictEqual(m['flushout_gateway_answers_total{status="200"}'], ok + 2 + wsOk, 'answers 200 on /metrics');
    assert.strictEqual(m['flushout_gateway_answers_total{status="429"}'], 6 - ok + 5 - wsOk, 'answers 429 on /metrics');
    assert.strictEqual(m.flushout_gateway_requests_total, ok + 2 + wsOk, 'only the admitted requests reached Kafka');
    assert.strictEqual(m.flushout_gateway_round_trip_seconds_count, ok + 2 + wsOk, 'one round trip per request');
    assert.strictEqual(m.flushout_gateway_timeouts_total, 0);
    assert.strictEqual(m.flushout_gateway_waiting, 0);
    assert.strictEqual(m.flushout_gateway_reply_partitions, 2, 'both partitions of its own group');
  });

  await checks.check('one WebSocket with 30 requests in flight on 30 models: each answered, matched by model, client and seq', async () => {
    const conn = await h.WsConn.open(hs, { token: keys.token('HS256', 'busy') });
    // One client, one seq counter across its models (codec/PROTOCOL.md).
    const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => conn.request({
      type: 'flush', model: `busy-${i}`, client: 'tab', seq: i + 1, from: 0, completions: [create(`n${i}`, { i })],
    })));
    for (const [i, r] of replies.entries()) {
      assert.strictEqual(r.type, 'flushResult', JSON.stringify(r));
      assert.strictEqual(r.model, `busy-${i}`);
      assert.deepStrictEqual(r.applied.completions.map((c) => c.createdId), [`n${i}`]);
    }
    const snaps = await Promise.all(Array.from({ length: 30 }, (_, i) => conn.snapshot(`busy-${i}`)));
    conn.close();
    for (const [i, r] of snaps.entries()) assert.deepStrictEqual(Object.keys(r.snapshot.document), [`n${i}`], JSON.stringify(r));
  });

  await checks.check('clients that leave before their reply (WebSocket closed, HTTP aborted): the gateway drops the replies and keeps serving', async () => {
    const token = keys.token('HS256', 'leaver');
    for (let i = 0; i < 10; i++) {
      const conn = await h.WsConn.open(hs, { token });
      conn.send({ type: 'flush', model: 'left', client: 'ws', seq: i + 1, from: 0, completions: [create(`w${i}`, {})] });
      conn.send({ type: 'subscribe', model: 'left' });
      conn.close();
      const aborted = h.httpRequest(hs, 'POST', h.modelPath('left', '/flush'), { token, agent: false, timeoutMs: 1, body: { client: 'http', seq: i + 1, from: 0, completions: [create(`h${i}`, {})] } });
      await aborted.catch(() => null);
    }
    // Every flush that reached Kafka was applied (each once), and nothing waits.
    await h.waitUntil('nothing waiting', async () => (await scrape(hs)).flushout_gateway_waiting === 0, 15000, 200);
    const snap = await get(hs, h.modelPath('left'), token);
    assert.strictEqual(snap.status, 200, snap.text);
    assert.strictEqual(snap.json.commandCount, Object.keys(snap.json.document).length, JSON.stringify(snap.json));
    // Nobody listens on this gateway any more: the closed connections' subscriptions went with them.
    await h.waitUntil('no watched model left', async () => (await scrape(hs)).flushout_gateway_watched_models === 0, 5000, 200);
  });

  await checks.check('WebSocket: snapshot without client or seq, history, unsubscribe', async () => {
    const conn = await h.WsConn.open(hs, { token: alice });
    conn.send({ type: 'snapshot', model: 'shared' });
    const snap = await conn.nextStray('a snapshot reply', (m) => m.type === 'snapshot' && m.model === 'shared');
    assert.ok(Number.isInteger(snap.seq), `a seq the gateway chose: ${JSON.stringify(snap)}`);
    assert.strictEqual(snap.snapshot.commandCount, 3);
    const hist = await conn.request({ type: 'history', model: 'shared', client: 'h', seq: 7, from: 0 });
    assert.strictEqual(hist.type, 'history', JSON.stringify(hist));
    assert.strictEqual(hist.completions.length, 3);
    await h.waitUntil('a change heard', async () => {
      await conn.subscribe('sub-model');
      const r = await post(hs, 'sub-model', { client: 'c', seq: Date.now(), from: 0, completions: [{ command: { action: 'update', path: [], props: { t: 1 } } }] }, alice);
      assert.strictEqual(r.status, 200, r.text);
      await h.sleep(300);
      return conn.changed.length > 0;
    }, 15000, 0);
    conn.send({ type: 'unsubscribe', model: 'sub-model' });
    await h.sleep(300);
    const before = conn.changed.length;
    const r = await post(hs, 'sub-model', { client: 'c', seq: Date.now() + 1, from: 0, completions: [{ command: { action: 'update', path: [], props: { t: 2 } } }] }, alice);
    assert.strictEqual(r.status, 200, r.text);
    await h.sleep(1000);
    assert.strictEqual(conn.changed.length, before, 'no change after unsubscribe');
    conn.close();
  });

  await checks.check('subscriptions: two listeners of one model; one leaves, the other still hears; all leave and one comes back, it hears again', async () => {
    const model = 'watched';
    const [one, two] = await Promise.all([h.WsConn.open(hs, { token: alice }), h.WsConn.open(hs, { token: keys.token('HS256', 'bob') })]);
    let seq = 0;
    let count = 0;
    const change = async () => {
      const r = await post(hs, model, { client: 'w', seq: ++seq, from: count, completions: [{ command: { action: 'update', path: [], props: { seq } } }] }, alice);
      assert.strictEqual(r.status, 200, r.text);
      count = r.json.applied.from + r.json.applied.completions.length;
      return count;
    };
    const hears = (conn, c) => conn.changed.some((x) => x.model === model && x.commandCount === c);
    // After `subscribed`, the very next change is told (GATEWAY.md).
    await one.subscribe(model);
    await two.subscribe(model);
    const first = await change();
    await h.waitUntil('both hearing the first change after subscribed', () => hears(one, first) && hears(two, first), 10000);
    one.send({ type: 'unsubscribe', model });
    await h.sleep(300);
    let c = await change();
    await h.waitUntil('the one left hearing', () => hears(two, c), 5000);
    assert.ok(!hears(one, c), 'the one that left hears nothing');
    two.send({ type: 'unsubscribe', model });
    await h.sleep(500);
    c = await change();
    await h.sleep(1000);
    assert.ok(!hears(two, c), 'nobody listens');
    await one.subscribe(model);
    c = await change();
    await h.waitUntil('the returning listener hearing the next change', () => hears(one, c), 10000);
    // A subscriber that closes its connection is dropped too (no error when changes come).
    one.close();
    two.close();
    c = await change();
    const fresh = await h.WsConn.open(hs, { token: alice });
    const snap = await fresh.snapshot(model);
    fresh.close();
    assert.strictEqual(snap.snapshot.commandCount, c);
  });

  await checks.check('on Kafka: the bound client id <length of sub>:<sub>/<client> and the gateway\'s context; --no-auth unchanged', async () => {
    const records = (await h.readAll(h.connect(bootstrap), 'flushout.flushes')).map((rec) => ({ key: rec.key, req: decode(rec.value) }));
    const find = (model) => records.find((r) => r.key === model && r.req.type === 'flush');
    const hsFlush = find('stamped-HS256').req;
    assert.strictEqual(hsFlush.client, `${'writer-HS256'.length}:writer-HS256/tab`);
    assert.strictEqual(hsFlush.context.user, 'writer-HS256');
    assert.strictEqual(hsFlush.context.claims.role, 'editor');
    const open = find('open-model').req;
    assert.strictEqual(open.client, 'tab');
    assert.deepStrictEqual(open.context, { user: 'dev-user', claims: { role: 'tester' } });
  });

  await checks.check('503 unavailable from a gateway that owns no reply partition (three gateways in one group, two partitions)', async () => {
    const spares = await Promise.all(['spare-1', 'spare-2', 'spare-3'].map((n) =>
      run.startGateway(n, bootstrap, ['--no-auth'], ['--gateway-group', 'group-spares', '--rate-limit', '0'], { ready: false })));
    const health = async () => Promise.all(spares.map(async (g) => (await h.httpRequest(g, 'GET', '/healthz', { agent: false })).status));
    let idle;
    await h.waitUntil('the group settled: two gateways with a partition each, one without', async () => {
      const first = await health();
      await h.sleep(1000);
      const again = await health();
      if (first.join() !== again.join() || again.filter((st) => st === 200).length !== 2) return false;
      idle = spares[again.indexOf(503)];
      return true;
    }, 60000, 0);
    const r = await get(idle, h.modelPath('anything'));
    expectError(r, 503, 'unavailable', `GET through ${idle.name}, which has no reply partition`);
    const conn = await h.WsConn.open(idle, {});
    const ws = await conn.snapshot('anything');
    conn.close();
    assert.strictEqual(ws.type, 'error', JSON.stringify(ws));
    assert.strictEqual(ws.error.code, 'unavailable', JSON.stringify(ws));
    for (const g of spares.filter((x) => x !== idle)) assert.strictEqual((await get(g, h.modelPath('anything'))).status, 200, `${g.name} answers`);
    await Promise.all(spares.map((g) => run.stopProcess(g)));
  });

  // Last: the processor stops.
  let slowTimeouts = 0;
  await checks.check('503 timeout when the processor does not answer: the body says a retry with the same seq is safe', async () => {
    await run.stopProcess(processor);
    const r = await post(slow, 'retry', { client: 'r', seq: 1, from: 0, completions: [create('once', {})] });
    expectError(r, 503, 'timeout', 'flush with the processor stopped');
    slowTimeouts++;
    assert.match(r.json.error.message, /retry/i, r.json.error.message);
    assert.match(r.json.error.message, /seq/, r.json.error.message);
    assert.strictEqual(r.json.client, 'r');
    assert.strictEqual(r.json.seq, 1);
  });

  await checks.check('429 too_many_requests beyond --max-in-flight 2 on one WebSocket, matched by model, client and seq', async () => {
    const conn = await h.WsConn.open(slow, {});
    const inFlight = [1, 2, 3, 4].map((seq) => conn.request({ type: 'flush', model: 'retry', client: 'w', seq, from: 0, completions: [create(`w${seq}`, {})] }, 5000)
      .catch((e) => ({ failed: e.message })));
    const answers = await Promise.all(inFlight);
    conn.close();
    const codes = answers.map((a) => (a.error ? a.error.code : JSON.stringify(a)));
    slowTimeouts += codes.filter((c) => c === 'timeout').length;
    assert.deepStrictEqual(codes, ['timeout', 'timeout', 'too_many_requests', 'too_many_requests'], JSON.stringify(answers));
  });

  await checks.check('after the processor restarts, the retry with the same seq is answered as a duplicate: each flush applied exactly once', async () => {
    processor = run.startProcessor('processor', bootstrap, procArgs);
    // The first flush is ahead of its retries in the partition, so the restarted
    // processor applies it (its reply finds no one waiting) and every retry with
    // seq 1 is a duplicate.
    let retry;
    await h.waitUntil('the retry answered', async () => {
      retry = await post(slow, 'retry', { client: 'r', seq: 1, from: 0, completions: [create('once', {})] });
      if (retry.status === 503) {
        slowTimeouts += retry.json && retry.json.error.code === 'timeout' ? 1 : 0;
        return false;
      }
      assert.strictEqual(retry.status, 200, retry.text);
      return true;
    }, 60000, 0);
    assert.strictEqual(retry.json.duplicate, true, retry.text);
    const snap = await get(slow, h.modelPath('retry'));
    // once, and w1 and w2 (in flight when they timed out: applied after the restart),
    // each once; w3 and w4 were refused by the gateway and never reached Kafka.
    assert.deepStrictEqual(Object.keys(snap.json.document).sort(), ['once', 'w1', 'w2'], JSON.stringify(snap.json));
    assert.strictEqual(snap.json.commandCount, 3, JSON.stringify(snap.json));
    const m = await scrape(slow);
    assert.strictEqual(m.flushout_gateway_timeouts_total, slowTimeouts, `every 503 timeout counted on /metrics (${slowTimeouts})`);
    assert.strictEqual(m['flushout_gateway_answers_total{status="503"}'], slowTimeouts, 'answers 503');
    assert.strictEqual(m.flushout_gateway_waiting, 0, 'nothing waits any more');
  });

  await checks.check('every gateway exits 0 on SIGTERM', async () => {
    await Promise.all([hs, rs, es, limited, slow].map((g) => run.stopProcess(g)));
  });

  checks.finish('gateway errors');
}

h.runMain('gateway-errors', main);
