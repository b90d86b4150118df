#!/usr/bin/env node
// Differential conformance test: `flushout-processor apply` (C) against the real
// flushout@1.1.1 npm package (Master + Proxy). See README.md.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const { Master, Proxy } = require('flushout');
const { Rng } = require('../common/rng.js');

// ---------------------------------------------------------------------------
// Command line

function usage(msg) {
  if (msg) console.error(`run.js: ${msg}`);
  console.error(
    'usage: node run.js [--bin PATH] [--cases N] [--seed S] [--history LIST]\n' +
      '                   [--no-edge] [--max-report K]\n' +
      '  --bin PATH      flushout-processor binary (default ../../build/bin/flushout-processor)\n' +
      '  --cases N       random cases (default 200); case i uses seed S+i and\n' +
      '                  history LIST[i % len(LIST)]\n' +
      '  --seed S        base seed (default: from the clock, printed)\n' +
      '  --history LIST  comma-separated --history settings (default 0,3,1000)\n' +
      '  --no-edge       skip the hand-written edge cases (run once per history setting)\n' +
      '  --max-report K  print full details for the first K failing cases (default 5)\n' +
      '  --stats         print what the generated workload exercised'
  );
  if (!msg) process.exit(0);
  process.stdout.write('0 passed, 0 failed\n');
  process.exit(2);
}

// The options run.js and interceptors.js share. defaults adds or overrides fields of
// the result; extra(a, val, o, int) handles a script's own option and returns true.
function parseArgs(argv, usage, defaults = {}, extra = () => false) {
  const o = {
    bin: path.resolve(__dirname, '..', '..', 'build', 'bin', 'flushout-processor'),
    cases: 200,
    seed: undefined,
    history: [0, 3, 1000],
    edge: true,
    maxReport: 5,
    ...defaults,
  };
  const int = (name, s) => {
    if (!/^[0-9]+$/.test(s)) usage(`${name} needs a non-negative integer, got ${JSON.stringify(s)}`);
    return Number(s);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--bin': o.bin = path.resolve(val()); break;
      case '--cases': o.cases = int(a, val()); break;
      case '--seed': o.seed = int(a, val()) >>> 0; break;
      case '--history': {
        const v = val();
        o.history = v.split(',').filter((x) => x !== '').map((x) => int(a, x));
        if (o.history.length === 0) usage('--history needs at least one value');
        break;
      }
      case '--no-edge': o.edge = false; break;
      case '--max-report': o.maxReport = int(a, val()); break;
      case '-h':
      case '--help': usage(); break;
      default: if (!extra(a, val, o, int)) usage(`unknown argument ${a}`);
    }
  }
  if (o.seed === undefined) o.seed = (Date.now() ^ (process.pid << 16)) >>> 0;
  return o;
}

// ---------------------------------------------------------------------------
// Reference side: one real flushout Master per model, fed the exact request
// lines (parsed back from JSON, so it sees what the C side sees).
// opts.intercept(document, command, context, meta, request), when given, becomes each
// Master's interceptor (interceptors.js); flushout passes no meta, so it is
// built here from the flush being applied, as `apply` builds it for Lua.

const clone = (x) => JSON.parse(JSON.stringify(x));

class Reference {
  constructor(history, opts = {}) {
    this.N = history;
    this.intercept = opts.intercept;
    this.flushing = null; // the flush request being applied
    this.models = new Map();
    this.requests = []; // request lines
    this.expected = []; // reply lines
  }

  model(name) {
    let m = this.models.get(name);
    if (!m) {
      m = { history: [] }; // history[i] = applied completion of command i
      const cfg = { sequentialIds: true };
      const N = this.N;
      if (N > 0) {
        cfg.historyProvider = (from, to) => {
          if (from >= 0 && from >= to - N && from <= to) return clone(m.history.slice(from, to));
          return undefined;
        };
      }
      if (this.intercept) {
        // applyCompletions calls the interceptor before applying each command, so
        // getCommandCount() is the version before it, which is meta.commandCount.
        cfg.interceptor = (document, command, context) => {
          const f = this.flushing;
          const meta = { model: f.model, client: f.client, seq: f.seq, commandCount: m.master.model.getCommandCount(), timestamp: f.timestamp };
          return this.intercept(document, command, context, meta, f);
        };
      }
      m.master = new Master({ commandCount: 0, document: {} }, cfg);
      this.models.set(name, m);
    }
    return m;
  }

