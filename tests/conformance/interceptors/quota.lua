-- The blog's rule, "a user may have at most N todos": creates are stamped with
-- owner = context.user ("anonymous" without one) and refused once that user owns
-- 3 objects under the same parent (or context.limits.perUser), counted by reading
-- each child's owner in the document. Updates and deletes of an object someone
-- else owns are refused.
local MAX_PER_USER = 3

local function node_at(document, path)
  local node = document
  for _, key in ipairs(path) do
    if type(node) ~= "userdata" then
      return nil
    end
    node = node[key]
  end
  return node
end

function intercept(document, command, context, meta)
  local user = (context and context.user) or "anonymous"
  local path = command.path
  local node = node_at(document, path)
  if type(node) ~= "userdata" then
    return nil -- nothing there: the master reports it (or applies parentDefault)
  end
  if command.action ~= "create" then
    if node.owner ~= nil and node.owner ~= user then
      return {rejection = "[" .. table.concat(path, ",") .. "] belongs to " .. tostring(node.owner)}
    end
    return nil
  end
  local owned = 0
  for _, child in pairs(node) do
    if type(child) == "userdata" and child.owner == user then
      owned = owned + 1
    end
  end
  local limits = context and context.limits
  local max = limits and math.type(limits.perUser) == "integer" and limits.perUser or MAX_PER_USER
  if owned >= max then
    local where = table.concat(path, ",")
    return {rejection = user .. " already has " .. owned .. " objects under [" .. where .. "]"}
  end
  local props = {}
  for key, value in pairs(command.props or {}) do
    if type(value) ~= "table" then
      props[key] = value
    end
  end
  props.owner = user
  return {newProps = props}
end
