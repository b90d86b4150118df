// tests/gateway/harness.js - what the gateway's API tests share: the broker, processor
// and gateways as child processes (as tests/kafka/harness.js runs them), HTTP with
// keep-alive, Server-Sent Events read from a plain GET, WebSocket connections, JWTs
// signed with node's own crypto, and flushout proxies flushing through a gateway.
'use strict';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { spawn } = require('child_process');
const WebSocket = require('ws');
const { Kafka, logLevel } = require('kafkajs');
const { Master, Proxy } = require('flushout');
const { Rng } = require('../common/rng.js');
const { sleep, log, canonical, option, freePort, readAll, randomCommand, leaveRunDir, checkSanitizerReports } = require('../common/util.js');


// Polls until fn() is truthy (or throws its last error after ms).
async function waitUntil(what, fn, ms = 20000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(every);
  }
}

// ---- JWTs (node's crypto: HS256, RS256, ES256, and the forgeries the tests need) ----

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// header: merged over {alg, typ}; key: the HMAC secret (HS256) or a private KeyObject.
function signJwt(alg, key, claims, header = {}) {
  const head = b64url(JSON.stringify({ alg, typ: 'JWT', ...header }));
  const body = b64url(JSON.stringify(claims));
  const input = `${head}.${body}`;
  let sig;
  if (alg === 'HS256') sig = crypto.createHmac('sha256', key).update(input).digest();
  else if (alg === 'RS256') sig = crypto.sign('sha256', Buffer.from(input), key);
  else if (alg === 'ES256') sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  else if (alg === 'none') sig = Buffer.alloc(0);
  else throw new Error(`signJwt: ${alg}`);
  return `${input}.${b64url(sig)}`;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

// Key material for the three algorithms, written where a gateway reads it.
function makeKeys(dir) {
  const hsSecret = crypto.randomBytes(32).toString('hex');
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const files = {
    HS256: path.join(dir, 'hs256.secret'),
    RS256: path.join(dir, 'rs256.pub.pem'),
    ES256: path.join(dir, 'es256.pub.pem'),
  };
  fs.writeFileSync(files.HS256, hsSecret); // no newline: the file is the secret
  const rsaPublicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' });
  fs.writeFileSync(files.RS256, rsaPublicPem);
  fs.writeFileSync(files.ES256, ec.publicKey.export({ type: 'spki', format: 'pem' }));
  const signing = { HS256: hsSecret, RS256: rsa.privateKey, ES256: ec.privateKey };
  return {
    files,
    rsaPublicPem,
    // A valid token for user sub, an hour long, with more claims.
    token: (alg, sub, claims = {}) => signJwt(alg, signing[alg], { sub, exp: nowSeconds() + 3600, ...claims }),
    sign: (alg, claims, header) => signJwt(alg, signing[alg], claims, header),
  };
}

// ---- processes ----

class Run {
  constructor(name, bin) {
    this.name = name;
    this.bin = bin;
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `flushout-${name}-`));
    this.children = [];
    this.shuttingDown = false;
  }

  startBroker(partitions) {
    const child = spawn(this.bin, ['dev', '--broker-only', '--partitions', String(partitions)], {
      stdio: ['ignore', 'pipe', fs.openSync(path.join(this.tmp, 'broker.log'), 'w')],
    });
    this.children.push(child);
    this.brokers = [...(this.brokers || []), child];
    child.once('exit', (code, signal) => {
      if (!this.shuttingDown) console.error(`${this.name}: the broker exited early: code ${code}, signal ${signal}`);
    });
    return new Promise((resolve, reject) => {
      const rl = readline.createInterface({ input: child.stdout });
      rl.once('line', (line) => {
        const m = /^bootstrap\.servers=(.+)$/.exec(line);
        if (m) resolve(m[1]);
        else reject(new Error(`dev printed ${line}`));
      });
      child.once('exit', (code) => reject(new Error(`dev exited with ${code}`)));
    });
  }

  // A processor with its own state directory, kept across restarts under one name.
  startProcessor(name, bootstrap, extraArgs = []) {
    const logFile = path.join(this.tmp, `${name}.log`);
    const child = spawn(
      this.bin,
      ['run', '--bootstrap-servers', bootstrap, '--state-dir', path.join(this.tmp, name), '--ids', 'sequential',
        '--threads', '2', '-X', 'fetch.wait.max.ms=10', '-X', 'session.timeout.ms=6000', ...extraArgs],
      { stdio: ['ignore', 'ignore', fs.openSync(logFile, 'a')] }
    );
    this.children.push(child);
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    log(`started processor ${name}`);
    return { name, child, exited, logFile };
  }

  async stopProcess(p) {
    p.child.kill('SIGTERM');
    const { code, signal } = await p.exited;
    log(`${p.name} exited with ${code}${signal ? ` (${signal})` : ''}`);
    assert.strictEqual(code, 0, `${p.name} exits 0 on SIGTERM (see ${p.logFile})`);
  }

  // A gateway on a free port; resolves once GET /healthz answers ok (it owns a reply
  // partition), or with ready: false once it answers at all.
  // auth: ['--jwt-key-file', F, '--jwt-alg', A] or ['--no-auth'].
  async startGateway(name, bootstrap, auth, extraArgs = [], { ready = true } = {}) {
    const port = await freePort();
    const logFile = path.join(this.tmp, `${name}.log`);
    const child = spawn(
      this.bin,
      ['gateway', '--bootstrap-servers', bootstrap, '--http-port', String(port), '--http-address', '127.0.0.1',
        ...auth, '-X', 'fetch.wait.max.ms=10', ...extraArgs],
      { stdio: ['ignore', 'ignore', fs.openSync(logFile, 'a')] }
    );
    this.children.push(child);
    let exit = null;
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve((exit = { code, signal }))));
    const gw = { name, port, host: '127.0.0.1', child, exited, logFile, agent: new http.Agent({ keepAlive: true, maxSockets: 64 }) };
    await waitUntil(`${name} /healthz`, async () => {
      if (exit) throw new Error(`${name} exited (${JSON.stringify(exit)}): ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
      const r = await httpRequest(gw, 'GET', '/healthz', { agent: false });
      return ready ? r.status === 200 : r.status > 0;
    }, 60000, 100).catch((e) => {
      if (exit) throw e;
      throw new Error(`${e.message}; log: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
    });
    log(`gateway ${name} ready on port ${port}`);
    return gw;
  }

  // `dev` with its gateway (--no-auth) on a free port: broker, processor and gateway
  // in one process. Resolves once the gateway answers a snapshot request.
  async startDev(extraArgs = []) {
    const port = await freePort();
    const logFile = path.join(this.tmp, 'dev.log');
    const child = spawn(this.bin, ['dev', '--gateway-port', String(port), '--http-address', '127.0.0.1', ...extraArgs],
      { stdio: ['ignore', 'pipe', fs.openSync(logFile, 'w')] });
    this.children.push(child);
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const bootstrap = await new Promise((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).once('line', (line) => {
        const m = /^bootstrap\.servers=(.+)$/.exec(line);
        if (m) resolve(m[1]);
        else reject(new Error(`dev printed ${line}`));
      });
      child.once('exit', (code) => reject(new Error(`dev exited with ${code}: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`)));
    });
    const gw = { name: 'dev', port, host: '127.0.0.1', child, exited, logFile, bootstrap, agent: new http.Agent({ keepAlive: true, maxSockets: 64 }) };
    await waitUntil('dev answering through its gateway', async () => (await httpRequest(gw, 'GET', modelPath('warm-up'), { timeoutMs: 10000 })).status === 200, 60000, 200);
    log(`dev ready: gateway on port ${port}`);
    return gw;
  }

  // At the end of a passing run: every gateway and processor still running is stopped
  // with SIGTERM (a SIGKILL would hide what the sanitizers report at exit: leaks), and
  // every log is searched for a sanitizer's report. Throws when one is found.
  async stopAndCheckLogs() {
    this.shuttingDown = true;
    const stop = (children) => Promise.all(children
      .filter((ch) => ch.exitCode === null && ch.signalCode === null)
      .map((ch) => new Promise((resolve) => {
        const timer = setTimeout(resolve, 15000);
        ch.once('exit', () => { clearTimeout(timer); resolve(); });
        ch.kill('SIGTERM');
      })));
    const brokers = this.brokers || [];
    await stop(this.children.filter((ch) => !brokers.includes(ch))); // while they have a cluster
    await stop(brokers);
    checkSanitizerReports(this.tmp);
  }

  cleanup(ok) {
    this.shuttingDown = true;
    for (const ch of this.children) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGKILL');
    leaveRunDir(this.tmp, ok);
  }
}

