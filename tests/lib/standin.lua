-- standin: the AWS side of the DMS runbook tests.  Starts moto_server
-- (signature checking on) behind the DMS stand-in (tests/lib/dms_standin.py)
-- and gives the test what it needs to talk to them:
--
--   local S = standin.start("dms")   -- nil, why: moto_server is missing
--   S.endpoint, S.creds              -- endpoint URL, credentials file
--   S.env                            -- environment words for pgtide runs
--   S.script(body)                   -- run Lua with `client(service)`, decode its JSON output
--   S.set_network(tbl)               -- the stand-in's network.json (security groups)
--   S.set_admin{ c1, c2 }            -- the test's clusters: their administrator
--                                       (postgres) makes the publication the
--                                       stand-in's pgoutput mover reads, nothing else
--   S.throttle{ Op = n }             -- the next n calls of Op answer ThrottlingException
--   S.read_log()                     -- the stand-in's log
--   S.stop()
--
-- and what the end-to-end runbook tests (test_dms_manual, test_aurora_cfn)
-- share around it:
--
--   standin.suite(prefix, title, function(S) ... end)
--                                    -- start, skip 'title' without moto, run the
--                                       body (a setup error is one failed test),
--                                       stop, T.done()
--   S.source_network(group_name)     -- { sg, subnets }: the source database's
--                                       security group and two subnets of the
--                                       default VPC, in different zones
--   S.command(runbook, cfgfile, state)   -- "env ... pgtide run RUNBOOK ... --yes"
--   S.other_run(runbook, file, state, t) -- another migration: config t, run it
--   standin.step_status(state, name) -- a step's status in a state directory
--   standin.same(src, dst, db, tables)   -- T.eq of every row of public.TABLE
--   standin.COMMON                   -- the short timeouts every test config uses
--
-- Raises when the services cannot start for another reason.
local T = require "t"
local json = require "json"
local sys = require "sys"

local M = {}

