--[[
pgtide.dms.conn: connection details a DMS endpoint needs.

DMS wants host, port, database, user and password as separate fields.
pgtide takes them from the live connection (conn:info(): the values
libpq actually used), and the password from, in order: the conninfo
itself, PGPASSWORD, then the pgpass file (PGPASSFILE or ~/.pgpass), as
libpq does.  Every password found is registered with the redactor at
once, so it can never reach a log, the state file or a report.

  conn.details(ctx, "source" | "target") -> { host, port, dbname, user,
                                               password, ssl }
The host DMS should use can differ from the one pgtide reaches (a
tunnel, a private name): parameters dms_source_host / dms_target_host
(and *_port) override it.
]]
local pg = require "pg"
local sys = require "sys"
local runbook = require "pgtide.runbook"

local M = {}

-- Split a pgpass line into its 5 fields, honouring '\:' and '\\'.
local function pgpass_fields(line)
  local fields, cur, i = {}, {}, 1
  while i <= #line do
    local c = line:sub(i, i)
    if c == "\\" and i < #line then
      cur[#cur + 1] = line:sub(i + 1, i + 1)
      i = i + 2
    elseif c == ":" and #fields < 4 then
      fields[#fields + 1] = table.concat(cur)
      cur = {}
      i = i + 1
    else
      cur[#cur + 1] = c
      i = i + 1
    end
  end
  fields[#fields + 1] = table.concat(cur)
  return fields
end

--[[
conn.pgpass_lookup(host, port, dbname, user [, file]) -> password or nil.
The first matching line wins; '*' matches anything.  'localhost' in the
file also matches a Unix-socket host, as in libpq.
]]
function M.pgpass_lookup(host, port, dbname, user, file)
  file = file or os.getenv("PGPASSFILE") or ((os.getenv("HOME") or "") .. "/.pgpass")
  local f = io.open(file, "r")
  if not f then return nil end
  local want = { tostring(host or ""), tostring(port or ""), tostring(dbname or ""), tostring(user or "") }
  if want[1]:sub(1, 1) == "/" then want[1] = "localhost" end
  for line in f:lines() do
    if not line:match("^%s*#") and line:find(":", 1, true) then
      local fld = pgpass_fields(line)
      if #fld == 5 then
        local match = true
        for k = 1, 4 do
          if fld[k] ~= "*" and fld[k] ~= want[k] then match = false; break end
        end
        if match then f:close(); return fld[5] end
      end
    end
  end
  f:close()
  return nil
end

--[[
conn.details(ctx, which) -> table.  'which' is "source" or "target".
Raises a failure naming the missing piece when no password can be
found (DMS cannot use a pgpass file).
]]
function M.details(ctx, which)
  local conninfo = assert(ctx.params[which], which .. " parameter missing")
  local c = which == "source" and ctx.src or ctx.dst
  local info = c:info()
  local _, pw = pg.split_password(conninfo)
  pw = pw or os.getenv("PGPASSWORD")
  if not pw or pw == "" then
    pw = M.pgpass_lookup(info.host, info.port, info.dbname, info.user)
  end
  runbook.require(pw and pw ~= "",
    "no password for the %s database user %s: DMS endpoints need one (put it in the %s conninfo, "
    .. "PGPASSWORD or your pgpass file)", which, tostring(info.user), which)
  sys.register_secret(pw)
  local short = which == "source" and "dms_source" or "dms_target"
  local p = ctx.params
  local host = (p[short .. "_host"] and p[short .. "_host"] ~= "") and p[short .. "_host"] or info.host
  local port = p[short .. "_port"] or tonumber(info.port)
  return {
    host = host,
    port = math.tointeger(tonumber(port)) or 5432,
    dbname = info.dbname,
    user = info.user,
    password = pw,
    ssl = info.ssl,
  }
end

return M
