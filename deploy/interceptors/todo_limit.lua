-- todo_limit.lua - at most MAX_TODOS todos per user: validation that depends on the
-- model, read from the document.
--
-- Todos live in the document's "todos" map, one entry per item. A create there is
-- refused when the user (context.user) already owns MAX_TODOS of them; otherwise the
-- item is stamped with createdBy = context.user, which is what later creates count.
-- Other commands pass unchanged.
--
-- The document is a lazy read-only view: the loop below reads the todos' createdBy
-- fields and nothing else, so its cost grows with the number of todos, not with the
-- document's size. Within one flush, each command sees the document as the commands
-- before it left it, so a flush of many creates is counted item by item.
--
-- As with created_by.lua, newProps drops parentDefault: "todos" must exist already
-- (`--initial-document` with {"todos":{}}).
-- Run: flushout-processor dev --interceptor deploy/interceptors/todo_limit.lua

local MAX_TODOS = 3

function intercept(document, command, context, meta)
  local path = command.path
  if command.action ~= "create" or #path ~= 1 or path[1] ~= "todos" then
    return nil
  end
  local user = context and context.user
  if type(user) ~= "string" or user == "" then
    return {rejection = "only a signed-in user can create todos"}
  end
  local owned = 0
  local todos = document.todos
  if todos ~= nil then
    for _, todo in pairs(todos) do
      if type(todo) == "userdata" and todo.createdBy == user then
        owned = owned + 1
      end
    end
  end
  if owned >= MAX_TODOS then
    return {rejection = string.format("%s already has %d todos, the most allowed",
                                      user, MAX_TODOS)}
  end
  local props = {}
  for key, value in pairs(command.props or {}) do
    props[key] = value
  end
  props.createdBy = user
  return {newProps = props}
end
