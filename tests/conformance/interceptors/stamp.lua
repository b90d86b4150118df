-- Stamps every create with who made it (context.user), when (meta.timestamp), at
-- which version (meta.commandCount) and from where (meta and the remapped path).
-- Records are kept flat: nested props are dropped (see lua-like.js, scalarProps).
function intercept(document, command, context, meta)
  if command.action ~= "create" then
    return nil
  end
  local props = {}
  for key, value in pairs(command.props or {}) do
    if type(value) ~= "table" then
      props[key] = value
    end
  end
  props.createdBy = (context and context.user) or "anonymous"
  props.createdAt = meta.timestamp
  props.createdAtVersion = meta.commandCount
  props.origin = {model = meta.model, client = meta.client, seq = meta.seq, path = command.path}
  -- newProps drop parentDefault (as flushout does): say whether there was one.
  props.hadParentDefault = command.parentDefault ~= nil
  return {newProps = props}
end
