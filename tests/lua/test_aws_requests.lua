-- test_aws_requests.lua: every request the aws module builds is checked
-- against botocore (tests/lib/aws_request_check.py):
--   * the operations the runbooks use, with realistic parameters: botocore's
--     ParamValidator must accept the parameters (required members, types)
--     and botocore's serializer must produce the same request;
--   * every operation of every model, with every member filled in (nested
--     structures, lists, maps, timestamps, blobs, headers, URI and query
--     members): the same serialisation as botocore.
-- Also: client-side validation, endpoints and S3 addressing.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local aws = require "aws"
local json = require "json"
local sys = require "sys"

for _, k in ipairs { "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION" } do
  sys.setenv(k, nil)
end
sys.setenv("AWS_CONFIG_FILE", "/dev/null")
sys.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")

local creds = { access_key_id = "AKIDEXAMPLE", secret_access_key = "not-a-real-secret" }
local clients = {}
local function client(service)
  if not clients[service] then
    clients[service] = aws.client(service, { region = "eu-west-1", credentials = creds,
                                             endpoint_url = "http://127.0.0.1:9" })
  end
  return clients[service]
end

local trust = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":' ..
              '{"Service":"dms.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
local mappings = '{"rules":[{"rule-type":"selection","rule-id":"1","rule-name":"1",' ..
                 '"object-locator":{"schema-name":"public","table-name":"%"},' ..
                 '"rule-action":"include"}]}'
local arn = "arn:aws:dms:eu-west-1:123456789012:"

