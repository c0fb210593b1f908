-- The REPL on a real terminal (a pty from util-linux `script`): prompts,
-- continuation prompts, results, and history persisted across sessions
-- (an up-arrow in a new session recalls the previous session's line).
local T = require "t"
local sys = require "sys"

local home = T.tmp .. "/replhome-" .. sys.getpid()
assert(sys.mkdir_p(home))

local function session(input)
  local f = assert(io.open(home .. "/in", "wb")); f:write(input); f:close()
  local code, out = T.sh(string.format("cd %s && HOME=%s SHELL=/bin/sh script -qfec %s /dev/null < in",
    T.q(home), T.q(home), T.q("exec " .. T.q(T.pgtide) .. " repl")))
  return code, (out:gsub("\r", ""))
end

if os.execute("command -v script >/dev/null 2>&1") ~= true then
  T.skip("repl on a terminal", "util-linux 'script' is not installed")
  T.done()
end

T.test("prompts, continuation lines and results on a terminal", function()
  local code, out = session('"twenty" .. (20 + 2)\nfunction f(a)\n  return a * 2\nend\nf(21)\n"recalled " .. (40 + 2)\n')
  T.eq(code, 0)
  T.match(out, 'pgtide> "twenty" %.%. %(20 %+ 2%)\n"twenty22"\n')
  T.match(out, "pgtide>>   return a %* 2\n")
  T.match(out, "pgtide> f%(21%)\n42\n")
end)

T.test("history persists across sessions and the up arrow recalls it", function()
  local hist = assert(sys.readfile(home .. "/.pgtide_history"))
  T.match(hist, "f%(21%)")
  local code, out = session("\27[A\n")
  T.eq(code, 0)
  T.match(out, '\n"recalled 42"\n', "the recalled line ran")
end)

T.done()
