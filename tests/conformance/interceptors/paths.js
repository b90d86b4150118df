// The twin of paths.lua.
'use strict';
const { isTable, nodeAt, scalarProps } = require('./lua-like.js');

function intercept(document, command, context, meta) {
  const path = command.path || [];
  const where = `/${path.join('/')}`;
  if (command.action === 'create') {
    if (path[path.length - 1] !== 'items') return undefined;
    const props = scalarProps(command.props);
    props.parent = where;
    props.depth = path.length;
    const parent = nodeAt(document, path);
    props.siblings = isTable(parent) ? Object.keys(parent).filter((k) => /^[0-9]+$/.test(k)).length : 0;
    return { newProps: props };
  }
  if (command.action === 'update') {
    if (path.length > 2) return { rejection: `too deep: ${where}` };
    if (!isTable(nodeAt(document, path))) return { rejection: `nothing to update at ${where}` };
  } else if (path.includes('items')) {
    return { rejection: `items are kept: ${where}` };
  }
  return undefined;
}

module.exports = { intercept };
