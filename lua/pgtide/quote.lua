--[[
pgtide.quote: SQL text for identifiers and literals in statements pgtide
shows to people (fixes, hints) or runs.

  quote.ident(conn, "Orders")   --> "Orders" quoted only when needed, by the
                                    server's own quote_ident (keywords too);
                                    cached per connection
  quote.qname(conn, schema, name) --> schema.name, each part as ident()
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

function M.literal(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

return M
