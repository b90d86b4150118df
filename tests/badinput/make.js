#!/usr/bin/env node
// tests/badinput/make.js - writes the hostile-input corpus: one file of raw record
// value bytes per case, and MANIFEST (what each must produce). The files are
// committed; this script documents how each was made and remakes them.
//
// MANIFEST columns: file, record key ("-" none, "''" empty, "hex:6aff" bytes,
// "x*70000" a byte repeated), expected outcome (an error code: dead letter + error
// reply; "command_error": a flushResult whose commands all failed; "ok": an answer
// that is no error, no dead letter), the client that must get the reply ("-" nobody
// can be identified), the seq that reply carries ("-" when the seq itself is bad),
// and the outcome under the processor's default limits ("=": the same). Cases run
// against model "victim" at command count 1 with document
// {"o":{"s":"str","arr":[{"x":1}],"n":null}}, once with the test suite's lowered
// limits (tests/processor/test_kafka.c: --max-depth 32, --max-string-bytes 256,
// --max-document-bytes 2048, --max-record-bytes 16384) and once with the defaults:
// bugs hid behind lowered limits before.
'use strict';
const fs = require('fs');
const path = require('path');

// A minimal msgpack writer that can also write what encoders refuse to.
const u8 = (n) => Buffer.from([n]);
const be = (n, bytes) => {
  const b = Buffer.alloc(bytes);
  for (let i = bytes - 1; i >= 0; i--, n = Math.floor(n / 256)) b[i] = n % 256;
  return b;
};
function str(s) {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8');
  if (b.length < 32) return Buffer.concat([u8(0xa0 | b.length), b]);
  if (b.length < 256) return Buffer.concat([u8(0xd9), u8(b.length), b]);
  return Buffer.concat([u8(0xda), be(b.length, 2), b]);
}
function pack(v) {
  if (Buffer.isBuffer(v)) return v; // raw bytes, written as they are
  if (v === null) return u8(0xc0);
  if (v === true) return u8(0xc3);
  if (v === false) return u8(0xc2);
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= 0 && v < 128) return u8(v);
    if (Number.isInteger(v) && v >= 0 && v < 2 ** 32) return Buffer.concat([u8(0xce), be(v, 4)]);
    if (Number.isInteger(v) && v < 0 && v >= -32) return u8(0x100 + v);
    if (Number.isInteger(v) && v < 0) {
      const b = Buffer.alloc(9);
      b[0] = 0xd3;
      b.writeBigInt64BE(BigInt(v), 1);
      return b;
    }
    const b = Buffer.alloc(9);
    b[0] = 0xcb;
    b.writeDoubleBE(v, 1);
    return b;
  }
  if (typeof v === 'string') return str(v);
  const head = (fix, wide, n) => (n < 16 ? u8(fix | n) : Buffer.concat([u8(wide), be(n, 2)]));
  if (Array.isArray(v)) return Buffer.concat([head(0x90, 0xdc, v.length), ...v.map(pack)]);
  // Objects: an array of [key, value] pairs under "$pairs" keeps duplicates and byte keys.
  const pairs = v.$pairs || Object.entries(v);
  return Buffer.concat([head(0x80, 0xde, pairs.length), ...pairs.flatMap(([k, x]) => [str(k), pack(x)])]);
}
const flush = (client, commands, extra = {}) => ({
  type: 'flush', client, seq: 1, from: 1,
  completions: commands.map((command) => ({ command })), ...extra,
});
const nested = (depth) => {
  let b = u8(1);
  for (let i = 0; i < depth; i++) b = Buffer.concat([u8(0x91), b]);
  return b;
};

const cases = [];
const add = (name, value, outcome, client, key = 'victim', seq = '1', defaults = '=') =>
  cases.push({ name, bytes: Buffer.isBuffer(value) ? value : pack(value), outcome, client, key, seq, defaults });

