// The twin of odd.lua.
'use strict';

function intercept(document, command, context, meta) {
  const turn = (meta.seq + meta.commandCount) % 5;
  if (command.action === 'detete') {
    if (turn === 0) return { rejection: 'refusé ✗ 😀' };
    if (turn === 1) return { rejection: 'both', newProps: { ignored: true } };
    return undefined;
  }
  if (turn === 0) return { rejection: '' };
  if (turn === 1) return { newProps: {} };
  if (turn === 2) return { newProps: { turn, empty: [] }, rejection: 'ignored' };
  if (turn === 3) return { rejection: `refusé ✗ 😀 ${command.action}` };
  return undefined;
}

module.exports = { intercept };