  count(name) { return this.model(name).master.getSnapshot().commandCount; }

  // Sends one request; returns the parsed reference reply.
  async send(req) {
    const line = JSON.stringify(req);
    const r = JSON.parse(line);
    const m = this.model(r.model);
    let reply;
    switch (r.type) {
      case 'flush': {
        this.flushing = r;
        const res = await m.master.apply({ from: r.from, completions: r.completions }, r.context);
        this.flushing = null;
        // Serialize now: sync.latest aliases the live document.
        reply = clone({
          type: 'flushResult', model: r.model, client: r.client, seq: r.seq,
          applied: res.applied, sync: res.sync, errors: res.errors,
        });
        if (m.history.length !== res.applied.from) throw new Error('reference history out of step');
        for (const c of reply.applied.completions) m.history.push(clone(c));
        if (m.history.length !== m.master.getSnapshot().commandCount) throw new Error('reference history length != command count');
        break;
      }
      case 'snapshot':
        reply = clone({ type: 'snapshot', model: r.model, client: r.client, seq: r.seq, snapshot: m.master.getSnapshot() });
        break;
      case 'history': {
        const to = r.to === undefined ? m.history.length : r.to;
        reply = clone({ type: 'history', model: r.model, client: r.client, seq: r.seq, from: r.from, completions: m.history.slice(r.from, to) });
        break;
      }
      default:
        throw new Error(`unknown request type ${r.type}`);
    }
    this.requests.push(line);
    const replyLine = JSON.stringify(reply);
    this.expected.push(replyLine);
    return JSON.parse(replyLine);
  }
}

// ---------------------------------------------------------------------------
// Random values. Keys that may hold null/arrays/scalars (PROP_KEYS) are
// disjoint from the keys paths go through: created IDs (all digits) and "items"
// (which only ever holds objects). No Object.prototype names anywhere.

const PROP_KEYS = [
  'name', 'title', 'count', 'ratio', 'flag', 'note', 'tags', 'meta', 'nil', 'x',
  'UPPER', 'with space', 'a,b', '', 'ключ', '名前', 'emoji😀', 'quote"key', 'back\\slash', 'ü',
];
const STRINGS = [
  '', 'hello', 'a,b', 'comma, separated, values', ',', 'üñíçødé', 'Ωmega ≈ ç √',
  '日本語テキスト', 'emoji 😀🎉 mixed', 'quote " and backslash \\', 'tab\tnew\nline\r',
  '{"not":"json"}', '0', '123', '-1.5', 'null', 'true', 'items', '\u0001\u001f\u007f',
  '\u00a0nbsp', 'line\u2028sep', '\uFEFFbom', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
];
const CHARS = ['a', 'b', 'z', 'Q', '0', '9', ' ', ',', '.', '-', '"', '\\', '/', 'é', 'ß', '€', '中', '😀', '\n', '\t'];

function randString(r) {
  if (r.chance(0.6)) return r.pick(STRINGS);
  let s = '';
  const n = r.int(1, 14);
  for (let i = 0; i < n; i++) s += r.pick(CHARS);
  return s;
}

function randInt(r) {
  if (r.chance(0.1)) {
    return r.pick([0, 1, -1, 2147483647, -2147483648, 4294967296, 9007199254740991, -9007199254740991]);
  }
  return r.int(-1000000, 1000000);
}

function randFloat(r) {
  if (r.chance(0.15)) {
    return r.pick([0.1, -0.5, 0.3, 3.141592653589793, 1.5e-7, -2.5e-300, 6.02214076e-23, -123456.789, 5e-324, 1234567.125, 1e-10]);
  }
  let x;
  do x = (r.next() - 0.5) * Math.pow(10, r.int(-3, 9)); while (Number.isInteger(x));
  return x;
}

function randValue(r, depth) {
  const c = r.int(0, depth >= 2 ? 5 : 7);
  switch (c) {
    case 0: return randString(r);
    case 1: return randInt(r);
    case 2: return randFloat(r);
    case 3: return r.chance(0.5);
    case 4: return null;
    case 5: return randString(r);
    case 6: { // nested object (never navigated by paths)
      const o = {};
      const n = r.int(0, 3);
      for (let i = 0; i < n; i++) o[r.pick(PROP_KEYS)] = randValue(r, depth + 1);
      return o;
    }
    default: { // array (never navigated)
      const a = [];
      const n = r.int(0, 4);
      for (let i = 0; i < n; i++) a.push(randValue(r, depth + 1));
      return a;
    }
  }
}

