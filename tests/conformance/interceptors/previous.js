// The twin of previous.lua.
'use strict';
const { isTable, nodeAt, scalarProps } = require('./lua-like.js');

function intercept(document, command, context, meta) {
  const path = command.path || [];
  if (command.action !== 'update' || path.length === 0) return undefined;
  const node = nodeAt(document, path);
  if (!isTable(node)) return undefined;
  const previous = {};
  for (const key of Object.keys(node)) {
    // null fields are absent in Lua (pairs skips them), nested values are copied whole.
    if (key !== 'items' && !/^[0-9]+$/.test(key) && key !== 'previous' && node[key] !== null) {
      previous[key] = JSON.parse(JSON.stringify(node[key])); // a copy: the node lives on
    }
  }
  const props = scalarProps(command.props);
  props.previous = previous;
  return { newProps: props };
}

module.exports = { intercept };
