-- The version and role matrix: `pgtide run local` with CDC as real users
-- run it.  Each pair is a source of one PostgreSQL version with the roles
-- RDS/Aurora users have (tests/lib/roles.lua: the master-like owner 'app',
-- or the non-owner 'migrator' with only the documented grants) and a
-- target of another version with PlanetScale's default role over TLS
-- (sslmode=verify-full).  Nobody in here is a superuser but the test
-- itself, which only sets the roles up and compares the result.
--
-- Per pair: a schema with triggers (audit rows, a BEFORE UPDATE touch), a
-- view, a partitioned table, an unlogged table, a TOASTed column, check
-- and unique constraints, expression and partial indexes, sequences
-- owned and free; a multi-table write load (per transaction two accounts
-- updated and two ledger rows inserted, audit rows by trigger) from
-- before the slot exists until the cutover; one kill -9 in the full load
-- and one while streaming, each resumed; `pgtide cutover` from another
-- process; then the test's own comparison (row count and ordered md5
-- per table, sequences ahead, constraints, indexes and triggers by
-- definition and state) and a check that no pgtide object (schema,
-- table, slot, publication, origin) is left on either side.
--
-- PAIRS (env) picks pairs by name, e.g. PAIRS=15-17; the default runs
-- 13-17 (owner), 15-17 (non-owner migrator: preflight fails with the
-- statement for the owner; the test runs exactly that and goes on),
-- 15-15 (owner, write fence) and 17-18 when PostgreSQL 18 can be had.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local roles = require "roles"
local sys = require "sys"
local json = require "json"

local PAIRS = {
  { name = "13-17", source = 13, target = 17, role = "owner" },
  { name = "15-17", source = 15, target = 17, role = "migrator" },
  { name = "15-15", source = 15, target = 15, role = "owner", fence = true },
  { name = "17-18", source = 17, target = 18, role = "owner", optional = true },
}

local tmp = T.tmp .. "/matrix-" .. sys.getpid()
sys.mkdir_p(tmp)
local seed = os.time()
math.randomseed(seed)
io.stderr:write("seed ", seed, "\n")

