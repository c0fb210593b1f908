--[[
pgtide.dms.naming: resource names that are unique per migration.

The seed's console walkthrough uses fixed names (planetscale-postgres-
migration, postgres-source, planetscale-target, postgres-to-planetscale,
dms_slot_planetscale), and PlanetScale's template hard-codes its own, so
two migrations in one account and region collide.  pgtide derives every
name from the migration name plus a random suffix chosen once and kept
in the state file, so reruns reuse the same names and cleanup finds them.

  local names = naming.for_ctx(ctx)   -- generated on first use, then stable
  names.instance, names.subnet_group, names.source_endpoint,
  names.target_endpoint, names.task, names.slot, names.stack,
  names.security_group, names.prefix, names.suffix, names.tag
]]
local sys = require "sys"

local M = {}

-- Lowercase letters, digits and single hyphens; starts with a letter.
local function dns_label(s, max)
  s = tostring(s):lower():gsub("[^a-z0-9]+", "-"):gsub("^-+", ""):gsub("-+$", "")
  if not s:match("^[a-z]") then s = "m" .. s end
  s = s:sub(1, max):gsub("-+$", "")
  return s
end

-- A 6-hex-digit random suffix (from /dev/urandom when available).
function M.random_suffix()
  local f = io.open("/dev/urandom", "rb")
  local bytes
  if f then bytes = f:read(3); f:close() end
  if not bytes or #bytes < 3 then
    math.randomseed(os.time() + sys.getpid())
    bytes = string.char(math.random(0, 255), math.random(0, 255), math.random(0, 255))
  end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--[[
naming.derive(migration_name, suffix) -> names table.  Pure: the same
inputs always give the same names.  Every identifier satisfies the DMS
rules (letters, digits and hyphens, starts with a letter, no double or
trailing hyphen, instance identifier at most 63 characters), the slot
name PostgreSQL's (lowercase, digits, underscore, at most 63), and the
stack name CloudFormation's (at most 128, short enough that names the
template derives from it stay within S3's 63 characters).
]]
function M.derive(migration, suffix)
  assert(type(suffix) == "string" and suffix:match("^[0-9a-f]+$"), "bad name suffix")
  local base = dns_label(migration, 20)
  local prefix = "pgtide-" .. base .. "-" .. suffix
  local slot_base = base:gsub("-", "_")
  return {
    suffix = suffix,
    migration = migration,
    prefix = prefix,
    instance = prefix,
    subnet_group = prefix .. "-subnets",
    security_group = prefix .. "-sg",
    source_endpoint = prefix .. "-source",
    target_endpoint = prefix .. "-target",
    task = prefix .. "-task",
    slot = ("dms_" .. slot_base .. "_" .. suffix):sub(1, 63),
    stack = ("pgt-" .. base:sub(1, 16):gsub("-+$", "") .. "-" .. suffix),
    tag = { Key = "pgtide:migration", Value = tostring(migration) },
  }
end

--[[
naming.for_ctx(ctx) -> names.  Looks for names recorded by any earlier
step (outputs.names); otherwise derives new ones, records them in this
step's outputs and saves the state at once, so a crash right after a
resource is created still leaves its name findable.
]]
function M.for_ctx(ctx)
  for _, out in pairs(ctx.outputs or {}) do
    if type(out) == "table" and type(out.names) == "table" and out.names.suffix then
      return M.derive(out.names.migration or ctx.name, out.names.suffix)
    end
  end
  local names = M.derive(ctx.name or "migration", M.random_suffix())
  if ctx.out then
    ctx.out.names = { suffix = names.suffix, migration = names.migration }
    if ctx.save and not ctx.dry_run then ctx:save() end
  end
  return names
end

--[[
naming.slot(ctx, names) -> the replication slot the source endpoint names,
or false when there is none.  full-load-and-cdc: the migration's own
(names.slot, created right before the task starts); cdc: the existing
slot the user made when the target's data was copied (cdc_slot); a full
load needs no slot.
]]
function M.slot(ctx, names)
  local p = ctx.params or {}
  if p.migration_type == "full-load" then return false end
  if p.migration_type == "cdc" then return (p.cdc_slot and p.cdc_slot ~= "") and p.cdc_slot or false end
  return names.slot
end

-- Tags attached to everything pgtide creates (AWS-shaped list).
function M.tags(names, extra)
  local t = { { Key = names.tag.Key, Value = names.tag.Value },
              { Key = "pgtide:resource-prefix", Value = names.prefix } }
  for k, v in pairs(extra or {}) do t[#t + 1] = { Key = k, Value = tostring(v) } end
  return t
end

return M
