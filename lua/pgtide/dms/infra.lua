--[[
pgtide.dms.infra: the DMS replication infrastructure ("Set Up AWS DMS").

  infra.find_instance(dms, id)        -> instance or nil
  infra.ensure(ctx, names, opts)      -> { instance_arn, subnet_group, security_group_id, ... }
  infra.wait_available(ctx, dms, id, timeout)
  infra.describe_failure(instance)    -> text

Every resource is looked up by its (per-migration) name before it is
created, and its identifier/ARN is written to ctx.out and saved the
moment it exists, so a rerun reuses it and cleanup finds it.
]]
local awsx = require "pgtide.dms.awsx"
local iam = require "pgtide.dms.iam"
local naming = require "pgtide.dms.naming"
local log = require "log"
local runbook = require "pgtide.runbook"

local M = {}

-- DMS Describe* calls raise ResourceNotFoundFault when nothing matches
-- (moto returns an empty list instead): both mean "none".
local function describe_one(client, op, filter_name, value, list_key)
  local res = awsx.try(client[op], client, { Filters = { { Name = filter_name, Values = { value } } } })
  local list = res and res[list_key] or {}
  return list[1]
end
M.describe_one = describe_one

function M.find_instance(dms, id)
  return describe_one(dms, "DescribeReplicationInstances", "replication-instance-id", id,
    "ReplicationInstances")
end

function M.find_subnet_group(dms, id)
  return describe_one(dms, "DescribeReplicationSubnetGroups", "replication-subnet-group-id", id,
    "ReplicationSubnetGroups")
end

local instance_failed = {
  ["incompatible-credentials"] = "the instance cannot use its credentials (check the dms-vpc-role IAM role)",
  ["incompatible-network"] = "the instance cannot be placed in its network (check the subnets, their route "
    .. "tables and the security groups)",
  ["inaccessible-encryption-credentials"] = "the KMS key of the instance is not accessible",
  ["failed"] = "DMS could not create the instance",
  ["storage-full"] = "the instance's storage is full",
  ["deleting"] = "the instance is being deleted",
  ["deleted"] = "the instance was deleted",
}

function M.describe_failure(status)
  return instance_failed[status]
end

--[[
infra.wait_available(ctx, dms, id, timeout [, created]) -> instance.
Bounded; a failure status ends the wait at once with what it means.
'created' (os.time() of the create, nil when it was found): until
it has been seen, a not-found answer means "not visible yet".
]]
function M.wait_available(ctx, dms, id, timeout, created)
  local inst, seen
  awsx.wait {
    what = "replication instance " .. id,
    timeout = timeout, interval = ctx.params.poll_interval,
    poll = function()
      inst = M.find_instance(dms, id)
      if not inst and not seen and awsx.young(ctx, created) then return false, "not visible yet" end
      if not inst then return false, "not found", "the replication instance disappeared" end
      seen = true
      local st = inst.ReplicationInstanceStatus
      if st == "available" then return true, st end
      local why = instance_failed[st]
      if why then return false, st, st .. ": " .. why end
      return false, st
    end,
  }
  return inst
end

-- The VPC of a subnet (for the security group), via EC2.
local function vpc_of_subnet(ctx, subnet)
  local ec2 = awsx.client(ctx, "ec2")
  local res = awsx.unwrap(ec2:DescribeSubnets { SubnetIds = { subnet } }, "DescribeSubnets")
  local s = (res.Subnets or {})[1]
  runbook.require(s and s.VpcId, "subnet %s not found (check subnet_ids and the region)", subnet)
  return s.VpcId
end

