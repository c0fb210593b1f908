-- What managed roles cannot do is found before anything is created, and
-- two migrations never share a stream position.
--   * write_fence=true as a role that does not own the source database is
--     refused at preflight with the alternatives (it used to pass
--     preflight and fail inside the cutover, with the source already
--     fenced for nothing);
--   * `pgtide troubleshoot permissions` finds the same problems as
--     preflight (it used to say "no permission problem found");
--   * replica_role=false keeps the target's triggers from firing for
--     replicated rows (it used to let them fire: extra audit rows);
--   * `pgtide status` of a frozen run says its figures are stale and takes
--     the lag from the source's position (it used to show "lag 0 B");
--   * a migration without a name is named after its source and target
--     databases, so two from one source cluster do not share a slot;
--   * two migrations with the same name from two sources into one target
--     cluster each keep their own progress record (bound to the source's
--     system identifier, database and slot): the second starts from its
--     own slot instead of the first one's position, loses no transaction,
--     and its cleanup leaves the first one's record alone.
-- PostgreSQL 15 on both sides; roles from tests/lib/roles.lua.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local roles = require "roles"
local sys = require "sys"
local json = require "json"

local tmp = T.tmp .. "/managed-" .. sys.getpid()
sys.mkdir_p(tmp)

local SCHEMA = [[
CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
CREATE TABLE audit (id bigserial PRIMARY KEY, item int, at timestamptz DEFAULT now());
CREATE FUNCTION audit_item() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO audit (item) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER items_audit AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit_item();
INSERT INTO items SELECT g, 0 FROM generate_series(1, 200) g;
]]

local src_cluster = T.cluster()
local dst_cluster = T.cluster { tls = true }
local src = roles.rds(src_cluster, "shop")
T.psql(src.owner, SCHEMA)
src.grant()
local dst = roles.planetscale(dst_cluster, "shop")

T.test("write_fence=true as a non-owner is refused at preflight, with the alternatives", function()
  local code, _, err = T.run { "run", "local", "source=" .. src.migrator, "target=" .. dst.conninfo,
    "write_fence=true", "--state", tmp .. "/fence", "--only", "preflight" }
  T.eq(code, 1, "preflight:\n" .. err)
  T.match(err, "%[FAIL%] Write fence at cutover: write_fence=true, but source user migrator lacks ownership "
    .. "of database shop")
  T.match(err, "pg_signal_backend")
  T.match(err, "fix: either the database owner fences writes at cutover %(ALTER DATABASE shop SET "
    .. "default_transaction_read_only = on;")
  T.match(err, "or run with write_fence=false and stop the application's writes yourself")
  T.nomatch(err, "stack traceback", "a preflight failure is a message")
  -- nothing was created on either side
  T.eq(src_cluster:sql("SELECT count(*) FROM pg_replication_slots"), "0")
  T.eq(src_cluster:sql("SELECT count(*) FROM pg_publication", "shop"), "0")
  T.eq(dst_cluster:sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "shop"), "0")
  -- the owner (the RDS master user) may fence
  code, _, err = T.run { "run", "local", "source=" .. src.owner, "target=" .. dst.conninfo,
    "write_fence=true", "--state", tmp .. "/fence-owner", "--only", "preflight" }
  T.eq(code, 0, "preflight as the owner:\n" .. err)
  T.match(err, "%[pass%] Write fence at cutover: source user app can make database shop read%-only")
end)

T.test("without a name, a migration is named after its databases (slot, publication, state directory)", function()
  src_cluster:sql("CREATE DATABASE crm OWNER app")
  T.psql(roles.conninfo(src_cluster, "app", "crm"), "CREATE TABLE contacts (id int PRIMARY KEY)")
  dst_cluster:sql("CREATE DATABASE crm OWNER pscale_admin")
  local cwd = tmp .. "/cwd"
  sys.mkdir_p(cwd)
  for _, db in ipairs { "shop", "crm" } do
    local code, _, err = T.sh(string.format("cd %s && %s run local %s %s --only preflight 2>&1 >/dev/null",
      T.q(cwd), T.q(T.pgtide), T.q("source=" .. roles.conninfo(src_cluster, "app", db)),
      T.q("target=" .. roles.conninfo(dst_cluster, "pscale_admin", db))))
    T.eq(code, 0, "preflight for " .. db .. ": " .. err)
    T.ok(sys.isdir(cwd .. "/.pgtide/local_" .. db .. "_" .. db), "state directory .pgtide/local_%s_%s", db, db)
    local st = json.decode(sys.readfile(cwd .. "/.pgtide/local_" .. db .. "_" .. db .. "/state.json"))
    T.eq(st.name, "local_" .. db .. "_" .. db)
  end
end)

