-- Consistent-point validation on a live source (src/validate/validate_point.c):
-- no lock on the source, so no deadlock and no blocked write in the
-- application, and no privilege beyond REPLICATION + SELECT.
--
-- For PostgreSQL 15 and 13 sources, each to a PostgreSQL 17 target
-- (PlanetScale's default role, TLS verify-full), and each as the RDS-like
-- owner `app` and as the non-owner `migrator` (tests/lib/roles.lua):
-- three application sessions run a multi-table transaction continuously
-- (two ledger rows inserted, two accounts updated, an audit row per
-- account by trigger) while core.replicate applies the stream
-- (replica_role=false: the test makes the target tables itself, without
-- the triggers) and core.validate in consistent mode runs ROUNDS times.
-- Every round must find zero differences; the application must see no
-- failed transaction; the source, started with log_lock_waits = on and
-- deadlock_timeout = 100ms, must log no "deadlock detected" and no
-- "still waiting for" of an application session (pgtide's walsender may
-- wait for the application's transactions to end while it makes a
-- temporary slot: that blocks nobody); the temporary slots must be gone.
--
-- Then the failure paths, each with the message a user needs: a
-- transaction left open on the source (the wait is bounded and names
-- the session; nothing is left), no free replication slot, no free WAL
-- sender, a role without REPLICATION, and a SIGKILL while the point is
-- being taken (the temporary slot goes with the session).
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local roles = require "roles"
local core = require "core"
local pg = require "pg"
local sys = require "sys"
local json = require "json"

local ROUNDS = tonumber(os.getenv("CONSISTENT_ROUNDS") or "8")
local VERSIONS = {}      -- source versions (CONSISTENT_VERSIONS="15,13" by default)
for v in (os.getenv("CONSISTENT_VERSIONS") or "15,13"):gmatch("%d+") do VERSIONS[#VERSIONS + 1] = tonumber(v) end
local WRITERS = 3
local ACCOUNTS = 20000
local TABLES = { "public.accounts", "public.ledger", "public.audit" }
local tmp = T.tmp .. "/consistent-" .. sys.getpid()
sys.mkdir_p(tmp)

-- the source logs every lock wait past 100 ms and every deadlock
local SOURCE_CONF = { "log_lock_waits = on", "deadlock_timeout = '100ms'",
                      "log_line_prefix = '%m [%p] %b %a: '" }

local SOURCE_SCHEMA = [[
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, updates int NOT NULL DEFAULT 0);
CREATE TABLE ledger (id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES accounts (id),
                     delta int NOT NULL, tx bigint NOT NULL);
CREATE TABLE audit (id bigserial PRIMARY KEY, account_id int NOT NULL, old_balance bigint NOT NULL,
                    new_balance bigint NOT NULL, tx bigint NOT NULL);
CREATE FUNCTION audit_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit (account_id, old_balance, new_balance, tx)
    VALUES (NEW.id, OLD.balance, NEW.balance, txid_current());
  RETURN NEW;
END $$;
CREATE TRIGGER accounts_audit AFTER UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION audit_balance();
INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, ]] .. ACCOUNTS .. [[) g;
CREATE PUBLICATION mig FOR TABLE accounts, ledger, audit;
]]

-- the target: the same tables, no trigger, no foreign key (pgtide adds
-- those at cutover)
local TARGET_SCHEMA = [[
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, updates int NOT NULL DEFAULT 0);
CREATE TABLE ledger (id bigint PRIMARY KEY, account_id int NOT NULL, delta int NOT NULL, tx bigint NOT NULL);
CREATE TABLE audit (id bigint PRIMARY KEY, account_id int NOT NULL, old_balance bigint NOT NULL,
                    new_balance bigint NOT NULL, tx bigint NOT NULL);
INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, ]] .. ACCOUNTS .. [[) g;
]]

