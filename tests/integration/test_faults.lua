-- The fault suite: a CDC migration with the managed roles (RDS-like
-- owner on the source, PlanetScale's role over TLS on the target: the
-- progress row and the disabled triggers are under test too) under a
-- multi-table write load with key updates, TOASTed values, rows moving
-- between partitions, TRUNCATE and transactions bigger than memory_cap,
-- hit by:
--   * SIGKILLs at random points of every step before the stream, each
--     followed by a resume (FAULT_KILLS, default 6; `make test-faults`
--     runs 50);
--   * pgtide's source and target connections terminated during the full
--     load and while streaming;
--   * an immediate restart of the source, then of the target, while
--     streaming;
-- then a cutover, and the test's own comparison: every table row for row
-- (no row lost or duplicated), sequences ahead, triggers enabled, nothing
-- of pgtide left.  (The kill in each step's commit window is
-- test_crash_points.lua; two migrations of one name, test_managed_roles.)
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local roles = require "roles"
local sys = require "sys"
local json = require "json"

local KILLS = tonumber(os.getenv("FAULT_KILLS") or "6")
local tmp = T.tmp .. "/faults-" .. sys.getpid()
sys.mkdir_p(tmp)
local seed = tonumber(os.getenv("FAULT_SEED") or "") or os.time()
math.randomseed(seed)
io.stderr:write("seed ", seed, " (FAULT_SEED to repeat)\n")

