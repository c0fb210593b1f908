-- The dms-manual runbook end to end, under the conditions users have: an
-- RDS-like PostgreSQL 17 source reached as the non-owner 'migrator' (only
-- REPLICATION, CONNECT, USAGE, SELECT: tests/lib/roles.lua), a
-- PlanetScale-like PostgreSQL 17 target reached as its default role
-- (NOSUPERUSER) over TLS with sslmode=verify-full; moto_server with
-- signature checking behind the DMS stand-in (tests/lib/dms_standin.py;
-- its data movement is pgtide's own engine).  The test connects as
-- postgres only to set up and to compare.
--
-- One migration walks through the failure paths, each of which must stop
-- with a clear message and leave a state the next run resumes from: a
-- failing check (wal_sender_timeout below 10 s, and the privilege the
-- migrator lacks: preflight names the statement, the owner runs it), a
-- failing connection test (the target endpoint points at a dead port), a
-- task that errors (a target-only CHECK constraint rejects source rows).
-- The last rerun completes every step while the application (the owner
-- 'app') keeps changing the source during CDC; then the data, sequences,
-- foreign keys and cleanup (nothing left in the AWS API, no slot, no DMS
-- artifacts) are checked.  Then: the stand-in's WAL heartbeat, and a
-- second migration of type cdc from an existing slot.
local T = require "t"
local json = require "json"
local sys = require "sys"
local roles = require "roles"

local standin = require "standin"
standin.suite("dms", "dms-manual end to end", function(S)
local endpoint, creds, env, aws_script = S.endpoint, S.creds, S.env, S.script

local src = T.cluster { version = 17 }
local dst = T.cluster { tls = true, version = 17 }
local rds = roles.rds(src, "shop")
local ps = roles.planetscale(dst, "shop")
S.set_admin { src }
-- the application's tables belong to the master user
local function as_app(sql) return src:sql("set role app; " .. sql, "shop") end

as_app([[
  create type public.order_status as enum ('new', 'paid', 'shipped');
  create table public.users (id bigserial primary key, email text not null unique,
                             created_at timestamptz not null default now());
  create table public.orders (id bigserial primary key, user_id bigint not null references public.users (id),
                              amount numeric(10, 2) not null, status public.order_status not null default 'new',
                              note text);
  create index orders_user_idx on public.orders (user_id);
  create table public.audit_log (at timestamptz, what text);          -- no primary key
  create function public.order_total(u bigint) returns numeric language sql stable
    as 'select coalesce(sum(amount), 0) from public.orders where user_id = u';
  create view public.user_totals as select id, email, public.order_total(id) as total from public.users;
  insert into public.users (email) select 'user' || g || '@example.com' from generate_series(1, 300) g;
  insert into public.orders (user_id, amount, status, note)
    select 1 + (g % 300), (g % 97) + 0.5, (array['new','paid','shipped'])[1 + g % 3]::public.order_status,
           case when g % 10 = 0 then E'line\nbreak' end
      from generate_series(1, 1500) g;
  insert into public.audit_log values (now(), 'created');
]])
rds.grant()
src:sql("alter system set wal_sender_timeout = '5s'")
src:sql("select pg_reload_conf()")

local state = T.tmp .. "/dms-state-" .. sys.getpid()
local cfgfile = T.tmp .. "/dms-config-" .. sys.getpid() .. ".lua"
-- Subnets for a subnet group, and the source's security group: until it
-- admits the replication instance the stand-in refuses source connections.
local net = S.source_network("source-db")
S.set_network({ source_security_group = net.sg })
local function write_config(extra)
  local f = assert(io.open(cfgfile, "w"))
  f:write(string.format([[
return {
  name = "e2e",
  source = %q,
  target = %q,
  aws = { region = "us-east-1", endpoint_url = %q },
  poll_interval = 0.3, connection_timeout = 30, instance_timeout = 30, full_load_timeout = 120,
  cutover_timeout = 60, stop_timeout = 30, delete_timeout = 30,
  validation_recheck = 5, validation_delay = 1, target_disk_gb = 1,
  subnet_ids = %q, source_security_group_id = %q, pg_dump = %q,
%s
}
]], rds.migrator, ps.conninfo, endpoint, net.subnets, net.sg, src:bindir() .. "/pg_dump", extra or ""))
  f:close()
end

local function pgtide_cmd()
  return S.command("dms-manual", cfgfile, state)
end
local function run_runbook()
  return T.sh(pgtide_cmd() .. " </dev/null")
end
local function step_status(name)
  return standin.step_status(state, name)
end

T.test("a failing check stops at preflight with the fix", function()
  -- the user's task settings: a prep mode DMS rejects, a key it ignores
  local tsfile = T.tmp .. "/dms-settings-" .. sys.getpid() .. ".json"
  local tsf = assert(io.open(tsfile, "w"))
  tsf:write([[{"FullLoadSettings": {"TargetTablePrepMode": "TRUNCATE", "MaxFullLoadSubTasks": 8},
               "ControlTablesSettings": {"historyTimeslotInMinutes": 5}}]])
  tsf:close()
  write_config(string.format("  task_settings_file = %q,", tsfile))
  -- and an explicit deny on one of the actions the runbook will call
  aws_script([[
    client("iam"):PutUserPolicy { UserName = "pgtide-test", PolicyName = "no-instances", PolicyDocument = json.encode {
      Version = "2012-10-17", Statement = { { Effect = "Deny", Action = "dms:CreateReplicationInstance", Resource = "*" } } } }
    print("{}")]])
  local c, o, e = run_runbook()
  aws_script([[client("iam"):DeleteUserPolicy { UserName = "pgtide-test", PolicyName = "no-instances" }; print("{}")]])
  T.eq(c, 1, o .. e)
  T.match(e, "%[FAIL%] AWS permissions of the caller: arn:aws:iam::%d+:user/pgtide%-test may not call 1 of the %d+ AWS "
    .. "actions this runbook uses: dms:CreateReplicationInstance %(explicitDeny%)")
  T.match(e, "%[FAIL%] Task settings as DMS reads them: FullLoadSettings%.TargetTablePrepMode 'TRUNCATE' is not one "
    .. "of DO_NOTHING, DROP_AND_CREATE, TRUNCATE_BEFORE_LOAD: DMS rejects the task")
  T.match(e, "ControlTablesSettings%.historyTimeslotInMinutes: DMS reads ControlTablesSettings%.HistoryTimeslotInMinutes")
  T.match(e, "%[FAIL%] WAL Sender Timeout: wal_sender_timeout is 5000 ms")
  T.match(e, "fix: set wal_sender_timeout = 0 or >= 10000")
  -- the migrator may not create tables in public (PostgreSQL 15+): said
  -- before anything is created, with the statement for the owner
  T.match(e, "%[FAIL%] Objects pgtide and DMS create on the source: source user migrator cannot create "
    .. "pgtide's cutover sentinel table public%._pgtide_cutover %(no CREATE on schema public%); DMS cannot "
    .. "create its WAL heartbeat table public%.awsdms_heartbeat")
  T.match(e, "step 'preflight' failed: 4 preflight check%(s%) failed: WAL Sender Timeout; Objects pgtide and DMS "
    .. "create on the source; Task settings as DMS reads them; AWS permissions of the caller")
  T.match(e, "resume with: pgtide run dms%-manual")
  T.eq(step_status("preflight"), "failed")
  T.eq(src:sql("select count(*) from pg_class where relname = '_pgtide_cutover'", "shop"), "0")
  -- the owner does what preflight said
  local grant = e:match("fix: as the database owner %b(): (GRANT CREATE ON SCHEMA public TO migrator;)")
  T.ok(grant, "no GRANT in the fix: %s", e)
  as_app(grant)
end)

T.test("a failing connection test stops at the endpoints with DMS's message", function()
  src:sql("alter system reset wal_sender_timeout")
  src:sql("select pg_reload_conf()")
  write_config("  dms_target_port = 1,")
  local c, o, e = run_runbook()
  T.eq(c, 1, o .. e)
  T.eq(step_status("preflight"), "done", e)
  T.eq(step_status("schema"), "done", e)
  T.eq(step_status("dms-infrastructure"), "done", e)
  T.eq(step_status("endpoints"), "failed")
  T.match(e, "target endpoint connection test: failed: [^\n]*port 1 failed")
  T.match(e, "Fix: check the PlanetScale host, port, user and password")
  T.match(e, "source endpoint connection test: successful")
  -- an account that never used the DMS console: the roles are made, and
  -- the first call needing one waits until IAM has propagated it
  T.match(e, "IAM role dms%-vpc%-role: missing")
  T.match(e, "created the IAM role dms%-vpc%-role with arn:aws:iam::aws:policy/service%-role/AmazonDMSVPCManagementRole")
  T.match(e, "created the IAM role dms%-cloudwatch%-logs%-role")
  T.match(e, "replication subnet group pgtide%-e2e%-%x+%-subnets: DMS cannot use dms%-vpc%-role yet")
  T.match(e, "created replication subnet group pgtide%-e2e%-%x+%-subnets")
  T.match(e, "created security group pgtide%-e2e%-%x+%-sg %(sg%-")
  T.match(e, "security group " .. net.sg:gsub("%-", "%%-") .. " allows sg%-%x+ on port %d+")
  local now = aws_script(string.format([[
    local ec2 = client("ec2")
    print(json.encode({ n = #(ec2:DescribeSecurityGroups { Filters = {
      { Name = "group-name", Values = { "pgtide-e2e-*" } } } }.SecurityGroups or {}),
      rules = #(ec2:DescribeSecurityGroups { GroupIds = { %q } }.SecurityGroups[1].IpPermissions or {}) }))]], net.sg))
  T.eq(now, { n = 1, rules = 1 }, "the security group pgtide created and its rule on the source's")
  -- the source endpoint asks for DMS's WAL heartbeat
  local eca = aws_script([[
    local dms = client("dms")
    print(json.encode({ eca = dms:DescribeEndpoints { Filters = { { Name = "endpoint-type", Values = { "source" } } } }
      .Endpoints[1].ExtraConnectionAttributes }))]]).eca
  T.match(eca, "heartbeatEnable=true;heartbeatFrequency=1;")
  -- the schema was applied, without its foreign key
  T.eq(dst:sql("select count(*) from pg_constraint where contype = 'f'", "shop"), "0")
  T.eq(dst:sql("select count(*) from information_schema.tables where table_schema = 'public'", "shop"),
       src:sql("select count(*) from information_schema.tables where table_schema = 'public'", "shop"))
end)

T.test("a task that errors stops at monitor with the table's error", function()
  write_config()
  dst:sql("alter table public.orders add constraint pgtide_test_reject check (amount < 0)", "shop")
  local c, o, e = run_runbook()
  T.eq(c, 1, o .. e)
  T.eq(step_status("endpoints"), "done")
  T.eq(step_status("task"), "done")
  T.eq(step_status("monitor"), "failed")
  T.match(e, "step 'monitor' failed: full load: the task failed: [^\n]*pgtide_test_reject")
  dst:sql("alter table public.orders drop constraint pgtide_test_reject", "shop")
end)

T.test("the reruns complete every step while the source keeps changing, past a task failing in CDC", function()
  local rcfile = state .. ".rc"
  os.remove(rcfile)
  local outf, errf = state .. ".out", state .. ".err"
  os.execute(string.format("(%s >%s 2>%s </dev/null; echo $? > %s) &", pgtide_cmd(), T.q(outf), T.q(errf),
    T.q(rcfile)))
  -- a row someone wrote on the target once the full load is done makes
  -- the first change of CDC fail (unique email): the task fails after its
  -- full load finished (a negative id: the sequences step, which the first
  -- run may reach before it sees the failure, keeps the sequence past the
  -- target's largest id)
  -- write while CDC runs, until the pre-cutover validation starts
  local n, t0 = 0, os.time()
  while os.time() - t0 < 200 do
    local s = step_status("pre-cutover")
    if s == "running" or s == "done" or sys.exists(rcfile) then break end
    if step_status("monitor") == "done" and n < 60 then
      if n == 0 then dst:sql("insert into public.users (id, email) values (-1, 'cdc1@example.com')", "shop") end
      n = n + 1
      as_app(string.format([[
        insert into public.users (email) values ('cdc%d@example.com');
        insert into public.orders (user_id, amount, note) values (currval('public.users_id_seq'), %d, 'cdc %d');
        update public.orders set status = 'shipped', note = 'updated %d' where id = %d;
        delete from public.orders where id = %d;]], n, n, n, n, 100 + n, 1000 + n))
    end
    sys.sleep(0.1)
  end
  local waited = 0
  while not sys.exists(rcfile) and waited < 240 do sys.sleep(0.5); waited = waited + 0.5 end
  local e1 = sys.readfile(errf) or ""
  T.eq(tonumber(sys.readfile(rcfile) or ""), 1, "the task failed in CDC: the run stops\n" .. e1:sub(-3000))
  T.match(e1, "step '[%w-]+' failed: [^\n]*CDC apply failed[^\n]*users_email_key")
  -- the stray row goes; the rerun restarts the task where CDC stopped
  dst:sql("delete from public.users where id = -1", "shop")
  local c2, o2, e2 = run_runbook()
  local e = e1 .. e2
  T.eq(c2, 0, e2:sub(-3000))
  T.match(e2, "the replication task is failed %(Last Error CDC apply failed[^\n]*: restarting it")
  T.match(e2, "starting replication task [^\n]*resume%-processing; it was failed")
  T.ok(n > 0, "no change was made during CDC")
  for _, s in ipairs({ "monitor", "verify-data", "sequences", "constraints", "pre-cutover", "cutover", "cleanup" }) do
    T.eq(step_status(s), "done", s)
  end
  T.match(e, "starting replication task [^\n]*reload%-target; it was failed")
  -- the endpoint names a slot: the task starts at its position (CdcStartPosition)
  T.match(e, "CDC starts at %x+/%x+ %(CdcStartPosition: the slot's position%)")
  T.match(e, "task pgtide%-e2e%-%x+%-task: running, full load 100%%")
  T.match(e, "caught up: the sentinel is on the target and CDC latency is [%d.]+ s %(threshold 5 s%)")
  T.match(e, "sentinel arrived on the target")
  T.match(e, "Cutover is safe now")
  -- DMS's control tables were left out of every comparison, then dropped
  T.match(e, "target: dropped table public%.awsdms_apply_exceptions")
  T.match(e, "target: dropped table public%.awsdms_validation_failures_v1")
  T.match(e, "cleanup verified: no DMS resource of this migration remains")
  -- every change made during CDC is on the target
  for _, t in ipairs({ "users", "orders", "audit_log" }) do
    local q = string.format("select count(*) || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
      .. "from public.%s t", t)
    T.eq(dst:sql(q, "shop"), src:sql(q, "shop"), t)
  end
  T.eq(dst:sql("select note from public.orders where id = 101", "shop"), "updated 1")
  T.eq(dst:sql("select count(*) from public.orders where id = 1001", "shop"), "0")
  -- sequences ahead of the source by the margin; foreign keys back and validated
  local s_last = tonumber(src:sql("select last_value from public.users_id_seq", "shop"))
  T.eq(tonumber(dst:sql("select last_value from public.users_id_seq", "shop")), s_last + 1000)
  T.eq(dst:sql("select conname || ':' || convalidated from pg_constraint where contype = 'f'", "shop"),
       "orders_user_id_fkey:true")
  T.eq(dst:sql("select total::text from public.user_totals where id = 1", "shop"),
       src:sql("select total::text from public.user_totals where id = 1", "shop"))
  -- nothing left behind in the databases
  T.eq(src:sql("select count(*) from pg_replication_slots"), "0")
  T.eq(src:sql("select count(*) from pg_class where relname = '_pgtide_cutover'", "shop"), "0")
  T.eq(dst:sql("select count(*) from pg_class where relname = '_pgtide_cutover' or relname like 'awsdms%'", "shop"), "0")
  T.eq(dst:sql("select count(*) from pg_namespace where nspname = 'pgtide'", "shop"), "0")
  T.eq(src:sql("select count(*) from pg_publication", "shop"), "0")
  -- the report shows the task's status history and its table statistics
  local rep = json.decode(assert(sys.readfile(state .. "/report.json"), "report.json"))
  T.ok(rep.dms and #rep.dms.history >= 2, "the task's status history is in the report")
  local seen = {}
  for _, h in ipairs(rep.dms.history) do seen[h.status] = true end
  T.ok(seen.running, "the history shows the task running")
  T.ok(#rep.dms.tables >= 3, "the table statistics are in the report")
end)

T.test("a quiet source keeps its WAL for the slot unless DMS's heartbeat runs (the stand-in)", function()
  -- two tasks, each on a database nobody writes to, with and without
  -- heartbeatEnable; WAL is written in another database of the server
  for _, hb in ipairs({ "on", "off" }) do
    src:sql("create database quiet_" .. hb .. " owner app")
    src:sql("set role app; create table public.q (id int primary key); insert into public.q values (1)", "quiet_" .. hb)
  end
  local res = aws_script(string.format([==[
    local dms = client("dms")
    -- the passwords from the pgpass file, as pgtide takes them (never in this file)
    local pgpass = require("pgtide.dms.conn").pgpass_lookup
    local inst = dms:CreateReplicationInstance { ReplicationInstanceIdentifier = "quiet",
      ReplicationInstanceClass = "dms.t3.micro" }.ReplicationInstance.ReplicationInstanceArn
    local tgt = dms:CreateEndpoint { EndpointIdentifier = "quiet-target", EndpointType = "target",
      EngineName = "postgres", ServerName = "localhost", Port = %d, DatabaseName = "shop", Username = "pscale_admin",
      Password = pgpass("localhost", %d, "shop", "pscale_admin"), SslMode = "require" }.Endpoint.EndpointArn
    local out = { instance = inst, target = tgt, tasks = {} }
    for _, hb in ipairs({ "on", "off" }) do
      local src = dms:CreateEndpoint { EndpointIdentifier = "quiet-source-" .. hb, EndpointType = "source",
        EngineName = "postgres", ServerName = %q, Port = %d, DatabaseName = "quiet_" .. hb, Username = "app",
        Password = pgpass(%q, %d, "quiet_" .. hb, "app"), SslMode = "none", ExtraConnectionAttributes = "pluginName=test_decoding;slotName=quiet_" .. hb
          .. ";captureDDLs=false;" .. (hb == "on" and "heartbeatEnable=true;heartbeatFrequency=1;" or "") }
        .Endpoint.EndpointArn
      local t = dms:CreateReplicationTask { ReplicationTaskIdentifier = "quiet-" .. hb, SourceEndpointArn = src,
        TargetEndpointArn = tgt, ReplicationInstanceArn = inst, MigrationType = "cdc",
        TableMappings = '{"rules":[{"rule-type":"selection","rule-id":"1","rule-name":"1","object-locator":{"schema-name":"public","table-name":"q"},"rule-action":"include"}]}' }
      out.tasks[hb] = { task = t.ReplicationTask.ReplicationTaskArn, source = src }
    end
    print(json.encode(out))]==], dst.port, dst.port, src.conninfo:match("host=(%S+)"), src.port,
      src.conninfo:match("host=(%S+)"), src.port))
  local lsn = {}
  for _, hb in ipairs({ "on", "off" }) do
    src:sql(string.format("select pg_create_logical_replication_slot('quiet_%s', 'test_decoding')", hb), "quiet_" .. hb)
    lsn[hb] = src:sql("select pg_current_wal_lsn()")
  end
  aws_script(string.format([==[
    local dms = client("dms")
    local tasks = json.decode(%q)
    local lsn = json.decode(%q)
    local sys = require "sys"
    for hb, t in pairs(tasks) do
      for _ = 1, 50 do   -- ready after a short while; not-found once right after the create
        local ok, r = pcall(dms.DescribeReplicationTasks, dms, { Filters = { { Name = "replication-task-arn", Values = { t.task } } } })
        if ok and r.ReplicationTasks[1].Status == "ready" then break end
        sys.sleep(0.2)
      end
      dms:StartReplicationTask { ReplicationTaskArn = t.task, StartReplicationTaskType = "start-replication",
                                 CdcStartPosition = lsn[hb] }
    end
    print("{}")]==], json.encode(res.tasks), json.encode(lsn)))
  -- once both stream: WAL written in another database, then a few
  -- heartbeat periods (1 "minute" = 0.5 s here)
  for _ = 1, 100 do
    local l = S.read_log()
    if l:find("task quiet%-on: CDC streaming") and l:find("task quiet%-off: CDC streaming") then break end
    sys.sleep(0.2)
  end
  src:sql("create table wal_elsewhere as select g, repeat('x', 200) as pad from generate_series(1, 20000) g")
  local written = src:sql("select pg_current_wal_lsn()")
  sys.sleep(3)
  local function behind(slot)
    return src:sql(string.format("select pg_wal_lsn_diff('%s', confirmed_flush_lsn) > 0 from pg_replication_slots "
      .. "where slot_name = '%s'", written, slot))
  end
  local on, off = behind("quiet_on"), behind("quiet_off")
  local beats = src:sql("select count(*) from public.awsdms_heartbeat where hb_last_heartbeat_at is not null", "quiet_on")
  local log_tail = S.read_log():sub(-2000)
  aws_script(string.format([==[
    local dms = client("dms")
    local res = json.decode(%q)
    local sys = require "sys"
    for _, t in pairs(res.tasks) do pcall(dms.StopReplicationTask, dms, { ReplicationTaskArn = t.task }) end
    for _, t in pairs(res.tasks) do
      for _ = 1, 100 do
        local r = dms:DescribeReplicationTasks { Filters = { { Name = "replication-task-arn", Values = { t.task } } } }
        if r.ReplicationTasks[1].Status == "stopped" or r.ReplicationTasks[1].Status == "failed" then break end
        sys.sleep(0.2)
      end
      dms:DeleteReplicationTask { ReplicationTaskArn = t.task }
    end
    for _, t in pairs(res.tasks) do dms:DeleteEndpoint { EndpointArn = t.source } end
    dms:DeleteEndpoint { EndpointArn = res.target }
    dms:DeleteReplicationInstance { ReplicationInstanceArn = res.instance }
    print("{}")]==], json.encode(res)))
  src:sql("select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like 'quiet_%'")
  src:sql("drop table wal_elsewhere")
  dst:sql("drop table if exists public.awsdms_apply_exceptions", "shop")
  T.eq(on, "f", "with the heartbeat the slot moved past the WAL written elsewhere: " .. log_tail)
  T.eq(off, "t", "without it the slot still holds that WAL: " .. log_tail)
  T.eq(beats, "1", "the heartbeat table was updated")
end)

T.test("after cleanup no resource the runbook created remains (listed through the API)", function()
  local f = assert(io.open(state .. ".list.lua", "w"))
  f:write(string.format([==[
    local aws = require "aws"
    local json = require "json"
    local dms = aws.client("dms", { region = "us-east-1", endpoint_url = %q })
    local ec2 = aws.client("ec2", { region = "us-east-1", endpoint_url = %q })
    local out = {}
    out.pgtide_security_groups = #(ec2:DescribeSecurityGroups { Filters = {
      { Name = "group-name", Values = { "pgtide-e2e-*" } } } }.SecurityGroups or {})
    out.source_sg_rules = #(ec2:DescribeSecurityGroups { GroupIds = { %q } }.SecurityGroups[1].IpPermissions or {})
    for _, x in ipairs({ { "DescribeReplicationTasks", "ReplicationTasks" },
                         { "DescribeEndpoints", "Endpoints" },
                         { "DescribeReplicationInstances", "ReplicationInstances" },
                         { "DescribeReplicationSubnetGroups", "ReplicationSubnetGroups" } }) do
      local ok, r = pcall(dms[x[1]], dms, {})
      out[x[2]] = ok and #(r[x[2]] or {}) or ("error " .. tostring(r))
    end
    print(json.encode(out))
  ]==], endpoint, endpoint, net.sg))
  f:close()
  local c, o, e = T.sh(string.format("env %s %s script %s", env, T.q(T.pgtide), T.q(state .. ".list.lua")))
  T.eq(c, 0, e)
  T.eq(json.decode(o), { ReplicationTasks = 0, Endpoints = 0, ReplicationInstances = 0, ReplicationSubnetGroups = 0,
                         pgtide_security_groups = 0, source_sg_rules = 0 }, o)
end)

T.test("the stand-in checks signatures: a wrong secret is refused", function()
  local key = (sys.readfile(creds) or ""):match("aws_access_key_id%s*=%s*(%S+)")
  local res = aws_script(string.format([[
    local dms = aws.client("dms", { region = "us-east-1", endpoint_url = EP,
      credentials = { access_key_id = %q, secret_access_key = "not-the-secret" } })
    local ok, e = pcall(dms.DescribeReplicationTasks, dms, {})
    print(json.encode({ ok = ok, code = not ok and e.code or json.null, status = not ok and e.status or json.null }))]], key))
  T.eq(res, { ok = false, code = "SignatureDoesNotMatch", status = 403 })
end)

T.test("no secret reached the state file or the log", function()
  local text = (sys.readfile(state .. "/state.json") or "") .. (sys.readfile(state .. "/pgtide.log") or "")
  T.ok(#text > 1000, "state and log are too short")
  for _, name in ipairs({ "pg_password", "role_password" }) do
    T.nomatch(text, T.secret(name))
    T.nomatch(S.read_log(), T.secret(name))
  end
end)


local other_run = S.other_run
local function same(db, tables) standin.same(src, dst, db, tables) end
local COMMON = standin.COMMON

-- migration_type=cdc: the target's data was copied from a snapshot of an
-- existing test_decoding slot; DMS replicates from that slot's position,
-- changes made before the task started included (the master user, on
-- another database of the same source)
T.test("cdc: replication from an existing slot, onto data copied from its snapshot", function()
  local rds = roles.rds(src, "cdc")   -- the master user, another database
  local ps = roles.planetscale(dst, "cdc")
  src:sql([[set role app;
    create table public.accounts (id int primary key, owner text not null, balance numeric(12, 2) not null);
    insert into public.accounts select g, 'owner ' || g, g * 10 from generate_series(1, 300) g]], "cdc")
  rds.grant()
  -- the user's procedure: a slot first, then the data copied with writes
  -- held (the snapshot of that moment), then the application writes again
  src:sql("set role app; select pg_create_logical_replication_slot('cdc_existing', 'test_decoding')", "cdc")
  local bindir = src:bindir()
  local dump = T.tmp .. "/dms-cdc-" .. sys.getpid() .. ".sql"
  local c0, o0, e0 = T.sh(string.format("%s/pg_dump --no-owner --no-privileges -d %s > %s", bindir,
    T.q(src.conninfo .. " dbname=cdc"), T.q(dump)))
  T.eq(c0, 0, e0)
  local c1, _, e1 = T.sh(string.format("(echo 'set role pscale_admin;'; cat %s) | psql -X -q -v ON_ERROR_STOP=1 %s",
    T.q(dump), T.q(ps.conninfo)))
  T.eq(c1, 0, e1)
  -- changes after the slot, before the task starts: DMS must bring them
  src:sql([[set role app;
    insert into public.accounts values (301, 'late', 1);
    update public.accounts set balance = balance + 0.5, owner = 'it''s changed' where id = 7;
    delete from public.accounts where id = 8]], "cdc")
  local cfg, state = T.tmp .. "/dms-cdc-" .. sys.getpid() .. ".lua", T.tmp .. "/dms-cdc-state-" .. sys.getpid()
  local c = {}
  for k, v in pairs(COMMON) do c[k] = v end
  c.name, c.source, c.target, c.migration_type, c.cdc_slot = "cdc", rds.owner, ps.conninfo, "cdc", "cdc_existing"
  c.subnet_ids, c.instance_timeout, c.source_security_group_id = net.subnets, 30, net.sg
  c.pg_dump = src:bindir() .. "/pg_dump"
  local code, o, e = other_run("dms-manual", cfg, state, c)
  T.eq(code, 0, (o .. e):sub(-3000))
  T.match(e, "%[pass%] Slot of a CDC%-only migration: cdc_slot cdc_existing %(test_decoding%) is there")
  T.match(e, "schema: the target already has the whole schema")
  T.match(e, "CDC replicates from the existing slot cdc_existing")
  T.match(e, "CDC starts at %x+/%x+ %(CdcStartPosition: the slot's position%)")
  T.match(S.read_log(), "replayed %d+ transaction%(s%) from slot cdc_existing")
  T.match(e, "caught up: the sentinel is on the target")
  same("cdc", { "accounts" })
  T.eq(dst:sql("select owner from public.accounts where id = 7", "cdc"), "it's changed")
  T.eq(src:sql("select count(*) from pg_replication_slots"), "0", "cleanup dropped the slot too")
end)

end)
