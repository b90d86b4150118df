-- A rule that depends on the model: at most 4 created objects (all-digit keys) at
-- the root and 2 under any other object, counted in the document. An object with a
-- `flag` or a `title` is locked: updates and deletes of it are refused.
local LIMIT_AT_ROOT, LIMIT = 4, 2

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

local function is_locked(node)
  return type(node) == "userdata" and (node.flag ~= nil or node.title ~= nil)
end

function intercept(document, command, context, meta)
  local path = command.path
  local node = node_at(document, path)
  if command.action == "create" then
    if type(node) ~= "userdata" then
      return nil -- the master reports a missing parent (or applies parentDefault)
    end
    local children = 0
    for key in pairs(node) do
      if type(key) == "string" and key:match("^%d+$") then
        children = children + 1
      end
    end
    local limit = #path == 0 and LIMIT_AT_ROOT or LIMIT
    if children >= limit then
      return {rejection = "at most " .. limit .. " objects under [" .. table.concat(path, ",") ..
                          "], there are " .. children}
    end
  elseif is_locked(node) then
    return {rejection = command.action .. " refused: [" .. table.concat(path, ",") .. "] is locked"}
  end
  return nil
end
