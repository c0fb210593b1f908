--[[
pgtide.config: configuration files.

A config file is a Lua chunk returning a table:

  return {
    name   = "orders-to-planetscale",            -- migration name (state dir)
    source = "host=db.internal dbname=orders user=migrator",
    target = os.getenv("PLANETSCALE_URI"),
    aws    = { region = "us-east-1", profile = "prod" },
    jobs   = 8,                                  -- any runbook parameter
  }

Secrets are never required in the file: libpq reads PGPASSWORD or
~/.pgpass, and the aws module reads the usual AWS credential sources.
Any value in the file that looks secret is registered with the redactor.
An unknown key is an error that names the closest valid key.
]]
local errors = require "pgtide.errors"
local util = require "pgtide.util"
local sys = require "sys"

local M = {}

-- Keys every config may hold, besides the runbook's parameters.
M.common_keys = {
  name = "migration name: names the state directory (.pgtide/<name>)",
  source = "source database connection string or URI",
  target = "target database connection string or URI",
  aws = "table: region, profile, endpoint_url",
  state_dir = "state directory (default .pgtide/<name>)",
  log_level = "trace, debug, info, warn or error",
}

M.aws_keys = { region = true, profile = true, endpoint_url = true, max_attempts = true }

local function register_secrets(t, depth)
  if depth > 5 then return end
  for k, v in pairs(t) do
    if type(v) == "table" then
      register_secrets(v, depth + 1)
    elseif type(v) == "string" and type(k) == "string" and
        (k:lower():find("password") or k:lower():find("secret") or k:lower():find("token")) then
      sys.register_secret(v)
    elseif type(v) == "string" then
      local pw = v:match("[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*'([^']*)'") or
        v:match("[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*([^%s']+)") or
        v:match("^%a[%w+.-]*://[^:/@]+:([^@/]+)@")
      if pw then sys.register_secret(pw) end
    end
  end
end

--[[
M.load(path) -> table.  Raises a usage error (exit 2) when the file is
missing, has a syntax error (file:line), fails at run time, or does not
return a table.
]]
function M.load(path)
  if not sys.exists(path) then errors.usage("config file %s not found", path) end
  local env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(path, "t", env)
  if not chunk then errors.usage("config file %s", err) end
  local ok, cfg = pcall(chunk)
  if not ok then errors.usage("config file %s failed: %s", path, errors.message(cfg)) end
  if type(cfg) ~= "table" then
    errors.usage("config file %s must return a table, got %s", path, type(cfg))
  end
  register_secrets(cfg, 0)
  return cfg
end

--[[
M.check(cfg, rb, path): every key must be a common key or a parameter of
the runbook; the aws table may only hold known keys.  Raises one usage
error naming every unknown key, each with the closest valid name.
]]
function M.check(cfg, rb, path)
  local valid = {}
  for k in pairs(M.common_keys) do valid[#valid + 1] = k end
  for k in pairs(rb and rb.params or {}) do
    if not M.common_keys[k] then valid[#valid + 1] = k end
  end
  table.sort(valid)
  local set = {}
  for _, k in ipairs(valid) do set[k] = true end
  -- every unknown key at once: a file with three typos needs one round trip, not three
  local bad, unhinted = {}, false
  for _, k in ipairs(util.sorted_keys(cfg)) do
    if not set[k] then
      local hint = util.closest(tostring(k), valid)
      bad[#bad + 1] = string.format("'%s'%s", tostring(k), hint and string.format(" (did you mean '%s'?)", hint) or "")
      unhinted = unhinted or not hint
    end
  end
  if cfg.aws ~= nil then
    if type(cfg.aws) ~= "table" then errors.usage("config file %s: 'aws' must be a table", path) end
    local names = util.sorted_keys(M.aws_keys)
    for _, k in ipairs(util.sorted_keys(cfg.aws)) do
      if not M.aws_keys[k] then
        local hint = util.closest(tostring(k), names)
        bad[#bad + 1] = string.format("'aws.%s'%s", tostring(k),
          hint and string.format(" (did you mean 'aws.%s'?)", hint) or "")
      end
    end
  end
  if #bad == 1 then
    errors.usage("config file %s: unknown key %s%s", path, bad[1],
      unhinted and string.format(" (valid keys: %s)", table.concat(valid, ", ")) or "")
  elseif #bad > 1 then
    errors.usage("config file %s: %d unknown keys: %s%s", path, #bad, table.concat(bad, ", "),
      unhinted and string.format(" (valid keys: %s)", table.concat(valid, ", ")) or "")
  end
end

return M
