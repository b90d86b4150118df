// What a Lua interceptor sees of a JavaScript value, for the JavaScript twins of
// the .lua interceptors here: null is nil (absent), pairs() gives keys sorted
// bytewise, and string lengths count code points (utf8.len), not UTF-16 units.
'use strict';

const isTable = (v) => v !== null && typeof v === 'object';
const isMap = (v) => isTable(v) && !Array.isArray(v);
const isScalar = (v) => typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';

// The keys pairs() visits in Lua: those with a non-null value, in UTF-8 byte order.
function sortedKeys(obj) {
  return Object.keys(obj || {})
    .filter((k) => obj[k] !== null && obj[k] !== undefined)
    .sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
}

const codePoints = (s) => [...s].length;

// The node at `path` in the document, or undefined; paths stop at non-objects
// as indexing a Lua view stops at a scalar, and see own keys only ("toString"
// is not in a view; run.js's edge cases propose it as a created ID).
function nodeAt(document, path) {
  let node = document;
  for (const key of path) {
    if (!isTable(node) || Array.isArray(node)) return undefined;
    node = Object.prototype.hasOwnProperty.call(node, key) ? node[key] : undefined;
  }
  return node === null ? undefined : node;
}

// The props' scalar values (nested maps and arrays dropped): an interceptor that
// copies nested values could not mean the same in Lua, where a null inside an
// array is a hole and a script error.
function scalarProps(props) {
  const out = {};
  for (const k of sortedKeys(props)) if (isScalar(props[k])) out[k] = props[k];
  return out;
}

module.exports = { isTable, isMap, isScalar, sortedKeys, codePoints, nodeAt, scalarProps };