// ---- HTTP ----

// One request: {status, headers, text, json (when the body is JSON)}. opts: token,
// body (an object is sent as JSON, a string or Buffer as is), headers, agent.
function httpRequest(gw, method, urlPath, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let payload = null;
  if (opts.body !== undefined) {
    payload = typeof opts.body === 'string' || Buffer.isBuffer(opts.body) ? Buffer.from(opts.body) : Buffer.from(JSON.stringify(opts.body));
    headers['content-type'] = headers['content-type'] || 'application/json';
    if (opts.chunked) headers['transfer-encoding'] = 'chunked';
    else headers['content-length'] = payload.length;
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: gw.host, port: gw.port, method, path: urlPath, headers, agent: opts.agent === undefined ? gw.agent : opts.agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch (e) {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.timeoutMs) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error(`${method} ${urlPath}: no answer in ${opts.timeoutMs} ms`)));
    if (payload) req.write(payload);
    req.end();
  });
}

const modelPath = (model, rest = '') => `/v1/models/${encodeURIComponent(model)}${rest}`;

// Server-Sent Events from GET /v1/models/{model}/events, parsed as they arrive.
function openEvents(gw, model, { token, query = '' } = {}) {
  const headers = { accept: 'text/event-stream' };
  if (token) headers.authorization = `Bearer ${token}`;
  const sse = { status: 0, events: [], comments: 0, closed: false, waiters: [] };
  const notify = () => {
    for (const w of sse.waiters.splice(0)) w();
  };
  return new Promise((resolve, reject) => {
    const req = http.get({ host: gw.host, port: gw.port, path: modelPath(model, `/events${query}`), headers, agent: false }, (res) => {
      sse.status = res.statusCode;
      sse.headers = res.headers;
      sse.close = () => {
        sse.closed = true;
        req.destroy();
      };
      if (res.statusCode !== 200) {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          sse.text = text;
          resolve(sse);
        });
        return;
      }
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        buffer += chunk;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
          const ev = { event: 'message', data: '' };
          let hasData = false;
          for (const line of block.split(/\r?\n/)) {
            if (line.startsWith(':')) sse.comments++;
            else if (line.startsWith('event:')) ev.event = line.slice(6).trim();
            else if (line.startsWith('data:')) {
              ev.data += (hasData ? '\n' : '') + line.slice(5).replace(/^ /, '');
              hasData = true;
            }
          }
          if (hasData) {
            ev.json = JSON.parse(ev.data);
            sse.events.push(ev);
          }
        }
        notify();
      });
      res.on('close', () => {
        sse.closed = true;
        notify();
      });
      resolve(sse);
    });
    req.on('error', (e) => (sse.closed ? null : reject(e)));
  }).then((s) => {
    // Resolves once pred(events) holds, or rejects after ms.
    s.waitFor = (what, pred, ms = 10000) => waitUntil(what, () => pred(s.events), ms, 20);
    return s;
  });
}

