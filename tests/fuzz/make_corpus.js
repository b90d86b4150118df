#!/usr/bin/env node
// tests/fuzz/make_corpus.js - writes the fuzz seed corpus: one msgpack request per file.
//
// A tiny msgpack encoder lives here rather than an npm package so that the corpus can
// be regenerated with a bare node, and so that it can write what encoders refuse to
// (duplicate keys, truncated input, ext types) for the decoder's rejection paths.
// Paths refer to fuzz_request.c's initial document:
//   {"items":{"1":{"name":"a","done":false},"2":{"items":{}}},"meta":{"title":"t"}}
// Usage: node make_corpus.js [OUT_DIR]   (default: corpus/ next to this file)
'use strict';

const fs = require('fs');
const path = require('path');

// ---------------------------------------------------------------------------
// msgpack encoding

// A map given as [key, value] pairs, so that duplicate keys can be written.
class Pairs {
  constructor(pairs) { this.pairs = pairs; }
}
// Bytes written as they are.
class Raw {
  constructor(bytes) { this.bytes = Buffer.from(bytes); }
}
// A float64 even when the number is an integer.
class F64 {
  constructor(x) { this.x = x; }
}
// A float32.
class F32 {
  constructor(x) { this.x = x; }
}

function u8(n) { return Buffer.from([n]); }
function head(code, n, bytes) {
  const b = Buffer.alloc(1 + bytes);
  b[0] = code;
  if (bytes === 1) b.writeUInt8(n, 1);
  else if (bytes === 2) b.writeUInt16BE(n, 1);
  else if (bytes === 4) b.writeUInt32BE(n, 1);
  return b;
}

function encInt(n) {
  if (n >= 0) {
    if (n < 0x80) return u8(n);
    if (n < 0x100) return head(0xcc, n, 1);
    if (n < 0x10000) return head(0xcd, n, 2);
    if (n < 0x100000000) return head(0xce, n, 4);
    const b = Buffer.alloc(9);
    b[0] = 0xcf;
    b.writeBigUInt64BE(BigInt(n), 1);
    return b;
  }
  if (n >= -32) return u8(n & 0xff);
  let b;
  if (n >= -0x80) { b = Buffer.alloc(2); b[0] = 0xd0; b.writeInt8(n, 1); return b; }
  if (n >= -0x8000) { b = Buffer.alloc(3); b[0] = 0xd1; b.writeInt16BE(n, 1); return b; }
  if (n >= -0x80000000) { b = Buffer.alloc(5); b[0] = 0xd2; b.writeInt32BE(n, 1); return b; }
  b = Buffer.alloc(9);
  b[0] = 0xd3;
  b.writeBigInt64BE(BigInt(n), 1);
  return b;
}

function encStr(s) {
  const body = Buffer.from(s, 'utf8');
  const n = body.length;
  let h;
  if (n < 32) h = u8(0xa0 | n);
  else if (n < 0x100) h = head(0xd9, n, 1);
  else if (n < 0x10000) h = head(0xda, n, 2);
  else h = head(0xdb, n, 4);
  return Buffer.concat([h, body]);
}

function encLen(n, fix, fixMax, c16, c32) {
  if (n <= fixMax) return u8(fix | n);
  if (n < 0x10000) return head(c16, n, 2);
  return head(c32, n, 4);
}