-- {==================================================================
-- The application: schema, data and the writer
-- ===================================================================

local SCHEMA = [[
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL
                         CHECK (balance > -1000000), updated_at timestamptz);
CREATE UNIQUE INDEX accounts_owner_lower ON accounts (lower(owner));
CREATE TABLE ledger (id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES accounts (id),
                     amount int NOT NULL, memo text, at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ledger_account ON ledger (account_id);
CREATE INDEX ledger_big ON ledger (amount) WHERE amount > 90;
CREATE TABLE audit (id bigserial PRIMARY KEY, tbl text NOT NULL, op text NOT NULL, row_id bigint,
                    at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit (tbl, op, row_id) VALUES (TG_TABLE_NAME, TG_OP, NEW.id);
  RETURN NEW;
END $$;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER accounts_audit AFTER UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION audit_row();
CREATE TRIGGER ledger_audit AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION audit_row();
CREATE TABLE events (id bigint NOT NULL, day date NOT NULL, kind text, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE TABLE events_old PARTITION OF events FOR VALUES FROM ('2000-01-01') TO ('2025-01-01');
CREATE TABLE events_new PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2100-01-01');
CREATE TABLE documents (id int PRIMARY KEY, body text NOT NULL);
CREATE UNLOGGED TABLE scratch (k int PRIMARY KEY, v text);
CREATE SEQUENCE invoice_no START 500 INCREMENT 5;
CREATE VIEW kinds AS SELECT kind AS md, count(*) AS n FROM events GROUP BY kind;
-- pg_dump makes this view a placeholder in pre-data and defines it in post-data (it depends
-- on the primary key)
CREATE VIEW account_totals AS
  SELECT a.id, a.balance, count(l.id) AS entries FROM accounts a LEFT JOIN ledger l ON l.account_id = a.id
   GROUP BY a.id;
INSERT INTO accounts SELECT g, 'owner' || g, 1000, NULL FROM generate_series(1, 400) g;
INSERT INTO ledger (account_id, amount, memo) SELECT 1 + g % 400, g % 100, 'm' || g FROM generate_series(1, 20000) g;
INSERT INTO events SELECT g, DATE '2024-06-01' + (g % 400), 'k' || (g % 7) FROM generate_series(1, 8000) g;
INSERT INTO documents SELECT g, repeat(md5(g::text), 100 + g % 200) FROM generate_series(1, 300) g;
INSERT INTO scratch SELECT g, 'v' || g FROM generate_series(1, 50) g;
SELECT setval('invoice_no', 700);
]]

-- Per transaction: a transfer between two accounts (two updates, two
-- ledger rows; the triggers add four audit rows); now and then an event,
-- a document rewrite, an invoice number, a scratch row.
local WRITER = [=[
local pg = require "pg"
local sys = require "sys"
local conninfo, stopfile, seed, countfile = arg[1], arg[2], tonumber(arg[3]), arg[4]
math.randomseed(seed)
local c = pg.connect(conninfo)
c:exec("SET lock_timeout = '10s'")
local n, committed, failed = 0, 0, 0
local deadline = sys.monotonic() + 400
while not sys.exists(stopfile) and sys.monotonic() < deadline do
  n = n + 1
  local ok = pcall(function()
    c:exec("BEGIN")
    local a, b = math.random(1, 400), math.random(1, 400)
    local amt = math.random(1, 100)
    c:exec("UPDATE accounts SET balance = balance - $2 WHERE id = $1", a, amt)
    c:exec("UPDATE accounts SET balance = balance + $2 WHERE id = $1", b, amt)
    c:exec("INSERT INTO ledger (account_id, amount, memo) VALUES ($1, $2, 'out'), ($3, $2, 'in')", a, amt, b)
    local k = math.random(20)
    if k == 1 then
      c:exec("INSERT INTO events VALUES ($1, DATE '2024-06-01' + $2, 'w') ON CONFLICT DO NOTHING",
        100000 + n, math.random(0, 600))
    elseif k == 2 then
      c:exec("UPDATE documents SET body = repeat(md5(random()::text), 150) WHERE id = $1", math.random(1, 300))
    elseif k == 3 then
      c:exec("SELECT nextval('invoice_no')")
    elseif k == 4 then
      c:exec("INSERT INTO scratch VALUES ($1, 'w') ON CONFLICT (k) DO UPDATE SET v = scratch.v || '+'",
        math.random(1, 200))
    elseif k == 5 then
      c:exec("UPDATE events SET day = day + 200 WHERE id = $1 AND day < '2024-12-01'", math.random(1, 8000))
    end
    c:exec("COMMIT")
    committed = committed + 1
  end)
  if not ok then
    failed = failed + 1
    pcall(c.exec, c, "ROLLBACK")
    if not pcall(c.query_one, c, "SELECT 1 AS x") then
      -- a write fence ends the session: the application reconnects read-only
      local okc, c2 = pcall(pg.connect, conninfo)
      if not okc then break end
      c = c2
    end
  end
  if n % 25 == 0 then sys.write_atomic(countfile, tostring(committed)) end
  sys.sleep(0.003)
end
sys.write_atomic(countfile, tostring(committed))
print(string.format("writer: %d transactions, %d committed, %d failed", n, committed, failed))
]=]
local writer_file = tmp .. "/writer.lua"
do
  local f = assert(io.open(writer_file, "w"))
  f:write(WRITER)
  f:close()
end

local function start_writer(dir, conninfo)
  local stop = dir .. "/writer.stop"
  local _, out = T.sh(string.format("%s script %s %s %s %d %s >%s/writer.log 2>&1 & echo $!", T.q(T.pgtide),
    T.q(writer_file), T.q(conninfo), T.q(stop), math.random(1e6), T.q(dir .. "/writer.count"), dir))
  return { pid = T.background(tonumber(out:match("%d+"))), stop = stop, log = dir .. "/writer.log",
           count = dir .. "/writer.count" }
end

local function stop_writer(w)
  local fh = io.open(w.stop, "w"); fh:close()
  local deadline = sys.monotonic() + 30
  while T.alive(w.pid) and sys.monotonic() < deadline do sys.sleep(0.05) end
  if T.alive(w.pid) then sys.kill(w.pid, "KILL") end
  return sys.readfile(w.log) or ""
end

local function committed(w) return tonumber(sys.readfile(w.count) or "0") or 0 end

-- }==================================================================

-- {==================================================================
-- The comparison the test makes itself
-- ===================================================================

local TABLES = { "accounts", "ledger", "audit", "events", "documents", "scratch" }

local function digest(c, db, tbl)
  return c:sql(string.format("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1; "
    .. "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM %s t",
    tbl), db)
end

-- Definitions that must match: constraints, indexes, triggers with their state.
local DEFINITIONS = [[
SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT 'constraint ' || c.conrelid::regclass || ' ' || c.conname || ' ' || pg_get_constraintdef(c.oid)
         || CASE WHEN c.convalidated THEN '' ELSE ' NOT VALIDATED' END AS x
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
   WHERE n.nspname = 'public' AND c.conrelid <> 0 AND c.conparentid = 0 AND c.contype <> 'n'  -- 18 lists NOT NULL
  UNION ALL
  SELECT 'index ' || indexrelid::regclass || ' ' || pg_get_indexdef(indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = 'public'
  UNION ALL
  SELECT 'trigger ' || t.tgrelid::regclass || ' ' || t.tgname || ' ' || t.tgenabled::text
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = 'public' AND NOT t.tgisinternal) d]]

local function compare(src, dst, db)
  for _, t in ipairs(TABLES) do
    T.eq(digest(dst, db, t), digest(src, db, t), "table " .. t)
  end
  T.eq(dst:sql(DEFINITIONS, db), src:sql(DEFINITIONS, db), "constraints, indexes and triggers")
  local seqs = src:sql([[SELECT string_agg(sequencename || '=' || coalesce(last_value, 0), ' ' ORDER BY 1)
                           FROM pg_sequences WHERE schemaname = 'public']], db)
  for name, v in seqs:gmatch("(%S+)=(%d+)") do
    local tv = tonumber(dst:sql(string.format("SELECT coalesce(last_value, 0) FROM pg_sequences "
      .. "WHERE schemaname = 'public' AND sequencename = '%s'", name), db))
    T.ok(tv and tv >= tonumber(v), "sequence %s: target %s, source %s", name, tostring(tv), v)
  end
end

-- What pgtide may have made, on each side; all must be gone.
local function leftovers(src, dst, db)
  local out = {}
  local function add(what, v) if v ~= "" and v ~= "0" then out[#out + 1] = what .. ": " .. v end end
  add("source slots", src:sql("SELECT string_agg(slot_name, ',') FROM pg_replication_slots"))
  add("source publications", src:sql("SELECT string_agg(pubname, ',') FROM pg_publication", db))
  add("target schema pgtide", dst:sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgtide'", db))
  add("target origins", dst:sql("SELECT string_agg(roname, ',') FROM pg_replication_origin"))
  add("target tables named pgtide", dst:sql([[SELECT string_agg(relname, ',') FROM pg_class
                                              WHERE relname LIKE '%pgtide%']], db))
  add("target slots", dst:sql("SELECT string_agg(slot_name, ',') FROM pg_replication_slots"))
  return out
end

-- }==================================================================

-- {==================================================================
-- One pair
-- ===================================================================

local function run_pair(pair)
  local dir = tmp .. "/" .. pair.name
  sys.mkdir_p(dir)
  local s = T.cluster { version = pair.source, conf = { "logical_decoding_work_mem = 64kB",
                                                        "log_lock_waits = on", "deadlock_timeout = '100ms'" } }
  local d = T.cluster { version = pair.target, tls = true }
  local src = roles.rds(s, "shop")
  local dst = roles.planetscale(d, "shop")
  T.psql(src.owner, SCHEMA)
  src.grant()
  local SRC = pair.role == "owner" and src.owner or src.migrator
  local DST = dst.conninfo
  local state_dir = dir .. "/state"
  local runlog = dir .. "/run.log"
  local extra = { "jobs=2", "memory_cap=1MB" }
  if pair.fence then extra[#extra + 1] = "write_fence=true" end
  if pair.source >= 17 then extra[#extra + 1] = "pg_dump=" .. s:bindir() .. "/pg_dump" end
  local function args(more)
    local a = { T.q(T.pgtide), "run", "local", T.q("source=" .. SRC), T.q("target=" .. DST),
                "--state", T.q(state_dir), "--yes" }
    for _, x in ipairs(extra) do a[#a + 1] = T.q(x) end
    for _, x in ipairs(more or {}) do a[#a + 1] = T.q(x) end
    return table.concat(a, " ")
  end
  local function spawn(more)
    local _, out = T.sh(args(more) .. " >>" .. runlog .. " 2>&1 </dev/null & echo $!")
    return T.background(tonumber(out:match("%d+")))
  end
  local function tail() return (sys.readfile(runlog) or ""):sub(-4000) end

  T.test(pair.name .. ": preflight as " .. pair.role .. " says what is missing, with the fix", function()
    local code, _, err = T.sh(args { "--only", "preflight" })
    if pair.role == "owner" then
      T.eq(code, 0, "preflight:\n" .. err)
      T.match(err, "%[pass%] Target triggers while rows are replicated: target user pscale_admin may not "
        .. "SET session_replication_role")
      T.match(err, "%[pass%] Where the target records the stream's position: no privilege for "
        .. "replication origins: a row in pgtide.cdc_progress")
      T.match(err, "%[WARN%] Unlogged tables: 1 unlogged table%(s%): public.scratch")
      if pair.fence then T.match(err, "%[pass%] Write fence at cutover") end
    else
      T.eq(code, 1, "preflight must fail for the non-owner:\n" .. err)
      T.match(err, "%[FAIL%] Publication of the tables to stream: source user migrator cannot create the "
        .. "publication")
      local stmt, pub = err:match("ask the tables' owner to run: (CREATE PUBLICATION [^;]+;) then rerun with "
        .. "publication=(%S+)")
      T.ok(stmt, "the fix names the statement:\n%s", err)
      T.nomatch(stmt, "scratch", "unlogged tables are not published")
      -- exactly what preflight printed, run by the owner
      T.psql(src.owner, stmt)
      extra[#extra + 1] = "publication=" .. pub
      code, _, err = T.sh(args { "--only", "preflight" })
      T.eq(code, 0, "preflight with publication=" .. pub .. ":\n" .. err)
      T.match(err, "%[pass%] Publication of the tables to stream: publication " .. pub .. " publishes")
    end
  end)

  local w
  T.test(pair.name .. ": run with CDC under a trigger-driven write load, killed and resumed", function()
    w = start_writer(dir, src.owner)
    T.wait_for("the writer", 20, function() return committed(w) > 20 end)
    -- a kill in the full load
    local pid = spawn()
    T.wait_for("the full load", 120, function()
      return T.step_status(state_dir, "full-load") == "running" or not T.alive(pid)
    end)
    T.ok(T.alive(pid), "the run ended before the full load:\n%s", tail())
    sys.sleep(0.3 + math.random() * 0.5)
    sys.kill(pid, "KILL")
    T.sh("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
    -- resume; a kill while streaming
    pid = spawn()
    T.wait_for("streaming", 240, function()
      return T.step_status(state_dir, "stream") == "running" or not T.alive(pid)
    end)
    T.ok(T.alive(pid), "the run ended before streaming:\n%s", tail())
    local before = committed(w)
    T.wait_for("changes to stream", 60, function() return committed(w) > before + 30 end)
    sys.kill(pid, "KILL")
    T.sh("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
    pid = spawn()
    T.wait_for("streaming again", 240, function()
      return T.step_status(state_dir, "stream") == "running" or not T.alive(pid)
    end)
    T.ok(T.alive(pid), "the resumed run ended before streaming:\n%s", tail())
    -- the status names how changes are applied on this target
    local code, out, err = T.run { "status", "--state", state_dir, "--json" }
    T.eq(code, 0, "status: " .. err)
    local st = json.decode(out)
    T.ok(st.apply and st.apply:find("user triggers of the migrated tables disabled until cutover", 1, true),
      "status names the apply method: %s", tostring(st.apply))
    T.ok(st.apply:find("pgtide.cdc_progress", 1, true), "status names the progress record: %s", st.apply)
    before = committed(w)
    T.wait_for("more changes", 60, function() return committed(w) > before + 30 end)
    if not pair.fence then stop_writer(w) end
    -- cutover from another process
    code, _, err = T.run { "cutover", "--state", state_dir }
    T.eq(code, 0, "pgtide cutover: " .. err)
    T.wait_for("the run to finish", 300, function() return not T.alive(pid) end)
    T.eq(T.step_status(state_dir, "cleanup"), "done", "cleanup done:\n" .. tail())
    if pair.fence then
      local log = stop_writer(w)
      T.match(log, "writer: %d+ transactions")
    end
    local text = sys.readfile(runlog)
    if pair.role ~= "owner" then
      -- the publication the owner made: cleanup says how the owner drops it
      local drop = text:match("cleanup: publication %S+ belongs to app, who made it for this migration; when "
        .. "nothing else uses it, as app run on the source: (DROP PUBLICATION [^;]+;)")
      T.ok(drop, "cleanup names the owner's statement")
      T.psql(src.owner, drop)
    end
    T.match(text, "user trigger%(s%) on the migrated tables disabled until cutover")
    T.match(text, "cutover: %d+ user trigger%(s%) enabled again on the target")
    T.match(text, "cutover: 1 unlogged table%(s%) copied again")
    T.nomatch(text, "permission denied", "no step hit a missing privilege")
  end)

  T.test(pair.name .. ": the target equals the source, and nothing of pgtide is left", function()
    compare(s, d, "shop")
    local left = leftovers(s, d, "shop")
    T.eq(#left, 0, "pgtide objects left: " .. table.concat(left, "; "))
    local deadlocks = select(2, (sys.readfile(s.dir .. "/server.log") or ""):gsub("deadlock detected", ""))
    T.eq(deadlocks, 0, "deadlocks in the source's log")
  end)
  s:stop()
  d:stop()
end

for _, pair in ipairs(PAIRS) do
  local want = os.getenv("PAIRS")
  if want and not (("," .. want .. ","):find("," .. pair.name .. ",", 1, true)) then
    -- not selected
  else
    local missing = T.version_missing(pair.source) or T.version_missing(pair.target)
    if missing then
      T.skip(pair.name, "PostgreSQL " .. (T.version_missing(pair.source) and pair.source or pair.target)
        .. " cannot run here: " .. missing)
    else
      run_pair(pair)
    end
  end
end

T.done()
