--[[
pgtide.triggers: keep the target's user triggers from firing for rows
that replication writes, on targets where session_replication_role
cannot be set (see pgtide.apply_plan).

Only triggers that fire in the ordinary ("origin") mode are disabled:
those the source itself keeps disabled, or enabled for REPLICA / ALWAYS,
keep their state, as they would under session_replication_role =
replica.  Internal triggers (foreign keys) are never touched: pgtide adds
foreign keys at cutover.  ALTER TABLE ... DISABLE TRIGGER needs the
table's owner, which pgtide's role is for every table its schema step
created.

  local list = triggers.find(dst, tables)      -- tables: { {schema, table} }; the
                                               -- { {schema, table, name} } to disable
  triggers.disable(dst, list)                  -- record the list first, then disable: a
                                               -- rerun disables the same list again
  triggers.enable(dst, list)                   -- enables them again; raises naming any
                                               -- that is not enabled afterwards
All raise pg errors (e.g. not the owner) with the statement that failed.
]]
local M = {}

local function alter(conn, t, how)
  return string.format("ALTER TABLE %s.%s %s TRIGGER %s", conn:quote_ident(t.schema),
    conn:quote_ident(t.table), how, conn:quote_ident(t.name))
end

function M.find(conn, tables)
  local schemas, names = {}, {}
  for i, t in ipairs(tables) do schemas[i], names[i] = t.schema, t.table end
  if #names == 0 then return {} end
  local out = {}
  for _, t in ipairs(conn:query([[
      SELECT n.nspname AS schema, c.relname AS table, t.tgname AS name
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN unnest($1::text[], $2::text[]) AS x (s, r) ON x.s = n.nspname AND x.r = c.relname
       WHERE NOT t.tgisinternal AND t.tgenabled = 'O' AND t.tgparentid = 0
       ORDER BY 1, 2, 3]], schemas, names)) do
    out[#out + 1] = { schema = t.schema, table = t.table, name = t.name }
  end
  return out
end

function M.disable(conn, list)
  if not list or #list == 0 then return end
  conn:transaction(function()
    for _, t in ipairs(list) do conn:exec(alter(conn, t, "DISABLE")) end
  end)
end

function M.enable(conn, list)
  if not list or #list == 0 then return end
  conn:transaction(function()
    for _, t in ipairs(list) do conn:exec(alter(conn, t, "ENABLE")) end
  end)
  local schemas, tables, names = {}, {}, {}
  for i, t in ipairs(list) do schemas[i], tables[i], names[i] = t.schema, t.table, t.name end
  local left = conn:query([[
    SELECT x.s || '.' || x.r || ' ' || x.t AS name
      FROM unnest($1::text[], $2::text[], $3::text[]) AS x (s, r, t)
      LEFT JOIN pg_namespace n ON n.nspname = x.s
      LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.r
      LEFT JOIN pg_trigger g ON g.tgrelid = c.oid AND g.tgname = x.t
     WHERE g.tgenabled IS DISTINCT FROM 'O']], schemas, tables, names)
  if #left > 0 then
    local n = {}
    for _, r in ipairs(left) do n[#n + 1] = r.name end
    error(string.format("triggers not enabled on the target after ENABLE TRIGGER: %s", table.concat(n, ", ")), 0)
  end
end

return M
