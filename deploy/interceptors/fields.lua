-- fields.lua - validates the fields of todos: which keys, their types and lengths.
--
-- A todo (an item of the document's "todos" map) has
--   title: a string of 1 to 200 characters (UTF-8 characters, not bytes), required
--          on create
--   done:  a boolean, optional
-- and nothing else. A create in "todos" or an update of a todo ("todos", id) with any
-- other key, a value of another type or a title of the wrong length is refused with a
-- message naming the field. Commands elsewhere in the document pass unchanged.
-- Run: flushout-processor dev --interceptor deploy/interceptors/fields.lua

local TITLE_MAX = 200

-- Each allowed field and its check: nil when the value is fine, else why not.
local FIELDS = {
  title = function(value)
    if type(value) ~= "string" then
      return "title must be a string, not a " .. type(value)
    end
    local chars = utf8.len(value)
    if chars < 1 or chars > TITLE_MAX then
      return string.format("title must have 1 to %d characters, not %d", TITLE_MAX, chars)
    end
  end,
  done = function(value)
    if type(value) ~= "boolean" then
      return "done must be a boolean, not a " .. type(value)
    end
  end,
}

local function check(props)
  -- pairs gives keys in sorted order, so the first problem reported is always the same
  for key, value in pairs(props) do
    local field = FIELDS[key]
    if field == nil then
      return string.format("unknown field %q (a todo has title and done)", key)
    end
    local problem = field(value)
    if problem then
      return problem
    end
  end
end

function intercept(document, command, context, meta)
  local path, props = command.path, command.props or {}
  local problem
  if command.action == "create" and #path == 1 and path[1] == "todos" then
    if props.title == nil then
      problem = "a todo needs a title"
    else
      problem = check(props)
    end
  elseif command.action == "update" and #path == 2 and path[1] == "todos" then
    problem = check(props)
  end
  if problem then
    return {rejection = problem}
  end
  return nil
end
