--[[
pgtide.dms.iam: the account-wide IAM roles DMS needs, and waiting until
DMS can use a role that was just made.

DMS uses two roles with fixed names: dms-vpc-role (it places replication
instances and subnet groups in a VPC with it; without it
CreateReplicationSubnetGroup fails with AccessDeniedFault "The IAM Role
arn:aws:iam::<account>:role/dms-vpc-role is not configured properly")
and dms-cloudwatch-logs-role (task logs).  The DMS console creates them
on first use; an account that never used the console has neither
(DMS User Guide, "Creating the IAM roles to use with the AWS CLI and
AWS DMS API").

  iam.ROLES                          the two names
  iam.lookup(ctx) -> exists          { [name] = true | false }, logged
  iam.create(ctx, names)             creates the named roles (trust
                                     dms.amazonaws.com, their AWS managed
                                     policy), after the user's confirmation
  iam.propagated(ctx, what, fn, ...) -> fn's results: retries
                                     AccessDeniedFault while IAM propagates
  iam.probe(ctx, names, subnets)     the first DMS call that needs
                                     dms-vpc-role, made and undone, so a
                                     stack does not race the propagation

IAM is eventually consistent: a role created seconds ago may not be
usable by DMS yet ("changes ... take time to propagate", IAM User Guide).
The first DMS call that depends on it is therefore retried with growing
pauses for iam_propagation_timeout seconds, reporting what it waits for.
]]
local awsx = require "pgtide.dms.awsx"
local json = require "json"
local log = require "log"
local sys = require "sys"
local util = require "pgtide.util"
local runbook = require "pgtide.runbook"

local M = {}

M.ROLES = { "dms-vpc-role", "dms-cloudwatch-logs-role" }
M.POLICY = {
  ["dms-vpc-role"] = "arn:aws:iam::aws:policy/service-role/AmazonDMSVPCManagementRole",
  ["dms-cloudwatch-logs-role"] = "arn:aws:iam::aws:policy/service-role/AmazonDMSCloudWatchLogsRole",
}

-- iam.lookup(ctx) -> { [role] = exists }.  Raises on errors other than
-- NoSuchEntity (e.g. no iam:GetRole permission).
function M.lookup(ctx)
  local iam = awsx.client(ctx, "iam")
  local exists = {}
  for _, r in ipairs(M.ROLES) do
    exists[r] = awsx.try(iam.GetRole, iam, { RoleName = r }) ~= nil
    log.info("IAM role %s: %s", r, exists[r] and "exists" or "missing")
  end
  return exists
end

-- The roles of 'exists' that are missing, in M.ROLES order.
function M.missing(exists)
  local out = {}
  for _, r in ipairs(M.ROLES) do if not exists[r] then out[#out + 1] = r end end
  return out
end

--[[
iam.create(ctx, names): create each role of 'names' (trusted by
dms.amazonaws.com, with its AWS managed policy) once the user confirms
(--yes, or an answer on a terminal).  The roles stay after the
migration: DMS uses them account-wide.  Recorded in ctx.out.created_roles.
Raises a failure when the user declines.
]]
function M.create(ctx, names)
  if #names == 0 then return end
  local ok = ctx:confirm(string.format("Create the IAM role(s) %s that DMS needs in this account (they stay "
    .. "after the migration)?", table.concat(names, ", ")))
  runbook.require(ok, "DMS needs the IAM role(s) %s: confirm on a terminal or rerun with --yes, or create them "
    .. "yourself (trusted by dms.amazonaws.com; policies %s)", table.concat(names, ", "),
    table.concat((function()
      local p = {}
      for _, n in ipairs(names) do p[#p + 1] = M.POLICY[n] end
      return p
    end)(), ", "))
  local iam = awsx.client(ctx, "iam")
  local trust = json.encode({ Version = "2012-10-17", Statement = json.array({ { Effect = "Allow",
    Principal = { Service = "dms.amazonaws.com" }, Action = "sts:AssumeRole" } }) })
  ctx.out.created_roles = ctx.out.created_roles or {}
  for _, r in ipairs(names) do
    local cok, err = pcall(iam.CreateRole, iam, { RoleName = r, AssumeRolePolicyDocument = trust,
                                                   Description = "DMS service role (created by pgtide)" })
    if not cok and awsx.code(err) ~= "EntityAlreadyExists" then error(err, 0) end
    awsx.settle(ctx, "IAM role " .. r, iam.AttachRolePolicy, iam, { RoleName = r, PolicyArn = M.POLICY[r] })
    ctx.out.created_roles[#ctx.out.created_roles + 1] = r
    ctx.out.roles_created_at = os.time()
    ctx:save()
    log.info("created the IAM role %s with %s (kept after the migration: DMS uses it account-wide)", r, M.POLICY[r])
  end
end

local function propagation_timeout(ctx)
  return tonumber(ctx.params.iam_propagation_timeout) or 600
end

--[[
iam.propagated(ctx, what, fn, ...) -> fn(...)'s results.  While fn
raises AccessDeniedFault (DMS cannot use dms-vpc-role yet), waits with
growing pauses (1 s doubling to 30 s) for at most iam_propagation_timeout
seconds, logging what it waits for; other errors, and the last
AccessDeniedFault, propagate with a message saying what to check.
]]
function M.propagated(ctx, what, fn, ...)
  local t0 = sys.monotonic()
  local nap, logged = 1, false
  while true do
    local res = table.pack(pcall(fn, ...))
    if res[1] then return table.unpack(res, 2, res.n) end
    local err = res[2]
    if awsx.code(err) ~= "AccessDeniedFault" then error(err, 0) end
    local elapsed = sys.monotonic() - t0
    if elapsed + nap > propagation_timeout(ctx) then
      runbook.fail("%s: DMS still cannot use its IAM role after %s (%s). Check that dms-vpc-role exists, trusts "
        .. "dms.amazonaws.com and has %s attached; then rerun", what, util.format_duration(elapsed),
        require("pgtide.errors").message(err), M.POLICY["dms-vpc-role"])
    end
    if not logged then
      log.warn("%s: DMS cannot use dms-vpc-role yet (%s); IAM changes take a while to reach DMS: retrying for up "
        .. "to %s", what, tostring(err.message or err), util.format_duration(propagation_timeout(ctx)))
      logged = true
    else
      log.info("%s: still waiting for IAM to propagate dms-vpc-role (%s so far)", what, util.format_duration(elapsed))
    end
    if sys.sleep(nap) == false or sys.interrupted() then
      error(require("pgtide.errors").new { message = "interrupted", interrupted = true }, 0)
    end
    nap = math.min(nap * 2, 30)
  end
end

--[[
iam.probe(ctx, names, subnets): make the first DMS call that depends on
dms-vpc-role (CreateReplicationSubnetGroup of a throw-away group named
<prefix>-probe in 'subnets'), retried while IAM propagates, then delete
it.  Used before CloudFormation creates the DMS resources, so the stack
does not fail on a role that was made moments ago.
]]
function M.probe(ctx, names, subnets)
  local dms = awsx.client(ctx, "dms")
  local id = names.prefix .. "-probe"
  M.propagated(ctx, "probe replication subnet group " .. id, function()
    local ok, err = pcall(dms.CreateReplicationSubnetGroup, dms, {
      ReplicationSubnetGroupIdentifier = id, SubnetIds = subnets,
      ReplicationSubnetGroupDescription = "pgtide: checks that DMS can use dms-vpc-role (deleted at once)",
    })
    if not ok and awsx.code(err) ~= "ResourceAlreadyExistsFault" then error(err, 0) end
  end)
  awsx.settle(ctx, "probe replication subnet group " .. id, function()
    local ok, err = pcall(dms.DeleteReplicationSubnetGroup, dms, { ReplicationSubnetGroupIdentifier = id })
    if ok then return true end
    error(err, 0)
  end)
  log.info("DMS can use dms-vpc-role (a probe subnet group was created and deleted)")
end

return M
