-- The corners of flushout's CommandInterception, chosen by meta.seq and meta.commandCount
-- (the count alone would stick: a rejection does not advance it):
-- an empty rejection message, empty newProps, newProps together with a rejection
-- (newProps wins on creates and updates), a message with non-ASCII text, and a
-- rejection besides newProps on deletes (the rejection wins). Deletes never get
-- newProps alone or {}: see INTERCEPTORS.md, flushout has no message for those.
function intercept(document, command, context, meta)
  local turn = (meta.seq + meta.commandCount) % 5
  if command.action == "detete" then
    if turn == 0 then
      return {rejection = "refusé ✗ 😀"}
    elseif turn == 1 then
      return {rejection = "both", newProps = {ignored = true}}
    end
    return nil
  end
  if turn == 0 then
    return {rejection = ""}
  elseif turn == 1 then
    return {newProps = {}}
  elseif turn == 2 then
    return {newProps = {turn = turn, empty = flushout.array({})}, rejection = "ignored"}
  elseif turn == 3 then
    return {rejection = "refusé ✗ 😀 " .. command.action}
  end
  return nil
end
