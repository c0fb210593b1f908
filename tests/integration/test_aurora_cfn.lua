-- The aurora-cfn runbook end to end, under the conditions users have: an
-- RDS/Aurora-like PostgreSQL 15 source reached as its master user 'app'
-- (owner of the tables, no superuser: tests/lib/roles.lua), a
-- PlanetScale-like PostgreSQL 17 target reached as its default role over
-- TLS (sslmode=verify-full); moto_server (signature checking on) for
-- CloudFormation, IAM, SNS, Step Functions, S3, EC2 and STS, behind the
-- stand-in that creates the template's DMS resources (moto skips
-- AWS::DMS::*) and runs the state machine (tests/lib/dms_standin.py).
-- The template is a padded copy of pgtide's, over 51,200 bytes, so it goes
-- through S3/TemplateURL.  The master user needs no manual step.
--
-- Failure paths, each resumed by a rerun: the stack fails because it
-- creates the DMS IAM roles and, moments later, DMS cannot use them yet
-- (explained from the stack events; the rerun creates the roles first and
-- waits); the workflow fails because the task errors (a target-only CHECK
-- constraint).  The last rerun completes every step
-- while the source changes; after cleanup nothing the runbook created is
-- left (listed through the API).  The template passes cfn-lint.  Then a
-- second migration of type full-load.
local T = require "t"
local json = require "json"
local sys = require "sys"
local roles = require "roles"

T.test("the template passes cfn-lint", function()
  local code, out, err = T.sh("command -v cfn-lint")
  if code ~= 0 then error("cfn-lint is not installed: " .. err) end
  code, out, err = T.sh("cfn-lint " .. T.q(T.root .. "/runbooks/templates/aurora-dms.yaml"))
  T.eq(code, 0, out .. err)
end)