function M.start(prefix)
  local dir = string.format("%s/%s-env-%d", T.tmp, prefix, sys.getpid())
  -- every resource answers not-found once right after its creation
  -- (eventual consistency), transitions take a short while
  -- (and the workflow's Retry intervals are scaled down)
  local code, out, err = T.sh(string.format("STANDIN_NOT_FOUND=1 STANDIN_SFN_RETRY_SCALE=0.05 "
    .. "STANDIN_DELAYS=iam=2,minute=0.5 python3 %s/tests/lib/dms_standin.py up %s --pgtide %s",
    T.root, T.q(dir), T.q(T.pgtide)))
  if code == 3 then return nil, "moto_server is not installed" end
  assert(code == 0, "cannot start moto and the stand-in: " .. tostring(err))
  local S = { dir = dir, endpoint = out:match("endpoint=(%S+)"), creds = out:match("credentials=(%S+)") }
  S.env = string.format("AWS_SHARED_CREDENTIALS_FILE=%s AWS_CONFIG_FILE=/dev/null AWS_REGION=us-east-1 "
    .. "AWS_EC2_METADATA_DISABLED=true", T.q(S.creds))
  local lua_path = os.getenv("PGTIDE_LUA_PATH")
  if lua_path then S.env = S.env .. " PGTIDE_LUA_PATH=" .. T.q(lua_path) end

  -- Run a Lua snippet with the aws module against the stand-in; returns
  -- its JSON output, decoded.
  function S.script(body)
    local file = dir .. "/snippet.lua"
    local fh = assert(io.open(file, "w"))
    fh:write("local aws = require 'aws'\nlocal json = require 'json'\nlocal EP = ", string.format("%q", S.endpoint),
      "\nlocal function client(s) return aws.client(s, { region = 'us-east-1', endpoint_url = EP }) end\n", body)
    fh:close()
    local c, o, e = T.sh(string.format("env %s %s script %s", S.env, T.q(T.pgtide), T.q(file)))
    assert(c == 0, "aws snippet failed: " .. e)
    return json.decode(o)
  end

  function S.set_network(t)
    local fh = assert(io.open(dir .. "/standin/network.json", "w"))
    fh:write(json.encode(t)); fh:close()
  end

  function S.set_admin(clusters)
    local t = {}
    for _, c in ipairs(clusters) do
      t[c.conninfo:match("host=(%S+)") .. ":" .. c.port] = c.conninfo
    end
    local fh = assert(io.open(dir .. "/standin/admin.json", "w"))
    fh:write(json.encode(t)); fh:close()
  end

  -- S.throttle{ StartReplicationTask = 1 }: the next calls answer ThrottlingException
  function S.throttle(t)
    local fh = assert(io.open(dir .. "/standin/throttle.json", "w"))
    fh:write(json.encode(t)); fh:close()
  end

  function S.read_log()
    return sys.readfile(dir .. "/standin/dms_standin.log") or ""
  end

  -- The source database's security group (until it admits the replication
  -- instance the stand-in refuses source connections) and two subnets of
  -- the default VPC in different zones, for a subnet group.
  function S.source_network(group_name)
    return S.script(string.format([[
  local ec2 = client("ec2")
  local vpc = ec2:DescribeVpcs { Filters = { { Name = "is-default", Values = { "true" } } } }.Vpcs[1].VpcId
  local subnets, seen = {}, {}
  for _, s in ipairs(ec2:DescribeSubnets { Filters = { { Name = "vpc-id", Values = { vpc } } } }.Subnets) do
    if not seen[s.AvailabilityZone] and #subnets < 2 then seen[s.AvailabilityZone] = true; subnets[#subnets + 1] = s.SubnetId end
  end
  local g = ec2:CreateSecurityGroup { GroupName = %q, Description = "the source", VpcId = vpc }
  -- an existing group, long visible: the stand-in's once-not-found after a create is spent here
  pcall(ec2.DescribeSecurityGroups, ec2, { GroupIds = { g.GroupId } })
  print(json.encode({ sg = g.GroupId, subnets = table.concat(subnets, ",") }))]], group_name))
  end

  -- The command line running a runbook against the stand-in, answering yes.
  function S.command(runbook, cfgfile, state)
    return string.format("env %s %s run %s -c %s --state %s --yes", S.env, T.q(T.pgtide), runbook, T.q(cfgfile),
      T.q(state))
  end

  -- Another migration in the same account, its own config and state.
  function S.other_run(runbook, file, state, t)
    local lines = { "return {" }
    for k, v in pairs(t) do lines[#lines + 1] = string.format("  %s = %s,", k, type(v) == "string" and
      string.format("%q", v) or tostring(v)) end
    lines[#lines + 1] = string.format("  aws = { region = \"us-east-1\", endpoint_url = %q },", S.endpoint)
    lines[#lines + 1] = "}"
    assert(sys.write_atomic(file, table.concat(lines, "\n")))
    return T.sh(S.command(runbook, file, state) .. " </dev/null")
  end

  function S.stop()
    T.sh(string.format("python3 %s/tests/lib/dms_standin.py down %s", T.root, T.q(dir)))
  end
  return S
end

--[[ suite(prefix, title, body): the services for one test file: skipped
  (as 'title') when moto_server is missing; body(S) runs the tests, and
  an error outside a T.test (the setup) is reported as one failed test
  '<title> (setup)'; the services are stopped either way.  Ends the test
  file (T.done). ]]
function M.suite(prefix, title, body)
  local S, why = M.start(prefix)
  if not S then
    T.skip(title, why)
    T.done()
  end
  local ok_all, failure = pcall(body, S)
  S.stop()
  if not ok_all then
    T.test(title .. " (setup)", function() error(failure, 0) end)
  end
  T.done()
end

-- The status of step 'name' in the state directory 'state' (nil: none yet).
function M.step_status(state, name)
  local text = sys.readfile(state .. "/state.json")
  if not text then return nil end
  local st = json.decode(text)
  return st.steps[name] and st.steps[name].status
end

-- Every row of public.TABLE equal on both clusters, for each table.
function M.same(src, dst, db, tables)
  for _, t in ipairs(tables) do
    local q = string.format("select count(*) || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
      .. "from public.%s t", t)
    T.eq(dst:sql(q, db), src:sql(q, db), db .. "." .. t)
  end
end

-- The short timeouts of the test configs.
M.COMMON = { poll_interval = 0.3, connection_timeout = 30, full_load_timeout = 120,
             cutover_timeout = 60, stop_timeout = 30, delete_timeout = 30,
             validation_recheck = 5, validation_delay = 1, target_disk_gb = 1 }

return M
