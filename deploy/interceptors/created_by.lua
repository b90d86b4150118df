-- created_by.lua - stamps every created item with who created it and when.
--
-- On a create, the item is stored with the client's props plus
--   createdBy = context.user  (the flush's context, set by your backend; a create
--                              without a user is refused)
--   createdAt = meta.timestamp (the Kafka record's time in ms; under `apply`, the
--                               request's "timestamp"; absent when there is none)
-- Updates and deletes pass unchanged. Values a client sent for createdBy or createdAt
-- are overwritten, so clients cannot forge them.
--
-- Returning newProps drops the command's parentDefault (as flushout's Master does), so
-- the collection an item is created in must exist already: start models from
-- `--initial-document` (e.g. {"todos":{}}) or create the collection first.
-- Run: flushout-processor dev --interceptor deploy/interceptors/created_by.lua

function intercept(document, command, context, meta)
  if command.action ~= "create" then
    return nil
  end
  local user = context and context.user
  if type(user) ~= "string" or user == "" then
    return {rejection = "only a signed-in user can create items"}
  end
  local props = {}
  for key, value in pairs(command.props or {}) do
    props[key] = value
  end
  props.createdBy = user
  props.createdAt = meta.timestamp
  return {newProps = props}
end
