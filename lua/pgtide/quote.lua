--[[
pgtide.quote: SQL text for identifiers and literals in statements pgtide
shows to people (fixes, hints) or runs.

  quote.ident(conn, "Orders")   --> "Orders" quoted only when needed, by the
                                    server's own quote_ident (keywords too);
                                    cached per connection
  quote.qname(conn, schema, name) --> schema.name, each part as ident()
  quote.idents(conn, a, b, ...) --> each quoted as ident(), in one round trip
  quote.name("Orders")          --> "Orders": quoted unless lower-case letters, digits
                                    and underscores (no server at hand: keywords
                                    are not recognised; for names pgtide shows)
  quote.literal("it's")         --> 'it''s'
]]
local M = {}

local cache = setmetatable({}, { __mode = "k" })

function M.ident(conn, s)
  local c = cache[conn]
  if not c then c = {}; cache[conn] = c end
  if not c[s] then c[s] = conn:query_one("SELECT pg_catalog.quote_ident($1) AS q", s).q end
  return c[s]
end

function M.qname(conn, schema, name)
  return M.ident(conn, schema) .. "." .. M.ident(conn, name)
end

function M.idents(conn, ...)
  local names = { ... }
  local out = {}
  for _, r in ipairs(conn:query([[SELECT pg_catalog.quote_ident(x.n) AS q
                                    FROM unnest($1::text[]) WITH ORDINALITY AS x (n, i)
                                   ORDER BY x.i]], names)) do
    out[#out + 1] = r.q
  end
  return table.unpack(out, 1, #names)
end

function M.name(s)
  if s:match("^[a-z_][a-z0-9_]*$") then return s end
  return '"' .. s:gsub('"', '""') .. '"'
end

function M.literal(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

return M