// ---- WebSocket ----

// One /v1/ws connection. Requests are matched to replies by model, client and seq;
// `changed` frames go to onChanged; anything unmatched is kept in `stray`.
class WsConn {
  static open(gw, { token, tokenInQuery = false } = {}) {
    const url = `ws://${gw.host}:${gw.port}/v1/ws${token && tokenInQuery ? `?access_token=${encodeURIComponent(token)}` : ''}`;
    const headers = token && !tokenInQuery ? { authorization: `Bearer ${token}` } : {};
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new WsConn(ws)));
      ws.once('unexpected-response', (req, res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => reject(Object.assign(new Error(`ws upgrade refused: ${res.statusCode} ${text}`), { status: res.statusCode, text })));
      });
      ws.once('error', reject);
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.pending = new Map();
    this.changed = []; // every `changed` frame, in order
    this.stray = [];
    this.waiters = [];
    this.closed = false;
    this.nextSeq = 1e6; // seqs for snapshot and history requests
    ws.on('message', (data) => this.onFrame(JSON.parse(data.toString('utf8'))));
    ws.on('close', () => {
      this.closed = true;
      for (const [, p] of this.pending) p.reject(new Error('websocket closed'));
      this.pending.clear();
      this.wake();
    });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  static key(model, client, seq) {
    return `${model}\u0000${client === undefined ? '' : client}\u0000${seq}`;
  }

  onFrame(msg) {
    if (msg.type === 'changed') this.changed.push(msg);
    else {
      const k = WsConn.key(msg.model, msg.client, msg.seq);
      const p = this.pending.get(k);
      if (p && msg.type !== 'subscribed') {
        this.pending.delete(k);
        p.resolve(msg);
      } else this.stray.push(msg);
    }
    this.wake();
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  // Sends a request and resolves with its reply (flushResult, snapshot, history or error).
  request(req, ms = 30000) {
    // ws drops what is sent on a closed socket without a word: say so here instead.
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('websocket closed'));
    const k = WsConn.key(req.model, req.client, req.seq);
    assert.ok(!this.pending.has(k), `two requests in flight as ${k}`);
    const reply = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(k);
        reject(new Error(`ws: no reply to ${JSON.stringify(req).slice(0, 200)} in ${ms} ms; frames that matched no request: ${JSON.stringify(this.stray).slice(0, 500)}`));
      }, ms);
      this.pending.set(k, {
        resolve: (m) => (clearTimeout(timer), resolve(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
    this.send(req);
    return reply;
  }

  snapshot(model, at, client = 'reader') {
    const req = { type: 'snapshot', model, client, seq: this.nextSeq++ };
    if (at !== undefined) req.at = at;
    return this.request(req);
  }

  // Resolves with the first stray frame that pred accepts (taking it out of `stray`).
  async nextStray(what, pred = () => true, ms = 10000) {
    return waitUntil(what, () => {
      const i = this.stray.findIndex(pred);
      return i >= 0 ? this.stray.splice(i, 1)[0] : null;
    }, ms, 10);
  }

  async subscribe(model) {
    this.send({ type: 'subscribe', model });
    await this.nextStray(`subscribed ${model}`, (m) => m.type === 'subscribed' && m.model === model);
  }

  close() {
    this.ws.close();
  }
}

// ---- flushout proxies flushing through a gateway ----

// The gateway after gw in the list that the test has not stopped.
function nextGateway(gateways, gw) {
  assert.ok(gateways, 'no gateway to move to');
  const i = gateways.indexOf(gw);
  for (let k = 1; k <= gateways.length; k++) {
    const next = gateways[(i + k) % gateways.length];
    if (!next.stopped) return next;
  }
  throw new Error('every gateway is stopped');
}

// Transports: how a proxy's flush and the snapshot reach the gateway.
// gateways (optional): where failover() moves when this one goes away; a gateway
// the test stops is marked `stopped`.
class HttpTransport {
  constructor(gw, token, gateways = null) {
    this.gw = gw;
    this.token = token;
    this.gateways = gateways;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    this.kind = 'http';
  }

  async failover() {
    this.agent.destroy();
    this.gw = nextGateway(this.gateways, this.gw);
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  }

  async flush(model, body) {
    const r = await httpRequest(this.gw, 'POST', modelPath(model, '/flush'), { token: this.token, body, agent: this.agent });
    if (r.status !== 200) return { status: r.status, reply: r.json, text: r.text };
    return { status: 200, reply: r.json };
  }

  async snapshot(model) {
    const r = await httpRequest(this.gw, 'GET', modelPath(model), { token: this.token, agent: this.agent });
    assert.strictEqual(r.status, 200, `GET snapshot of ${model}: ${r.text}`);
    return r.json;
  }

  close() {
    this.agent.destroy();
  }
}

class WsTransport {
  constructor(conn, { gw, token, gateways } = {}) {
    this.conn = conn;
    this.gw = gw;
    this.token = token;
    this.gateways = gateways;
    this.kind = 'ws';
  }

  async failover() {
    this.conn.close();
    this.gw = nextGateway(this.gateways, this.gw);
    this.conn = await WsConn.open(this.gw, { token: this.token });
  }

  async flush(model, body) {
    const reply = await this.conn.request({ type: 'flush', model, ...body });
    if (reply.type === 'error') return { status: ['timeout', 'unavailable'].includes(reply.error.code) ? 503 : 400, reply };
    return { status: 200, reply };
  }

  async snapshot(model) {
    const r = await this.conn.snapshot(model);
    assert.strictEqual(r.type, 'snapshot', `ws snapshot of ${model}: ${JSON.stringify(r)}`);
    return r.snapshot;
  }

  close() {
    this.conn.close();
  }
}

// A flushout Proxy editing one model. Created IDs are sequential, so proxies of one
// model propose the same IDs and the master remaps them. Every applied change's new
// command count is recorded (the subscribers must see each).
class Editor {
  constructor(name, model, seed, transport, gatewayName) {
    this.name = name;
    this.model = model;
    this.rng = new Rng(seed);
    this.transport = transport;
    this.gatewayName = gatewayName;
    this.proxy = new Proxy({ commandCount: 0, document: {} }, { sequentialIds: true });
    this.seq = 0;
    this.flushes = 0;
    this.timeouts = 0;
    this.remaps = 0; // created IDs the master renamed (proxies propose the same ones)
    // With failover, a gateway going away (connection closed or refused) or without a
    // reply partition (503 unavailable, during a rebalance) is expected: the flush is
    // sent again with the same seq, through the next gateway when this one is gone.
    this.failover = false;
    this.failovers = 0;
    this.unavailable = 0;
    this.unavailableAt = []; // when (ms since the start) each 503 unavailable came
    this.appliedCounts = []; // command count after each change this editor's flushes applied
  }

  edit() {
    const command = randomCommand(this.proxy.getDocument(), this.rng, this.name);
    const res = this.proxy.apply(command);
    assert.ok(res.isSuccess, `${this.name}: the proxy refused its own edit: ${JSON.stringify(res)}`);
  }

  // beginFlush, the request (sent again with the same seq after a 503 timeout, as
  // GATEWAY.md says is safe), endFlush.
  // Starts the proxy from the master's snapshot, fetched as a client would: GET over
  // HTTP, a snapshot request over the WebSocket.
  async init() {
    const snap = await this.transport.snapshot(this.model);
    assert.ok(Number.isInteger(snap.commandCount) && snap.document && typeof snap.document === 'object', JSON.stringify(snap));
    this.proxy = new Proxy(snap, { sequentialIds: true });
    return this;
  }

  async flush() {
    const batch = this.proxy.beginFlush();
    const seq = ++this.seq;
    for (;;) {
      let answer;
      try {
        answer = await this.transport.flush(this.model, { client: this.name, seq, from: batch.from, completions: batch.completions });
      } catch (e) {
        // A gateway that stops mid-answer ends the response with "aborted" (code
        // ECONNRESET): as lost as a refused connection, so the flush moves on too.
        const lost = /closed|ECONNRESET|ECONNREFUSED|socket hang up|EPIPE|aborted/.test(e.message) ||
          ['ECONNRESET', 'ECONNREFUSED', 'EPIPE'].includes(e.code);
        if (!this.failover || !lost) throw e;
        this.failovers++;
        await this.transport.failover();
        this.gatewayName = this.transport.gw.name;
        continue;
      }
      const { status, reply, text } = answer;
      if (this.failover && status === 503 && reply && reply.error && reply.error.code === 'unavailable') {
        this.unavailable++;
        this.unavailableAt.push(Date.now() - t0);
        await sleep(100);
        continue;
      }
      if (status === 503 && reply && reply.error && reply.error.code === 'timeout') {
        this.timeouts++;
        log(`${this.name}: 503 timeout on seq ${seq}, sending it again`);
        continue;
      }
      assert.strictEqual(status, 200, `${this.name} seq ${seq} via ${this.gatewayName}: ${text || JSON.stringify(reply)}`);
      assert.strictEqual(reply.type, 'flushResult', `${this.name} seq ${seq}: ${JSON.stringify(reply)}`);
      assert.strictEqual(reply.client, this.name, 'the reply names the client id as the client sent it');
      assert.strictEqual(reply.seq, seq);
      assert.strictEqual(reply.model, this.model);
      if (!reply.duplicate && reply.applied.completions.length > 0)
        this.appliedCounts.push(reply.applied.from + reply.applied.completions.length);
      if (reply.sync && reply.sync.mappedPaths) this.remaps += Object.keys(reply.sync.mappedPaths).length;
      const res = this.proxy.endFlush(reply.sync);
      assert.ok(!res.error, `${this.name}: endFlush: ${res.error}`);
      this.flushes++;
      return reply;
    }
  }

  async run(isEditing) {
    while (isEditing()) {
      const edits = 1 + this.rng.int(0, 2);
      for (let i = 0; i < edits; i++) this.edit();
      await this.flush();
      await sleep(this.rng.int(0, 30));
    }
  }
}

// The document at version n: flushout's Master fed the history's first n completions
// from an empty model (the history holds commands as applied, so they apply as they are).
async function replay(completions, n) {
  const master = new Master({ commandCount: 0, document: {} }, { sequentialIds: true });
  if (n > 0) {
    const r = await master.apply({ from: 0, completions: completions.slice(0, n) });
    assert.ok(!r.errors, `replaying the history: ${JSON.stringify(r.errors)}`);
  }
  return master.getSnapshot();
}

// Runs fn over items, at most `limit` at once.
async function inParallel(items, limit, fn) {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  });
  await Promise.all(workers);
}