function randProps(r, maxKeys) {
  const o = {};
  const n = r.int(0, maxKeys);
  for (let i = 0; i < n; i++) o[r.pick(PROP_KEYS)] = randValue(r, 0);
  return o;
}

// An object that may sit at a path-navigable key: prop keys plus optionally
// "items" and digit keys, both holding such objects again.
function randNode(r, depth) {
  const o = randProps(r, 3);
  if (depth < 2 && r.chance(0.3)) o.items = randItems(r, depth + 1);
  if (depth < 2 && r.chance(0.15)) o[String(r.int(1, 30))] = randNode(r, depth + 1);
  return o;
}

function randItems(r, depth) {
  const o = {};
  if (depth < 3 && r.chance(0.3)) {
    const n = r.int(1, 2);
    for (let i = 0; i < n; i++) o[String(r.int(1, 40))] = randNode(r, depth + 1);
  }
  return o;
}

// ---------------------------------------------------------------------------
// Random workload through real Proxies

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isIdKey = (k) => /^(0|[1-9][0-9]*)$/.test(k);

// All object paths reachable through ID keys and "items" (root included).
function objectPaths(doc) {
  const out = [[]];
  const stack = [[doc, []]];
  while (stack.length && out.length < 400) {
    const [node, p] = stack.pop();
    for (const k of Object.keys(node)) {
      if (!(isIdKey(k) || k === 'items')) continue;
      const v = node[k];
      if (!isObj(v)) throw new Error(`generator invariant broken: ${JSON.stringify(p.concat(k))} holds ${JSON.stringify(v)}`);
      const q = p.concat(k);
      out.push(q);
      stack.push([v, q]);
    }
  }
  return out;
}

function remember(cl, p) {
  cl.known.push(p.slice());
  if (cl.known.length > 40) cl.known.shift();
}

function targetPath(r, cl, objs) {
  const x = r.next();
  if (x < 0.3 || objs.length === 1 && x < 0.6) return [];
  if (x < 0.65 && objs.length > 1) return r.pick(objs.slice(1)).slice();
  if (x < 0.8 && cl.known.length) return r.pick(cl.known).slice();
  if (x < 0.93) return r.pick(objs).concat('items');
  return r.pick(objs).concat(String(r.int(1, 400)));
}

function genCommand(r, cl) {
  const objs = objectPaths(cl.proxy.getDocument());
  const k = r.next();
  if (k < 0.5) {
    const p = targetPath(r, cl, objs);
    const cmd = { action: 'create' };
    if (p.length > 0 || r.chance(0.7)) cmd.path = p;
    if (r.chance(0.85)) cmd.props = r.chance(0.2) ? randNode(r, 0) : randProps(r, 4);
    const last = p[p.length - 1];
    if (p.length > 0 && (last === 'items' ? r.chance(0.75) : r.chance(0.25))) cmd.parentDefault = randNode(r, 1);
    else if (p.length === 0 && r.chance(0.05)) cmd.parentDefault = {}; // ignored for the root
    return cmd;
  }
  if (k < 0.75) {
    const p = targetPath(r, cl, objs);
    const cmd = { action: 'update' };
    if (p.length > 0 || r.chance(0.7)) cmd.path = p;
    const y = r.next();
    if (y < 0.08) { /* no props */ }
    else if (y < 0.16) cmd.props = {};
    else {
      cmd.props = randProps(r, 4);
      if (r.chance(0.05)) cmd.props.items = randItems(r, 1);
    }
    return cmd;
  }
  const nonRoot = objs.slice(1);
  const y = r.next();
  let p;
  if (y < 0.4 && nonRoot.length) p = r.pick(nonRoot).slice(); // a whole object
  else if (y < 0.65) p = r.pick(objs).concat(r.pick(PROP_KEYS)); // a prop (maybe missing)
  else if (y < 0.75) p = r.pick(objs).concat('items');
  else if (y < 0.87) p = r.pick(objs).concat(String(r.int(1, 500))); // most likely missing
  else if (cl.known.length) p = r.pick(cl.known).slice();
  else p = ['nokey'];
  if (p.length === 0) p = ['nokey'];
  return { action: 'detete', path: p };
}