-- The operations the runbooks use, as they use them.
local samples = {
  { "dms", "CreateReplicationSubnetGroup", { ReplicationSubnetGroupIdentifier = "pgtide-subnets",
    ReplicationSubnetGroupDescription = "pgtide migration", SubnetIds = { "subnet-1", "subnet-2" },
    Tags = { { Key = "app", Value = "pgtide" } } } },
  { "dms", "CreateReplicationInstance", { ReplicationInstanceIdentifier = "pgtide-ri",
    ReplicationInstanceClass = "dms.t3.medium", AllocatedStorage = 100,
    VpcSecurityGroupIds = { "sg-1" }, ReplicationSubnetGroupIdentifier = "pgtide-subnets",
    MultiAZ = false, PubliclyAccessible = false, EngineVersion = "3.5.3" } },
  { "dms", "DescribeReplicationInstances", { Filters = { { Name = "replication-instance-id",
    Values = { "pgtide-ri" } } }, MaxRecords = 20, Marker = "m1" } },
  { "dms", "CreateEndpoint", { EndpointIdentifier = "pgtide-src", EndpointType = "source",
    EngineName = "postgres", Username = "dms", Password = "pw", ServerName = "db.example.com",
    Port = 5432, DatabaseName = "app", SslMode = "verify-full",
    ExtraConnectionAttributes = "heartbeatEnable=true;heartbeatFrequency=1",
    PostgreSQLSettings = { HeartbeatEnable = true, HeartbeatFrequency = 1,
      CaptureDdls = false, PluginName = "pglogical", SlotName = "pgtide_slot",
      MapBooleanAsBoolean = true, ExecuteTimeout = 600 } } },
  { "dms", "DescribeEndpoints", { Filters = { { Name = "endpoint-id", Values = { "a", "b" } } } } },
  { "dms", "TestConnection", { ReplicationInstanceArn = arn .. "rep:RI", EndpointArn = arn .. "endpoint:E" } },
  { "dms", "DescribeConnections", { Filters = { { Name = "endpoint-arn", Values = { arn .. "endpoint:E" } } } } },
  { "dms", "CreateReplicationTask", { ReplicationTaskIdentifier = "pgtide-task",
    SourceEndpointArn = arn .. "endpoint:S", TargetEndpointArn = arn .. "endpoint:T",
    ReplicationInstanceArn = arn .. "rep:RI", MigrationType = "full-load-and-cdc",
    TableMappings = mappings, ReplicationTaskSettings = '{"Logging":{"EnableLogging":true}}',
    ResourceIdentifier = "pgtidetask1", CdcStartPosition = "0/16B3748" } },
  { "dms", "StartReplicationTask", { ReplicationTaskArn = arn .. "task:T",
    StartReplicationTaskType = "start-replication", CdcStartTime = 1767225600 } },
  { "dms", "StopReplicationTask", { ReplicationTaskArn = arn .. "task:T" } },
  { "dms", "DescribeReplicationTasks", { Filters = { { Name = "replication-task-arn",
    Values = { arn .. "task:T" } } }, WithoutSettings = true } },
  { "dms", "DescribeTableStatistics", { ReplicationTaskArn = arn .. "task:T", MaxRecords = 500,
    Filters = { { Name = "table-state", Values = { "Table error" } } } } },
  { "dms", "StartReplicationTaskAssessmentRun", { ReplicationTaskArn = arn .. "task:T",
    ServiceAccessRoleArn = "arn:aws:iam::123456789012:role/dms-assess",
    ResultLocationBucket = "pgtide-results", AssessmentRunName = "premigration" } },
  { "dms", "DescribeReplicationTaskAssessmentRuns", { Filters = { { Name = "replication-task-arn",
    Values = { arn .. "task:T" } } } } },
  { "dms", "ReloadTables", { ReplicationTaskArn = arn .. "task:T", ReloadOption = "data-reload",
    TablesToReload = { { SchemaName = "public", TableName = "orders" } } } },
  { "dms", "DeleteReplicationTask", { ReplicationTaskArn = arn .. "task:T" } },
  { "dms", "DeleteEndpoint", { EndpointArn = arn .. "endpoint:S" } },
  { "dms", "DeleteReplicationInstance", { ReplicationInstanceArn = arn .. "rep:RI" } },
  { "dms", "DeleteReplicationSubnetGroup", { ReplicationSubnetGroupIdentifier = "pgtide-subnets" } },
  { "cloudformation", "CreateStack", { StackName = "pgtide-dms", TemplateBody = '{"Resources":{}}',
    Parameters = { { ParameterKey = "SourceHost", ParameterValue = "db one.example.com" },
                   { ParameterKey = "Port", ParameterValue = "5432" } },
    Capabilities = { "CAPABILITY_IAM", "CAPABILITY_NAMED_IAM" }, OnFailure = "DELETE",
    TimeoutInMinutes = 60, Tags = { { Key = "app", Value = "pgtide" } },
    NotificationARNs = { "arn:aws:sns:eu-west-1:123456789012:pgtide" },
    ClientRequestToken = "token-1" } },
  { "cloudformation", "DescribeStacks", { StackName = "pgtide-dms", NextToken = "n" } },
  { "cloudformation", "DescribeStackEvents", { StackName = "pgtide-dms" } },
  { "cloudformation", "DeleteStack", { StackName = "pgtide-dms", RetainResources = { "Bucket" } } },
  { "cloudformation", "UpdateStack", { StackName = "pgtide-dms", UsePreviousTemplate = true,
    Parameters = { { ParameterKey = "A", UsePreviousValue = true } }, Capabilities = json.array {} } },
  { "sns", "CreateTopic", { Name = "pgtide-events", Attributes = { DisplayName = "pgtide" } } },
  { "sns", "Subscribe", { TopicArn = "arn:aws:sns:eu-west-1:123456789012:pgtide",
    Protocol = "email", Endpoint = "ops@example.com", ReturnSubscriptionArn = true,
    Attributes = { FilterPolicy = '{"event":["cutover"]}', RawMessageDelivery = "true" } } },
  { "sns", "ListSubscriptionsByTopic", { TopicArn = "arn:aws:sns:eu-west-1:123456789012:pgtide" } },
  { "sns", "Publish", { TopicArn = "arn:aws:sns:eu-west-1:123456789012:pgtide",
    Subject = "pgtide: cutover done", Message = "all tables + sequences in sync",
    MessageAttributes = { event = { DataType = "String", StringValue = "cutover" },
                          n = { DataType = "Number", StringValue = "3" } } } },
  { "stepfunctions", "StartExecution", { stateMachineArn =
    "arn:aws:states:eu-west-1:123456789012:stateMachine:pgtide", name = "run-1",
    input = '{"migration":"demo"}' } },
  { "stepfunctions", "DescribeExecution", { executionArn =
    "arn:aws:states:eu-west-1:123456789012:execution:pgtide:run-1" } },
  { "stepfunctions", "GetExecutionHistory", { executionArn =
    "arn:aws:states:eu-west-1:123456789012:execution:pgtide:run-1", maxResults = 100,
    reverseOrder = true, includeExecutionData = false } },
  { "stepfunctions", "StopExecution", { executionArn =
    "arn:aws:states:eu-west-1:123456789012:execution:pgtide:run-1", error = "Aborted",
    cause = "user request" } },
  { "s3", "ListObjectVersions", { Bucket = "pgtide-templates", MaxKeys = 1000,
    KeyMarker = "dir/obj a.txt", VersionIdMarker = "v1", Prefix = "dir/" } },
  { "s3", "DeleteObjects", { Bucket = "pgtide-templates", Delete = { Quiet = true, Objects = {
    { Key = "a <b> & c.txt", VersionId = "v1" }, { Key = "café/ሴ", VersionId = "null" } } } } },
  { "s3", "DeleteBucket", { Bucket = "pgtide-templates" } },
  { "s3", "PutObject", { Bucket = "pgtide-templates", Key = "stack/template v1.json",
    Body = '{"Resources":{}}', ContentType = "application/json",
    Metadata = { owner = "pgtide" } } },
  { "s3", "CreateBucket", { Bucket = "pgtide-templates", CreateBucketConfiguration = {
    LocationConstraint = "eu-west-1" } } },
  { "s3", "PutBucketVersioning", { Bucket = "pgtide-templates",
    VersioningConfiguration = { Status = "Enabled" } } },
  { "ec2", "AuthorizeSecurityGroupIngress", { GroupId = "sg-1", IpPermissions = {
    { IpProtocol = "tcp", FromPort = 5432, ToPort = 5432,
      IpRanges = { { CidrIp = "10.0.0.0/16", Description = "DMS subnet" } },
      UserIdGroupPairs = { { GroupId = "sg-2", Description = "dms instance" } } } } } },
  { "ec2", "RevokeSecurityGroupIngress", { GroupId = "sg-1", SecurityGroupRuleIds = { "sgr-1" } } },
  { "ec2", "DescribeSecurityGroups", { GroupIds = { "sg-1", "sg-2" }, Filters = {
    { Name = "vpc-id", Values = { "vpc-1" } } }, MaxResults = 100 } },
  { "ec2", "DescribeSecurityGroupRules", { Filters = { { Name = "group-id", Values = { "sg-1" } } } } },
  { "iam", "GetRole", { RoleName = "dms-vpc-role" } },
  { "iam", "CreateRole", { RoleName = "dms-vpc-role", AssumeRolePolicyDocument = trust,
    Description = "DMS VPC management", MaxSessionDuration = 3600,
    Tags = { { Key = "app", Value = "pgtide" } } } },
  { "iam", "AttachRolePolicy", { RoleName = "dms-vpc-role",
    PolicyArn = "arn:aws:iam::aws:policy/service-role/AmazonDMSVPCManagementRole" } },
  { "sts", "GetCallerIdentity", {} },
  { "sts", "AssumeRole", { RoleArn = "arn:aws:iam::123456789012:role/x", RoleSessionName = "pgtide-session",
    DurationSeconds = 3600, ExternalId = "ext" } },
  { "cloudwatch", "GetMetricData", { MetricDataQueries = { { Id = "lat", MetricStat = {
    Metric = { Namespace = "AWS/DMS", MetricName = "CDCLatencyTarget", Dimensions = {
      { Name = "ReplicationInstanceIdentifier", Value = "pgtide-ri" },
      { Name = "ReplicationTaskIdentifier", Value = "TASKID" } } },
    Period = 60, Stat = "Maximum" } } }, StartTime = 1767225000, EndTime = 1767225600,
    ScanBy = "TimestampDescending" } },
}

