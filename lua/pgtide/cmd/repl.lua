-- pgtide repl [-c CONFIG]: an interactive Lua prompt for troubleshooting.
local config = require "pgtide.config"
local errors = require "pgtide.errors"

local M = {
  summary = "interactive Lua prompt with all modules; src/dst from a config",
  usage = [[
pgtide repl [-c CONFIG]

Line editing and history (~/.pgtide_history, or $PGTIDE_HISTORY); a statement
continues on the next line until complete; results are pretty-printed.
Type help() for the helpers.  Reads piped stdin too (no prompts then).]],
}

function M.run(args)
  local cfg = {}
  local i = 1
  while args[i] do
    if args[i] == "-c" or args[i] == "--config" then
      if not args[i + 1] then errors.usage("-c needs a file") end
      cfg = config.load(args[i + 1])
      i = i + 2
    else
      errors.usage("unknown argument '%s'\n\n%s", args[i], M.usage)
    end
  end
  local replenv = require "pgtide.repl"
  pcall(require, "pgtide.troubleshoot")  -- registers its REPL helpers
  local home = os.getenv("HOME")
  require("repl").loop {
    env = replenv.env(cfg),
    print = replenv.print_results,
    history = os.getenv("PGTIDE_HISTORY") or (home and (home .. "/.pgtide_history")),
  }
  return 0
end

return M
