-- Changes to columns of user-defined types reach the target through the
-- stream exactly: domains (pgoutput names their base type, which must not
-- be taken for schema drift), enums, composites, arrays, ranges, jsonb,
-- bytea, numeric specials and NULL versus the empty string.
local T = require "t"
local core = require "core"
local pg = require "pg"
local sys = require "sys"

local src, dst = T.cluster(), T.cluster()
local state = T.tmp .. "/cdc-types-" .. sys.getpid()
assert(sys.mkdir_p(state))
local SCHEMA = [[
CREATE SCHEMA shop;
CREATE DOMAIN shop.email AS text CHECK (VALUE LIKE '%@%');
CREATE DOMAIN shop.amount AS numeric(12,2) CHECK (VALUE >= 0);
CREATE DOMAIN shop.amount_nn AS shop.amount NOT NULL;
CREATE TYPE shop.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE shop.pair AS (a int, b text);
CREATE TABLE shop.t (id int PRIMARY KEY, mail shop.email, price shop.amount, due shop.amount_nn,
  mood shop.mood, pairs shop.pair[], r int4range, j jsonb, b bytea, n numeric, s text);
]]
src:sql(SCHEMA)
dst:sql(SCHEMA)

local function digest(c)
  return c:sql("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x.id)), '') FROM shop.t x")
end

T.test("domain, enum, composite-array, range, jsonb, bytea and numeric columns stream exactly", function()
  local slot <close> = core.create_slot { source = src.conninfo, slot = "types", publication = "types" }
  slot:close()
  local r <close> = core.replicate { source = src.conninfo, target = dst.conninfo, slot = "types",
                                     publication = "types", state_dir = state }
  src:sql([[
    INSERT INTO shop.t VALUES
      (1, 'a@b.c', 1.50, 2, 'happy', ARRAY[ROW(1,'x')::shop.pair, ROW(2,NULL)::shop.pair], '[1,5)',
       '{"k": [1, "two", null]}', '\x00ff10', 'NaN', ''),
      (2, NULL, NULL, 0, NULL, NULL, 'empty', 'null', '\x', '-Infinity', NULL),
      (3, 'q@r.s', 99999.99, 7, 'sad', '{}', '(,)', '[]', decode(repeat('ab', 5000), 'hex'), 123.456e10, 'x');
    UPDATE shop.t SET price = 3.25, mail = 'z@y.x', mood = 'ok' WHERE id = 1;
    UPDATE shop.t SET pairs = ARRAY[ROW(9,'nine')::shop.pair] WHERE id = 2;
    DELETE FROM shop.t WHERE id = 3;
    INSERT INTO shop.t (id, due, s) VALUES (4, 1, E'tab\there\nnewline \\ backslash');
  ]])
  local lsn = pg.connect(src.conninfo):query_one("SELECT pg_current_wal_lsn()::text AS l").l
  local ok, why = r:wait_applied(lsn, 60)
  T.ok(ok, "not applied: %s", tostring(why))
  T.eq(r:status().state ~= "failed", true, "the stream did not fail")
  T.eq(digest(dst), digest(src))
  r:stop()
end)

T.done()