-- Parameters with every member of 'shape' filled in (depth-limited).
local function sample(model, ref, depth, name)
  local shape = model.shapes[ref.shape]
  local t = shape.type
  if shape.document then return { a = 1 } end
  if t == "structure" then
    if depth > 5 then return nil end
    local out = {}
    for m, r in pairs(shape.members) do
      local s = model.shapes[r.shape]
      if not (s.streaming or s.union) then out[m] = sample(model, r, depth + 1, m) end
    end
    return out
  elseif t == "list" then
    local v = sample(model, shape.member, depth + 1, name)
    return v ~= nil and { v, v } or json.array {}
  elseif t == "map" then
    local v = sample(model, shape.value, depth + 1, name)
    return v ~= nil and { k1 = v, ["k 2"] = v } or {}
  elseif t == "string" then
    if name == "Bucket" then return "pgtide-bucket" end
    if name == "Key" then return "dir/key name ~.txt" end
    return "v " .. name .. " +&=/é"
  elseif t == "integer" or t == "long" then return 7
  elseif t == "double" or t == "float" then return 1.5
  elseif t == "boolean" then return true
  elseif t == "timestamp" then return 1767225600
  elseif t == "blob" then return "blob data"
  end
end

local cases = {}
local function add(name, service, opname, params, validate)
  local req = client(service):build(opname, params)
  cases[#cases + 1] = { name = name, service = service, operation = opname, params = params,
                        validate = validate, request = { method = req.method, url = req.url,
                        headers = req.headers, body = req.body } }