// opts.reference: options for the Reference; opts.decorateFlush(req): adds fields
// (context, timestamp) to each flush request before it is sent.
async function buildRandomCase(seed, N, opts = {}) {
  const r = new Rng(seed);
  // Non-sequential Proxies draw IDs from Math.random: make that seeded too.
  const idRng = new Rng((seed ^ 0x9e3779b9) >>> 0);
  const savedRandom = Math.random;
  Math.random = () => idRng.next();
  try {
    const ref = new Reference(N, opts.reference);
    const models = [];
    const nModels = r.int(1, 3);
    for (let j = 0; j < nModels; j++) models.push({ name: `c${seed}-m${j}`, clients: [], target: r.int(2, 5), nextK: 0 });

    const join = async (m, viaRequest) => {
      const cl = { name: `${m.name}-k${m.nextK++}`, model: m.name, seq: 0, pending: null, known: [] };
      let snap;
      if (viaRequest) {
        const reply = await ref.send({ type: 'snapshot', model: m.name, client: cl.name, seq: ++cl.seq });
        snap = reply.snapshot;
      } else {
        snap = clone(ref.model(m.name).master.getSnapshot());
      }
      cl.proxy = new Proxy(snap, { sequentialIds: r.chance(0.75) });
      m.clients.push(cl);
      return cl;
    };
    const beginFlush = async (cl) => {
      const batch = cl.proxy.beginFlush();
      const req = { type: 'flush', model: cl.model, client: cl.name, seq: ++cl.seq, from: batch.from, completions: batch.completions };
      if (opts.decorateFlush) opts.decorateFlush(req);
      cl.pending = await ref.send(req);
    };
    const endFlush = (cl) => {
      const res = cl.proxy.endFlush(cl.pending.sync);
      cl.pending = null;
      if (res.error) throw new Error(`proxy ${cl.name} endFlush failed: ${res.error}`);
      const objs = objectPaths(cl.proxy.getDocument());
      if (objs.length > 1) remember(cl, r.pick(objs.slice(1)));
    };

    for (const m of models) {
      const initial = r.int(1, m.target);
      for (let i = 0; i < initial; i++) await join(m, r.chance(0.4));
    }

    const steps = r.int(30, 200);
    for (let s = 0; s < steps; s++) {
      const m = r.pick(models);
      if (m.clients.length < m.target && r.chance(0.05)) { await join(m, true); continue; }
      const cl = r.pick(m.clients);
      const x = r.next();
      if (x < 0.55) {
        const n = r.int(1, 3);
        for (let i = 0; i < n; i++) {
          const cmd = genCommand(r, cl);
          const res = cl.proxy.apply(cmd);
          if (res.isSuccess && res.createdId !== undefined) remember(cl, (cmd.path || []).concat(res.createdId));
        }
      } else if (x < 0.9) {
        const preferBegin = x < 0.72;
        if (cl.pending && (!preferBegin || r.chance(0.7))) endFlush(cl);
        else if (!cl.pending) await beginFlush(cl);
      } else if (x < 0.95) {
        await ref.send({ type: 'snapshot', model: m.name, client: cl.name, seq: ++cl.seq });
      } else {
        const count = ref.count(m.name);
        const from = r.int(Math.max(0, count - N), count);
        const req = { type: 'history', model: m.name, client: cl.name, seq: ++cl.seq, from };
        if (r.chance(0.5)) req.to = r.int(from, count);
        await ref.send(req);
      }
    }
    // Wind down: deliver pending replies, one last flush from a few clients,
    // then a snapshot of every model so the final documents get compared.
    for (const m of models) {
      for (const cl of m.clients) {
        if (cl.pending) endFlush(cl);
        if (r.chance(0.5)) { await beginFlush(cl); endFlush(cl); }
      }
    }
    for (const m of models) {
      const cl = m.clients[0];
      await ref.send({ type: 'snapshot', model: m.name, client: cl.name, seq: ++cl.seq });
    }
    return { label: `seed ${seed}`, seed, N, edge: false, requests: ref.requests, expected: ref.expected };
  } finally {
    Math.random = savedRandom;
  }
}

// ---------------------------------------------------------------------------
// Hand-written edge cases (raw request lines, one model each)

const C = (action, pathArr, extra) => {
  const command = { action };
  if (pathArr !== undefined) command.path = pathArr;
  Object.assign(command, extra || {});
  return command;
};
const create = (p, createdId, extra) => {
  const c = { command: C('create', p, extra) };
  if (createdId !== undefined) c.createdId = createdId;
  return c;
};
const update = (p, props) => ({ command: C('update', p, props === undefined ? {} : { props }) });
const del = (p) => ({ command: C('detete', p) });

