-- The two DMS migration types besides full-load-and-cdc, end to end on the
-- stand-in (tests/lib/dms_standin.py, moto with signature checking):
--   full-load (aurora-cfn): a snapshot copied after the application's
--     writes stopped; the task stops when done (FULL_LOAD_ONLY_FINISHED) and
--     the cutover must finish without a running task;
--   cdc (dms-manual): the target's data was copied from a snapshot of an
--     existing test_decoding slot; DMS replicates from that slot's position,
--     changes made before the task started included.
-- Source: the RDS master user 'app' on PostgreSQL 15; target: the
-- PlanetScale role on PostgreSQL 17 over TLS (sslmode=verify-full).
local T = require "t"
local json = require "json"
local sys = require "sys"
local roles = require "roles"

local standin = require "standin"
local S, why = standin.start("types")
if not S then
  T.skip("DMS migration types", why)
  T.done()
end

local ok_all, failure = pcall(function()

local src = T.cluster()
local dst = T.cluster { tls = true, version = 17 }
S.set_admin { src }
local net = S.script([[
  local ec2 = client("ec2")
  local vpc = ec2:DescribeVpcs { Filters = { { Name = "is-default", Values = { "true" } } } }.Vpcs[1].VpcId
  local subnets, seen = {}, {}
  for _, s in ipairs(ec2:DescribeSubnets { Filters = { { Name = "vpc-id", Values = { vpc } } } }.Subnets) do
    if not seen[s.AvailabilityZone] and #subnets < 2 then seen[s.AvailabilityZone] = true; subnets[#subnets + 1] = s.SubnetId end
  end
  print(json.encode({ subnets = table.concat(subnets, ",") }))]])

local function config(file, t)
  local lines = { "return {" }
  for k, v in pairs(t) do lines[#lines + 1] = string.format("  %s = %s,", k, type(v) == "string" and
    string.format("%q", v) or tostring(v)) end
  lines[#lines + 1] = string.format("  aws = { region = \"us-east-1\", endpoint_url = %q },", S.endpoint)
  lines[#lines + 1] = "}"
  assert(sys.write_atomic(file, table.concat(lines, "\n")))
end
local COMMON = { poll_interval = 0.3, connection_timeout = 30, full_load_timeout = 120,
                 cutover_timeout = 60, stop_timeout = 30, delete_timeout = 30,
                 validation_recheck = 5, validation_delay = 1, target_disk_gb = 1 }

local function run(runbook, cfg, state)
  return T.sh(string.format("env %s %s run %s -c %s --state %s --yes </dev/null", S.env, T.q(T.pgtide), runbook,
    T.q(cfg), T.q(state)))
end

local function same(db, tables)
  for _, t in ipairs(tables) do
    local q = string.format("select count(*) || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
      .. "from public.%s t", t)
    T.eq(dst:sql(q, db), src:sql(q, db), db .. "." .. t)
  end
end

T.test("full-load (aurora-cfn): the task stops when the snapshot is copied, the cutover finishes", function()
  local rds = roles.rds(src, "fl")
  local ps = roles.planetscale(dst, "fl")
  src:sql([[set role app;
    create table public.items (id bigserial primary key, name text not null, price numeric(8, 2));
    insert into public.items (name, price) select 'item ' || g, g * 0.5 from generate_series(1, 500) g]], "fl")
  rds.grant()
  local cfg, state = T.tmp .. "/types-fl.lua", T.tmp .. "/types-fl-state"
  local c = {}
  for k, v in pairs(COMMON) do c[k] = v end
  c.name, c.source, c.target, c.migration_type = "fl", rds.owner, ps.conninfo, "full-load"
  c.stack_name = "pgt-fl-" .. sys.getpid()
  c.stack_timeout, c.connection_poll_seconds, c.assessment_poll_seconds, c.monitor_poll_seconds = 30, 1, 1, 1
  c.source_ssl_mode = "none"
  config(cfg, c)
  local code, o, e = run("aurora-cfn", cfg, state)
  T.eq(code, 0, (o .. e):sub(-3000))
  T.match(e, "workflow: NotifyFullLoadComplete")
  T.match(e, "Cutover is safe now")
  T.nomatch(e, "sentinel row")            -- nothing replicates: no catch-up wait
  T.match(e, "task [^\n]*: stopped, full load 100%%")   -- as DMS leaves a finished full-load task
  same("fl", { "items" })
  T.eq(tonumber(dst:sql("select last_value from public.items_id_seq", "fl")),
       tonumber(src:sql("select last_value from public.items_id_seq", "fl")) + 1000)
  T.eq(src:sql("select count(*) from pg_replication_slots"), "0", "a full load needs no slot")
  T.match(e, "cleanup verified")
end)

T.test("cdc (dms-manual): replication from an existing slot, onto data copied from its snapshot", function()
  local rds = roles.rds(src, "cdc")
  local ps = roles.planetscale(dst, "cdc")
  src:sql([[set role app;
    create table public.accounts (id int primary key, owner text not null, balance numeric(12, 2) not null);
    insert into public.accounts select g, 'owner ' || g, g * 10 from generate_series(1, 300) g]], "cdc")
  rds.grant()
  -- the user's procedure: a slot first, then the data copied with writes
  -- held (the snapshot of that moment), then the application writes again
  src:sql("set role app; select pg_create_logical_replication_slot('cdc_existing', 'test_decoding')", "cdc")
  local bindir = src:bindir()
  local dump = T.tmp .. "/types-cdc.sql"
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
  local cfg, state = T.tmp .. "/types-cdc.lua", T.tmp .. "/types-cdc-state"
  local c = {}
  for k, v in pairs(COMMON) do c[k] = v end
  c.name, c.source, c.target, c.migration_type, c.cdc_slot = "cdc", rds.owner, ps.conninfo, "cdc", "cdc_existing"
  c.subnet_ids, c.instance_timeout = net.subnets, 30
  config(cfg, c)
  local code, o, e = run("dms-manual", cfg, state)
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

S.stop()
if not ok_all then
  T.test("DMS migration types (setup)", function() error(failure, 0) end)
end
T.done()
