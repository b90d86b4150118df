-- Normalises updates: a string `name` is trimmed and lower-cased (ASCII) with its
-- length in characters kept as nameLength, a string `title` is cut to 10
-- characters; the other scalar props pass (nested ones are dropped, as in
-- stamp.lua). Deletes of `name` or `title` are refused, and so are deletes of a
-- top-level object unless context.role is "admin" or context.groups has
-- "editors". Creates pass.
local function lower_ascii(s)
  return (s:gsub("[A-Z]", function(c) return string.char(c:byte() + 32) end))
end

local function trim(s)
  return s:match("^[ \t\r\n]*(.-)[ \t\r\n]*$")
end

local function in_group(groups, wanted)
  for _, group in ipairs(groups or {}) do
    if group == wanted then
      return true
    end
  end
  return false
end

function intercept(document, command, context, meta)
  local path = command.path
  if command.action == "detete" then
    local last = path[#path]
    if last == "name" or last == "title" then
      return {rejection = "the " .. last .. " cannot be deleted"}
    end
    local trusted = context and (context.role == "admin" or in_group(context.groups, "editors"))
    if #path == 1 and not trusted then
      return {rejection = "only an admin deletes " .. last}
    end
    return nil
  end
  local props = command.props or {}
  local has_text = type(props.name) == "string" or type(props.title) == "string"
  if command.action ~= "update" or not has_text then
    return nil
  end
  local out = {}
  for key, value in pairs(props) do
    if type(value) ~= "table" then
      out[key] = value
    end
  end
  if type(props.name) == "string" then
    out.name = lower_ascii(trim(props.name))
    out.nameLength = utf8.len(out.name)
  end
  if type(props.title) == "string" and utf8.len(props.title) > 10 then
    out.title = props.title:sub(1, utf8.offset(props.title, 11) - 1)
  end
  return {newProps = out}
end
