--[[
pgtide.dms.stack: the CloudFormation side of the aurora-cfn runbook.

  stack.describe(ctx, name_or_id)      -> stack or nil
  stack.template(ctx)                  -> body text, origin ("pgtide" | path)
  stack.patch_runtimes(text)           -> text, n: Lambda Python runtimes AWS no longer accepts replaced
  stack.create(ctx, name, body, params, tags) -> stack id (TemplateBody, or TemplateURL via S3
                                          when the body is over CloudFormation's 51,200 bytes)
  stack.wait(ctx, id, want, opts)      -> stack; streams the stack's events while waiting
  stack.explain(events)                -> text: the failed resources and their reasons
  stack.outputs(s)                     -> { key = value }
  stack.delete(ctx, id)                -> waits for DELETE_COMPLETE (bounded)

Stack events are listed newest first by the API; they are logged oldest
first, each once.
]]
local awsx = require "pgtide.dms.awsx"
local log = require "log"
local sys = require "sys"
local util = require "pgtide.util"
local runbook = require "pgtide.runbook"

local M = {}

M.MAX_BODY = 51200

function M.describe(ctx, name)
  local cfn = awsx.client(ctx, "cloudformation")
  local res = awsx.try(cfn.DescribeStacks, cfn, { StackName = name })
  res = res and awsx.unwrap(res, "DescribeStacks")
  return res and (res.Stacks or {})[1]
end

function M.outputs(s)
  local out = {}
  for _, o in ipairs(s and s.Outputs or {}) do out[o.OutputKey] = o.OutputValue end
  return out
end

--[[
stack.template(ctx) -> text, origin.  pgtide's own template (embedded in
the binary, runbooks/templates/aurora-dms.yaml), or the file given with
template_file (PlanetScale's aurora-to-ps-dms.yaml when template =
planetscale).
]]
function M.template(ctx)
  local p = ctx.params
  if p.template_file and p.template_file ~= "" then
    local text, err = sys.readfile(p.template_file)
    runbook.require(text, "cannot read template_file %s: %s", p.template_file, tostring(err))
    local patched, n = M.patch_runtimes(text)
    if n > 0 then
      log.warn("%s: %d Lambda function(s) use a Python runtime AWS Lambda no longer accepts for new functions "
        .. "(python3.9 and older: creation disabled since 2026-06-01, cfn-lint E2533); deploying them with %s "
        .. "instead (their code, boto3 calls, runs unchanged)", p.template_file, n, M.LAMBDA_RUNTIME)
    end
    return patched, p.template_file
  end
  runbook.require(p.template ~= "planetscale", "template=planetscale needs template_file=PATH: download "
    .. "aurora-to-ps-dms.yaml from github.com/planetscale/migration-scripts (postgres-planetscale/) first")
  local text = sys.resource("runbooks/templates/aurora-dms.yaml")
  runbook.require(text, "the embedded template runbooks/templates/aurora-dms.yaml is missing from this build")
  return text, "pgtide"
end

M.LAMBDA_RUNTIME = "python3.13"

--[[
stack.patch_runtimes(text) -> text, n.  Every "Runtime: python3.N" with
N < 10 (YAML or JSON) becomes M.LAMBDA_RUNTIME: PlanetScale's template
(template=planetscale) uses python3.9, whose Lambda functions AWS no
longer creates.  n: how many were replaced.
]]
function M.patch_runtimes(text)
  local n = 0
  local out = text:gsub('(["\']?Runtime["\']?%s*:%s*["\']?)python3%.(%d+)(["\']?)', function(pre, minor, post)
    if tonumber(minor) < 10 then
      n = n + 1
      return pre .. M.LAMBDA_RUNTIME .. post
    end
  end)
  return out, n
end