const snap = (client) => ({ type: 'snapshot', client, seq: 1 });
add('truncated-map', Buffer.from([0x83, 0xa4, ...Buffer.from('type'), 0xa5]), 'truncated', '-');
add('truncated-after-client', pack(flush('c-trunc', [{ action: 'create', props: { a: 'xxxx' } }])).subarray(0, -3), 'truncated', 'c-trunc');
add('empty-value', Buffer.alloc(0), 'truncated', '-');
add('trailing-bytes', Buffer.concat([pack(snap('c-trail')), u8(0xc0)]), 'trailing_bytes', 'c-trail');
add('reserved-c1', u8(0xc1), 'reserved_byte', '-');
add('reserved-c1-in-props', pack(flush('c-c1', [{ action: 'create', props: { a: u8(0xc1) } }])), 'reserved_byte', 'c-c1');
add('ext-type', pack(flush('c-ext', [{ action: 'create', props: { a: Buffer.from([0xd4, 0x01, 0x00]) } }])), 'unsupported_ext', 'c-ext');
add('timestamp-ext', pack(flush('c-ts', [{ action: 'create', props: { a: Buffer.from([0xd6, 0xff, 0, 0, 0, 1]) } }])), 'unsupported_ext', 'c-ts');
add('duplicate-keys', pack({ $pairs: [['type', 'snapshot'], ['client', 'c-dup'], ['seq', 1], ['type', 'history']] }), 'duplicate_key', 'c-dup');
// Depth 33 in all (map, completions, completion, command, props, 28 arrays): one over --max-depth 32.
add('nesting-33', pack(flush('c-deep33', [{ action: 'create', props: { a: nested(28) } }])), 'too_deep', 'c-deep33', 'victim', '1', 'ok');
// Depth 64, the most the defaults accept: applied, it must read back (msgpack-c's
// unpacker stops at 32 levels).
add('nesting-64', pack(flush('c-deep64', [{ action: 'create', props: { a: nested(59) } }])), 'too_deep', 'c-deep64', 'victim', '1', 'ok');
add('nesting-10000', pack(flush('c-deep', [{ action: 'create', props: { a: nested(10000) } }])), 'too_deep', 'c-deep');
add('array32-claims-2^32', pack({ $pairs: [['type', 'snapshot'], ['client', 'c-arr32'], ['seq', 1], ['x', Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff])]] }), 'too_large', 'c-arr32');
add('map32-claims-2^32', Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x61]), 'too_large', '-');
add('str32-claims-4GiB', pack({ $pairs: [['type', 'snapshot'], ['client', 'c-str32'], ['seq', 1], ['x', Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff, 0x61])]] }), 'too_large', 'c-str32');
add('string-over-limit', pack(flush('c-long', [{ action: 'create', props: { a: 'x'.repeat(300) } }])), 'too_large', 'c-long', 'victim', '1', 'ok');
add('invalid-utf8-key', pack(flush('c-utf8k', [{ action: 'create', props: { $pairs: [[Buffer.from([0x61, 0xff]), 1]] } }])), 'invalid_utf8', 'c-utf8k');
add('invalid-utf8-path', pack(flush('c-utf8p', [{ action: 'update', path: [Buffer.from([0xa2, 0xc3, 0x28])], props: {} }])), 'invalid_utf8', 'c-utf8p');
add('empty-record-key', pack(snap('c-nokey1')), 'missing_key', 'c-nokey1', "''");
add('missing-record-key', pack(snap('c-nokey2')), 'missing_key', 'c-nokey2', '-');
// Keys are checked before anything else: they become store keys and record keys.
add('key-70000-bytes', pack(snap('c-key70k')), 'too_large', 'c-key70k', 'x*70000');
add('key-1025-bytes', pack(snap('c-key1025')), 'too_large', 'c-key1025', 'k*1025');
add('key-invalid-utf8', pack(snap('c-keyutf8')), 'invalid_utf8', 'c-keyutf8', 'hex:76ff6374696d');
add('key-lone-surrogate', pack(snap('c-keysurr')), 'invalid_utf8', 'c-keysurr', 'hex:eda080');
add('client-1025-bytes', pack({ type: 'snapshot', client: 'c'.repeat(1025), seq: 1 }), 'too_large', '-');
add('model-differs-from-key', pack({ ...snap('c-model'), model: 'other' }), 'model_mismatch', 'c-model');
add('unknown-type', pack({ type: 'explode', client: 'c-type', seq: 1 }), 'unknown_type', 'c-type');
add('unknown-action', pack(flush('c-action', [{ action: 'rename', path: ['o'] }])), 'unknown_action', 'c-action');
add('negative-seq', pack({ type: 'snapshot', client: 'c-negseq', seq: -1 }), 'out_of_range', 'c-negseq', 'victim', '-');
add('seq-2^64-1', pack({ $pairs: [['type', 'snapshot'], ['client', 'c-maxseq'], ['seq', Buffer.from([0xcf, 255, 255, 255, 255, 255, 255, 255, 255])]] }), 'out_of_range', 'c-maxseq', 'victim', '-');
add('negative-from', pack(flush('c-negfrom', [], { from: -5 })), 'out_of_range', 'c-negfrom');
add('from-2^64-1', pack(flush('c-maxfrom', [], { from: Buffer.from([0xcf, 255, 255, 255, 255, 255, 255, 255, 255]) })), 'out_of_range', 'c-maxfrom');
add('type-not-a-string', pack({ type: 7, client: 'c-wt1', seq: 1 }), 'wrong_type', 'c-wt1');
add('client-not-a-string', pack({ type: 'snapshot', client: ['x'], seq: 1 }), 'wrong_type', '-');
add('completions-not-an-array', pack({ type: 'flush', client: 'c-wt3', seq: 1, from: 1, completions: { a: 1 } }), 'wrong_type', 'c-wt3');
add('path-not-an-array', pack(flush('c-wt4', [{ action: 'update', path: 'o', props: {} }])), 'wrong_type', 'c-wt4');
add('props-not-a-map', pack(flush('c-wt5', [{ action: 'update', path: ['o'], props: [1, 2] }])), 'wrong_type', 'c-wt5');
add('nil-path-element', pack(flush('c-nilpath', [{ action: 'update', path: ['o', null], props: {} }])), 'wrong_type', 'c-nilpath');
add('top-level-array', pack(['type', 'snapshot']), 'wrong_type', '-');
add('proto-key', pack(flush('c-proto', [{ action: 'create', props: { $pairs: [['__proto__', {}]] } }])), 'forbidden_key', 'c-proto');
add('nan-value', pack(flush('c-nan', [{ action: 'create', props: { a: NaN } }])), 'not_finite', 'c-nan');
add('uint64-over-2^63', pack(flush('c-big', [{ action: 'create', props: { a: Buffer.from([0xcf, 0x80, 0, 0, 0, 0, 0, 0, 1]) } }])), 'out_of_range', 'c-big');
add('record-over-limit', pack({ ...snap('c-huge'), pad: 'x'.repeat(250).repeat(1).padEnd(250, 'x'), pad2: Array(100).fill('y'.repeat(200)) }), 'too_large', 'c-huge', 'victim', '1', 'ok');
add('document-over-limit', pack(flush('c-docfull', [{ action: 'create', path: ['o'], props: Object.fromEntries([...Array(10)].map((_, i) => [`k${i}`, 'z'.repeat(200)])) }])), 'too_large', 'c-docfull', 'victim', '1', 'ok');
add('path-through-a-string', pack(flush('c-pstr', [{ action: 'update', path: ['o', 's', 'x'], props: { y: 1 } }])), 'command_error', 'c-pstr');
add('path-through-an-array', pack(flush('c-parr', [{ action: 'update', path: ['o', 'arr', '0'], props: { y: 1 } }])), 'command_error', 'c-parr');
add('path-through-nil', pack(flush('c-pnil', [{ action: 'update', path: ['o', 'n', 'x'], props: { y: 1 } }])), 'command_error', 'c-pnil');
add('path-through-nothing', pack(flush('c-pmiss', [{ action: 'update', path: ['nowhere', 'deeper'], props: { y: 1 } }])), 'command_error', 'c-pmiss');

const dir = __dirname;
for (const f of fs.readdirSync(dir)) if (f.endsWith('.msgpack')) fs.unlinkSync(path.join(dir, f));
const lines = ['# file key outcome reply-client reply-seq outcome-under-defaults (see make.js)'];
for (const c of cases) {
  fs.writeFileSync(path.join(dir, `${c.name}.msgpack`), c.bytes);
  lines.push(`${c.name}.msgpack ${c.key} ${c.outcome} ${c.client} ${c.seq} ${c.defaults}`);
}
fs.writeFileSync(path.join(dir, 'MANIFEST'), `${lines.join('\n')}\n`);
console.log(`${cases.length} cases written to ${dir}`);
