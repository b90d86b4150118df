-- hostile.lua - scripts that try to stall, exhaust or escape the processor, one per
-- case; the command's props.case chooses it (tests/processor/test_interceptor.c).
-- Each must be stopped with a clear message, and the next call must work normally.
local cases = {}

function cases.ok() return {rejection = "still serving"} end

function cases.loop() while true do end end

function cases.table_growth()
  local t = {}
  for i = 1, math.maxinteger do t[i] = i end
end

function cases.concat()
  local s = ""
  for i = 1, math.maxinteger do s = s .. "x" end
end

function cases.recursion()
  local function deeper(n) return 1 + deeper(n + 1) end
  return deeper(1)
end

-- 1 GiB: over the memory cap; 1 TiB: over what Lua's string.rep itself allows
function cases.rep() return {rejection = string.rep("x", 1 << 30)} end

function cases.rep_huge() return {rejection = string.rep("x", 1 << 40)} end

function cases.pattern()
  return {rejection = tostring(string.find(string.rep("a", 5000), ".-.-.-.-.-.-.-b"))}
end

-- pcall around the loop, and pcall in a loop: the budget's error is not caught
function cases.pcall_loop()
  while true do pcall(function() while true do end end) end
end

function cases.pcall_error_loop()
  while true do pcall(error, "swallowed") end
end

-- a to-be-closed variable whose __close runs (and loops) while the error unwinds
function cases.close_loop()
  local guard <close> = setmetatable({}, {__close = function() while true do end end})
  while true do end
end

function cases.table_move() table.move({}, 1, math.maxinteger, 1) end

function cases.utf8_len()
  local s = string.rep("\u{e9}", 500000)
  local n = 0
  for i = 1, math.maxinteger do n = n + utf8.len(s) end
end

-- table.sort is C: without a comparator, its comparisons are no instructions
function cases.sort_loop()
  local t = {}
  for i = 1, 100000 do t[i] = i end
  for i = 1, math.maxinteger do table.sort(t) end
end

-- Records sorted by a key with ties, arranged so that Lua's quicksort finds its first
-- partition imbalanced (the median of three is the second smallest key): it then
-- takes its pivots from clock() and time(), and the order of the ties with them.
function cases.sort_ties()
  local n = 2000
  local records = {}
  for i = 1, n do records[i] = {key = 2 + i % 3, id = i} end
  records[1] = {key = 0, id = 0}
  records[n // 2] = {key = 1, id = -1}
  table.sort(records, function(a, b) return a.key < b.key end)
  local ids = {}
  for i = n - 39, n do ids[#ids + 1] = records[i].id end
  return {rejection = table.concat(ids, ",")}
end

-- C loops that run no instructions and allocate nothing: the budget never sees them
function cases.rep_empty() return {rejection = string.rep("", math.maxinteger)} end

local function lying_length()
  return setmetatable({}, {__len = function() return math.maxinteger - 1 end})
end

function cases.insert_lying_length() table.insert(lying_length(), 1, 0) end

function cases.remove_lying_length() table.remove(lying_length(), 1) end

-- a message handler that loops, called for an error of the script, then again for
-- the budget's error raised in the count hook
function cases.xpcall_handler_loop()
  xpcall(function() error("x") end, function() while true do end end)
end

function cases.gc() setmetatable({}, {__gc = function() end}) end

function cases.mode() setmetatable({}, {__mode = "k"}) end

-- Every way we know to reach a function outside the sandbox: each must give nil or
-- fail. The rejection lists the ways that reached something.
function cases.escape(document)
  local reached = {}
  local function try(name, f)
    local ok, value = pcall(f)
    if ok and value ~= nil and value ~= false then reached[#reached + 1] = name end
  end
  try("string metatable", function() return getmetatable("").__index end)
  try("string method os", function() return ("").os end)
  try("string method dump", function() return ("").dump end)
  try("string.dump", function() return string.dump end)
  try("_G.os", function() return _G.os end)
  try("_ENV.io", function() return _ENV.io end)
  try("rawget load", function() return rawget(_G, "load") end)
  try("globals' metatable", function() return getmetatable(_G).__index end)
  try("library metatable", function() return getmetatable(string).__index end)
  try("view metatable", function()
    local mt = getmetatable(document)
    return type(mt) == "table" and mt or nil
  end)
  try("local _ENV", function() local _ENV = {} return load end)
  try("setmetatable on _G", function()
    setmetatable(_G, {__index = function(_, key) return key end})
    return os
  end)
  try("debug", function() return debug end)
  try("require", function() return require end)
  try("package", function() return package end)
  try("coroutine", function() return coroutine end)
  try("collectgarbage", function() return collectgarbage end)
  try("io through string.gsub", function()
    local found
    string.gsub("io", "%a+", function(name) found = _G[name] end)
    return found
  end)
  return {rejection = "reached:" .. table.concat(reached, ",")}
end

function intercept(document, command, context, meta)
  return cases[command.props.case](document)
end
