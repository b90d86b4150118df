-- Looks at command.path after remapping. A create under an `items` key gets
-- where it went (parent, depth) and how many created siblings it joins, counted
-- in the document; updates deeper than 2 keys, or of an object that is not
-- there, are refused with the path; deletes under an `items` key are refused.
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

local function under_items(path)
  for _, key in ipairs(path) do
    if key == "items" then
      return true
    end
  end
  return false
end

function intercept(document, command, context, meta)
  local path = command.path
  local where = "/" .. table.concat(path, "/")
  if command.action == "create" then
    if path[#path] ~= "items" then
      return nil
    end
    local props = {}
    for key, value in pairs(command.props or {}) do
      if type(value) ~= "table" then
        props[key] = value
      end
    end
    props.parent = where
    props.depth = #path
    local siblings = 0
    local parent = node_at(document, path)
    if type(parent) == "userdata" then
      for key in pairs(parent) do
        if type(key) == "string" and key:match("^%d+$") then
          siblings = siblings + 1
        end
      end
    end
    props.siblings = siblings
    return {newProps = props}
  elseif command.action == "update" then
    if #path > 2 then
      return {rejection = "too deep: " .. where}
    end
    if type(node_at(document, path)) ~= "userdata" then
      return {rejection = "nothing to update at " .. where}
    end
  elseif under_items(path) then
    return {rejection = "items are kept: " .. where}
  end
  return nil
end
