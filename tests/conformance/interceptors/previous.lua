-- Keeps what an update overwrites: newProps are the update's scalar props plus
-- `previous`, the target object's fields as the document holds them (a document
-- view placed in newProps is copied whole, nested values and nulls included).
-- Child objects (`items`, created IDs) and the last `previous` are left out, so
-- newProps stay far below the bound on their growth (INTERCEPTORS.md).
function intercept(document, command, context, meta)
  local path = command.path
  if command.action ~= "update" or #path == 0 then
    return nil
  end
  local node = document
  for _, key in ipairs(path) do
    if type(node) ~= "userdata" then
      return nil
    end
    node = node[key]
  end
  if type(node) ~= "userdata" then
    return nil
  end
  local previous = {}
  for key, value in pairs(node) do
    if key ~= "items" and not key:match("^%d+$") and key ~= "previous" then
      previous[key] = value
    end
  end
  local props = {}
  for key, value in pairs(command.props or {}) do
    if type(value) ~= "table" then
      props[key] = value
    end
  end
  props.previous = previous
  return {newProps = props}
end