-- Upload a template to S3 (a bucket pgtide creates and records) -> URL.
local function upload(ctx, name, body)
  local s3 = awsx.client(ctx, "s3")
  local sts = awsx.client(ctx, "sts")
  local account = awsx.unwrap(sts:GetCallerIdentity {}, "GetCallerIdentity").Account
  local bucket = ctx.params.template_bucket ~= "" and ctx.params.template_bucket
    or (name .. "-templates-" .. tostring(account)):lower():sub(1, 63)
  if not ctx.out.template_bucket then
    local region = awsx.options(ctx).region
    local input = { Bucket = bucket }
    if region and region ~= "" and region ~= "us-east-1" then
      input.CreateBucketConfiguration = { LocationConstraint = region }
    end
    local ok, err = pcall(s3.CreateBucket, s3, input)
    if not ok and awsx.code(err) ~= "BucketAlreadyOwnedByYou" then error(err, 0) end
    ctx.out.template_bucket = bucket
    ctx.out.template_bucket_created = ctx.params.template_bucket == ""
    ctx:save()
  end
  local key = name .. "/template-" .. os.time() .. ".yaml"
  s3:PutObject { Bucket = bucket, Key = key, Body = body, ContentType = "text/yaml" }
  -- CloudFormation reads the template from S3 itself: an S3 URL, whatever
  -- endpoint pgtide talks to
  local region = awsx.options(ctx).region
  local url = (region and region ~= "" and region ~= "us-east-1")
    and string.format("https://%s.s3.%s.amazonaws.com/%s", bucket, region, key)
    or string.format("https://%s.s3.amazonaws.com/%s", bucket, key)
  log.info("template is %d bytes (over CloudFormation's %d for TemplateBody): uploaded to s3://%s/%s",
    #body, M.MAX_BODY, bucket, key)
  return url
end

--[[
stack.create(ctx, name, body, params, tags) -> stack id.  params: a Lua
table name -> value (values as strings); NoEcho values are registered
as secrets by the caller.  CAPABILITY_NAMED_IAM because the template
names its roles.
]]
function M.create(ctx, name, body, params, tags)
  local cfn = awsx.client(ctx, "cloudformation")
  local plist = {}
  for _, k in ipairs(util.sorted_keys(params)) do
    plist[#plist + 1] = { ParameterKey = k, ParameterValue = tostring(params[k]) }
  end
  local input = { StackName = name, Parameters = plist, Capabilities = { "CAPABILITY_NAMED_IAM" },
                  Tags = tags, OnFailure = "ROLLBACK" }
  if #body > M.MAX_BODY then
    input.TemplateURL = upload(ctx, name, body)
  else
    input.TemplateBody = body
  end
  local res = awsx.unwrap(cfn:CreateStack(input), "CreateStack")
  log.info("creating stack %s (%s)", name, res.StackId)
  return res.StackId
end

local function event_line(e)
  local ts = tonumber(e.Timestamp) and os.date("!%H:%M:%S", math.floor(tonumber(e.Timestamp)))
    or tostring(e.Timestamp or ""):sub(12, 19)
  return string.format("%s %-28s %-40s %s%s", ts, tostring(e.ResourceStatus),
    tostring(e.LogicalResourceId) .. " (" .. tostring(e.ResourceType) .. ")",
    e.PhysicalResourceId and e.PhysicalResourceId ~= "" and ("[" .. e.PhysicalResourceId .. "] ") or "",
    e.ResourceStatusReason and e.ResourceStatusReason ~= "" and e.ResourceStatusReason or "")
end

-- Every event of the stack, oldest first.
function M.events(ctx, id)
  local cfn = awsx.client(ctx, "cloudformation")
  local ok, list = pcall(awsx.all, cfn, "DescribeStackEvents", { StackName = id }, "StackEvents")
  if not ok then return {} end
  local out = {}
  for i = #list, 1, -1 do out[#out + 1] = list[i] end
  return out
end

-- Hints for failure reasons seen often.
local hints = {
  { "dms%-vpc%-role", "DMS needs the IAM role dms-vpc-role, and a role made moments ago is not usable yet: rerun; "
      .. "pgtide then creates the missing roles itself and waits until DMS can use them" },
  { "already exists", "a resource with that name exists outside this stack (another stack or a manual "
      .. "creation): delete it or choose another stack name" },
  { "not authorized", "the AWS user lacks a permission: CloudFormation, DMS, IAM, EC2, S3, SNS and Step Functions are needed" },
  { "[Ss]ubnet", "the subnets must be in 2+ availability zones of the VPC" },
  { "InsufficientCapabilities", "the stack needs CAPABILITY_NAMED_IAM" },
}

--[[
stack.explain(events) -> text naming each resource that failed and why
(from *_FAILED events), with a hint when the reason is a known one.
]]
function M.explain(events)
  local parts = {}
  for _, e in ipairs(events) do
    local st = tostring(e.ResourceStatus)
    if st:match("FAILED$") and e.ResourceType ~= "AWS::CloudFormation::Stack" then
      local text = string.format("%s (%s) %s: %s", tostring(e.LogicalResourceId), tostring(e.ResourceType), st,
        tostring(e.ResourceStatusReason or "no reason given"))
      for _, h in ipairs(hints) do
        if text:find(h[1]) then text = text .. " (" .. h[2] .. ")"; break end
      end
      parts[#parts + 1] = text
    end
  end
  if #parts == 0 then
    for _, e in ipairs(events) do
      if tostring(e.ResourceStatus):match("FAILED") and e.ResourceStatusReason then
        parts[#parts + 1] = tostring(e.ResourceStatusReason)
      end
    end
  end
  return #parts > 0 and table.concat(parts, "; ") or "no failure reason in the stack events"
end

--[[
stack.wait(ctx, id, want, opts) -> stack.  'want' is the status to reach
(CREATE_COMPLETE or DELETE_COMPLETE); any other terminal status fails
with stack.explain of the events.  New events are logged as they
appear.  Bounded by opts.timeout.  opts.created (os.time() of the
CreateStack, or nil): until then a missing stack is "not visible yet".
]]
function M.wait(ctx, id, want, opts)
  local seen = {}
  local s, visible
  local function stream()
    for _, e in ipairs(M.events(ctx, id)) do
      if not seen[e.EventId] then
        seen[e.EventId] = true
        log.info("stack event: %s", event_line(e))
      end
    end
  end
  awsx.wait {
    what = "stack " .. tostring(opts.name or id) .. " " .. want, timeout = opts.timeout,
    interval = math.min(ctx.params.poll_interval, 10),
    poll = function()
      s = M.describe(ctx, id)
      stream()
      if not s then
        if want == "DELETE_COMPLETE" then return true, "DELETE_COMPLETE" end
        -- just created: DescribeStacks may not know it yet
        if not visible and awsx.young(ctx, opts.created) then return false, "not visible yet" end
        return false, "not found", "the stack does not exist"
      end
      visible = true
      local st = s.StackStatus
      if st == want then return true, st end
      if st:match("_COMPLETE$") or st:match("_FAILED$") then   -- terminal, and not what we want
        return false, st, string.format("the stack ended in %s%s: %s", st,
          s.StackStatusReason and (" (" .. s.StackStatusReason .. ")") or "", M.explain(M.events(ctx, id)))
      end
      return false, st
    end,
  }
  return s
end

--[[
stack.delete(ctx, id, opts): DeleteStack, then wait (bounded) for
DELETE_COMPLETE, explaining a DELETE_FAILED from the events.
]]
function M.delete(ctx, id, opts)
  local s = M.describe(ctx, id)
  if not s or s.StackStatus == "DELETE_COMPLETE" then return end
  local cfn = awsx.client(ctx, "cloudformation")
  if s.StackStatus ~= "DELETE_IN_PROGRESS" then cfn:DeleteStack { StackName = id } end
  M.wait(ctx, id, "DELETE_COMPLETE", opts)
end

return M
