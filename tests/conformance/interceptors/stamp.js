// The twin of stamp.lua.
'use strict';
const { scalarProps } = require('./lua-like.js');

function intercept(document, command, context, meta) {
  if (command.action !== 'create') return undefined;
  const props = scalarProps(command.props);
  // Lua's `context and context.user or ...`: only nil (absent) falls back.
  props.createdBy = context && context.user != null ? context.user : 'anonymous';
  props.createdAt = meta.timestamp;
  props.createdAtVersion = meta.commandCount;
  props.origin = { model: meta.model, client: meta.client, seq: meta.seq, path: command.path || [] };
  props.hadParentDefault = command.parentDefault != null;
  return { newProps: props };
}

module.exports = { intercept };
