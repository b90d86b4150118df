// The twin of limit.lua.
'use strict';
const { isTable, nodeAt } = require('./lua-like.js');

const LIMIT_AT_ROOT = 4;
const LIMIT = 2;

const isLocked = (node) => isTable(node) && (node.flag != null || node.title != null);

function intercept(document, command, context, meta) {
  const path = command.path || [];
  const node = nodeAt(document, path);
  if (command.action === 'create') {
    if (!isTable(node)) return undefined;
    const children = Object.keys(node).filter((k) => /^[0-9]+$/.test(k)).length;
    const limit = path.length === 0 ? LIMIT_AT_ROOT : LIMIT;
    if (children >= limit) return { rejection: `at most ${limit} objects under [${path.join(',')}], there are ${children}` };
  } else if (isLocked(node)) {
    return { rejection: `${command.action} refused: [${path.join(',')}] is locked` };
  }
  return undefined;
}

module.exports = { intercept };