local SCHEMA = [[
CREATE TABLE acc (id int PRIMARY KEY, bal bigint NOT NULL, note text, big text);
ALTER TABLE acc ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE orders (id bigserial PRIMARY KEY,
                     acc_id int NOT NULL REFERENCES acc (id) ON UPDATE CASCADE ON DELETE CASCADE,
                     amount int NOT NULL);
CREATE INDEX orders_acc ON orders (acc_id);
CREATE TABLE audit (id bigserial PRIMARY KEY, what text NOT NULL);
CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO audit (what) VALUES (TG_TABLE_NAME || ' ' || TG_OP); RETURN NULL; END $$;
CREATE TRIGGER orders_audit AFTER INSERT OR DELETE ON orders FOR EACH ROW EXECUTE FUNCTION audit_fn();
CREATE TABLE events (id bigint NOT NULL, day date NOT NULL, payload text, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE TABLE events_a PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
CREATE TABLE events_b PARTITION OF events FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
CREATE TABLE scratch (k int, v text);
ALTER TABLE scratch REPLICA IDENTITY FULL;
INSERT INTO acc SELECT g, g * 10, 'n' || g, CASE WHEN g % 10 = 0 THEN repeat(md5(g::text), 200) END
  FROM generate_series(1, 3000) g;
INSERT INTO orders (acc_id, amount) SELECT 1 + g % 3000, g % 500 FROM generate_series(1, 30000) g;
INSERT INTO events SELECT g, DATE '2024-01-01' + g % 360, repeat('p', g % 300) FROM generate_series(1, 20000) g;
INSERT INTO scratch SELECT g % 50, 'v' FROM generate_series(1, 2000) g;
]]

local WRITER = [=[
local pg = require "pg"
local sys = require "sys"
local conninfo, stopfile, seed, countfile = arg[1], arg[2], tonumber(arg[3]), arg[4]
math.randomseed(seed)
local c = pg.connect(conninfo)
local n, committed = 0, 0
local function op()
  local k, id = math.random(100), math.random(1, 4000)
  if k <= 15 then
    c:exec("INSERT INTO acc VALUES ($1, 0, 'i', CASE WHEN $1 % 4 = 0 THEN repeat(md5($1::text), 150) END) "
      .. "ON CONFLICT (id) DO UPDATE SET bal = acc.bal + 1", id)
  elseif k <= 35 then
    c:exec("UPDATE acc SET bal = bal + 1, note = note || '.' WHERE id = $1", id)   -- TOAST left unchanged
  elseif k <= 38 then
    c:exec("UPDATE acc SET big = repeat(md5(random()::text), 160) WHERE id = $1", id)
  elseif k <= 41 then   -- a key update, cascading to orders
    c:exec("UPDATE acc SET id = id + 100000 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM acc WHERE id = $1 + 100000)", id)
  elseif k <= 43 then
    c:exec("DELETE FROM acc WHERE id = $1", id)
  elseif k <= 65 then
    c:exec("INSERT INTO orders (acc_id, amount) SELECT id, $2 FROM acc WHERE id >= $1 ORDER BY id LIMIT 1", id, k)
  elseif k <= 70 then
    c:exec("DELETE FROM orders WHERE id = (SELECT min(id) FROM orders) + $1", id % 30)
  elseif k <= 82 then
    c:exec("INSERT INTO events VALUES ($1, DATE '2024-01-01' + $2, 'w') ON CONFLICT DO NOTHING", 50000 + n, id % 360)
  elseif k <= 88 then   -- a row moving to the other partition
    c:exec("UPDATE events SET day = day + 180 WHERE id = $1 AND day < '2024-07-01'", id * 5)
  elseif k <= 95 then
    c:exec("INSERT INTO scratch VALUES ($1, 'w')", id % 50)
  else
    c:exec("DELETE FROM scratch WHERE ctid = (SELECT ctid FROM scratch WHERE k = $1 LIMIT 1)", id % 50)
  end
end
while not sys.exists(stopfile) and not sys.interrupted() do
  n = n + 1
  local ok = pcall(function()
    c:exec("BEGIN")
    local r = math.random(500)
    if r == 1 then      -- bigger than memory_cap (1MB)
      c:exec("INSERT INTO events SELECT 900000 + g + $1 * 10000, DATE '2024-03-01', repeat(md5(g::text), 30) "
        .. "FROM generate_series(1, 3000) g ON CONFLICT DO NOTHING", n)
    elseif r == 2 then
      c:exec("TRUNCATE scratch")
      c:exec("INSERT INTO scratch SELECT g % 50, 't' FROM generate_series(1, 100) g")
    else
      for _ = 1, math.random(1, 4) do op() end
    end
    c:exec("COMMIT")
    committed = committed + 1
  end)
  if not ok then
    pcall(c.exec, c, "ROLLBACK")
    if not pcall(c.query_one, c, "SELECT 1 AS x") then
      sys.sleep(0.5)   -- the source restarts: reconnect
      local okc, c2 = pcall(pg.connect, conninfo)
      if okc then c = c2 end
    end
  end
  if n % 25 == 0 then sys.write_atomic(countfile, tostring(committed)) end
  sys.sleep(0.004)
end
sys.write_atomic(countfile, tostring(committed))
print(string.format("writer: %d transactions, %d committed", n, committed))
]=]

local s = T.cluster { conf = { "logical_decoding_work_mem = 64kB" } }
local d = T.cluster { tls = true }
local src = roles.rds(s, "app")
local dst = roles.planetscale(d, "app")
T.psql(src.owner, SCHEMA)
src.grant()
local dir, log = tmp .. "/state", tmp .. "/run.log"
local writer_file, stop, countfile = tmp .. "/writer.lua", tmp .. "/writer.stop", tmp .. "/writer.count"
assert(sys.write_atomic(writer_file, WRITER))

local function spawn(extra)
  local _, out = T.sh(string.format("%s run local %s %s jobs=2 memory_cap=1MB %s --state %s --yes >>%s 2>&1 "
    .. "</dev/null & echo $!", T.q(T.pgtide), T.q("source=" .. src.owner), T.q("target=" .. dst.conninfo),
    extra or "", T.q(dir), T.q(log)))
  return T.background(tonumber(out:match("%d+")))
end

local function tail() return (sys.readfile(log) or ""):sub(-4000) end

-- pgtide's own sessions on one side (application_name pgtide), ended by the server
local function terminate(c)
  return tonumber(c:sql([[SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                           WHERE application_name LIKE 'pgtide%' AND pid <> pg_backend_pid()]]))
end

-- Run with 'extra' and kill -9 at random moments until 'until_step' is reached or
-- 'kills' are spent; returns the steps the kills landed in, and the pid of a run
-- that reached 'until_step' and still runs.
local function kill_loop(kills, extra, until_step, during, max_wait)
  local killed_in = {}
  for _ = 1, kills do
    local p = spawn(extra)
    local wait, t0 = 0.05 + math.random() * (max_wait or 1.4), sys.monotonic()
    T.wait_for("the run to get going", 120, function()
      if during then during() end
      return sys.monotonic() - t0 >= wait or not T.alive(p) or T.current_step(dir) == until_step
    end)
    if T.current_step(dir) == until_step and T.alive(p) then return killed_in, p end
    if not T.alive(p) then break end
    local step = T.current_step(dir)
    sys.kill(p, "KILL")
    T.gone(p)
    killed_in[#killed_in + 1] = step
  end
  return killed_in
end

local pid
T.test(string.format("%d kills at random points, resumed; connections terminated in the full load", KILLS),
  function()
  local _, out = T.sh(string.format("%s script %s %s %s %d %s >%s/writer.log 2>&1 & echo $!", T.q(T.pgtide),
    T.q(writer_file), T.q(src.owner), T.q(stop), seed, T.q(countfile), tmp))
  T.background(tonumber(out:match("%d+")))
  sys.sleep(0.5)
  local code, _, err = T.sh(string.format("%s run local %s %s --state %s --to schema 2>&1 >/dev/null",
    T.q(T.pgtide), T.q("source=" .. src.owner), T.q("target=" .. dst.conninfo), T.q(dir)))
  T.eq(code, 0, "preflight and schema: " .. err)
  -- slow the copy on the target so that kills and terminations land inside it (an ALWAYS
  -- trigger fires whatever pgtide does with the others; dropped after the load)
  d:sql([[CREATE FUNCTION public.throttle() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN IF random() < 0.01 THEN PERFORM pg_sleep(0.01); END IF; RETURN NEW; END $$;
          CREATE TRIGGER throttle BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION public.throttle();
          ALTER TABLE orders ENABLE ALWAYS TRIGGER throttle;]], "app")
  local terminated = 0
  local killed, running = kill_loop(math.max(1, KILLS // 2), "--only full-load", "post-data", function()
    local step, status = T.current_step(dir)
    if terminated == 0 and step == "full-load" and status == "running" then
      -- the load loses its target connections and retries them; then its source ones (the
      -- snapshot's exporter among them: the run fails, and the resume copies again)
      sys.sleep(0.3)
      terminated = terminate(d)
      sys.sleep(0.3)
      terminate(s)
    end
  end)
  local p = running or spawn("--only full-load")
  T.wait_for("the full load", 300, function() return not T.alive(p) end)
  T.eq(T.current_step(dir), "post-data", "the full load finished:\n" .. tail())
  d:sql("DROP TRIGGER throttle ON orders; DROP FUNCTION public.throttle()", "app")
  T.ok(terminated > 0, "target sessions were terminated during the full load")
  T.match(sys.readfile(log), "target[ :].-; retrying %(attempt", "the full load retried after the terminated connections")
  -- the other steps, up to streaming
  local more
  more, pid = kill_loop(KILLS - #killed, nil, "stream", nil, 0.6)
  for _, k in ipairs(more) do killed[#killed + 1] = k end
  io.stderr:write("killed in: ", table.concat(killed, ", "), "\n")
  pid = pid or spawn()
  T.wait_for("streaming", 300, function()
    return (T.current_step(dir) == "stream" and select(2, T.current_step(dir)) == "running") or not T.alive(pid)
  end)
  T.ok(T.alive(pid), "the run ended before streaming:\n%s", tail())
end)

T.test("terminated connections and immediate restarts of both servers while streaming", function()
  local function progressed(what)
    local before = tonumber(sys.readfile(countfile) or "0") or 0
    T.wait_for(what, 120, function() return (tonumber(sys.readfile(countfile) or "0") or 0) > before + 50 end)
  end
  progressed("writes")
  T.ok(terminate(d) + terminate(s) > 0, "pgtide's sessions were terminated")
  progressed("writes after the terminations")
  s:restart()
  progressed("writes after the source's restart")
  d:restart()
  progressed("writes after the target's restart")
  T.ok(T.alive(pid), "the run survived:\n%s", tail())
  local fh = io.open(stop, "w"); fh:close()
  sys.sleep(0.5)
  local code, _, err = T.run { "cutover", "--state", dir }
  T.eq(code, 0, "pgtide cutover: " .. err .. "\n" .. tail())
  T.wait_for("the run to finish", 300, function() return not T.alive(pid) end)
  T.eq(T.current_step(dir), "finished", tail())
end)

T.test("the target equals the source row for row, and nothing of pgtide is left", function()
  local function digest(c, tbl)
    return c:sql(string.format("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') "
      .. "FROM %s t", tbl), "app")
  end
  for _, t in ipairs { "acc", "orders", "audit", "events", "scratch" } do
    T.eq(digest(d, t), digest(s, t), "table " .. t)
  end
  T.eq(d:sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'orders_audit' AND tgenabled = 'O'", "app"), "1")
  T.ok(tonumber(d:sql("SELECT last_value FROM orders_id_seq", "app")) >= tonumber(s:sql("SELECT last_value FROM orders_id_seq", "app")),
    "sequence ahead")
  T.eq(s:sql("SELECT count(*) FROM pg_replication_slots"), "0", "slots left")
  T.eq(d:sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgtide'", "app"), "0", "schema pgtide left")
end)

T.done()
