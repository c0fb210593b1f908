-- Tables created on the source while changes stream are not lost: a new
-- table and a new partition of a partitioned table, written to before and
-- after pgtide notices them, end up on the target row for row.  Before,
-- such a table was silently not replicated and the cutover only failed on
-- its sequence.
--   * as the RDS-like owner (pgtide made the publication): pgtide adds the
--     new table and the new partition itself (created on the target, added
--     to the publication, copied under a temporary slot's snapshot, their
--     later changes streamed exactly once);
--   * as the non-owner 'migrator' with a publication the owner made FOR
--     TABLE the partitioned root: the new partition's first change reaches
--     the stream before the target has it, and the run recovers; the new
--     table is named with the owner's ALTER PUBLICATION statement (in the
--     log and `pgtide status`), and added once the owner ran it;
--   * with new_tables=warn the cutover names the missing table.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local roles = require "roles"
local sys = require "sys"
local json = require "json"

local tmp = T.tmp .. "/newtables-" .. sys.getpid()
sys.mkdir_p(tmp)

local SCHEMA = [[
CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
CREATE TABLE events (id bigint NOT NULL, day date NOT NULL, kind text, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g;
INSERT INTO events SELECT g, DATE '2024-01-01' + g % 300, 'old' FROM generate_series(1, 500) g;
]]

-- the application's DDL while the migration streams, and writes before pgtide sees it
local LATE = [[
CREATE TABLE late (id serial PRIMARY KEY, v text NOT NULL, n int REFERENCES items (id));
INSERT INTO late (v, n) SELECT 'v' || g, 1 + g % 100 FROM generate_series(1, 300) g;
CREATE TABLE events_2030 PARTITION OF events FOR VALUES FROM ('2030-01-01') TO ('2031-01-01');
INSERT INTO events SELECT 10000 + g, DATE '2030-01-01' + g % 300, 'new' FROM generate_series(1, 200) g;
]]

local AFTER = [[
UPDATE late SET v = v || '+' WHERE id % 3 = 0;
DELETE FROM late WHERE id % 10 = 0;
INSERT INTO late (v, n) SELECT 'w' || g, 1 + g % 100 FROM generate_series(1, 50) g;
UPDATE events SET kind = 'newer' WHERE day >= '2030-01-01' AND id % 2 = 0;
INSERT INTO events SELECT 20000 + g, DATE '2030-06-01', 'later' FROM generate_series(1, 50) g;
UPDATE items SET qty = qty + 1;
]]

local function digest(c, db, tbl)
  return c:sql(string.format("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') "
    .. "FROM %s t", tbl), db)
end

local s_cluster = T.cluster()
local d_cluster = T.cluster { tls = true }
local n = 0

local function scenario(role, extra, body)
  n = n + 1
  local db = "nt" .. n
  local src = roles.rds(s_cluster, db)
  local dst = roles.planetscale(d_cluster, db)
  T.psql(src.owner, SCHEMA)
  src.grant()
  local dir, log = tmp .. "/" .. db, tmp .. "/" .. db .. ".log"
  local function spawn(more)
    local _, out = T.sh(string.format("%s run local %s %s %s --state %s --yes >>%s 2>&1 </dev/null & echo $!",
      T.q(T.pgtide), T.q("source=" .. src[role]), T.q("target=" .. dst.conninfo), more or extra or "",
      T.q(dir), T.q(log)))
    return T.background(tonumber(out:match("%d+")))
  end
  body({ src = src, dst = dst, db = db, dir = dir, log = log, spawn = spawn })
end

local function streaming(c, pid)
  T.wait_for("streaming", 120, function() return T.step_status(c.dir, "stream") == "running" or not T.alive(pid) end)
  T.ok(T.alive(pid), "the run ended before streaming:\n%s", (sys.readfile(c.log) or ""):sub(-3000))
end

local function finish(c, pid)
  local code, _, err = T.run { "cutover", "--state", c.dir }
  T.eq(code, 0, "pgtide cutover: " .. err .. (sys.readfile(c.log) or ""):sub(-3000))
  T.wait_for("the run to finish", 180, function() return not T.alive(pid) end)
  T.eq(T.step_status(c.dir, "cleanup"), "done", (sys.readfile(c.log) or ""):sub(-3000))
  for _, t in ipairs { "items", "events", "late" } do
    T.eq(digest(d_cluster, c.db, t), digest(s_cluster, c.db, t), "table " .. t)
  end
  T.eq(d_cluster:sql("SELECT count(*) FROM pg_constraint WHERE conname = 'late_n_fkey' AND convalidated", c.db), "1",
    "the new table's foreign key, added at cutover")
end

T.test("as the owner: a new table and a new partition are added and streamed exactly once", function()
  scenario("owner", nil, function(c)
    local pid = c.spawn()
    streaming(c, pid)
    T.psql(c.src.owner, LATE)
    T.wait_for("both added", 60, function()
      local text = sys.readfile(c.log) or ""
      return text:find("new table public.late: created on the target and copied", 1, true)
         and text:find("new table public.events_2030: created on the target and copied", 1, true)
    end)
    T.psql(c.src.owner, AFTER)
    finish(c, pid)
  end)
end)

T.test("as a non-owner with the owner's publication: the new partition recovers, the new table waits for "
  .. "its owner", function()
  scenario("migrator", nil, function(c)
    -- what preflight asks the owner to run: the publication FOR TABLE the roots
    local pub = "pgtide_local_" .. c.db .. "_" .. c.db
    T.psql(c.src.owner, string.format("CREATE PUBLICATION %s FOR TABLE public.items, public.events", pub))
    local pid = c.spawn("publication=" .. pub)
    streaming(c, pid)
    T.psql(c.src.owner, LATE)
    local statement
    T.wait_for("the warning", 60, function()
      statement = (sys.readfile(c.log) or ""):match("public%.late: as the owner of public%.late, run on the source: "
        .. "(ALTER PUBLICATION [^;]+;)")
      return statement ~= nil
    end)
    local code, out = T.run { "status", "--state", c.dir, "--json" }
    T.eq(code, 0)
    local st = json.decode(out)
    local named = false
    for _, t in ipairs(st.new_tables or {}) do
      if t.name == "public.late" and t.why:find("ALTER PUBLICATION", 1, true) then named = true end
    end
    T.ok(named, "status names the new table and the statement: %s", out:sub(1, 2000))
    T.match(sys.readfile(c.log), "new table public%.events_2030: created on the target and copied")
    T.psql(c.src.owner, statement)
    T.wait_for("the table added", 60, function()
      return (sys.readfile(c.log) or ""):find("new table public.late: created on the target and copied", 1, true)
    end)
    T.psql(c.src.owner, AFTER)
    finish(c, pid)
  end)
end)

T.test("new_tables=warn: the cutover names the table missing on the target", function()
  scenario("owner", "new_tables=warn", function(c)
    local pid = c.spawn()
    streaming(c, pid)
    T.psql(c.src.owner, "CREATE TABLE late (id serial PRIMARY KEY, v text); INSERT INTO late (v) VALUES ('x');")
    T.wait_for("the warning", 60, function()
      return (sys.readfile(c.log) or ""):find("public.late: new_tables=warn", 1, true)
    end)
    local code, _, err = T.run { "cutover", "--state", c.dir }
    T.eq(code, 1, "the cutover fails: " .. err)
    T.wait_for("the run to stop", 60, function() return not T.alive(pid) end)
    T.match(sys.readfile(c.log), "cutover: table%(s%) created on the source during the migration are missing "
      .. "on the target: public%.late")
    -- troubleshoot names the table rather than printing SQL that cannot run
    local out
    code, out = T.run { "troubleshoot", "missing-sequences", "source=" .. c.src.owner, "target=" .. c.dst.conninfo }
    T.eq(code, 0)
    T.match(out, "its table public%.late is missing on the target as well: create the table first")
    T.nomatch(out, "OWNED BY public.late", "no statement that needs the missing table")
  end)
end)

T.done()