function enc(v) {
  if (v === null || v === undefined) return u8(0xc0);
  if (v === false) return u8(0xc2);
  if (v === true) return u8(0xc3);
  if (v instanceof Raw) return v.bytes;
  if (v instanceof F64) { const b = Buffer.alloc(9); b[0] = 0xcb; b.writeDoubleBE(v.x, 1); return b; }
  if (v instanceof F32) { const b = Buffer.alloc(5); b[0] = 0xca; b.writeFloatBE(v.x, 1); return b; }
  if (Buffer.isBuffer(v)) {
    return Buffer.concat([v.length < 0x100 ? head(0xc4, v.length, 1) : head(0xc5, v.length, 2), v]);
  }
  if (typeof v === 'number') {
    return Number.isInteger(v) ? encInt(v) : enc(new F64(v));
  }
  if (typeof v === 'string') return encStr(v);
  if (Array.isArray(v)) {
    return Buffer.concat([encLen(v.length, 0x90, 15, 0xdc, 0xdd), ...v.map(enc)]);
  }
  const pairs = v instanceof Pairs ? v.pairs : Object.entries(v);
  const parts = [encLen(pairs.length, 0x80, 15, 0xde, 0xdf)];
  for (const [k, x] of pairs) parts.push(enc(k), enc(x));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------
// Seeds

const create = (p, props, extra) => Object.assign({ action: 'create', path: p }, props !== undefined ? { props } : {}, extra || {});
const update = (p, props) => ({ action: 'update', path: p, props });
const del = (p) => ({ action: 'detete', path: p });
const flush = (from, completions, extra) =>
  Object.assign({ type: 'flush', model: 'm', client: 'c1', seq: 1, from, completions }, extra || {});

const seeds = {
  // Valid flushes: the shapes a flushout Proxy sends.
  'flush-empty': flush(0, []),
  'flush-create': flush(0, [{ command: create(['items'], { name: 'x', done: false }), createdId: '3' }]),
  'flush-create-no-id': flush(0, [{ command: create(['items'], { name: 'y' }) }]),
  'flush-create-collides': flush(0, [
    { command: create(['items'], { name: 'dup' }), createdId: '1' },
    { command: update(['items', '1'], { done: true }) },
  ]),
  'flush-create-then-child': flush(0, [
    { command: create(['items'], { name: 'p' }), createdId: '1' },
    { command: create(['items', '1', 'items'], { name: 'child' }, { parentDefault: {} }), createdId: '1' },
  ]),
  'flush-parent-default': flush(0, [
    { command: create(['items', '2', 'sub'], { v: 1 }, { parentDefault: { kind: 'list' } }), createdId: '9' },
  ]),
  'flush-update': flush(0, [{ command: update(['meta'], { title: 'new', count: 3, ratio: 0.25 }) }]),
  'flush-update-root': flush(0, [{ command: { action: 'update', props: { top: [1, 'two', null, true] } } }]),
  'flush-delete': flush(0, [{ command: del(['items', '1']) }]),
  'flush-delete-delete-spelling': flush(0, [{ command: { action: 'delete', path: ['items', '2'] } }]),
  'flush-mixed': flush(0, [
    { command: create(['items'], { name: 'a', tags: ['x', 'y'] }), createdId: '4' },
    { command: update(['items', '4'], { name: 'b' }) },
    { command: del(['items', '4']) },
    { command: create(['items'], {}), createdId: '4' },
  ], { context: { user: 'u1', roles: ['admin'] } }),
  'flush-behind': flush(0, [{ command: update(['meta'], { n: 1 }) }], { seq: 7, from: 0 }),
  'flush-ahead': flush(12, [{ command: update(['meta'], { n: 2 }) }]),
  'flush-missing-node': flush(0, [
    { command: update(['items', '404'], { n: 1 }) },
    { command: del(['nope', 'x']) },
    { command: create(['items', '404', 'items'], {}), createdId: '1' },
  ]),
  'flush-nested-props': flush(0, [{
    command: create(['items'], { a: { b: { c: { d: { e: [[[{ f: 'deep' }]]] } } } } }),
    createdId: '5',
  }]),
  'flush-scalars': flush(0, [{
    command: update(['meta'], {
      i8: -100, i16: -30000, i32: -2000000000, i64: -9007199254740991, u64: 9007199254740991,
      f: 3.141592653589793, f32: new F32(1.5), whole: new F64(2), bin: Buffer.from([0, 1, 2, 255]),
      empty: '', unicode: 'ünï 日本 😀', nil: null,
    }),
  }]),
  'flush-odd-keys': flush(0, [{
    command: create(['items'], { 'a,b': 1, '': 2, 'with space': 3, 'ключ': 4, toString: 5 }),
    createdId: 'a,b',
  }, { command: update(['items', 'a,b'], { x: 1 }) }]),
  'flush-no-model-field': (() => { const r = flush(0, []); delete r.model; return r; })(),
  'flush-nil-optional': flush(0, [{ command: { action: 'update', path: null, props: null }, createdId: null }], { context: null }),

  // Snapshots and history.
  'snapshot': { type: 'snapshot', model: 'm', client: 'c2', seq: 0 },
  'history-from-0': { type: 'history', model: 'm', client: 'c2', seq: 2, from: 0 },
  'history-range': { type: 'history', model: 'm', client: 'c2', seq: 3, from: 1, to: 3 },
  'history-bad-range': { type: 'history', model: 'm', client: 'c2', seq: 4, from: 5, to: 2 },

  // Rejections: each exercises one of the decoder's or validator's checks.
  'bad-model-mismatch': flush(0, [], { model: 'other' }),
  'bad-unknown-type': { type: 'merge', model: 'm', client: 'c1', seq: 1 },
  'bad-unknown-action': flush(0, [{ command: { action: 'move', path: [] } }]),
  'bad-missing-completions': { type: 'flush', model: 'm', client: 'c1', seq: 1, from: 0 },
  'bad-wrong-type-path': flush(0, [{ command: { action: 'update', path: ['items', 1] } }]),
  'bad-negative-seq': flush(0, [], { seq: -1 }),
  'bad-seq-too-large': flush(0, [], { seq: 2 ** 53 }),
  'bad-proto-path': flush(0, [{ command: update(['__proto__'], { x: 1 }) }]),
  'bad-proto-key': new Pairs([['type', 'flush'], ['model', 'm'], ['client', 'c'], ['seq', 1], ['from', 0],
    ['completions', []], ['__proto__', {}]]),
  'bad-duplicate-key': new Pairs([['type', 'snapshot'], ['model', 'm'], ['client', 'c'], ['seq', 1], ['seq', 2]]),
  'bad-int-key': new Pairs([['type', 'snapshot'], [1, 'm']]),
  'bad-not-a-map': ['flush', 'm'],
  'bad-nan': flush(0, [{ command: update(['meta'], { x: new F64(NaN) }) }]),
  'bad-ext': new Raw([0x81, 0xa1, 0x78, 0xd4, 0x01, 0x00]),
  'bad-reserved': new Raw([0x81, 0xa1, 0x78, 0xc1]),
  'bad-invalid-utf8': new Raw([0x82, 0xa4, ...Buffer.from('type'), 0xa8, ...Buffer.from('snapshot'),
    0xa6, ...Buffer.from('client'), 0xa2, 0xc3, 0x28]),
  'bad-huge-array-header': new Raw([0xdd, 0xff, 0xff, 0xff, 0xff, 0x90]),
  'bad-deep': new Raw([...Array(80).fill(0x91), 0x90]),
  'bad-truncated-client': new Raw(enc({ type: 'snapshot', model: 'm', client: 'c2c2c2c2', seq: 0 }).subarray(0, 30)),
};

// Creates and deletes of what they created, in a map large enough to be indexed: these
// once filled the index with deleted marks until a create never returned (after
// 200-460 pairs, depending on the hash seed).
seeds['flush-create-delete-pairs'] = flush(0, [
  ...Array.from({ length: 8 }, (_, i) => ({ command: create(['meta']), createdId: `k${i}` })),
  ...Array.from({ length: 1000 }, (_, i) => [
    { command: create(['meta']), createdId: `x${i}` },
    { command: del(['meta', `x${i}`]) },
  ]).flat(),
]);

// Adds trailing bytes to a valid request and truncates another mid-string.
seeds['bad-trailing'] = new Raw(Buffer.concat([enc(seeds.snapshot), u8(0x00)]));
seeds['bad-truncated-flush'] = new Raw(enc(seeds['flush-mixed']).subarray(0, 60));

const out = path.resolve(process.argv[2] || path.join(__dirname, 'corpus'));
fs.mkdirSync(out, { recursive: true });
for (const [name, v] of Object.entries(seeds)) {
  fs.writeFileSync(path.join(out, `${name}.mp`), enc(v));
}
console.log(`make_corpus: wrote ${Object.keys(seeds).length} seeds to ${out}`);