-- One application session: the transaction above until the stop file
-- appears (or 600 s); writes its counts as JSON.  Accounts are updated
-- in id order, so the sessions never deadlock among themselves.
local WRITER = tmp .. "/writer.lua"
do
  local f = assert(io.open(WRITER, "w"))
  f:write([=[
local pg = require "pg"
local sys = require "sys"
local json = require "json"
local conninfo, stopfile, outfile, seed, accounts = arg[1], arg[2], arg[3], tonumber(arg[4]), tonumber(arg[5])
math.randomseed(seed)
local c = pg.connect(conninfo .. " application_name=app_writer")
local done, failed, max_ms, slow, errors = 0, 0, 0, 0, {}
local deadline = sys.monotonic() + 600
while not sys.exists(stopfile) and sys.monotonic() < deadline do
  local a, b = math.random(1, accounts), math.random(1, accounts - 1)
  if b >= a then b = b + 1 end
  if a > b then a, b = b, a end
  local amt = math.random(1, 100)
  local t0 = sys.monotonic()
  local ok, e = pcall(function()
    c:exec("BEGIN")
    c:exec("INSERT INTO ledger (account_id, delta, tx) VALUES ($1, $2, txid_current())", a, -amt)
    c:exec("INSERT INTO ledger (account_id, delta, tx) VALUES ($1, $2, txid_current())", b, amt)
    c:exec("UPDATE accounts SET balance = balance - $2, updates = updates + 1 WHERE id = $1", a, amt)
    c:exec("UPDATE accounts SET balance = balance + $2, updates = updates + 1 WHERE id = $1", b, amt)
    c:exec("COMMIT")
  end)
  local ms = (sys.monotonic() - t0) * 1000
  if ok then
    done = done + 1
    if ms > max_ms then max_ms = ms end
    if ms > 100 then slow = slow + 1 end
  else
    failed = failed + 1
    if #errors < 5 then errors[#errors + 1] = tostring(e) end
    pcall(c.exec, c, "ROLLBACK")
  end
end
sys.write_atomic(outfile, json.encode { committed = done, failed = failed, max_ms = max_ms,
                                        slow = slow, errors = json.array(errors) })
]=])
  f:close()
end

