// The twin of normalize.lua. Only ASCII letters and ASCII white space, as Lua's
// patterns see them (toLowerCase and trim would also touch other characters).
'use strict';
const { scalarProps, codePoints } = require('./lua-like.js');

const lowerAscii = (s) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());
const trim = (s) => s.replace(/^[ \t\r\n]+/, '').replace(/[ \t\r\n]+$/, '');

function intercept(document, command, context, meta) {
  const path = command.path || [];
  if (command.action === 'detete') {
    const last = path[path.length - 1];
    if (last === 'name' || last === 'title') return { rejection: `the ${last} cannot be deleted` };
    if (path.length === 1 && !(context && (context.role === 'admin' || (context.groups || []).includes('editors')))) return { rejection: `only an admin deletes ${last}` };
    return undefined;
  }
  const props = command.props || {};
  if (command.action !== 'update' || (typeof props.name !== 'string' && typeof props.title !== 'string')) return undefined;
  const out = scalarProps(props);
  if (typeof props.name === 'string') {
    out.name = lowerAscii(trim(props.name));
    out.nameLength = codePoints(out.name);
  }
  if (typeof props.title === 'string' && codePoints(props.title) > 10) out.title = [...props.title].slice(0, 10).join('');
  return { newProps: out };
}

module.exports = { intercept };
