-- pgtide report [--state DIR | -c CONFIG | name=NAME | NAME] [--open]
-- Rebuild a migration's report.html and report.json (pgtide.report).
local errors = require "pgtide.errors"
local report = require "pgtide.report"
local status = require "pgtide.cmd.status"
local sys = require "sys"
local util = require "pgtide.util"

local M = {
  summary = "write a migration's report (report.html with charts, report.json)",
  usage = [[
pgtide report [--state DIR | -c CONFIG | name=NAME | NAME] [--open]

Rebuilds report.html and report.json in the migration's state directory
(chosen as for `pgtide status`) and prints their paths.  A run rewrites
them itself at the end of every step and of the run; this command brings
them up to date at any other time, for a running, stopped or finished
migration.  report.html is one self-contained file (inline SVG charts, no
script, no network): the steps' timeline, per-table figures, copy
throughput, apply rate, lag and retained WAL over time, preflight,
validation (the differing rows named), sequences, foreign keys and the
cutover's timings.  See docs/monitoring.md.

--open   also open report.html in a browser ($BROWSER, xdg-open or
         sensible-browser)

Exit codes: 0 written, 2 no such migration.]],
}

-- Open 'path' with the first browser launcher found; false, why when none.
local function open_in_browser(path)
  local launchers = {}
  if os.getenv("BROWSER") and os.getenv("BROWSER") ~= "" then launchers[1] = os.getenv("BROWSER") end
  launchers[#launchers + 1] = "xdg-open"
  launchers[#launchers + 1] = "sensible-browser"
  for _, l in ipairs(launchers) do
    local cmd = l:match("^%S+")
    if cmd and os.execute("command -v " .. util.shell_quote(cmd) .. " >/dev/null 2>&1") then
      local ok = os.execute(l .. " " .. util.shell_quote(path) .. " >/dev/null 2>&1 &")
      if ok then return true, l end
    end
  end
  return false, "no browser launcher found ($BROWSER, xdg-open, sensible-browser)"
end

function M.run(args)
  local o, rest = status.own_flags(args, { ["--open"] = "flag" })
  local dir = status.resolve(rest)
  local ok, jpath, hpath = pcall(report.write, dir)
  if not ok then errors.usage("cannot write the report in %s: %s", dir, errors.message(jpath)) end
  print(hpath)
  print(jpath)
  if o.open then
    local full = sys.realpath(hpath) or hpath
    local opened, how = open_in_browser(full)
    if opened then
      io.stderr:write("opened with " .. how .. "\n")
    else
      io.stderr:write("pgtide: " .. how .. "; open file://" .. full .. " yourself\n")
    end
  end
  return 0
end

return M
