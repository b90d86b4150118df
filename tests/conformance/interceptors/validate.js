// The twin of validate.lua.
'use strict';
const { isTable, sortedKeys, codePoints } = require('./lua-like.js');

const text = (max) => (v) => [typeof v === 'string' && codePoints(v) <= max, `a string of at most ${max} characters`];

const RULES = {
  title: text(12),
  name: text(16),
  note: text(20),
  count: (v) => [Number.isInteger(v), 'an integer'],
  ratio: (v) => [typeof v === 'number', 'a number'],
  flag: (v) => [typeof v === 'boolean', 'a boolean'],
  meta: (v) => [isTable(v), 'a map or an array'],
};

function intercept(document, command, context, meta) {
  if (command.action === 'detete') return undefined;
  const props = command.props || {};
  for (const key of sortedKeys(props)) {
    if (/[,"\\]/.test(key)) return { rejection: `bad key ${key}` };
    const rule = Object.prototype.hasOwnProperty.call(RULES, key) ? RULES[key] : undefined;
    if (rule) {
      const [ok, expected] = rule(props[key]);
      if (!ok) return { rejection: `${key} must be ${expected}` };
    }
  }
  return undefined;
}

module.exports = { intercept };