end

for _, s in ipairs(samples) do
  add(s[1] .. "." .. s[2], s[1], s[2], s[3], true)
end
local boto_names = { stepfunctions = "stepfunctions" }
for _, service in ipairs { "dms", "cloudformation", "sns", "stepfunctions", "s3", "ec2", "iam",
                          "sts", "cloudwatch" } do
  local m = require("pgtide.aws.model." .. service)
  local ops = {}
  for opname in pairs(m.operations) do ops[#ops + 1] = opname end
  table.sort(ops)
  for _, opname in ipairs(ops) do
    local op = m.operations[opname]
    local params = op.input and sample(m, { shape = op.input }, 0, opname) or {}
    local ok, err = pcall(add, service .. "." .. opname .. " (every member)",
                          boto_names[service] or service, opname, params, false)
    if not ok then
      T.test(service .. "." .. opname .. " (every member) builds", function () error(err, 0) end)
    end
  end
end

T.test("requests cover every modelled operation", function ()
  T.ok(#cases > 120, "%d cases", #cases)
end)

-- Run the botocore checker over all cases at once.
local file = T.tmp .. "/aws-requests-" .. sys.getpid() .. ".jsonl"
do
  local f = assert(io.open(file, "w"))
  for _, c in ipairs(cases) do
    -- blobs with NUL bytes do not survive JSON: botocore gets the same text
    f:write(json.encode(c), "\n")
  end
  f:close()
end
local code, out, err = T.sh("python3 " .. T.q(T.root .. "/tests/lib/aws_request_check.py") ..
                            " " .. T.q(file))
os.remove(file)
if out:match('"skip"') then
  T.skip("requests match botocore", "botocore is not importable")
else
  T.test("the botocore checker ran", function () T.eq(code, 0, err) end)
  local seen = 0
  for line in out:gmatch("[^\n]+") do
    local r = json.decode(line)
    seen = seen + 1
    T.test(r.name .. " matches botocore", function ()
      if not r.ok then error(r.detail, 0) end
    end)
  end
  T.test("every case was checked", function () T.eq(seen, #cases) end)
end

T.test("client-side validation names every problem", function ()
  local dms = client("dms")
  local e = T.raises(function ()
    dms:build("CreateReplicationTask", { ReplicationTaskIdentifier = {}, MigrationType = 3,
                                         Tags = { Key = "x" }, Extra = true })
  end, "ParamValidation")
  for _, want in ipairs { "missing required parameter SourceEndpointArn",
                          "ReplicationTaskIdentifier: expected a string",
                          "MigrationType: expected a string", "unknown parameter Extra",
                          "Tags: expected a list" } do
    T.match(e.message, want:gsub("%p", "%%%0"))
  end
  T.raises(function () client("s3"):build("RestoreObject", {}) end, "UnknownOperation")
end)

T.test("sensitive members are registered for redaction", function ()
  client("dms"):build("CreateEndpoint", { EndpointIdentifier = "e", EndpointType = "source",
                                          EngineName = "postgres", Password = "Sw0rdfish-42" })
  T.nomatch(sys.redact("connecting with Sw0rdfish-42"), "Sw0rdfish-42")
end)

T.test("operations missing from the model are serialised generically", function ()
  local req = client("dms"):build("DescribeOrderableReplicationInstances", { MaxRecords = 20 })
  T.eq(req.headers["X-Amz-Target"], "AmazonDMSv20160101.DescribeOrderableReplicationInstances")
  req = client("dms"):build("DescribeSchemas", { EndpointArn = "e", MaxRecords = 20 })
  T.eq(json.decode(req.body).EndpointArn, "e")
  req = client("cloudformation"):build("ListExports", { NextToken = "a b", Things = { "x", "y" } })
  T.match(req.body, "Action=ListExports")
  T.match(req.body, "NextToken=a%+b")
  T.match(req.body, "Things%.member%.2=y")
  req = client("ec2"):build("DescribeInstances", { InstanceId = { "i-1", "i-2" } })
  T.match(req.body, "InstanceId%.2=i%-2")
end)

T.test("endpoints: regional, global IAM, partitions, overrides", function ()
  local c = aws.client("dms", { region = "eu-west-1", credentials = creds })
  T.eq(c.endpoint, "https://dms.eu-west-1.amazonaws.com")
  c = aws.client("sfn", { region = "cn-north-1", credentials = creds })
  T.eq(c.endpoint, "https://states.cn-north-1.amazonaws.com.cn")
  c = aws.client("iam", { region = "eu-west-1", credentials = creds })
  T.eq(c.endpoint, "https://iam.amazonaws.com")
  T.eq(c.signing_region, "us-east-1")
  c = aws.client("iam", { region = "us-gov-west-1", credentials = creds })
  T.eq(c.signing_region, "us-gov-west-1")
  c = aws.client("cloudwatch", { region = "eu-west-1", credentials = creds })
  T.eq(c.endpoint, "https://monitoring.eu-west-1.amazonaws.com")
  c = aws.client("sts", { region = "ap-south-1", credentials = creds })
  T.eq(c.endpoint, "https://sts.ap-south-1.amazonaws.com")
  sys.setenv("AWS_ENDPOINT_URL_SFN", "http://127.0.0.1:4566/")
  sys.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
  c = aws.client("stepfunctions", { region = "eu-west-1", credentials = creds })
  T.eq(c.endpoint, "http://127.0.0.1:4566")
  c = aws.client("dms", { region = "eu-west-1", credentials = creds })
  T.eq(c.endpoint, "http://127.0.0.1:5000")
  c = aws.client("dms", { region = "eu-west-1", credentials = creds,
                          endpoint_url = "https://vpce.example.com" })
  T.eq(c.endpoint, "https://vpce.example.com")
  sys.setenv("AWS_ENDPOINT_URL_SFN", nil)
  sys.setenv("AWS_ENDPOINT_URL", nil)
  T.raises(function () aws.client("dms", { credentials = creds }) end, "NoRegion")
  T.raises(function () aws.client("lambda", { region = "eu-west-1" }) end, "unknown AWS service")
end)

T.test("s3 addressing: virtual-hosted on AWS, path style for custom endpoints", function ()
  local s3 = aws.client("s3", { region = "eu-west-1", credentials = creds })
  T.eq(s3:build("ListObjectVersions", { Bucket = "pgtide-b" }).url,
       "https://pgtide-b.s3.eu-west-1.amazonaws.com/?versions")
  T.eq(s3:build("PutObject", { Bucket = "pgtide-b", Key = "a b/c", Body = "x" }).url,
       "https://pgtide-b.s3.eu-west-1.amazonaws.com/a%20b/c")
  T.eq(s3:build("DeleteBucket", { Bucket = "pgtide-b" }).url,
       "https://pgtide-b.s3.eu-west-1.amazonaws.com/")
  -- dots or upper case: path style
  T.eq(s3:build("DeleteBucket", { Bucket = "my.bucket" }).url,
       "https://s3.eu-west-1.amazonaws.com/my.bucket")
  local forced = aws.client("s3", { region = "eu-west-1", credentials = creds,
                                    s3_addressing = "path" })
  T.eq(forced:build("DeleteBucket", { Bucket = "pgtide-b" }).url,
       "https://s3.eu-west-1.amazonaws.com/pgtide-b")
  T.eq(client("s3"):build("DeleteObjects", { Bucket = "b-1", Delete = { Objects = {
    { Key = "k" } } } }).url, "http://127.0.0.1:9/b-1?delete")
  local req = client("s3"):build("DeleteObjects", { Bucket = "b-1", Delete = { Objects = {
    { Key = "k" } } } })
  T.eq(req.headers["Content-MD5"], aws.md5_base64(req.body))
  T.eq(req.headers["Content-Type"], "application/xml")
end)

T.done()
