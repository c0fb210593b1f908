-- The DMS runbooks' building blocks, one by one: task settings and table
-- mappings, names, data verification (it must catch a difference),
-- the cutover wait (sentinel + latency, bounded), stack failure
-- explanations, the monitoring display, validation leaving DMS's own
-- objects out.  Real PostgreSQL 15 where a database is involved, reached
-- as the managed roles; no AWS.
local T = require "t"
local json = require "json"
local pg = require "pg"
local settings = require "pgtide.dms.settings"
local naming = require "pgtide.dms.naming"
local verify = require "pgtide.dms.verify"
local cutover = require "pgtide.cutover"
local stack = require "pgtide.dms.stack"
local monitor = require "pgtide.dms.monitor"
local awsx = require "pgtide.dms.awsx"

T.test("task settings: the seed's two options", function()
  local sf = json.decode(settings.task_settings("schema-first"))
  T.eq(sf.FullLoadSettings.TargetTablePrepMode, "DO_NOTHING")
  T.eq(sf.ValidationSettings.ValidationMode, "ROW_LEVEL")
  T.eq(sf.ChangeProcessingTuning.MemoryLimitTotal, 2048)
  T.eq(#sf.Logging.LogComponents, 5)
  T.eq(sf.ControlTablesSettings.historyTimeslotInMinutes, 5)   -- the seed's spelling, kept
  local st = json.decode(settings.task_settings("standard"))
  T.eq(st.FullLoadSettings.TargetTablePrepMode, "DROP_AND_CREATE")
  T.eq(st.ChangeProcessingTuning, nil)
  T.eq(st.Logging.LogComponents[5].Id, "TASK_MANAGER")
  T.raises(function() settings.task_settings("nope") end, "unknown task settings option")
  -- the template carries Option 1 verbatim
  local tpl = assert(require("sys").readfile(T.root .. "/runbooks/templates/aurora-dms.yaml"))
  local block = tpl:match("ReplicationTaskSettings: |\n(.-)\n\n")
  local lines = {}
  for l in block:gmatch("[^\n]+") do lines[#lines + 1] = l:gsub("^        ", "") end
  T.eq(json.decode(table.concat(lines, "\n")), sf)
end)

T.test("task settings are checked against DMS's documentation: what it rejects, what it ignores", function()
  local ts = require "pgtide.dms.task_settings"
  local function texts(doc)
    local out = {}
    for _, p in ipairs(ts.check(doc)) do out[#out + 1] = p.level .. ": " .. p.text end
    return table.concat(out, "\n")
  end
  -- the seed's Option 1 as DMS reads it
  local seed = texts(settings.decoded("schema-first"))
  T.match(seed, "warn: ControlTablesSettings%.historyTimeslotInMinutes: DMS reads ControlTablesSettings%."
    .. "HistoryTimeslotInMinutes %(keys are case%-sensitive%), so it ignores this one and uses its default %(5%)")
  T.match(seed, "warn: FullLoadSettings%.FullLoadIgnoreConflicts: FullLoadIgnoreConflicts is an ErrorBehavior "
    .. "setting; DMS ignores it under FullLoadSettings")
  T.match(seed, "warn: TargetMetadata%.BatchApplyEnabled with FullLobMode: batch apply works only in limited LOB "
    .. "mode, so DMS applies the changes of tables with LOB columns [^\n]*one by one")
  T.nomatch(seed, "error:")
  local bad = texts { FullLoadSettings = { TargetTablePrepMode = "TRUNCATE", MaxFullLoadSubTasks = 64 },
                      Logging = { LogComponents = { { Id = "X", Severity = "LOUD" } } }, Bogus = {} }
  T.match(bad, "error: FullLoadSettings%.TargetTablePrepMode 'TRUNCATE' is not one of DO_NOTHING")
  T.match(bad, "error: FullLoadSettings%.MaxFullLoadSubTasks is 64; DMS accepts 1 to 49")
  T.match(bad, "error: Logging%.LogComponents%[1%]%.Severity 'LOUD'")
  T.match(bad, "warn: Bogus: not a DMS task settings section")
  T.eq(texts { FullLoadSettings = { TargetTablePrepMode = "DO_NOTHING" }, TargetMetadata = { LimitedSizeLobMode = true,
    LobMaxSize = 32, BatchApplyEnabled = true } }, "")
end)

T.test("table mappings: per schema, user rules, and the DMS wildcard", function()
  local m = json.decode(settings.table_mappings { schemas = { "public", "sales" } })
  T.eq(#m.rules, 2)
  T.eq(m.rules[2]["object-locator"]["schema-name"], "sales")
  local keep = settings.table_filter {
    rules = { { ["rule-type"] = "selection", ["rule-action"] = "include",
                ["object-locator"] = { ["schema-name"] = "app%", ["table-name"] = "%" } },
              { ["rule-type"] = "selection", ["rule-action"] = "exclude",
                ["object-locator"] = { ["schema-name"] = "app", ["table-name"] = "tmp_%" } } } }
  T.eq(keep("app", "orders"), true)
  T.eq(keep("app2", "x"), true)
  T.eq(keep("app", "tmp_x"), false)
  T.eq(keep("public", "orders"), false)
  T.eq(keep("app", "a.b"), true)
  T.raises(function() settings.table_mappings { rules = { { ["rule-type"] = "transformation" } } } end,
    "no selection rule")
  T.eq(settings.parse_attributes(settings.source_attributes { slot = "s1" }),
       { pluginName = "test_decoding", slotName = "s1", captureDDLs = "false", maxFileSize = "32768" })
  -- the WAL heartbeat: a quiet source must not keep its WAL
  T.eq(settings.parse_attributes(settings.source_attributes { slot = "s1", heartbeat = 1, heartbeat_schema = "ops" }),
       { pluginName = "test_decoding", slotName = "s1", captureDDLs = "false", maxFileSize = "32768",
         heartbeatEnable = "true", heartbeatFrequency = "1", heartbeatSchema = "ops" })
end)

T.test("names are unique per migration, valid for DMS, PostgreSQL and CloudFormation", function()
  local a = naming.derive("Orders DB -- prod!", "a1b2c3")
  T.eq(a.instance, "pgtide-orders-db-prod-a1b2c3")
  T.ok(not a.instance:find("%-%-"), "double hyphen")
  T.ok(#a.instance <= 63)
  T.match(a.slot, "^[a-z0-9_]+$")
  T.eq(a.slot, "dms_orders_db_prod_a1b2c3")
  T.match(a.stack, "^[a-zA-Z][-a-zA-Z0-9]*$")
  local long = naming.derive(string.rep("x", 200), "ffffff")
  T.ok(#long.instance <= 63 and #long.slot <= 63 and #long.stack <= 40)
  T.ok(naming.derive("m", naming.random_suffix()).suffix ~= naming.derive("m", naming.random_suffix()).suffix)
  -- kept in the state: the second lookup finds the first's names
  local ctx = { name = "m1", outputs = {}, out = {}, save = function() end }
  ctx.outputs.preflight = ctx.out
  local n1 = naming.for_ctx(ctx)
  T.eq(naming.for_ctx({ name = "m1", outputs = ctx.outputs }).instance, n1.instance)
end)

T.test("awsx: not-found errors and bounded waits", function()
  T.eq(awsx.not_found({ code = "ResourceNotFoundFault" }), true)
  T.eq(awsx.not_found({ code = "ValidationError", message = "Stack with id x does not exist" }), true)
  T.eq(awsx.not_found({ code = "ValidationError", message = "Template format error" }), false)
  T.eq(awsx.not_found({ code = "AccessDenied" }), false)
  local n = 0
  local err = T.raises(function()
    awsx.wait { what = "the thing", timeout = 0.3, interval = 0.05,
                poll = function() n = n + 1; return false, "state " .. n end }
  end, "timed out after")
  T.match(tostring(err), "waiting for the thing; last status: state %d+")
  T.raises(function()
    awsx.wait { what = "x", timeout = 5, interval = 0.01, poll = function() return false, "bad", "it broke" end }
  end, "x: it broke")
end)

-- the roles users have: the RDS master user on the source, PlanetScale's
-- default role on the TLS target (postgres only sets them up)
local roles = require "roles"
local src = T.cluster()
local dst = T.cluster { tls = true }
local rds = roles.rds(src, "app")
local ps = roles.planetscale(dst, "app")
local ddl = [[create table public.t (id int primary key, v text);
              create table public."Mixed Case" (k int primary key);]]
src:sql("set role app; " .. ddl, "app"); dst:sql("set role pscale_admin; " .. ddl, "app")
src:sql("insert into public.t select g, 'v' || g from generate_series(1, 500) g", "app")
dst:sql("insert into public.t select g, 'v' || g from generate_series(1, 500) g", "app")
rds.grant()
local ctx = { params = { source = rds.owner, target = ps.conninfo }, state_dir = T.tmp .. "/dms-modules-state",
              src = pg.connect(rds.owner), dst = pg.connect(ps.conninfo) }
require("sys").mkdir_p(ctx.state_dir)

T.test("validation leaves out the objects DMS makes for itself (ignore_objects), and only those", function()
  local validate = require "pgtide.validate"
  local schema = require "pgtide.schema"
  -- DMS's control tables on the target, its heartbeat table on the source
  dst:sql([[set role pscale_admin;
            create table public.awsdms_apply_exceptions ("TASK_NAME" varchar(128), "ERROR" text);
            create table public.awsdms_validation_failures_v1 ("KEY" varchar(7800))]], "app")
  src:sql([[set role app; create table public.awsdms_heartbeat (hb_key serial primary key, hb_last_heartbeat_at timestamp);
            insert into public.awsdms_heartbeat (hb_last_heartbeat_at) values (now())]], "app")
  local o = { source = rds.owner, target = ps.conninfo, progress = false }
  local r = validate.run(o)
  T.eq(r.result ~= "equal", true, "without the option the DMS tables are differences")
  local text = validate.summary(r)
  T.match(text, "extra%s+table public%.awsdms_apply_exceptions")
  T.match(text, "missing%s+table public%.awsdms_heartbeat")
  o.ignore_objects = settings.DMS_OBJECTS
  r = validate.run(o)
  T.eq(r.result, "equal", validate.summary(r))
  -- the counts of the seed's query and the object comparison of the DMS steps
  local v = schema.verify(ctx.src, ctx.dst, { schemas = { "public" }, ignore_objects = settings.DMS_OBJECTS })
  T.eq(v.ok, true, json.encode(v.differences))
  T.eq(schema.verify(ctx.src, ctx.dst, { schemas = { "public" } }).ok, false)
  -- a user table is still compared
  dst:sql("set role pscale_admin; create table public.extra_one (x int)", "app")
  r = validate.run(o)
  T.match(validate.summary(r), "extra%s+table public%.extra_one")
  -- the command line: --ignore
  local c, out = T.run({ "validate", "--source", rds.owner, "--target", ps.conninfo, "--state", ctx.state_dir,
                         "--no-progress", "--ignore", "awsdms_*,extra_one" }, { env = { PGTIDE_LUA_PATH =
                         os.getenv("PGTIDE_LUA_PATH") } })
  T.eq(c, 0, out)
  dst:sql("drop table public.awsdms_apply_exceptions, public.awsdms_validation_failures_v1, public.extra_one", "app")
  src:sql("drop table public.awsdms_heartbeat", "app")
end)

T.test("preflight warns when a logical slot keeps more WAL than the threshold", function()
  local checks = require "pgtide.dms.checks"
  local function retention()
    for _, r in ipairs(checks.run { src = ctx.src, dst = ctx.dst, sentinel_schema = "public", slot = "dms_mine",
                                    retained_warn_mb = 1 }) do
      if r.id == "slot_retention" then return r end
    end
  end
  T.eq(retention().status, "pass")
  ctx.src:query_one("select pg_create_logical_replication_slot('dms_mine', 'test_decoding')")
  ctx.src:query_one("select pg_create_logical_replication_slot('forgotten', 'test_decoding')")
  src:sql("create table wal_filler as select g, repeat('x', 500) as pad from generate_series(1, 10000) g")
  local r = retention()
  ctx.src:query_one("select pg_drop_replication_slot('dms_mine')")
  ctx.src:query_one("select pg_drop_replication_slot('forgotten')")
  src:sql("drop table wal_filler")
  T.eq(r.status, "warn", r.message)
  T.match(r.message, "dms_mine %(this migration's%) %(inactive, app%) keeps %d")
  T.match(r.message, "forgotten %(inactive, app%) keeps")
  T.match(r.fix, "SELECT pg_drop_replication_slot%('forgotten'%);")
  T.match(r.fix, "dms_mine: restart its task, or finish the migration and run cleanup")
end)

T.test("verify.data passes on equal data and names the table that differs", function()
  local s = verify.data(ctx, { tables = { "public.t", "public.Mixed Case" }, mode = "offline" })
  T.eq(#s.differences, 0)
  dst:sql("update public.t set v = 'changed' where id = 42", "app")
  local err = T.raises(function()
    verify.data(ctx, { tables = { "public.t" }, mode = "offline" })
  end, "1 table%(s%) differ between source and target")
  T.match(tostring(err), "public%.t: 0 missing, 0 extra, 1 changed")
  dst:sql("update public.t set v = 'v42' where id = 42", "app")
end)

T.test("cutover waits for the sentinel and the latency, bounded", function()
  cutover.ensure_sentinel(ctx.src, "public")
  cutover.ensure_sentinel(ctx.dst, "public")
  -- nothing replicates the sentinel here: the wait must time out, saying why
  local err = T.raises(function()
    cutover.wait_caught_up { src = ctx.src, dst = ctx.dst, schema = "public", threshold = 5, timeout = 0.5,
                             interval = 0.1, latency = function() return 1.5 end, name = "t" }
  end, "timed out after")
  T.match(tostring(err), "last status: CDC latency 1%.5 s; sentinel not yet on the target")
  -- a "replicator" that copies the sentinel: then latency decides
  local lat = 9
  local function latency()
    for _, r in ipairs(ctx.src:query("select token, phase from public._pgtide_cutover")) do
      ctx.dst:exec("insert into public._pgtide_cutover (token, phase) values ($1, $2) on conflict do nothing",
        r.token, r.phase)
    end
    lat = lat - 3
    return lat
  end
  local res = cutover.wait_caught_up { src = ctx.src, dst = ctx.dst, schema = "public", threshold = 5,
                                       timeout = 10, interval = 0.05, latency = latency, name = "t" }
  T.ok(res.latency < 5, "latency %s", tostring(res.latency))
  -- no latency figure: only accepted when not required
  T.raises(function()
    cutover.wait_caught_up { src = ctx.src, dst = ctx.dst, schema = "public", threshold = 5, timeout = 0.4,
                             interval = 0.05, require_latency = true, name = "u",
                             latency = function() latency(); return nil, "no datapoint" end }
  end, "CDC latency unknown %(no datapoint%)")
  local ok = cutover.wait_caught_up { src = ctx.src, dst = ctx.dst, schema = "public", threshold = 5, timeout = 5,
                                      interval = 0.05, require_latency = false, name = "v",
                                      latency = function() latency(); return nil end }
  T.eq(ok.latency, nil)
end)

T.test("PlanetScale's template: Lambda runtimes AWS no longer accepts are replaced, cfn-lint agrees", function()
  local yaml = [[
AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument: {Version: "2012-10-17", Statement: [{Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: "sts:AssumeRole"}]}
  FixSourceConnectionFunction:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.9
      Handler: index.lambda_handler
      Role: !GetAtt Role.Arn
      Code: {ZipFile: "def lambda_handler(event, context): return 1"}
  Recent:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.lambda_handler
      Role: !GetAtt Role.Arn
      Code: {ZipFile: "def lambda_handler(event, context): return 1"}
]]
  local sys = require "sys"
  local function lint(text)
    local f = T.tmp .. "/lambda-template.yaml"
    assert(sys.write_atomic(f, text))
    local c, o = T.sh("cfn-lint " .. T.q(f))
    return c, o
  end
  local c, o = lint(yaml)
  T.eq(c ~= 0, true, "cfn-lint accepts python3.9: " .. o)
  T.match(o, "E2533")
  local patched, n = stack.patch_runtimes(yaml)
  T.eq(n, 1)
  T.match(patched, "Runtime: " .. stack.LAMBDA_RUNTIME:gsub("%.", "%%.") .. "\n")
  T.match(patched, "Runtime: python3%.12\n")
  c, o = lint(patched)
  T.eq(c, 0, o)
  local json_text, m = stack.patch_runtimes('{"Properties": {"Runtime": "python3.8", "Handler": "x"}}')
  T.eq({ json_text, m }, { '{"Properties": {"Runtime": "' .. stack.LAMBDA_RUNTIME .. '", "Handler": "x"}}', 1 })
end)

T.test("stack failures are explained from the events, with a hint", function()
  local text = stack.explain {
    { ResourceStatus = "CREATE_IN_PROGRESS", LogicalResourceId = "X", ResourceType = "AWS::S3::Bucket" },
    { ResourceStatus = "CREATE_FAILED", LogicalResourceId = "DMSSubnetGroup",
      ResourceType = "AWS::DMS::ReplicationSubnetGroup",
      ResourceStatusReason = "The IAM Role arn:aws:iam::1:role/dms-vpc-role is not configured properly" },
    { ResourceStatus = "ROLLBACK_COMPLETE", LogicalResourceId = "s", ResourceType = "AWS::CloudFormation::Stack" },
  }
  T.match(text, "^DMSSubnetGroup %(AWS::DMS::ReplicationSubnetGroup%) CREATE_FAILED: The IAM Role")
  T.match(text, "rerun; pgtide then creates the missing roles itself and waits until DMS can use them")
  T.eq(stack.explain {}, "no failure reason in the stack events")
  T.match(stack.explain { { ResourceStatus = "CREATE_FAILED", LogicalResourceId = "DMSReplicationInstance",
    ResourceType = "AWS::DMS::ReplicationInstance",
    ResourceStatusReason = "The resource you are attempting to create already exists." } },
    "%(a resource with that name exists outside this stack")
end)

T.test("the monitoring display: progress, tables, validation, latency, errors, throughput", function()
  local snap = {
    task = { ReplicationTaskIdentifier = "t1", Status = "running",
             ReplicationTaskStats = { FullLoadProgressPercent = 50, TablesLoaded = 1, TablesLoading = 1,
                                      TablesQueued = 0, TablesErrored = 0, ElapsedTimeMillis = 65000 } },
    tables = { { SchemaName = "public", TableName = "a", TableState = "Table completed", FullLoadRows = 10,
                 Inserts = 2, Updates = 1, Deletes = 0, ValidationState = "Validated" },
               { SchemaName = "public", TableName = "b", TableState = "Full load", FullLoadRows = 5,
                 ValidationState = "Pending records", ValidationPendingRecords = 5 } },
    latency = { source = 1, target = 2.5, total = 3.5 }, rate = 120.4,
    errors = { "public.c: Table error, validation Error" },
  }
  local text = table.concat(monitor.lines(snap), "\n")
  T.match(text, "task t1: running, full load 50%% %(1 loaded, 1 loading, 0 queued, 0 errored%), elapsed 1m05s")
  T.match(text, "public%.a%s+Table completed%s+10%s+2/1/0%s+Validated")
  T.match(text, "public%.b%s+Full load%s+5%s+0/0/0%s+Pending records %(5 pending%)")
  T.match(text, "CDC latency: source 1 s %+ target 2%.5 s = 3%.5 s; throughput: 120 rows/s; errors: public%.c")
  T.eq(monitor.loaded(snap), false)
  snap.task.ReplicationTaskStats.FullLoadProgressPercent = 100
  snap.task.ReplicationTaskStats.TablesLoading = 0
  snap.tables[2].TableState = "Table completed"
  T.eq(monitor.loaded(snap), true)
end)

ctx.src:close(); ctx.dst:close()
T.done()
