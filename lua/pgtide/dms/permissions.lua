--[[
pgtide.dms.permissions: before anything is created, can the caller do
what the runbook will do?  And will the names the stack derives from its
own name be valid?

  permissions.check(ctx, actions) -> status, message, fix   (a preflight result)
  permissions.stack_names(stack, account, region, bucket_base) -> problems (texts)
  permissions.DMS_MANUAL, permissions.AURORA_CFN       the actions each runbook calls

The caller's identity comes from sts:GetCallerIdentity; an assumed role
is simulated as its role.  iam:SimulatePrincipalPolicy evaluates the
caller's identity policies for each action ("allowed", "explicitDeny",
"implicitDeny"); it does not see service control policies, permission
boundaries applied elsewhere, or resource policies, so a pass is likely,
not certain.  A caller who may not call the simulator gets a note
instead of a verdict.
]]
local awsx = require "pgtide.dms.awsx"

local M = {}

-- What both runbooks call on their own behalf.
local COMMON = {
  "sts:GetCallerIdentity",
  "iam:GetRole", "iam:CreateRole", "iam:AttachRolePolicy", "iam:PassRole",
  "dms:DescribeReplicationInstances", "dms:DescribeEndpoints", "dms:DescribeReplicationTasks",
  "dms:DescribeTableStatistics", "dms:DescribeConnections", "dms:StartReplicationTask", "dms:StopReplicationTask",
  "dms:CreateReplicationSubnetGroup", "dms:DeleteReplicationSubnetGroup", "dms:AddTagsToResource",
  "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules",
  "ec2:RevokeSecurityGroupIngress",
  "cloudwatch:ListMetrics", "cloudwatch:GetMetricData",
}

M.DMS_MANUAL = { "dms:CreateReplicationInstance", "dms:DeleteReplicationInstance",
  "dms:DescribeReplicationSubnetGroups", "dms:CreateEndpoint", "dms:ModifyEndpoint", "dms:DeleteEndpoint",
  "dms:TestConnection", "dms:CreateReplicationTask", "dms:DeleteReplicationTask",
  "ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupIngress", "ec2:CreateTags" }

-- aurora-cfn: CloudFormation creates the stack's resources with the
-- caller's permissions (no service role), so those count too.
M.AURORA_CFN = { "cloudformation:CreateStack", "cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents",
  "cloudformation:DeleteStack",
  "s3:CreateBucket", "s3:DeleteBucket", "s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:ListBucketVersions",
  "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutBucketVersioning", "s3:PutEncryptionConfiguration",
  "s3:PutBucketPublicAccessBlock", "s3:PutLifecycleConfiguration", "s3:PutBucketTagging",
  "sns:CreateTopic", "sns:DeleteTopic", "sns:Subscribe", "sns:Unsubscribe", "sns:GetTopicAttributes",
  "sns:ListSubscriptionsByTopic", "sns:TagResource",
  "states:CreateStateMachine", "states:DeleteStateMachine", "states:DescribeStateMachine", "states:StartExecution",
  "states:DescribeExecution", "states:GetExecutionHistory", "states:TagResource",
  "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:DetachRolePolicy", "iam:DeleteRole",
  "ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupEgress",
  "ec2:RevokeSecurityGroupEgress", "ec2:CreateTags",
  "dms:CreateReplicationInstance", "dms:DeleteReplicationInstance", "dms:CreateEndpoint", "dms:DeleteEndpoint",
  "dms:CreateReplicationTask", "dms:DeleteReplicationTask", "dms:TestConnection",
  "dms:StartReplicationTaskAssessmentRun", "dms:DescribeReplicationTaskAssessmentRuns" }

