-- sandbox.lua - what a script can see and change, one case per call; the command's
-- props.case chooses it (tests/processor/test_interceptor.c). Each case answers with
-- a rejection describing what it found.
local cases = {}

function cases.absent()
  local names = {"io", "os", "require", "package", "debug", "load", "loadstring",
                 "dofile", "loadfile", "print", "collectgarbage", "coroutine", "next",
                 "rawset"}
  local present = {}
  for _, name in ipairs(names) do
    if _G[name] ~= nil then present[#present + 1] = name end
  end
  if string.dump ~= nil then present[#present + 1] = "string.dump" end
  if math.random ~= nil then present[#present + 1] = "math.random" end
  if math.randomseed ~= nil then present[#present + 1] = "math.randomseed" end
  return {rejection = "present:" .. table.concat(present, ",") ..
                      " getmetatable(''):" .. tostring(getmetatable(""))}
end

-- Tries to change what the next call sees; every library write must fail.
function cases.write_libraries()
  local failed = {}
  local function try(name, f)
    if not pcall(f) then failed[#failed + 1] = name end
  end
  try("string", function() string.upper = function() return "hacked" end end)
  try("table", function() table.concat = nil end)
  try("math", function() math.pi = 3 end)
  try("utf8", function() utf8.char = nil end)
  try("flushout", function() flushout.array = nil end)
  try("string metatable", function() getmetatable("").__index = {} end)
  -- allowed, but only this call's globals change
  _G.string = {upper = function() return "hacked" end}
  pi = 3
  return {rejection = "failed:" .. table.concat(failed, ",") .. " " ..
                      ("a"):upper() .. string.upper("b")}
end

function cases.libraries_intact()
  return {rejection = ("a"):upper() .. string.upper("b") .. table.concat({1, 2}) ..
                      utf8.char(233) .. string.format("%.2f", math.pi) ..
                      type(flushout.array) .. tostring(pi)}
end

function cases.addresses()
  local ok, err = pcall(string.format, "%p", {})
  return {rejection = tostring({}) .. " " .. tostring(intercept) .. " " ..
                      string.format("%s", {}) .. " " .. tostring(ok) .. " " .. err}
end

-- table.sort still sorts (whichever sort the sandbox gives)
function cases.sort()
  local numbers = {5, 3, 9, 1, 1, 7, 2, 8, 6, 4, 0}
  table.sort(numbers)
  local words = {"b", "a", "d", "c"}
  table.sort(words, function(x, y) return x > y end)
  local empty = {}
  table.sort(empty)
  return {rejection = table.concat(numbers, ",") .. " " .. table.concat(words, ",") ..
                      " " .. #empty}
end

function intercept(document, command, context, meta)
  return cases[command.props.case]()
end
