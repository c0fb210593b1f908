--[[
pgtide.dms.cleanup: removing everything a DMS migration left behind
(the seed's Step 15 "Cleanup", plus what it forgets: the replication
slot, which keeps WAL on the source until it fills the disk, DMS's
artifacts on both databases, security group rules).

  cleanup.aws(ctx, rec)        -- task, endpoints, instance, subnet group, SG rule, SG
  cleanup.source(ctx, conn, opts)  -- slot(s), awsdms_* DDL artifacts, sentinel table
  cleanup.target(ctx, conn, opts)  -- awsdms_* control tables, sentinel table
  cleanup.remaining(ctx, rec)  -- what still exists (listed through the API)

'rec' holds what the runbook recorded: task_arn, source_endpoint_arn,
target_endpoint_arn, instance_arn, instance_id, subnet_group,
security_group_id (+ security_group_created), source_rule.  Every
action is idempotent: what is already gone is skipped, and progress is
saved after each deletion.
]]
local awsx = require "pgtide.dms.awsx"
local infra = require "pgtide.dms.infra"
local task = require "pgtide.dms.task"
local endpoints = require "pgtide.dms.endpoints"
local cutover = require "pgtide.cutover"
local log = require "log"

local M = {}

local function done(ctx, what)
  ctx.out.removed = ctx.out.removed or {}
  ctx.out.removed[what] = true
  ctx:save()
end

local function removed(ctx, what)
  return ctx.out.removed and ctx.out.removed[what]
end

local function wait_gone(ctx, what, lookup)
  awsx.wait {
    what = what .. " deleted", timeout = ctx.params.delete_timeout,
    interval = math.min(ctx.params.poll_interval, 10),
    poll = function()
      local x, status = lookup()
      if not x then return true, "deleted" end
      return false, status or "deleting"
    end,
  }
end

--[[
cleanup.aws(ctx, rec): deletes in dependency order (task, endpoints,
instance, subnet group, security group rule, security group), waiting
(bounded) where the next deletion needs the previous one to be gone.
]]
function M.aws(ctx, rec)
  local dms = awsx.client(ctx, "dms")
  if rec.task_arn and not removed(ctx, "task") then
    local t = task.get(dms, rec.task_arn)
    if t then
      task.stop(ctx, rec.task_arn)
      awsx.try(dms.DeleteReplicationTask, dms, { ReplicationTaskArn = rec.task_arn })
      wait_gone(ctx, "replication task " .. t.ReplicationTaskIdentifier, function()
        local x = task.get(dms, rec.task_arn)
        return x, x and x.Status
      end)
      log.info("deleted replication task %s", t.ReplicationTaskIdentifier)
    end
    done(ctx, "task")
  end
  for _, which in ipairs({ "source", "target" }) do
    local arn = rec[which .. "_endpoint_arn"]
    if arn and not removed(ctx, which .. "_endpoint") then
      local ep = infra.describe_one(dms, "DescribeEndpoints", "endpoint-arn", arn, "Endpoints")
      if ep then
        awsx.try(dms.DeleteEndpoint, dms, { EndpointArn = arn })
        endpoints.wait_deleted(ctx, dms, ep.EndpointIdentifier)
        log.info("deleted %s endpoint %s", which, ep.EndpointIdentifier)
      end
      done(ctx, which .. "_endpoint")
    end
  end
  if rec.instance_id and not removed(ctx, "instance") then
    local inst = infra.find_instance(dms, rec.instance_id)
    if inst then
      if inst.ReplicationInstanceStatus ~= "deleting" then
        awsx.try(dms.DeleteReplicationInstance, dms, { ReplicationInstanceArn = inst.ReplicationInstanceArn })
      end
      wait_gone(ctx, "replication instance " .. rec.instance_id, function()
        local x = infra.find_instance(dms, rec.instance_id)
        return x, x and x.ReplicationInstanceStatus
      end)
      log.info("deleted replication instance %s", rec.instance_id)
    end
    done(ctx, "instance")
  end
  if rec.subnet_group and not removed(ctx, "subnet_group") then
    -- deleted by name, not after a describe: right after its creation a
    -- describe may not show it yet (eventual consistency)
    if awsx.try(dms.DeleteReplicationSubnetGroup, dms, { ReplicationSubnetGroupIdentifier = rec.subnet_group }) then
      log.info("deleted replication subnet group %s", rec.subnet_group)
    end
    done(ctx, "subnet_group")
  end
  if rec.source_rule and not removed(ctx, "source_rule") then
    M.revoke_rules(ctx, rec.source_rule.group_id, rec.source_rule.source_group_id)
    done(ctx, "source_rule")
  end
  if rec.security_group_id and rec.security_group_created and not removed(ctx, "security_group") then
    -- the instance's network interfaces are released a little after it is
    -- gone: DependencyViolation until then
    local ec2 = awsx.client(ctx, "ec2")
    awsx.wait {
      what = "security group " .. rec.security_group_id .. " deleted", timeout = ctx.params.delete_timeout,
      interval = math.min(ctx.params.poll_interval, 10),
      poll = function()
        local ok, err = pcall(ec2.DeleteSecurityGroup, ec2, { GroupId = rec.security_group_id })
        if ok or awsx.not_found(err) then return true, "deleted" end
        if awsx.code(err) == "DependencyViolation" then return false, "in use (" .. tostring(err.message) .. ")" end
        error(err, 0)
      end,
    }
    log.info("deleted security group %s", rec.security_group_id)
    done(ctx, "security_group")
  end