const EDGE = {
  // "toString"/"constructor"/"valueOf" are `in` every object: always a collision.
  'proto-id-tostring': async (c) => {
    await c.flush([create([], 'toString', { props: { a: 1 } })]);
    await c.snapshot();
  },
  'proto-id-constructor': async (c) => {
    await c.flush([create(undefined, 'constructor', { props: {} })]);
    await c.flush([create([], 'valueOf', { props: { v: 'x' } })]);
    await c.flush([create([], 'hasOwnProperty')]);
    await c.snapshot();
  },
  // The batch's mapping for "toString" is an own property of mappedPaths, so later
  // commands in the same batch are redirected; the nested collision is keyed by the
  // *mapped* parent path ("2,constructor").
  'proto-id-mapped-path': async (c) => {
    await c.flush([
      create([], 'toString', { props: {} }),
      update(['toString'], { x: 1 }),
      create(['toString'], 'constructor', { props: { y: 2 } }),
      update(['toString', '4'], { z: 3 }), // prefix "toString" -> ["2","4"]
    ]);
    await c.snapshot();
  },
  // PathMapper keys are path.toString(): ["k,1"] and ["k","1"] share a key.
  'comma-path': async (c) => {
    await c.flush([create([], 'k,1', { props: {} })]);
    await c.flush([
      create([], 'k,1', { props: { v: 1 } }),
      update(['k', '1'], { z: 1 }),
      update(['k,1'], { y: 2 }),
      create(['k,1', 'sub'], '9', { parentDefault: { d: 'a,b' } }),
      update(['nope,x'], {}),
      del(['k', 'nope', 'x,y']),
    ], 0);
    await c.snapshot();
  },
  'parent-default': async (c) => {
    await c.flush([create(['p1', 'items'], '5', { parentDefault: { d: 1 } })]); // parent missing: error
    await c.flush([create([], '1', { props: {} })]);
    await c.flush([create(['1', 'items'], '1', { props: { n: 1 }, parentDefault: { 1: {}, keep: true } })]); // collides inside the default
    await c.flush([create(['zz'], '2', { parentDefault: {} })]); // default at a root key
    await c.flush([create([], '7', { props: {}, parentDefault: { ignored: 1 } })]); // root: default ignored
    await c.flush([create(['1', 'items'], '40', { parentDefault: { replaced: 'no' } })]); // path exists: default ignored
    await c.flush([create(['1', 'items', '3', 'deep'], '1', { parentDefault: {} })]);
    await c.snapshot();
  },
  'update-empty-props': async (c) => {
    await c.flush([update([], {})]);
    await c.flush([{ command: { action: 'update' } }]);
    await c.flush([{ command: { action: 'update', path: [] } }]);
    await c.flush([update(undefined, { top: 'level', n: 1.5 })]);
    await c.flush([create([], '1', { props: { a: 1 } }), update(['1'], {}), update(['1'], { a: null, b: [1, 'x'] })]);
    await c.snapshot();
  },
  'delete-missing': async (c) => {
    await c.flush([del(['nokey'])]);
    await c.flush([del(['nokey', 'x'])]);
    await c.flush([create([], '1', { props: { keep: 1, drop: 2 } }), del(['1', 'drop']), del(['1', 'drop']), del(['1', 'a', 'b'])]);
    await c.flush([del(['1']), update(['1'], { after: 'delete' })]);
    await c.snapshot();
  },
  'from-ahead': async (c) => {
    await c.flush([create([], '1', { props: {} })], 1000);
    await c.flush([], c.count() + 1);
    await c.flush([update(['1'], { ok: true })], c.count() + 5);
    await c.snapshot();
  },
  'from-behind': async (c) => {
    for (let i = 0; i < 6; i++) await c.flush([create([], String(i + 1), { props: { i } })]);
    await c.historyWindow();
    await c.flush([update(['1'], { late: 1 })], 0); // far behind
    const n = c.count();
    await c.flush([], n - 1);
    await c.flush([create([], '3', { props: {} })], n - 3); // N=3: last partial
    await c.flush([], c.count() - 4); // N=3: first full
    await c.historyWindow();
    await c.snapshot();
  },
  'empty-completions': async (c) => {
    await c.flush([]);
    await c.flush([create([], '1', { props: {} })]);
    await c.flush([]);
    await c.flush([], 0);
    await c.flush([], 1);
    await c.snapshot();
  },
  // Without a createdId the completion is echoed as sent, unless the batch was
  // modified earlier on; then the applied completion carries the generated ID.
  'no-created-id': async (c) => {
    await c.flush([create([], undefined, { props: { a: 1 } })]);
    await c.flush([create([], '3', { props: {} })]);
    await c.flush([create([], undefined, { props: {} })]); // count 2 -> "3" taken -> "4"
    await c.flush([update(['missing'], { x: 1 }), create([], undefined, {}), create(undefined, undefined, { props: { b: 2 } })]);
    await c.flush([{ command: { action: 'create' } }]);
    await c.snapshot();
  },
  // Two writers with the same sequential IDs; errors report the mapped path.
  'error-mapped-path': async (c) => {
    await c.flush([create([], '1', { props: { owner: 'a' } })]);
    await c.flush([
      create([], '1', { props: { owner: 'b' } }),
      update(['1', 'items', '9'], { x: 1 }),
      create(['1', 'items'], '2', { parentDefault: {} }),
      create(['1', 'items', '2'], '4', { props: {} }),
      update(['1', 'items', '2', '4'], { deep: true }),
      del(['1', 'items', '2', '4', 'gone', 'x']),
    ], 0);
    await c.historyWindow();
    await c.snapshot();
  },
  'values': async (c) => {
    await c.flush([create([], '1', {
      props: {
        s: 'unicode ü 日本 😀 "q" \\ \n\t,', e: '', i: -9007199254740991, big: 9007199254740991,
        f: 0.1, g: -2.5e-300, h: 5e-324, t: true, fa: false, n: null, arr: [1, 'two', [3], { four: 4 }, null],
        obj: { nested: { deeper: [] } }, emptyObj: {}, emptyArr: [],
      },
    })]);
    await c.flush([update(['1'], { s: null, arr: {}, 'a,b': 'c,d' })]);
    await c.snapshot();
  },
};