--[[
Create (or find) the security group of the replication instance: egress
to anywhere (the seed's "Internet for PlanetScale connectivity"), no
ingress.  Recorded in ctx.out.security_group_id; cleanup deletes it.
]]
local function ensure_security_group(ctx, names, vpc_id)
  local ec2 = awsx.client(ctx, "ec2")
  if ctx.out.security_group_id then
    local r = awsx.try(ec2.DescribeSecurityGroups, ec2, { GroupIds = { ctx.out.security_group_id } })
    r = r and awsx.unwrap(r, "DescribeSecurityGroups")
    if r and r.SecurityGroups and r.SecurityGroups[1] then return ctx.out.security_group_id end
  end
  local found = awsx.unwrap(ec2:DescribeSecurityGroups {
    Filters = { { Name = "group-name", Values = { names.security_group } },
                { Name = "vpc-id", Values = { vpc_id } } } }, "DescribeSecurityGroups")
  local sg = (found.SecurityGroups or {})[1]
  if sg then
    ctx.out.security_group_id = sg.GroupId
  else
    local created = awsx.unwrap(ec2:CreateSecurityGroup {
      GroupName = names.security_group, VpcId = vpc_id,
      Description = "pgtide DMS replication instance for migration " .. names.migration,
      TagSpecifications = { { ResourceType = "security-group", Tags = naming.tags(names) } },
    }, "CreateSecurityGroup")
    ctx.out.security_group_id = created.GroupId
    ctx.out.security_group_created = true
    log.info("created security group %s (%s)", names.security_group, created.GroupId)
  end
  ctx:save()
  return ctx.out.security_group_id
end

--[[
Allow the replication instance into the source database's security
group (the seed's "Ensure your replication instance can connect to:
Source PostgreSQL database (port 5432)").  The rule is recorded so
cleanup revokes exactly it.
]]
local function authorize_source(ctx, sg_id, source_sg, port)
  local ec2 = awsx.client(ctx, "ec2")
  local desc = "pgtide DMS access for " .. ctx.name
  -- the instance's security group may be minutes old: InvalidGroup.NotFound
  -- then means "not visible yet"
  local ok, err = pcall(awsx.settle, ctx, "security group " .. sg_id, ec2.AuthorizeSecurityGroupIngress, ec2, {
    GroupId = source_sg,
    IpPermissions = { { IpProtocol = "tcp", FromPort = port, ToPort = port,
                        UserIdGroupPairs = { { GroupId = sg_id, Description = desc } } } },
  })
  if not ok and awsx.code(err) ~= "InvalidPermission.Duplicate" then error(err, 0) end
  ctx.out.source_rule = { group_id = source_sg, source_group_id = sg_id, port = port }
  ctx:save()
  log.info("security group %s allows %s on port %d%s", source_sg, sg_id, port,
    ok and "" or " (rule already there)")
end

--[[
infra.ensure(ctx, names, opts) creates what is missing, in order:
subnet group (when subnet_ids are given), security group (with subnets
and no vpc_security_group_ids), the source ingress rule (when
source_security_group_id is given), the replication instance; then
waits until the instance is available.  opts.source_port: the source
database port for the ingress rule.
]]
function M.ensure(ctx, names, opts)
  local p = ctx.params
  local dms = awsx.client(ctx, "dms")
  local subnets = p.subnet_ids or {}
  local sg_ids = {}
  for _, g in ipairs(p.vpc_security_group_ids or {}) do sg_ids[#sg_ids + 1] = g end

  if #subnets > 0 then
    if not M.find_subnet_group(dms, names.subnet_group) then
      -- the first DMS call that needs dms-vpc-role: retried while IAM propagates
      iam.propagated(ctx, "replication subnet group " .. names.subnet_group, function()
        local ok, err = pcall(dms.CreateReplicationSubnetGroup, dms, {
          ReplicationSubnetGroupIdentifier = names.subnet_group,
          ReplicationSubnetGroupDescription = "pgtide migration " .. names.migration,
          SubnetIds = subnets, Tags = naming.tags(names),
        })
        if not ok and awsx.code(err) ~= "ResourceAlreadyExistsFault" then error(err, 0) end
      end)
      log.info("created replication subnet group %s", names.subnet_group)
    end
    ctx.out.subnet_group = names.subnet_group
    ctx:save()
    if #sg_ids == 0 then
      sg_ids[1] = ensure_security_group(ctx, names, vpc_of_subnet(ctx, subnets[1]))
    end
  end
  if p.source_security_group_id and p.source_security_group_id ~= "" then
    runbook.require(#sg_ids > 0, "source_security_group_id needs the instance's security group: give "
      .. "subnet_ids (pgtide creates one) or vpc_security_group_ids")
    if not ctx.out.source_rule then authorize_source(ctx, sg_ids[1], p.source_security_group_id, opts.source_port) end
  end

  local inst = M.find_instance(dms, names.instance)
  local created
  if not inst then
    local input = {
      ReplicationInstanceIdentifier = names.instance,
      ReplicationInstanceClass = p.instance_class,
      AllocatedStorage = p.allocated_storage,
      MultiAZ = p.multi_az,
      PubliclyAccessible = p.publicly_accessible,
      Tags = naming.tags(names),
    }
    if p.engine_version and p.engine_version ~= "" then input.EngineVersion = p.engine_version end
    if ctx.out.subnet_group then input.ReplicationSubnetGroupIdentifier = ctx.out.subnet_group end
    if #sg_ids > 0 then input.VpcSecurityGroupIds = sg_ids end
    -- without a subnet group DMS makes a default one with dms-vpc-role:
    -- retried while IAM propagates
    local res = iam.propagated(ctx, "replication instance " .. names.instance, function()
      local ok, r = pcall(dms.CreateReplicationInstance, dms, input)
      if ok then return r end
      if awsx.code(r) == "ResourceAlreadyExistsFault" then return false end
      error(r, 0)
    end)
    inst = res and res.ReplicationInstance
      or awsx.settle(ctx, "replication instance " .. names.instance, M.find_instance, dms, names.instance)
    runbook.require(inst, "the replication instance %s was not created", names.instance)
    created = os.time()
    log.info("creating replication instance %s (%s, Multi-AZ %s, publicly accessible %s)",
      names.instance, p.instance_class, tostring(p.multi_az), tostring(p.publicly_accessible))
  end
  ctx.out.instance_id = names.instance
  ctx.out.instance_arn = inst.ReplicationInstanceArn
  ctx:save()
  inst = M.wait_available(ctx, dms, names.instance, p.instance_timeout, created)
  ctx.out.instance_class = inst.ReplicationInstanceClass
  ctx.out.engine_version = inst.EngineVersion
  ctx.out.public_ip = inst.ReplicationInstancePublicIpAddress
  ctx.out.private_ip = inst.ReplicationInstancePrivateIpAddress
  return ctx.out
end

return M