// ---- Kafka (reading what the gateway produced) ----

function connect(bootstrap) {
  return new Kafka({ clientId: 'gateway-test', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
}


// ---- running a suite ----

// A named check: runs it, logs ok or the failure; the suite fails at the end if any did.
class Checks {
  constructor() {
    this.results = [];
  }

  async check(name, fn) {
    const start = Date.now();
    try {
      await fn();
      this.results.push({ name, ok: true });
      log(`ok   ${name} (${Date.now() - start} ms)`);
    } catch (e) {
      this.results.push({ name, ok: false, error: e });
      log(`FAIL ${name}: ${e.stack || e}`);
    }
  }

  skip(name, why) {
    this.results.push({ name, ok: true, skipped: true });
    log(`skip ${name}: ${why}`);
  }

  finish(suite) {
    const failed = this.results.filter((r) => !r.ok);
    const skipped = this.results.filter((r) => r.skipped).length;
    console.log(`${suite}: ${this.results.length - failed.length - skipped} passed, ${failed.length} failed, ${skipped} skipped`);
    if (failed.length) throw new Error(`failed: ${failed.map((r) => r.name).join('; ')}`);
  }
}

// Lets every editor edit for ms, then flushes what is left and sends one empty flush
// each, so that every proxy is synced to the end.
async function editAndSettle(editors, ms) {
  let editing = true;
  const runs = editors.map((e) => e.run(() => editing));
  await sleep(ms);
  editing = false;
  await Promise.all(runs);
  for (const e of editors) if (e.proxy.hasUnflushedCommands()) await e.flush();
  for (const e of editors) await e.flush();
}

// Runs main(run) and exits 0, or prints the failure, keeps the logs and exits 1.
function runMain(name, main) {
  const run = new Run(name, path.resolve(option('--bin', path.join(__dirname, '..', '..', 'build', 'bin', 'flushout-processor'))));
  const limit = setTimeout(() => {
    console.error(`${name}: FAILED: still running after ${option('--limit-s', 240)} s`);
    run.cleanup(false);
    process.exit(1);
  }, Number(option('--limit-s', 240)) * 1000);
  main(run)
    .then(() => run.stopAndCheckLogs())
    .then(() => {
      clearTimeout(limit);
      run.cleanup(true);
      process.exit(0);
    })
    .catch((e) => {
      console.error(`${name}: FAILED: ${e.stack || e}`);
      run.cleanup(false);
      process.exit(1);
    });
}

module.exports = {
  assert, canonical, option, sleep, log, waitUntil, signJwt, nowSeconds, makeKeys, Run, httpRequest, modelPath,
  openEvents, WsConn, HttpTransport, WsTransport, Editor, editAndSettle, replay, inParallel, connect, readAll, Checks, runMain,
};
