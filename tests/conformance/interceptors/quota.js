// The twin of quota.lua.
'use strict';
const { isTable, nodeAt, scalarProps } = require('./lua-like.js');

const MAX_PER_USER = 3;

function intercept(document, command, context, meta) {
  const user = context && context.user != null ? context.user : 'anonymous';
  const path = command.path || [];
  const node = nodeAt(document, path);
  if (!isTable(node)) return undefined;
  if (command.action !== 'create') {
    if (node.owner != null && node.owner !== user) return { rejection: `[${path.join(',')}] belongs to ${node.owner}` };
    return undefined;
  }
  const owned = Object.values(node).filter((child) => isTable(child) && child.owner === user).length;
  const limits = context && context.limits;
  const max = limits && Number.isInteger(limits.perUser) ? limits.perUser : MAX_PER_USER;
  if (owned >= max) return { rejection: `${user} already has ${owned} objects under [${path.join(',')}]` };
  const props = scalarProps(command.props);
  props.owner = user;
  return { newProps: props };
}

module.exports = { intercept };