T.test("troubleshoot permissions finds what preflight finds, with the statements", function()
  local code, out, err = T.run { "troubleshoot", "permissions", "source=" .. src.migrator,
    "target=" .. dst.conninfo, "--strict" }
  T.eq(code, 1, "problems found:\n" .. out .. err)
  T.match(out, "Publication of the tables to stream: source user migrator cannot create the publication")
  T.match(out, "CREATE PUBLICATION pgtide_local_shop_shop FOR TABLE public%.audit, public%.items;")
  T.match(out, "write_fence=true is not possible: .*ownership of database shop")
  T.nomatch(out, "no permission problem found")
  code, out, err = T.run { "troubleshoot", "permissions", "source=" .. src.owner, "target=" .. dst.conninfo,
    "--strict" }
  T.eq(code, 0, "the owner has what it needs:\n" .. out .. err)
  T.match(out, "no permission problem found")
end)

T.test("replica_role=false: the target's triggers do not fire for replicated rows", function()
  -- a superuser target could use session_replication_role; false asks for the other method
  dst_cluster:sql("CREATE DATABASE plain")
  local target = dst_cluster.conninfo:gsub("dbname=%S+", "dbname=plain")
  local dir = tmp .. "/rrfalse"
  local log = dir .. ".log"
  local args = string.format("%s run local %s %s replica_role=false "
    .. "--state %s --yes >%s 2>&1 </dev/null & echo $!", T.q(T.pgtide), T.q("source=" .. src.owner),
    T.q("target=" .. target), T.q(dir), T.q(log))
  local _, out = T.sh(args)
  local pid = T.background(tonumber(out:match("%d+")))
  -- streaming, and the worker has written its status once (it does so at most once a second)
  T.wait_for("streaming", 120, function()
    return (T.step_status(dir, "stream") == "running" and sys.exists(dir .. "/cdc-status.json")) or not T.alive(pid)
  end)
  -- a frozen run: status says its figures are stale and takes the lag from the source's position
  sys.kill(pid, "STOP")
  for i = 1, 50 do T.psql(src.owner, string.format("UPDATE items SET qty = qty + 1 WHERE id = %d", i)) end
  sys.sleep(12)
  local code, out, err = T.run { "status", "--state", dir, "--json" }
  local _, text = T.run { "status", "--state", dir }
  sys.kill(pid, "CONT")
  T.eq(code, 0, "status: " .. err)
  local st = json.decode(out)
  T.eq(st.cdc.stale, true, "stale while frozen")
  T.ok(st.cdc.lag_bytes > 0, "lag from the source's position: %s", tostring(st.cdc.lag_bytes))
  T.match(text, "STALE: the run %(pid " .. pid .. "%) has not updated its status")
  code, _, err = T.run { "cutover", "--state", dir }
  T.eq(code, 0, "pgtide cutover: " .. err)
  T.wait_for("the run to finish", 180, function() return not T.alive(pid) end)
  local text = sys.readfile(log) or ""
  T.eq(T.step_status(dir, "cleanup"), "done", text:sub(-3000))
  T.match(text, "1 user trigger%(s%) on the migrated tables disabled until cutover %(replica_role=false%)")
  T.eq(dst_cluster:sql("SELECT count(*) FROM audit", "plain"), src_cluster:sql("SELECT count(*) FROM audit", "shop"),
    "audit rows: the target's trigger did not add any")
  T.eq(dst_cluster:sql("SELECT tgenabled FROM pg_trigger WHERE tgname = 'items_audit'", "plain"), "O",
    "enabled again at cutover")
end)

