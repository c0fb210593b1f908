--[[
pgtide.cli: the command line.  main(args) returns the process exit code:
0 done, 1 a step failed, 2 usage or configuration error, 3 interrupted.

Global options come before the command: --log-level LEVEL, --debug TOPICS
(e.g. aws,sql), --quiet.  `--lua-path DIR` is handled by main.c.
Commands are modules pgtide.cmd.<name> returning
{ summary = ..., usage = ..., run = function (args) -> code }.
]]
local errors = require "pgtide.errors"
local log = require "log"
local sys = require "sys"
local util = require "pgtide.util"

local M = {}

-- Commands shown by `pgtide help`, in this order; others are found by name.
M.commands = { "run", "steps", "status", "report", "cutover", "validate", "abandon", "troubleshoot",
               "repl", "script", "version", "help" }

function M.load_command(name)
  if not name:match("^[%w_-]+$") then return nil end
  local ok, cmd = pcall(require, "pgtide.cmd." .. name:gsub("-", "_"))
  if ok and type(cmd) == "table" and cmd.run then return cmd end
  if not ok and not tostring(cmd):find("module 'pgtide.cmd.", 1, true) then
    error(cmd, 0)  -- the command exists but failed to load: report that
  end
  return nil
end

function M.available_commands()
  local list = {}
  for _, name in ipairs(M.commands) do
    if M.load_command(name) then list[#list + 1] = name end
  end
  return list
end

local function main(args)
  local i = 1
  while args[i] and args[i]:sub(1, 1) == "-" do
    local a = args[i]
    if a == "--log-level" and args[i + 1] then
      log.set_level(args[i + 1]); i = i + 2
    elseif a:match("^%-%-log%-level=") then
      log.set_level(a:match("=(.*)")); i = i + 1
    elseif a == "--debug" and args[i + 1] then
      log.set_topics(args[i + 1]); log.set_level("debug"); i = i + 2
    elseif a:match("^%-%-debug=") then
      log.set_topics(a:match("=(.*)")); log.set_level("debug"); i = i + 1
    elseif a == "-q" or a == "--quiet" then
      log.set_level("warn"); i = i + 1
    elseif a == "-h" or a == "--help" then
      return M.load_command("help").run({})
    elseif a == "-V" or a == "--version" then
      return M.load_command("version").run({})
    else
      errors.usage("unknown option %s (see 'pgtide help')", a)
    end
  end
  local name = args[i]
  if not name then
    M.load_command("help").run({})
    return 2
  end
  local cmd = M.load_command(name)
  if not cmd then
    local hint = util.closest(name, M.available_commands())
    errors.usage("unknown command '%s'%s", name,
      hint and string.format(" (did you mean '%s'?)", hint) or " (see 'pgtide help')")
  end
  local rest = table.move(args, i + 1, #args, 1, {})
  return cmd.run(rest)
end

function M.main(args)
  local ok, code = xpcall(main, function(e)
    if type(e) == "table" then return e end
    return debug.traceback(tostring(e), 2)
  end, args)
  if ok then return code or 0 end
  if errors.is_usage(code) then
    io.stderr:write("pgtide: ", sys.redact(errors.message(code)), "\n")
    return 2
  end
  if errors.is_interrupt(code) then
    io.stderr:write("pgtide: interrupted\n")
    return 3
  end
  io.stderr:write("pgtide: ", sys.redact(errors.message(code)), "\n")
  return 1
end

return M
