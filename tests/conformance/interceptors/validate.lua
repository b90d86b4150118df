-- Field validation on creates and updates: known fields must have the right type
-- (and strings a bounded length in characters), keys must not hold ',', '"' or
-- '\'. The first bad key in sorted order is named; everything else passes.
local function text(max)
  return function(v)
    return type(v) == "string" and utf8.len(v) <= max, "a string of at most " .. max .. " characters"
  end
end

local RULES = {
  title = text(12),
  name = text(16),
  note = text(20),
  count = function(v) return math.type(v) == "integer", "an integer" end,
  ratio = function(v) return type(v) == "number", "a number" end,
  flag = function(v) return type(v) == "boolean", "a boolean" end,
  meta = function(v) return type(v) == "table", "a map or an array" end,
}

function intercept(document, command, context, meta)
  if command.action == "detete" then
    return nil
  end
  for key, value in pairs(command.props or {}) do
    if key:find('[,"\\]') then
      return {rejection = "bad key " .. key}
    end
    local rule = RULES[key]
    if rule then
      local ok, expected = rule(value)
      if not ok then
        return {rejection = key .. " must be " .. expected}
      end
    end
  end
  return nil
end