// opts as for buildRandomCase.
async function buildEdgeCase(name, fn, N, opts = {}) {
  const ref = new Reference(N, opts.reference);
  const model = `edge-${name}`;
  const client = `${model}-k0`;
  let seq = 0;
  const ctx = {
    count: () => ref.count(model),
    flush: (completions, from) => {
      const req = { type: 'flush', model, client, seq: ++seq, from: from === undefined ? ref.count(model) : from, completions };
      if (opts.decorateFlush) opts.decorateFlush(req);
      return ref.send(req);
    },
    snapshot: () => ref.send({ type: 'snapshot', model, client, seq: ++seq }),
    history: (from, to) => {
      const req = { type: 'history', model, client, seq: ++seq, from };
      if (to !== undefined) req.to = to;
      return ref.send(req);
    },
    // History requests that stay inside the retained window [count-N, count].
    historyWindow: async () => {
      const n = ref.count(model);
      const lo = Math.max(0, n - N);
      await ctx.history(lo);
      await ctx.history(n);
      await ctx.history(lo, n);
      if (n - lo >= 2) await ctx.history(lo + 1, n - 1);
    },
  };
  await fn(ctx);
  await ctx.snapshot();
  return { label: `edge ${name}`, name, N, edge: true, requests: ref.requests, expected: ref.expected };
}

// ---------------------------------------------------------------------------
// Comparison: key order ignored, arrays ordered, numbers by value.

function firstDiff(a, b, where) {
  if (typeof a === 'number' && typeof b === 'number') {
    return a === b || (Number.isNaN(a) && Number.isNaN(b)) ? null : `${where}: expected ${a}, got ${b}`;
  }
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') {
    return a === b ? null : `${where}: expected ${short(a)}, got ${short(b)}`;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return `${where}: expected ${short(a)}, got ${short(b)}`;
  if (Array.isArray(a)) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const d = firstDiff(a[i], b[i], `${where}[${i}]`);
      if (d) return d;
    }
    return a.length === b.length ? null : `${where}: expected array of length ${a.length}, got ${b.length}`;
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return `${where}${fmtKey(k)}: expected ${short(a[k])}, got nothing (key missing)`;
  }
  for (const k of kb) {
    if (!Object.prototype.hasOwnProperty.call(a, k)) return `${where}${fmtKey(k)}: unexpected key, got ${short(b[k])}`;
  }
  for (const k of ka) {
    const d = firstDiff(a[k], b[k], `${where}${fmtKey(k)}`);
    if (d) return d;
  }
  return null;
}