local root = T.root
local standin = require "standin"
standin.suite("aurora", "aurora-cfn end to end", function(S)
local endpoint, creds, env, aws_script = S.endpoint, S.creds, S.env, S.script

local src = T.cluster()
local dst = T.cluster { tls = true, version = 17 }
local rds = roles.rds(src, "billing")
local ps = roles.planetscale(dst, "billing")
S.set_admin { src }
local function as_app(sql) return src:sql("set role app; " .. sql, "billing") end
as_app([[
  create table public.customers (id bigserial primary key, name text not null);
  create table public.invoices (id bigserial primary key, customer_id bigint references public.customers (id),
                                total numeric(12, 2) not null, paid boolean not null default false);
  insert into public.customers (name) select 'c' || g from generate_series(1, 200) g;
  insert into public.invoices (customer_id, total) select 1 + g % 200, g * 1.25 from generate_series(1, 800) g;
]])

local stack_name = "pgt-aurora-" .. sys.getpid()
local template = T.tmp .. "/aurora-template-" .. sys.getpid() .. ".yaml"
do
  local text = assert(sys.readfile(root .. "/runbooks/templates/aurora-dms.yaml"))
  local pad = { "\n# padding: this copy is over CloudFormation's 51,200-byte TemplateBody limit\n" }
  for i = 1, 120 do pad[#pad + 1] = string.format("# %03d %s\n", i, string.rep("-", 90)) end
  local f = assert(io.open(template, "w")); f:write(text, table.concat(pad)); f:close()
  assert(#text + #table.concat(pad) > 51200)
end

local state = T.tmp .. "/aurora-state-" .. sys.getpid()

-- The source database's security group: until it admits the replication
-- instance, the stand-in refuses source connections (the workflow must
-- add the rule, and cleanup must revoke it).
local source_sg = S.source_network("aurora-db-" .. sys.getpid()).sg
S.set_network({ source_security_group = source_sg })
local cfgfile = T.tmp .. "/aurora-config-" .. sys.getpid() .. ".lua"
local f = assert(io.open(cfgfile, "w"))
f:write(string.format([[
return {
  name = "aurora",
  source = %q,
  target = %q,
  aws = { region = "us-east-1", endpoint_url = %q },
  stack_name = %q, template_file = %q,
  instance_class = "dms.t3.medium", allocated_storage = 50, source_ssl_mode = "none",
  notification_email = "dba@example.com", source_security_group_id = %q,
  poll_interval = 0.3, connection_timeout = 30, full_load_timeout = 120, cutover_timeout = 60,
  stop_timeout = 30, delete_timeout = 30, stack_timeout = 30, sns_confirm_timeout = 20,
  validation_recheck = 5, validation_delay = 1, target_disk_gb = 1,
  connection_poll_seconds = 1, assessment_poll_seconds = 1, monitor_poll_seconds = 1,
}
]], rds.owner, ps.conninfo, endpoint, stack_name, template, source_sg))
f:close()

local function pgtide_cmd()
  return S.command("aurora-cfn", cfgfile, state)
end
local function step_status(name)
  return standin.step_status(state, name)
end
T.test("names the stack would derive are checked before anything is created", function()
  local c, o, e = T.sh(pgtide_cmd() .. " stack_name=" .. string.rep("x", 50) .. " </dev/null")
  T.eq(c, 1, o .. e)
  T.match(e, "%[FAIL%] Names derived from the stack name: assessment bucket 'x+%-assessments%-%d+': 75 characters "
    .. "%(S3 allows 3 to 63%); IAM role 'x+%-dms%-assessment': 65 characters %(IAM allows 64%)")
  T.nomatch(e, "IAM role 'x+-workflow'")
  T.eq(step_status("preflight"), "failed")
  local stacks = aws_script([[print(json.encode({ n = #(client("cloudformation"):DescribeStacks {}.Stacks or {}) }))]])
  T.eq(stacks.n, 0, "no stack was created")
end)

T.test("a stack that races IAM propagation fails, explained from its events", function()
  -- a caller that may not simulate its own policies: noted, not failed
  aws_script([[
    client("iam"):PutUserPolicy { UserName = "pgtide-test", PolicyName = "no-simulation", PolicyDocument = json.encode {
      Version = "2012-10-17", Statement = { { Effect = "Deny", Action = "iam:SimulatePrincipalPolicy", Resource = "*" } } } }
    print("{}")]])
  -- the guide's way (dms_roles=stack): the account has no DMS role, the
  -- stack creates them and, moments later, the subnet group that needs one
  local c, o, e = T.sh(pgtide_cmd() .. " dms_roles=stack </dev/null")
  aws_script([[client("iam"):DeleteUserPolicy { UserName = "pgtide-test", PolicyName = "no-simulation" }; print("{}")]])
  T.eq(c, 1, o .. e)
  T.match(e, "%[WARN%] AWS permissions of the caller: cannot check the permissions of arn:aws:iam::%d+:user/pgtide%-test: "
    .. "AccessDenied")
  for _, s in ipairs({ "preflight", "schema", "iam-roles", "deploy" }) do T.eq(step_status(s), "done", s) end
  T.eq(step_status("wait-stack"), "failed")
  T.match(e, "CreateDMSRoles = true")
  T.match(e, "uploaded to s3://")
  T.match(e, "stack event: [^\n]*CREATE_FAILED%s+DMSSubnetGroup %(AWS::DMS::ReplicationSubnetGroup%)")
  T.match(e, "step 'wait%-stack' failed: [^\n]*ROLLBACK_COMPLETE[^\n]*DMSSubnetGroup %(AWS::DMS::"
    .. "ReplicationSubnetGroup%) CREATE_FAILED: [^\n]*dms%-vpc%-role is not configured properly[^\n]*%(DMS needs the IAM "
    .. "role dms%-vpc%-role")
end)

T.test("a task that errors fails the workflow, with the task's error", function()
  -- DMS throttles the workflow's first StartReplicationTask: the Retry must
  -- name the error Step Functions really raises
  S.throttle { StartReplicationTask = 1 }
  dst:sql("alter table public.invoices add constraint pgtide_test_reject check (total < 0)", "billing")
  local c, o, e = T.sh(pgtide_cmd() .. " </dev/null")
  T.eq(c, 1, o .. e)
  for _, s in ipairs({ "wait-stack", "sns", "outputs", "start" }) do T.eq(step_status(s), "done", s) end
  T.eq(step_status("monitor"), "failed")
  T.match(e, "deleting it before creating it again")
  -- the IAM check again, after the failed stack: pgtide makes the roles
  -- and waits until DMS can use them
  T.match(e, "the previous stack failed and the DMS role%(s%) dms%-vpc%-role, dms%-cloudwatch%-logs%-role are missing")
  T.match(e, "created the IAM role dms%-vpc%-role")
  T.match(e, "DMS cannot use dms%-vpc%-role yet")
  T.match(e, "DMS can use dms%-vpc%-role")
  T.match(e, "CreateDMSRoles = false")
  T.match(e, "subscription of dba@example%.com is pending confirmation")
  T.match(e, "email subscription of dba@example%.com: confirmed")
  T.match(e, "StepFunctionsConsoleURL: https://us%-east%-1%.console%.aws%.amazon%.com/states/")
  T.match(e, "workflow: FixSourceSecurityGroup")
  T.match(e, "workflow: StartAssessmentRun")
  T.match(S.read_log(), "dms error ThrottlingException")
  -- the endpoint names a slot: the workflow started the task at its position
  T.match(e, "workflow: StartReplicationTaskAt")
  T.match(S.read_log(), "task [^\n]*: CDC starts at %x+/%x+ %(slot dms_aurora_")
  T.match(e, "step 'monitor' failed: [^\n]*the workflow failed: MigrationFailed[^\n]*the task failed: [^\n]*pgtide_test_reject")
  dst:sql("alter table public.invoices drop constraint pgtide_test_reject", "billing")
  -- what the final check expects gone does exist now
  local now = aws_script(string.format([[
    local out = {}
    out.topics = #(client("sns"):ListTopics {}.Topics or {})
    out.state_machines = #(client("stepfunctions"):ListStateMachines {}.stateMachines or {})
    out.instances = #(client("dms"):DescribeReplicationInstances {}.ReplicationInstances or {})
    out.source_sg_rules = #(client("ec2"):DescribeSecurityGroups { GroupIds = { %q } }.SecurityGroups[1].IpPermissions or {})
    print(json.encode(out))]], source_sg))
  T.eq(now, { topics = 1, state_machines = 1, instances = 1, source_sg_rules = 1 }, json.encode(now))
end)

T.test("the rerun completes every step while the source keeps changing", function()
  local rcfile = state .. ".rc"
  local outf, errf = state .. ".out", state .. ".err"
  os.execute(string.format("(%s >%s 2>%s </dev/null; echo $? > %s) &", pgtide_cmd(), T.q(outf), T.q(errf),
    T.q(rcfile)))
  local n, t0 = 0, os.time()
  while os.time() - t0 < 200 do
    local s = step_status("pre-cutover")
    if s == "running" or s == "done" or sys.exists(rcfile) then break end
    if step_status("monitor") == "done" and n < 40 then
      n = n + 1
      as_app(string.format([[
        insert into public.customers (name) values ('cdc %d');
        insert into public.invoices (customer_id, total) values (currval('public.customers_id_seq'), %d);
        update public.invoices set paid = true where id = %d;]], n, n, n))
    end
    sys.sleep(0.1)
  end
  local waited = 0
  while not sys.exists(rcfile) and waited < 240 do sys.sleep(0.5); waited = waited + 0.5 end
  local e = sys.readfile(errf) or ""
  T.eq(tonumber(sys.readfile(rcfile) or ""), 0, e:sub(-3000))
  for _, s in ipairs({ "monitor", "sequences", "constraints", "pre-cutover", "cutover", "cleanup" }) do
    T.eq(step_status(s), "done", s)
  end
  T.match(e, "starting replication task [^\n]*reload%-target")
  T.match(e, "started workflow execution pgtide%-%x+%-2%-")
  -- the task was restarted before the new execution: the workflow does not
  -- test or assess a running task again
  T.match(e, "workflow: TaskAlreadyRunning")
  T.nomatch(e, "workflow: StartAssessmentRun")
  T.match(e, "workflow: NotifyFullLoadComplete")
  -- the endpoint names a slot: the restart gave the slot's position
  T.match(e, "CDC starts at %x+/%x+ %(CdcStartPosition: the slot's position%)")
  T.match(e, "caught up: the sentinel is on the target and CDC latency is")
  -- DMS's control tables were left out of every comparison, then dropped
  T.match(e, "target: dropped table public%.awsdms_apply_exceptions")
  T.match(e, "target: dropped table public%.awsdms_validation_failures_v1")
  local emptied = tonumber(e:match("emptied bucket [^\n]*%((%d+) object versions and delete markers%)"))
  T.ok(emptied and emptied >= 4, "the assessment bucket held no versions to remove (%s)", tostring(emptied))
  T.match(e, "revoked the workflow's rule " .. source_sg:gsub("%-", "%%-") .. ": tcp %d+%-%d+ from sg%-%x+ %(DMS access for "
    .. stack_name:gsub("%-", "%%-") .. " %(added by the migration workflow%)%)")
  T.match(e, "stack " .. stack_name:gsub("%-", "%%-") .. " deleted")
  T.match(e, "cleanup verified: the stack and every resource it created are gone")
  for _, t in ipairs({ "customers", "invoices" }) do
    local q = string.format("select count(*) || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
      .. "from public.%s t", t)
    T.eq(dst:sql(q, "billing"), src:sql(q, "billing"), t)
  end
  T.eq(dst:sql("select conname || ':' || convalidated from pg_constraint where contype = 'f'", "billing"),
       "invoices_customer_id_fkey:true")
  T.eq(tonumber(dst:sql("select last_value from public.customers_id_seq", "billing")),
       tonumber(src:sql("select last_value from public.customers_id_seq", "billing")) + 1000)
  T.eq(src:sql("select count(*) from pg_replication_slots", "billing"), "0")
  T.eq(dst:sql("select count(*) from pg_class where relname = '_pgtide_cutover' or relname like 'awsdms%'", "billing"), "0")
  T.eq(src:sql("select count(*) from pg_class where relname = '_pgtide_cutover' or relname like 'awsdms%'", "billing"), "0")
  T.eq(dst:sql("select count(*) from pg_namespace where nspname = 'pgtide'", "billing"), "0")
  T.eq(src:sql("select count(*) from pg_publication", "billing"), "0")
end)

T.test("after cleanup nothing the runbook created is left (listed through the API)", function()
  local st = json.decode(sys.readfile(state .. "/state.json"))
  local o = st.steps.outputs.outputs
  local d = st.steps.deploy.outputs
  local res = aws_script(string.format([==[
    local out = {}
    local cfn = client("cloudformation")
    local s = cfn:DescribeStacks { StackName = %q }
    out.stack = s.Stacks[1].StackStatus
    local dms = client("dms")
    for _, x in ipairs({ { "DescribeReplicationTasks", "ReplicationTasks" }, { "DescribeEndpoints", "Endpoints" },
                         { "DescribeReplicationInstances", "ReplicationInstances" },
                         { "DescribeReplicationSubnetGroups", "ReplicationSubnetGroups" } }) do
      local ok, r = pcall(dms[x[1]], dms, {})
      out[x[2]] = ok and #(r[x[2]] or {}) or -1
    end
    local s3 = client("s3")
    out.buckets = 0
    for _, b in ipairs({ %q, %q }) do
      local ok, e = pcall(s3.HeadBucket, s3, { Bucket = b })
      if ok or e.status ~= 404 then out.buckets = out.buckets + 1 end
    end
    out.topics = #(client("sns"):ListTopics {}.Topics or {})
    out.state_machines = #(client("stepfunctions"):ListStateMachines {}.stateMachines or {})
    local sg = client("ec2"):DescribeSecurityGroups { GroupIds = { %q } }.SecurityGroups[1]
    out.source_sg_rules = #(sg.IpPermissions or {})
    print(json.encode(out))]==], d.stack_id, o.bucket, d.template_bucket, source_sg))
  T.eq(res, { stack = "DELETE_COMPLETE", ReplicationTasks = 0, Endpoints = 0, ReplicationInstances = 0,
              ReplicationSubnetGroups = 0, buckets = 0, topics = 0, state_machines = 0, source_sg_rules = 0 },
       json.encode(res))
  T.ok(o.bucket and o.bucket:find(stack_name, 1, true), "bucket name %s does not derive from the stack", tostring(o.bucket))
  T.ok(d.template_bucket, "no template bucket recorded")
end)

T.test("cleanup finds the rule PlanetScale's Lambda adds, by its description", function()
  -- template=planetscale: its FixSourceConnectionFunction adds, to each of
  -- the source's security groups, a rule admitting the DMS security group
  -- described "DMS access for migration - Auto-added by <stack>-fix-source-connection"
  local res = aws_script([[
    local ec2 = client("ec2")
    local vpc = ec2:DescribeVpcs { Filters = { { Name = "is-default", Values = { "true" } } } }.Vpcs[1].VpcId
    local db = ec2:CreateSecurityGroup { GroupName = "ps-db", Description = "aurora", VpcId = vpc }.GroupId
    local dms = ec2:CreateSecurityGroup { GroupName = "ps-dms", Description = "dms", VpcId = vpc }.GroupId
    pcall(ec2.DescribeSecurityGroups, ec2, { GroupIds = { db } })
    pcall(ec2.DescribeSecurityGroups, ec2, { GroupIds = { dms } })
    for _, d in ipairs({ "DMS access for migration - Auto-added by pstack-fix-source-connection", "the app's own" }) do
      ec2:AuthorizeSecurityGroupIngress { GroupId = db, IpPermissions = { { IpProtocol = "tcp",
        FromPort = d:find("DMS") and 5432 or 443, ToPort = d:find("DMS") and 5432 or 443,
        UserIdGroupPairs = { { GroupId = dms, Description = d } } } } }
    end
    -- what the runbook's cleanup does when it knows neither group
    local cleanup = require "pgtide.dms.cleanup"
    local ctx = { params = { aws_region = "us-east-1", aws_endpoint_url = EP, aws_profile = "" } }
    local n = cleanup.revoke_workflow_rules(ctx, { from_groups = {},
      descriptions = { "DMS access for migration - Auto-added by pstack-" } })
    local left = ec2:DescribeSecurityGroups { GroupIds = { db } }.SecurityGroups[1].IpPermissions or {}
    print(json.encode({ n = n, left = #left, port = left[1] and left[1].FromPort or json.null }))]])
  T.eq(res, { n = 1, left = 1, port = 443 })
end)

local other_run = S.other_run
local function same(db, tables) standin.same(src, dst, db, tables) end
local COMMON = standin.COMMON

-- migration_type=full-load: a snapshot copied after the application's
-- writes stopped; the task stops when done (FULL_LOAD_ONLY_FINISHED) and
-- the cutover finishes without a running task (another database)
T.test("full-load: the task stops when the snapshot is copied, the cutover finishes", function()
  local rds = roles.rds(src, "fl")
  local ps = roles.planetscale(dst, "fl")
  src:sql([[set role app;
    create table public.items (id bigserial primary key, name text not null, price numeric(8, 2));
    insert into public.items (name, price) select 'item ' || g, g * 0.5 from generate_series(1, 500) g]], "fl")
  rds.grant()
  local cfg, state = T.tmp .. "/aurora-fl-" .. sys.getpid() .. ".lua", T.tmp .. "/aurora-fl-state-" .. sys.getpid()
  local c = {}
  for k, v in pairs(COMMON) do c[k] = v end
  c.name, c.source, c.target, c.migration_type = "fl", rds.owner, ps.conninfo, "full-load"
  c.stack_name = "pgt-fl-" .. sys.getpid()
  c.stack_timeout, c.connection_poll_seconds, c.assessment_poll_seconds, c.monitor_poll_seconds = 30, 1, 1, 1
  c.source_ssl_mode, c.source_security_group_id = "none", source_sg
  local code, o, e = other_run("aurora-cfn", cfg, state, c)
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

T.test("dry run shows every step of the seed", function()
  local c, o, e = T.run({ "run", "aurora-cfn", "-c", cfgfile, "--dry-run" },
    { env = { PGTIDE_LUA_PATH = os.getenv("PGTIDE_LUA_PATH") } })
  T.eq(c, 0, e)
  for _, title in ipairs({ "Source database prerequisites", "Pre%-Migration Schema Setup", "Check DMS IAM Roles",
                           "Deploy CloudFormation Stack", "Wait for Stack Completion",
                           "Confirm your email notification subscription", "Get Workflow Input Configuration",
                           "Start Migration Workflow", "Monitor Migration Progress",
                           "Post%-Migration Sequence Synchronization", "Apply Remaining Constraints",
                           "Comprehensive Pre%-Cutover Validation", "Application Cutover", "Automated Cleanup" }) do
    T.match(o, title)
  end
end)

end)