T.test("two migrations named alike into one target cluster keep their own positions", function()
  -- replication origins are shared by the whole target cluster: the target role here may use
  -- them (a superuser), each migration goes to its own database; source B is a second cluster
  -- with the same database and the same migration name
  local b_cluster = T.cluster()
  local b = roles.rds(b_cluster, "shop")
  T.psql(b.owner, SCHEMA)
  b.grant()
  dst_cluster:sql("CREATE DATABASE shop_a")
  dst_cluster:sql("CREATE DATABASE shop_b")
  local dst_a = dst_cluster.conninfo:gsub("dbname=%S+", "dbname=shop_a")
  local dst_b = dst_cluster.conninfo:gsub("dbname=%S+", "dbname=shop_b")
  local function origins()
    return dst_cluster:sql([[SELECT coalesce(string_agg(o.roname || ' ' || s.remote_lsn, ',' ORDER BY o.roname), '')
                               FROM pg_replication_origin o
                               LEFT JOIN pg_replication_origin_status s ON s.local_id = o.roident]])
  end
  -- A is far ahead in WAL: its recorded position is past anything B's source has written
  src_cluster:sql("CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 60000) g; "
    .. "DROP TABLE filler", "shop")
  local a_dir, b_dir = tmp .. "/same-a", tmp .. "/same-b"
  local function spawn(source, target, dir, extra)
    local _, out = T.sh(string.format("%s run local %s %s name=shared %s --state %s --yes >>%s.log 2>&1 "
      .. "</dev/null & echo $!", T.q(T.pgtide), T.q("source=" .. source), T.q("target=" .. target),
      extra or "", T.q(dir), T.q(dir)))
    return T.background(tonumber(out:match("%d+")))
  end
  local a_pid = spawn(src.owner, dst_a, a_dir)
  T.wait_for("A streaming", 120, function() return T.step_status(a_dir, "stream") == "running" or not T.alive(a_pid) end)
  T.ok(T.alive(a_pid), "A ended early:\n%s", (sys.readfile(a_dir .. ".log") or ""):sub(-3000))
  for i = 1, 20 do T.psql(src.owner, string.format("UPDATE items SET qty = qty + 1 WHERE id = %d", i)) end
  sys.sleep(2)
  sys.kill(a_pid, "KILL")   -- A stops, its record stays on the target cluster
  T.sh("while kill -0 " .. a_pid .. " 2>/dev/null; do sleep 0.05; done")
  local records = origins()
  T.match(records, "^pgtide_shared_%x+ %x+/%x+$", "A's record")
  -- A's state lost: preflight names A's slot and A's progress record
  local code, _, err = T.run { "run", "local", "source=" .. src.owner, "target=" .. dst_a, "name=shared",
    "--state", tmp .. "/same-a-lost", "--only", "preflight" }
  T.eq(code, 1, "preflight with A's state lost:\n" .. err)
  T.match(err, "this migration's state %(in [^)]*%) does not record creating it")
  T.match(err, "%[WARN%] Where the target records the stream's position: [^\n]*The progress record "
    .. "pgtide_shared_%x+ %(at %x+/%x+%) of an earlier attempt of this migration")
  -- B streams 1,000 transactions while A's record sits on the same cluster
  local b_pid = spawn(b.owner, dst_b, b_dir)
  T.wait_for("B streaming", 120, function() return T.step_status(b_dir, "stream") == "running" or not T.alive(b_pid) end)
  T.psql(b.owner, [[DO $$ BEGIN FOR i IN 1..1000 LOOP
      UPDATE items SET qty = qty + 1 WHERE id = 1 + i % 200; COMMIT; END LOOP; END $$]])
  code, _, err = T.run { "cutover", "--state", b_dir }
  T.eq(code, 0, "pgtide cutover: " .. err)
  T.wait_for("B to finish", 180, function() return not T.alive(b_pid) end)
  local b_log = sys.readfile(b_dir .. ".log") or ""
  T.eq(T.step_status(b_dir, "cleanup"), "done", b_log:sub(-3000))
  T.eq(b_cluster:sql("SELECT sum(qty) FROM items", "shop"), "1000")
  T.eq(dst_cluster:sql("SELECT sum(qty) FROM items", "shop_b"), "1000", "B lost no transaction")
  T.match(b_log, "progress: replication origin pgtide_shared_%x+")
  -- B's cleanup left A's record alone; A resumes and finishes
  T.eq(origins(), records, "A's record after B's cleanup")
  a_pid = spawn(src.owner, dst_a, a_dir)
  T.wait_for("A streaming again", 120, function() return T.step_status(a_dir, "stream") == "running" or not T.alive(a_pid) end)
  code, _, err = T.run { "cutover", "--state", a_dir }
  T.eq(code, 0, "pgtide cutover: " .. err)
  T.wait_for("A to finish", 180, function() return not T.alive(a_pid) end)
  T.eq(T.step_status(a_dir, "cleanup"), "done", (sys.readfile(a_dir .. ".log") or ""):sub(-3000))
  T.eq(dst_cluster:sql("SELECT sum(qty) FROM items", "shop_a"), src_cluster:sql("SELECT sum(qty) FROM items", "shop"))
  T.eq(origins(), "", "every record dropped by its own migration's cleanup")
end)

T.done()