end

--[[
cleanup.revoke_rules(ctx, group_id, from_group) -> number revoked.
Revokes every ingress rule of 'group_id' that admits 'from_group' (the
rules pgtide, or a migration workflow, added for the replication
instance).  A missing group is not an error.
]]
function M.revoke_rules(ctx, group_id, from_group)
  local ec2 = awsx.client(ctx, "ec2")
  local ok, rules = pcall(awsx.all, ec2, "DescribeSecurityGroupRules",
    { Filters = { { Name = "group-id", Values = { group_id } } } }, "SecurityGroupRules")
  if not ok then
    if awsx.not_found(rules) then return 0 end
    error(rules, 0)
  end
  local ids, what = {}, {}
  for _, r in ipairs(rules) do
    local ref = r.ReferencedGroupInfo
    if not r.IsEgress and ref and ref.GroupId == from_group then
      ids[#ids + 1] = r.SecurityGroupRuleId
      what[#what + 1] = string.format("%s %s-%s", tostring(r.IpProtocol), tostring(r.FromPort), tostring(r.ToPort))
    end
  end
  if #ids == 0 then return 0 end
  -- by rule id: exact, whatever description the rule was given
  awsx.try(ec2.RevokeSecurityGroupIngress, ec2, { GroupId = group_id, SecurityGroupRuleIds = ids })
  log.info("revoked the rule(s) of %s admitting %s (%s)", group_id, from_group, table.concat(what, ", "))
  return #ids
end

--[[
cleanup.revoke_workflow_rules(ctx, o) -> number revoked.  The rules a
migration workflow added to the source's security groups for DMS (its
security-group fix), wherever they are: every ingress rule in the region
that admits one of o.from_groups (the DMS security groups), or whose
description starts with one of o.descriptions (PlanetScale's Lambda
writes "DMS access for migration - Auto-added by <function>").  Found
with DescribeSecurityGroupRules over the region, revoked by rule id.
]]
function M.revoke_workflow_rules(ctx, o)
  local ec2 = awsx.client(ctx, "ec2")
  local from = {}
  for _, g in ipairs(o.from_groups or {}) do from[g] = true end
  local by_group, what = {}, {}
  for _, r in ipairs(awsx.all(ec2, "DescribeSecurityGroupRules", {}, "SecurityGroupRules")) do
    local ref = r.ReferencedGroupInfo and r.ReferencedGroupInfo.GroupId
    local hit = not r.IsEgress and ((ref and from[ref] and r.GroupId ~= ref) or false)
    for _, d in ipairs(o.descriptions or {}) do
      if not r.IsEgress and r.Description and r.Description:sub(1, #d) == d then hit = true end
    end
    if hit then
      by_group[r.GroupId] = by_group[r.GroupId] or {}
      table.insert(by_group[r.GroupId], r.SecurityGroupRuleId)
      what[#what + 1] = string.format("%s: %s %s-%s from %s (%s)", r.GroupId, tostring(r.IpProtocol),
        tostring(r.FromPort), tostring(r.ToPort), tostring(ref or r.CidrIpv4), tostring(r.Description or ""))
    end
  end
  local n = 0
  for group, ids in pairs(by_group) do
    awsx.try(ec2.RevokeSecurityGroupIngress, ec2, { GroupId = group, SecurityGroupRuleIds = ids })
    n = n + #ids
  end
  for _, w in ipairs(what) do log.info("revoked the workflow's rule %s", w) end
  return n
end

-- Drop pgtide's cutover sentinel table in 'schema' (nil: none) when it
-- exists, adding it to the list 'dropped'.  A sentinel the schema's owner
-- made (for a role without CREATE) is left to that owner, with the
-- statement to run: dropping it needs ownership pgtide never asked for.
local function drop_sentinel(conn, schema, dropped)
  if not schema then return end
  local q = cutover.sentinel_table(schema)
  local row = conn:query_one([[select pg_has_role(c.relowner, 'USAGE') as mine, pg_get_userbyid(c.relowner) as owner
                                 from pg_class c where c.oid = to_regclass($1)]], q)
  if not row then return end
  if not row.mine then
    log.warn("the cutover sentinel table %s belongs to %s, who made it for this migration: as %s, run "
      .. "DROP TABLE %s;", q, row.owner, row.owner, q)
    return
  end
  conn:exec("drop table " .. q)
  dropped[#dropped + 1] = "table " .. q
end

--[[
cleanup.source(ctx, conn, opts): on the source database, drop the
replication slot(s) named in opts.slots (terminating the session still
holding one: the task is stopped by now), DMS's DDL-capture artifacts
(event trigger awsdms_intercept_ddl, function awsdms_intercept_ddl,
table awsdms_ddl_audit: created when captureDDLs is on), its WAL
heartbeat table awsdms_heartbeat (heartbeatEnable), and the sentinel
table in opts.sentinel_schema.  Returns the list of what was dropped.
]]
function M.source(ctx, conn, opts)
  local dropped = {}
  for _, slot in ipairs(opts.slots or {}) do
    local row = conn:query_one("select active, active_pid from pg_replication_slots where slot_name = $1", slot)
    if row then
      if row.active and row.active_pid then
        log.warn("replication slot %s is still in use by pid %d: terminating that session", slot, row.active_pid)
        conn:query_one("select pg_terminate_backend($1)", row.active_pid)
        require("sys").sleep(1)
      end
      conn:query_one("select pg_drop_replication_slot($1)", slot)
      dropped[#dropped + 1] = "replication slot " .. slot
    end
  end
  if conn:query_one("select 1 as x from pg_event_trigger where evtname = 'awsdms_intercept_ddl'") then
    conn:exec("drop event trigger if exists awsdms_intercept_ddl")
    dropped[#dropped + 1] = "event trigger awsdms_intercept_ddl"
  end
  for _, r in ipairs(conn:query([[select format('%I.%I(%s)', n.nspname, p.proname,
                                         pg_get_function_identity_arguments(p.oid)) as q
                                    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                                   where p.proname like 'awsdms\_intercept\_%' or p.proname = 'awsdms_intercept_ddl']])) do
    conn:exec("drop function if exists " .. r.q)
    dropped[#dropped + 1] = "function " .. r.q
  end
  -- DDL capture's audit table, the WAL heartbeat's table (with its sequence)
  for _, r in ipairs(conn:query([[select format('%I.%I', n.nspname, c.relname) as q,
                                         pg_has_role(c.relowner, 'USAGE') as mine, pg_get_userbyid(c.relowner) as owner
                                    from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                   where c.relname in ('awsdms_ddl_audit', 'awsdms_heartbeat') and c.relkind = 'r']])) do
    if r.mine then
      conn:exec("drop table if exists " .. r.q)
      dropped[#dropped + 1] = "table " .. r.q
    else
      log.warn("DMS's table %s belongs to %s: as %s, run DROP TABLE %s;", r.q, r.owner, r.owner, r.q)
    end
  end
  drop_sentinel(conn, opts.sentinel_schema, dropped)
  for _, d in ipairs(dropped) do log.info("source: dropped %s", d) end
  return dropped
end

--[[
cleanup.target(ctx, conn, opts): on the target, drop the tables DMS
creates there (awsdms_control.awsdms_validation_failures_v1 and any
other awsdms_* table, dmslogs.awsdms_apply_exceptions), the schemas
awsdms_control / dmslogs when that leaves them empty, and the sentinel
table.  Returns the list of what was dropped.
]]
function M.target(ctx, conn, opts)
  local dropped = {}
  for _, r in ipairs(conn:query([[select format('%I.%I', n.nspname, c.relname) as q
                                    from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                   where c.relname like 'awsdms\_%' and c.relkind in ('r', 'p')
                                   order by 1]])) do
    conn:exec("drop table if exists " .. r.q .. " cascade")
    dropped[#dropped + 1] = "table " .. r.q
  end
  for _, s in ipairs({ "awsdms_control", "dmslogs" }) do
    local row = conn:query_one([[select (select count(*) from pg_class c where c.relnamespace = n.oid) as n
                                   from pg_namespace n where n.nspname = $1]], s)
    if row and row.n == 0 then
      conn:exec("drop schema " .. s)
      dropped[#dropped + 1] = "schema " .. s
    end
  end
  drop_sentinel(conn, opts.sentinel_schema, dropped)
  for _, d in ipairs(dropped) do log.info("target: dropped %s", d) end
  return dropped
end

--[[
cleanup.remaining(ctx, rec) -> list of descriptions of resources that
still exist, looked up through the API by the identifiers recorded.
]]
function M.remaining(ctx, rec)
  local dms = awsx.client(ctx, "dms")
  local left = {}
  if rec.task_arn and task.get(dms, rec.task_arn) then left[#left + 1] = "task " .. rec.task_arn end
  for _, which in ipairs({ "source", "target" }) do
    local arn = rec[which .. "_endpoint_arn"]
    if arn and infra.describe_one(dms, "DescribeEndpoints", "endpoint-arn", arn, "Endpoints") then
      left[#left + 1] = which .. " endpoint " .. arn
    end
  end
  if rec.instance_id and infra.find_instance(dms, rec.instance_id) then left[#left + 1] = "instance " .. rec.instance_id end
  if rec.subnet_group and infra.find_subnet_group(dms, rec.subnet_group) then
    left[#left + 1] = "subnet group " .. rec.subnet_group
  end
  if rec.security_group_id and rec.security_group_created then
    local ec2 = awsx.client(ctx, "ec2")
    local res = awsx.try(ec2.DescribeSecurityGroups, ec2, { GroupIds = { rec.security_group_id } })
    res = res and awsx.unwrap(res, "DescribeSecurityGroups")
    if res and res.SecurityGroups and res.SecurityGroups[1] then left[#left + 1] = "security group " .. rec.security_group_id end
  end
  return left
end

return M