-- Start a background process; returns its pid.
local function spawn(args, log)
  local parts = {}
  for _, a in ipairs(args) do parts[#parts + 1] = T.q(a) end
  local code, out, err = T.sh(string.format("(%s >%s 2>&1 </dev/null & echo $!)", table.concat(parts, " "),
    T.q(log)))
  if code ~= 0 then error("cannot start " .. args[1] .. ": " .. err) end
  return tonumber(out:match("%d+"))
end

local function alive(pid) return T.sh("kill -0 " .. pid .. " 2>/dev/null") == 0 end

local function wait_exit(pid, seconds)
  local t0 = sys.monotonic()
  while alive(pid) and sys.monotonic() - t0 < seconds do sys.sleep(0.1) end
  return not alive(pid)
end

-- Wait until f() is true (at most 'seconds'); returns its last value.
local function eventually(seconds, f)
  local t0 = sys.monotonic()
  while true do
    local v = f()
    if v or sys.monotonic() - t0 > seconds then return v end
    sys.sleep(0.2)
  end
end

local function log_size(c)
  local f = io.open(c.dir .. "/server.log")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

-- The source log from byte 'from': its deadlock and lock-wait lines.
local function log_findings(c, from)
  local f = assert(io.open(c.dir .. "/server.log"))
  f:seek("set", from)
  local text = f:read("a")
  f:close()
  local deadlocks, waits = {}, {}
  for line in text:gmatch("[^\n]+") do
    if line:find("deadlock detected", 1, true) then deadlocks[#deadlocks + 1] = line end
    -- a wait of the application's sessions; pgtide's own walsender waiting for the
    -- application's transactions to end (a new slot's snapshot) blocks nobody
    if line:find("still waiting for", 1, true) and not line:find(" walsender pgtide:", 1, true) then
      waits[#waits + 1] = line
    end
  end
  return deadlocks, waits
end

local function digest(conninfo, tbl)
  local c <close> = pg.connect(conninfo)
  return c:query_one(string.format("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, "
    .. "E'\\n' ORDER BY x.id)), '') AS d FROM %s x", tbl)).d
end

local function our_slots(conninfo)
  local c <close> = pg.connect(conninfo)
  return c:query_one("SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE 'pgtide\\_vcp\\_%'").n
end

local dst = T.cluster { version = 17, tls = true }
local results = {}   -- per scenario, for the summary at the end
local src15          -- the PostgreSQL 15 source, for the failure paths

--[[ One scenario: a fresh database on 'src' and on the target, the load,
  the replication, ROUNDS consistent validations, then the checks. ]]
local function scenario(src, label, role)
  local db = string.format("shop_%s_%s", label, role)
  local r = roles.rds(src, db)
  src:sql("SET ROLE app; " .. SOURCE_SCHEMA, db)
  r.grant()
  local SRC = role == "owner" and r.owner or r.migrator
  local t = roles.planetscale(dst, db)
  local tc <close> = pg.connect(t.conninfo)
  tc:exec(TARGET_SCHEMA)
  local slot = "mig_" .. label .. "_" .. role
  local s = core.create_slot { source = SRC, slot = slot, publication = "mig" }
  s:close()
  local log_from = log_size(src)
  local stopfile = string.format("%s/%s.stop", tmp, db)
  local pids, outs = {}, {}
  for i = 1, WRITERS do
    outs[i] = string.format("%s/%s.writer%d.json", tmp, db, i)
    pids[i] = spawn({ T.pgtide, "script", WRITER, r.owner, stopfile, outs[i], tostring(os.time() + i),
                      tostring(ACCOUNTS) }, outs[i] .. ".log")
  end
  sys.mkdir_p(tmp .. "/" .. db)
  local rep <close> = core.replicate { source = SRC, target = t.conninfo, slot = slot, publication = "mig",
                                       state_dir = tmp .. "/" .. db, replica_role = false }
  sys.sleep(1)
  local points, lsns, rounds_ok = {}, {}, 0
  local ok, err = pcall(function()
    for i = 1, ROUNDS do
      local v = core.validate { source = SRC, target = t.conninfo, cdc = rep, tables = TABLES, jobs = 2,
                                progress = false }
      local rows = 0
      for _, tr in ipairs(v.tables) do rows = rows + tr.source_rows end
      T.eq(string.format("%d equal, %d missing, %d extra, %d changed", v.tables_equal, v.missing, v.extra,
        v.changed), "3 equal, 0 missing, 0 extra, 0 changed",
        string.format("round %d at %s (%d rows)", i, tostring(v.lsn), rows))
      points[#points + 1] = v.point_ms
      lsns[#lsns + 1] = v.lsn
      rounds_ok = rounds_ok + 1
      sys.sleep(0.2)
    end
  end)
  -- stop the application, let apply catch up, compare by ourselves
  local f = assert(io.open(stopfile, "w")); f:close()
  for _, pid in ipairs(pids) do T.ok(wait_exit(pid, 30), "writer %d did not stop", pid) end
  local app = { committed = 0, failed = 0, max_ms = 0, slow = 0, errors = {} }
  for _, out in ipairs(outs) do
    local w = json.decode(assert(sys.readfile(out), "no writer result " .. out))
    app.committed = app.committed + w.committed
    app.failed = app.failed + w.failed
    app.slow = app.slow + w.slow
    if w.max_ms > app.max_ms then app.max_ms = w.max_ms end
    for _, e in ipairs(w.errors) do app.errors[#app.errors + 1] = e end
  end
  local sc <close> = pg.connect(r.owner)
  local now = sc:query_one("SELECT pg_current_wal_lsn()::text AS l").l
  T.ok(rep:wait_applied(now, 120), "apply did not catch up")
  local final = {}
  for _, tbl in ipairs(TABLES) do
    final[tbl] = digest(r.owner, tbl) == digest(t.conninfo, tbl)
  end
  rep:stop()
  local deadlocks, waits = log_findings(src, log_from)
  table.sort(points)
  results[#results + 1] = string.format("%s source as %s: %d/%d rounds equal; consistent point %s ms "
    .. "(median %s, max %s); application: %d transactions, %d failed, %d over 100 ms (max %.0f ms); "
    .. "source log: %d deadlocks, %d lock waits", label, role, rounds_ok, ROUNDS,
    #points > 0 and string.format("%.0f", points[1]) or "-",
    #points > 0 and string.format("%.0f", points[(#points + 1) // 2]) or "-",
    #points > 0 and string.format("%.0f", points[#points]) or "-", app.committed, app.failed, app.slow,
    app.max_ms, #deadlocks, #waits)
  io.stderr:write(results[#results], "\n")
  for _, l in ipairs(deadlocks) do io.stderr:write("  ", l, "\n") end
  for i, l in ipairs(waits) do if i <= 10 then io.stderr:write("  ", l, "\n") end end
  for _, e in ipairs(app.errors) do io.stderr:write("  application error: ", e, "\n") end
  core.drop_slot { source = r.owner, slot = slot }
  -- verdicts (the validation's own failure first: it says why)
  if not ok then error(err, 0) end
  T.eq(#deadlocks, 0, "deadlocks in the source log")
  T.eq(#waits, 0, "lock waits past 100 ms in the source log")
  T.eq(app.failed, 0, "failed application transactions")
  T.ok(app.committed > ROUNDS * 10, "the application kept writing (%d transactions)", app.committed)
  T.eq(final, { ["public.accounts"] = true, ["public.ledger"] = true, ["public.audit"] = true },
    "the target equals the source once caught up")
  T.eq(our_slots(r.owner), 0, "temporary slots left on the source")
  for i = 2, #lsns do T.ok(core.lsn_int(lsns[i]) > core.lsn_int(lsns[i - 1]), "points move forward") end
end

for _, v in ipairs(VERSIONS) do
  local why = T.version_missing(v) or T.version_missing(17)
  if why then
    T.skip(string.format("PostgreSQL %d source: consistent validation under load", v), why)
  else
    local src = T.cluster { version = v, conf = SOURCE_CONF }
    for _, role in ipairs { "owner", "migrator" } do
      T.test(string.format("PostgreSQL %d source as %s -> 17: %d consistent validations under a "
        .. "trigger-driven multi-table write load, no lock, no deadlock, no difference", v, role, ROUNDS),
        function() scenario(src, "pg" .. v, role) end)
    end
    if v == 15 then src15 = src end
  end
end

-- {==================================================================
-- The boundary itself (PostgreSQL 15: pg_walinspect)
-- ===================================================================

--[[ What the pause condition relies on, checked directly: while commits
  keep arriving, a temporary slot's exported snapshot sees a transaction
  exactly when its commit record ends at or before the slot's
  consistent_point (the CDC applies exactly the transactions whose
  end_lsn <= point).  Commit positions come from pg_walinspect (as the
  superuser: only to inspect). ]]
local function boundary(src)
  local db = "boundary"
  local r = roles.rds(src, db)
  src:sql("SET ROLE app; " .. SOURCE_SCHEMA, db)
  src:sql("CREATE EXTENSION pg_walinspect", db)
  local su <close> = pg.connect(src.conninfo .. " dbname=" .. db)
  local stopfile = tmp .. "/boundary.stop"
  local pids = {}
  for i = 1, WRITERS do
    pids[i] = spawn({ T.pgtide, "script", WRITER, r.owner, stopfile, string.format("%s/boundary%d.json", tmp, i),
                      tostring(os.time() + 10 * i), tostring(ACCOUNTS) }, string.format("%s/boundary%d.log", tmp, i))
  end
  sys.sleep(1)
  local checked, before, after, nearest = 0, 0, 0, math.huge
  local ok, err = pcall(function()
    for i = 1, 20 do
      -- every transaction committing after 'from' has an id >= 'low'
      local w = su:query_one("SELECT pg_current_wal_lsn()::text AS l, "
        .. "txid_snapshot_xmin(txid_current_snapshot())::text AS x")
      local from, low = w.l, w.x
      local slot <close> = core.create_slot { source = r.migrator, slot = "boundary_" .. i, temporary = true }
      local visible = {}
      local c <close> = pg.connect(r.migrator)
      c:exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
      c:exec("SET TRANSACTION SNAPSHOT '" .. slot.snapshot .. "'")
      for _, row in ipairs(c:query("SELECT DISTINCT tx::text AS tx FROM ledger WHERE tx >= $1::bigint", low)) do
        visible[row.tx] = true
      end
      c:exec("COMMIT")
      slot:close()
      sys.sleep(0.3)   -- commits after the point
      local to = su:query_one("SELECT pg_current_wal_lsn()::text AS l").l
      local point = core.lsn_int(slot.lsn)
      local writers = {}
      for _, row in ipairs(su:query("SELECT DISTINCT tx::text AS tx FROM ledger WHERE tx IN (SELECT xid::text::bigint "
          .. "FROM pg_get_wal_records_info($1, $2) WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT')",
          from, to)) do
        writers[row.tx] = true
      end
      for _, rec in ipairs(su:query("SELECT xid::text AS xid, end_lsn::text AS e FROM pg_get_wal_records_info($1, $2) "
          .. "WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT'", from, to)) do
        if writers[rec.xid] then
          local e = core.lsn_int(rec.e)
          local expect = e <= point
          T.eq(visible[rec.xid] == true, expect, string.format("slot %d at %s: transaction %s committed at %s",
            i, slot.lsn, rec.xid, rec.e))
          checked = checked + 1
          if expect then before = before + 1 else after = after + 1 end
          local d = math.abs(e - point)
          if d < nearest then nearest = d end
        end
      end
    end
  end)
  local f = assert(io.open(stopfile, "w")); f:close()
  for _, pid in ipairs(pids) do wait_exit(pid, 30) end
  if not ok then error(err, 0) end
  results[#results + 1] = string.format("boundary: 20 slots, %d commits checked (%d at or before the "
    .. "point, %d after), nearest commit %d bytes from a point", checked, before, after, nearest)
  io.stderr:write(results[#results], "\n")
  T.ok(before > 0 and after > 0, "commits on both sides of the points")
  T.eq(our_slots(src.conninfo), 0)
end

if src15 then
  T.test("a temporary slot's snapshot sees exactly the commits ending at or before its consistent point",
    function() boundary(src15) end)
end

-- }==================================================================

-- {==================================================================
-- Failure paths (PostgreSQL 15 source, stand-in pause/resume hooks)
-- ===================================================================

local vcore = require "core.validate"

-- A small database on both sides with one equal table; the roles.
local function small(src, db)
  local r = roles.rds(src, db)
  src:sql("SET ROLE app; CREATE TABLE items (id int PRIMARY KEY, v text); "
    .. "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 500) g;", db)
  r.grant()
  local t = roles.planetscale(dst, db)
  local tc <close> = pg.connect(t.conninfo)
  tc:exec("CREATE TABLE items (id int PRIMARY KEY, v text); "
    .. "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 500) g;")
  return r, t
end

-- core.validate.run in consistent mode with hooks that record their calls.
local function run_consistent(source, target, extra)
  local calls = {}
  local o = { source = source, target = target, tables = { "public.items" }, mode = "consistent",
              progress = false, jobs = 2,
              pause_at = function(lsn) calls[#calls + 1] = "pause_at " .. lsn end,
              resume = function() calls[#calls + 1] = "resume" end }
  for k, v in pairs(extra or {}) do o[k] = v end
  local ok, res = pcall(vcore.run, o)
  return ok, res, calls
end

local src = src15
if not src then
  T.skip("failure paths of the consistent point", "no PostgreSQL 15 source (CONSISTENT_VERSIONS)")
  T.done()
end
local br, bt = small(src, "blocked")   -- the source and target roles of database 'blocked'

T.test("a transaction left open on the source: the wait is bounded, names the session, leaves nothing", function()
  local r, t = br, bt
  local blocker <close> = pg.connect(r.owner .. " application_name=batch_job")
  blocker:exec("BEGIN")
  blocker:exec("UPDATE items SET v = v WHERE id = 1")   -- holds a transaction id
  local bpid = blocker:backend_pid()
  -- the non-owner sees who; the master user (pg_monitor) also sees what
  local ok, e, calls = run_consistent(r.migrator, t.conninfo, { point_timeout = 2 })
  T.eq(ok, false)
  T.match(tostring(e), "pid " .. bpid .. " %(user app, application 'batch_job', state not visible "
    .. "without pg_read_all_stats%)")
  T.eq(calls[#calls], "resume")
  local t0 = sys.monotonic()
  ok, e, calls = run_consistent(r.owner, t.conninfo, { point_timeout = 3 })
  local took = sys.monotonic() - t0
  T.eq(ok, false)
  local msg = tostring(e)
  T.match(msg, "the consistent point was not reached within 3 s")
  T.match(msg, "waits for the transactions in progress on the source to end %(pgtide takes no lock and "
    .. "blocks no session%)")
  T.match(msg, "pid " .. bpid .. " %(user app, application 'batch_job', idle in transaction, "
    .. "transaction open %d+ s%)")
  T.match(msg, "pg_terminate_backend%(pid%)")
  T.ok(took < 15, "gave up after %.1f s", took)
  T.eq(#calls, 2, "held, then resumed")
  T.match(calls[1], "^pause_at %x+/%x+$")
  T.eq(calls[2], "resume")
  T.eq(eventually(10, function() return our_slots(r.owner) == 0 end), true, "the temporary slot is gone")
  -- the blocker was never blocked: it can still write, and commit
  blocker:exec("UPDATE items SET v = 'still writing' WHERE id = 2")
  blocker:exec("ROLLBACK")
  ok, e, calls = run_consistent(r.migrator, t.conninfo)
  T.ok(ok, "after the transaction ended: %s", tostring(e))
  T.eq(e.tables_equal, 1)
  T.eq(#calls, 3)
  T.eq(calls[2], "pause_at " .. e.lsn)
  T.ok(core.lsn_int(calls[1]:match("%S+$")) < core.lsn_int(e.lsn), "the hold comes before the point")
  T.eq(calls[3], "resume")
end)

T.test("a role without REPLICATION: the message says what to grant", function()
  src:sql([[DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reader') THEN
              CREATE ROLE reader LOGIN PASSWORD ']] .. T.secret("role_password") .. [['; END IF; END $$;
            GRANT CONNECT ON DATABASE blocked TO reader]])
  src:sql("GRANT SELECT ON items TO reader", "blocked")
  local pgpass = os.getenv("PGPASSFILE") or (src.dir .. "/pgpass")
  local f = assert(io.open(pgpass, "a"))
  f:write(string.format("127.0.0.1:%d:*:reader:%s\n", src.port, T.secret("role_password")))
  f:close()
  local ok, e, calls = run_consistent(roles.conninfo(src, "reader", "blocked"),
    roles.conninfo(dst, "pscale_admin", "blocked"))
  T.eq(ok, false)
  T.match(tostring(e), "cannot open the replication connection of the consistent point")
  T.match(tostring(e), "fix: the source role needs the REPLICATION attribute[^\n]*ALTER ROLE <role> "
    .. "REPLICATION %(on RDS/Aurora: GRANT rds_replication TO <role>%)")
  T.eq(calls[#calls], "resume", "apply resumed")
end)

T.test("no free replication slot, no free WAL sender: the message names the setting", function()
  local small_src = T.cluster { conf = { "max_replication_slots = 1", "max_wal_senders = 1" } }
  local r, t = small(small_src, "slots")
  small_src:sql("SELECT pg_create_logical_replication_slot('occupied', 'pgoutput')", "slots")
  local ok, e, calls = run_consistent(r.migrator, t.conninfo)
  T.eq(ok, false)
  T.match(tostring(e), "all replication slots are in use")
  T.match(tostring(e), "fix: the source has no free replication slot[^\n]*raise max_replication_slots"
    .. "[^\n]*%(now max_replication_slots = 1, with 1 in use%)")
  T.nomatch(tostring(e), "create replication slot: ")
  T.eq(calls[#calls], "resume")
  small_src:sql("SELECT pg_drop_replication_slot('occupied')", "slots")
  -- the one WAL sender taken by another replication session
  local other = core.create_slot { source = r.owner, slot = "other", temporary = true }
  ok, e = run_consistent(r.migrator, t.conninfo)
  other:close()
  T.eq(ok, false)
  T.match(tostring(e), "max_wal_senders")
  T.match(tostring(e), "fix: the source has no free WAL sender[^\n]*Raise max_wal_senders")
  -- and with both free again it works
  ok, e = run_consistent(r.migrator, t.conninfo)
  T.ok(ok, tostring(e))
  small_src:stop()
end)

T.test("SIGKILL while the point is being taken: the temporary slot goes with the session", function()
  local r = br
  local blocker <close> = pg.connect(r.owner)
  blocker:exec("BEGIN")
  blocker:exec("UPDATE items SET v = v WHERE id = 3")
  local script = tmp .. "/kill_me.lua"
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
local vcore = require "core.validate"
vcore.run { source = %q, target = %q, tables = { "public.items" }, mode = "consistent", progress = false,
            point_timeout = 120, pause_at = function() end, resume = function() end }
]], r.migrator, roles.conninfo(dst, "pscale_admin", "blocked")))
  f:close()
  local pid = spawn({ T.pgtide, "script", script }, tmp .. "/kill_me.log")
  T.eq(eventually(20, function() return our_slots(r.owner) == 1 end), true, "the slot is being created")
  T.sh("kill -9 " .. pid)
  T.ok(wait_exit(pid, 10), "killed")
  -- the walsender waits for the open transaction; once it ends, the slot goes
  blocker:exec("ROLLBACK")
  T.eq(eventually(15, function() return our_slots(r.owner) == 0 end), true, "no slot left behind")
end)

-- }==================================================================

io.stderr:write("summary:\n  ", table.concat(results, "\n  "), "\n")
T.done()