const fmtKey = (k) => (/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`);
const trunc = (s, n) => (s.length > n ? `${s.slice(0, n)}... (${s.length - n} more chars)` : s);
const short = (v) => (v === undefined ? 'undefined' : trunc(JSON.stringify(v), 200));
const pretty = (v, n) => trunc(typeof v === 'string' ? v : JSON.stringify(v, null, 2), n).replace(/^/gm, '    ');

function printStats(N, cases) {
  const st = { flush: 0, snapshot: 0, history: 0, noSync: 0, partial: 0, full: 0, withErrors: 0, errors: 0, mapped: 0, mappedKeys: 0, nestedMappedKeys: 0, modified: 0 };
  for (const c of cases) {
    for (const l of c.expected) {
      const r = JSON.parse(l);
      if (r.type !== 'flushResult') { st[r.type]++; continue; }
      st.flush++;
      if (!r.sync) st.noSync++;
      else if (r.sync.isPartial) st.partial++;
      else st.full++;
      if (r.errors) { st.withErrors++; st.errors += r.errors.length; }
      const mk = r.sync ? Object.keys(r.sync.mappedPaths || {}) : [];
      if (mk.length) { st.mapped++; st.mappedKeys += mk.length; st.nestedMappedKeys += mk.filter((k) => k.includes(',')).length; }
    }
    for (let j = 0; j < c.requests.length; j++) {
      const q = JSON.parse(c.requests[j]);
      if (q.type === 'flush' && JSON.stringify(q.completions) !== JSON.stringify(JSON.parse(c.expected[j]).applied.completions)) st.modified++;
    }
  }
  console.log(`  stats history ${N}: ${JSON.stringify(st)}`);
}

// ---------------------------------------------------------------------------
// Running the binary

function runBinary(bin, N, lines, extraArgs = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flushout-conformance-state-'));
  try {
    const args = ['apply', '--state-dir', dir, '--ids', 'sequential', '--history', String(N), ...extraArgs];
    const t0 = Date.now();
    const res = spawnSync(bin, args, {
      input: lines.length ? lines.join('\n') + '\n' : '',
      encoding: 'utf8',
      maxBuffer: 1 << 30,
      timeout: 10 * 60 * 1000,
    });
    res.ms = Date.now() - t0;
    res.args = args;
    return res;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function reproFiles(c, actual) {
  const dir = path.join(os.tmpdir(), 'flushout-conformance');
  fs.mkdirSync(dir, { recursive: true });
  const base = path.join(dir, `${c.fileLabel || (c.edge ? `edge-${c.name}` : `seed-${c.seed}`)}-history-${c.N}`);
  const w = (suffix, lines) => fs.writeFileSync(base + suffix, lines.map((l) => l + '\n').join(''));
  w('.requests.ndjson', c.requests);
  w('.expected.ndjson', c.expected);
  w('.actual.ndjson', actual);
  return base;
}

// Pipes the cases of one group (one --history setting, plus g.binArgs) through one
// binary invocation and compares every reply. `reported` counts the failures
// already printed in full (at most o.maxReport over all groups).
function runAndCompare(o, N, cases, g, reported) {
  const groupLabel = g.label || `history ${N}`;
  const r = { passed: 0, failed: 0, failures: [], binaryTrouble: false, reported };
  const lines = [];
  for (const c of cases) { c.offset = lines.length; lines.push(...c.requests); }

  const res = runBinary(o.bin, N, lines, g.binArgs);
  let out = [];
  let trouble = null;
  if (res.error) trouble = `could not run ${o.bin}: ${res.error.message}`;
  else {
    out = res.stdout.split('\n');
    if (out.length && out[out.length - 1] === '') out.pop();
    if (res.status !== 0) trouble = `binary exited with ${res.signal ? `signal ${res.signal}` : `status ${res.status}`}`;
    else if (out.length !== lines.length) trouble = `binary printed ${out.length} lines for ${lines.length} requests`;
  }
  console.log(`${groupLabel}: ${cases.length} cases, ${lines.length} requests; reference ${g.refMs} ms, binary ${res.ms} ms`);
  if (trouble) {
    r.binaryTrouble = true;
    console.log(`  ERROR: ${trouble}`);
    console.log(`  command: ${o.bin} ${res.args.join(' ')} < requests`);
    const err = (res.stderr || '').trim();
    if (err) console.log(`  stderr (tail):\n${pretty(err.split('\n').slice(-20).join('\n'), 3000)}`);
  }

  for (const c of cases) {
    const actual = out.slice(c.offset, c.offset + c.requests.length);
    let first = null;
    let bad = 0;
    for (let j = 0; j < c.requests.length; j++) {
      const exp = JSON.parse(c.expected[j]);
      let diff;
      let act;
      if (j >= actual.length) diff = '(no reply line)';
      else {
        try {
          act = JSON.parse(actual[j]);
          diff = firstDiff(exp, act, '$');
        } catch (e) {
          diff = `reply is not JSON: ${e.message}`;
        }
      }
      if (diff) {
        bad++;
        if (!first) first = { j, diff, exp, act, raw: actual[j] };
      }
    }
    if (!first) { r.passed++; continue; }
    r.failed++;
    const repro = g.repro(c);
    r.failures.push(`${c.label} ${groupLabel}: ${first.diff}`);
    if (r.reported < o.maxReport) {
      r.reported++;
      const base = reproFiles(c, actual);
      const directArgs = res.args.map((a, i) => (res.args[i - 1] === '--state-dir' ? '"$(mktemp -d)"' : a));
      console.log(`\nFAIL ${c.label} (${groupLabel}): reply ${first.j + 1} of ${c.requests.length} differs; ${bad} differing replies in this case`);
      console.log(`  first difference: ${first.diff}`);
      console.log(`  request:\n${pretty(c.requests[first.j], 1500)}`);
      console.log(`  expected (flushout):\n${pretty(first.exp, 2500)}`);
      console.log(`  actual (binary):\n${pretty(first.act !== undefined ? first.act : String(first.raw), 2500)}`);
      console.log(`  reproduce: ${repro}`);
      console.log(`  files: ${base}.{requests,expected,actual}.ndjson`);
      console.log(`  direct: ${o.bin} ${directArgs.join(' ')} < ${base}.requests.ndjson`);
    } else {
      console.log(`FAIL ${c.label} (${groupLabel}): ${first.diff} [reproduce: ${repro}]`);
    }
  }
  return r;
}

// ---------------------------------------------------------------------------

async function main() {
  const o = parseArgs(process.argv.slice(2), usage, {}, (a, val, opts) => {
    if (a !== '--stats') return false;
    opts.stats = true;
    return true;
  });
  const t0 = Date.now();
  console.log(`flushout conformance: bin=${o.bin}`);
  console.log(`seed=${o.seed} cases=${o.cases} history=${o.history.join(',')} edge=${o.edge ? 'yes' : 'no'}`);

  let passed = 0;
  let failed = 0;
  let binaryTrouble = false;
  let reported = 0;
  const failures = [];

  for (let h = 0; h < o.history.length; h++) {
    const N = o.history[h];
    const tr = Date.now();
    const cases = [];
    for (let i = h; i < o.cases; i += o.history.length) cases.push(await buildRandomCase((o.seed + i) >>> 0, N));
    if (o.edge) for (const [name, fn] of Object.entries(EDGE)) cases.push(await buildEdgeCase(name, fn, N));
    if (cases.length === 0) continue;
    const refMs = Date.now() - tr;
    if (o.stats) printStats(N, cases);
    const g = runAndCompare(o, N, cases, {
      refMs,
      repro: (c) => (c.edge
        ? `node run.js --bin ${o.bin} --cases 0 --history ${N}`
        : `node run.js --bin ${o.bin} --seed ${c.seed} --cases 1 --history ${N} --no-edge`),
    }, reported);
    passed += g.passed;
    failed += g.failed;
    reported = g.reported;
    binaryTrouble = binaryTrouble || g.binaryTrouble;
    failures.push(...g.failures);
  }

  if (failures.length) {
    console.log(`\nfailing cases (${failures.length}):`);
    for (const f of failures.slice(0, 50)) console.log(`  ${trunc(f, 300)}`);
    if (failures.length > 50) console.log(`  ... and ${failures.length - 50} more`);
  }
  const total = passed + failed;
  if (total === 0) console.log('no cases ran');
  console.log(`time ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 && total > 0 && !binaryTrouble ? 0 : 1;
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e && e.stack ? e.stack : e);
    console.log('0 passed, 0 failed');
    process.exitCode = 2;
  });
}

module.exports = {
  buildRandomCase, buildEdgeCase, EDGE, firstDiff, parseArgs, Reference, runAndCompare, pretty, trunc,
};