-- The identity SimulatePrincipalPolicy takes: a user or role ARN (an
-- assumed role's session is simulated as its role).  nil for the root.
local function principal(arn)
  local account, role = arn:match("^arn:aws[%w-]*:sts::(%d+):assumed%-role/([^/]+)/")
  if role then return string.format("arn:aws:iam::%s:role/%s", account, role) end
  if arn:match(":root$") then return nil end
  return arn
end

--[[
check(ctx, actions) -> status, message, fix.  'actions' is the runbook's
list; COMMON is added.  Raises nothing for permission problems (they are
the result); other AWS errors propagate.
]]
function M.check(ctx, actions)
  local sts = awsx.client(ctx, "sts")
  local id = awsx.unwrap(sts:GetCallerIdentity {}, "GetCallerIdentity")
  local who = principal(tostring(id.Arn))
  if not who then
    return "warn", "the AWS credentials are the account's root user: every action is allowed",
      "use an IAM user or role for the migration, not the root user"
  end
  local all, seen = {}, {}
  for _, list in ipairs({ COMMON, actions }) do
    for _, a in ipairs(list) do
      if not seen[a] then seen[a] = true; all[#all + 1] = a end
    end
  end
  local iam = awsx.client(ctx, "iam")
  local ok, results = pcall(awsx.all, iam, "SimulatePrincipalPolicy",
    { PolicySourceArn = who, ActionNames = all }, "EvaluationResults")
  if not ok then
    local code = awsx.code(results)
    if code == "AccessDenied" or code == "AccessDeniedException" or code == "NoSuchEntity" then
      return "warn", string.format("cannot check the permissions of %s: %s (%s); a missing permission will "
        .. "show as an error when the runbook calls it", who, tostring(code), tostring(results.message or "")),
        string.format("allow iam:SimulatePrincipalPolicy on %s to have them checked here", who)
    end
    error(results, 0)
  end
  local missing = {}
  for _, r in ipairs(results) do
    if r.EvalDecision ~= "allowed" then
      missing[#missing + 1] = string.format("%s (%s)", tostring(r.EvalActionName), tostring(r.EvalDecision))
    end
  end
  if #missing == 0 then
    return "pass", string.format("%s may call the %d AWS actions this runbook uses (identity policies, "
      .. "iam:SimulatePrincipalPolicy)", who, #all)
  end
  return "fail", string.format("%s may not call %d of the %d AWS actions this runbook uses: %s", who, #missing, #all,
    table.concat(missing, ", ")), string.format("allow them in a policy of %s (an explicitDeny must be removed "
    .. "where it is set)", who)
end

-- Valid S3 bucket name: 3-63 characters, lowercase letters, digits, dots
-- and hyphens, starting and ending with a letter or digit.
local function bucket_problem(name)
  if #name < 3 or #name > 63 then return string.format("%d characters (S3 allows 3 to 63)", #name) end
  if not name:match("^[a-z0-9][a-z0-9.-]*[a-z0-9]$") then
    return "S3 allows lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
  end
  if name:find("..", 1, true) then return "two adjacent dots" end
  return nil
end

--[[
stack_names(stack, account, region, bucket_base) -> list of problems:
the names pgtide's template derives from the stack name, against the
limits of the services that get them (S3 buckets 63, IAM roles 64, DMS
identifiers 63 with letters, digits and hyphens, starting with a letter,
no "--" and no trailing hyphen).
]]
function M.stack_names(stack, account, region, bucket_base)
  local out = {}
  local function check(what, name, problem)
    if problem then out[#out + 1] = string.format("%s '%s': %s", what, name, problem) end
  end
  local bucket = (bucket_base and bucket_base ~= "") and string.format("%s-%s-%s", bucket_base, region, account)
    or string.format("%s-assessments-%s", stack, account)
  check("assessment bucket", bucket, bucket_problem(bucket))
  for _, suffix in ipairs({ "-dms-assessment", "-workflow" }) do
    local role = stack .. suffix
    check("IAM role", role, #role > 64 and string.format("%d characters (IAM allows 64)", #role) or nil)
  end
  local dms_id
  if #stack > 63 then dms_id = string.format("%d characters (DMS allows 63)", #stack)
  elseif not stack:match("^[A-Za-z][A-Za-z0-9-]*$") then dms_id = "DMS allows letters, digits and hyphens, "
    .. "starting with a letter"
  elseif stack:find("--", 1, true) or stack:match("%-$") then dms_id = "DMS allows no double or trailing hyphen" end
  check("replication instance identifier (the stack name)", stack, dms_id)
  return out
end

return M
