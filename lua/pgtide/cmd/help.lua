-- pgtide help [COMMAND]
local errors = require "pgtide.errors"
local util = require "pgtide.util"

local M = { summary = "show help for pgtide or one command", usage = "pgtide help [COMMAND]" }

local intro = [[
pgtide migrates PostgreSQL databases (self-hosted, RDS, Aurora) to PlanetScale
Postgres with minimal downtime, by running runbooks: the AWS DMS procedures
(dms-manual, aurora-cfn) or pgtide's own engine (local).

usage: pgtide [--log-level LEVEL] [--debug TOPICS] [--quiet] [--lua-path DIR] COMMAND ...
]]

function M.run(args)
  local cli = require "pgtide.cli"
  local name = args[1]
  if name then
    local cmd = cli.load_command(name)
    if not cmd then
      local hint = util.closest(name, cli.available_commands())
      errors.usage("no command '%s'%s", name, hint and (" (did you mean '" .. hint .. "'?)") or "")
    end
    print(cmd.usage or ("pgtide " .. name))
    if cmd.help then print(cmd.help) end
    return 0
  end
  io.write(intro, "\ncommands:\n")
  for _, n in ipairs(cli.available_commands()) do
    print(string.format("  %-13s %s", n, cli.load_command(n).summary or ""))
  end
  print([[

exit codes: 0 done, 1 a step failed, 2 usage or configuration error, 3 interrupted
'pgtide help COMMAND' shows a command's options.  Documentation: docs/.]])
  return 0
end

return M
