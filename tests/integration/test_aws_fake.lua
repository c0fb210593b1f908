-- test_aws_fake.lua: what moto cannot exercise, against a scriptable
-- loopback server (tests/lib/aws_fake.py):
--   * credential sources: container credentials (full URI, token and token
--     file, allowed hosts), IMDSv2 (token PUT then GET, v1 fallback, v1
--     disabled, absent), web identity (unsigned STS call), role_arn with
--     credential_source, and refresh before expiry;
--   * the standard retry mode: 5xx, throttling, non-retryable errors,
--     timeouts, refused and dropped connections, clock skew;
--   * malformed responses give clear errors.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local aws = require "aws"
local json = require "json"
local sys = require "sys"

local dir = T.tmp .. "/awsfake-" .. sys.getpid()
T.sh("mkdir -p " .. T.q(dir))
T.sh("setsid python3 " .. T.q(T.root .. "/tests/lib/aws_fake.py") .. " " .. T.q(dir) ..
     " >" .. T.q(dir .. "/server.log") .. " 2>&1 </dev/null &")
local port
for _ = 1, 200 do
  local f = io.open(dir .. "/port")
  if f then port = f:read("l"); f:close(); break end
  sys.sleep(0.05)
end
if not port then
  T.test("the fake AWS server starts", function () error("no port file in " .. dir) end)
  T.done()
end
local base = "http://127.0.0.1:" .. port

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function script(routes)
  write(dir .. "/script.json", json.encode { routes = json.array(routes) })
  write(dir .. "/requests.jsonl", "")
end

local function requests()
  local out = {}
  for line in io.lines(dir .. "/requests.jsonl") do out[#out + 1] = json.decode(line) end
  return out
end

local function header(req, name)
  for k, v in pairs(req.headers) do
    if k:lower() == name:lower() then return v end
  end
end

-- A clean environment for each test: no credentials, no metadata service.
local ENV = { "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
  "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
  "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME",
  "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
  "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_V1_DISABLED", "AWS_MAX_ATTEMPTS" }
local function clean(env)
  for _, k in ipairs(ENV) do sys.setenv(k, nil) end
  write(dir .. "/config", "")
  write(dir .. "/credentials", "")
  sys.setenv("AWS_CONFIG_FILE", dir .. "/config")
  sys.setenv("AWS_SHARED_CREDENTIALS_FILE", dir .. "/credentials")
  sys.setenv("AWS_EC2_METADATA_DISABLED", "true")
  for k, v in pairs(env or {}) do sys.setenv(k, v) end
  aws.reset_sessions()
end

local function creds_json(akid, secret, expires_in, extra)
  local t = { AccessKeyId = akid, SecretAccessKey = secret, Token = "tok-" .. akid,
              Expiration = "{now+" .. expires_in .. "}" }
  for k, v in pairs(extra or {}) do t[k] = v end
  return json.encode(t)
end

local function sts_xml(result, akid)
  return string.format("<%sResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><%s>" ..
    "<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>sts-secret-%s" ..
    "</SecretAccessKey><SessionToken>sts-token-%s</SessionToken><Expiration>{now+3600}" ..
    "</Expiration></Credentials></%s><ResponseMetadata><RequestId>r1</RequestId>" ..
    "</ResponseMetadata></%sResponse>", result:gsub("Result$", ""), result, akid, akid, akid,
    result, result:gsub("Result$", ""))
end

local function raises_code(fn, want)
  local ok, e = pcall(fn)
  T.ok(not ok, "expected an error %s", want)
  T.ok(aws.is_error(e), "not an aws.error: %s", tostring(e))
  T.eq(e.code, want, "code (" .. tostring(e) .. ")")
  return e
end

---------------------------------------------------------------------------
-- Credential sources
---------------------------------------------------------------------------

T.test("container credentials: full URI with an authorization token", function ()
  clean { AWS_CONTAINER_CREDENTIALS_FULL_URI = base .. "/creds",
          AWS_CONTAINER_AUTHORIZATION_TOKEN = "Bearer ctr-1" }
  script { { path = "/creds", ["require"] = { Authorization = "Bearer ctr-1" },
             responses = { { body = creds_json("ASIACTR1", "container-secret", 3600) } } } }
  local s = aws.session { region = "us-east-1" }
  local c = s:credentials()
  T.eq(c.access_key_id, "ASIACTR1")
  T.eq(c.source, "container credentials")
  T.eq(c.session_token, true)
  T.eq(c.secret_sha256, aws.sha256_hex("container-secret"))
  T.ok(math.abs(c.expiration - (os.time() + 3600)) < 10, "expiration parsed")
  s:credentials()
  T.eq(#requests(), 1, "cached while far from expiry")
end)

T.test("container credentials: token file re-read, bad hosts refused", function ()
  write(dir .. "/ctr-token", "Bearer from-file\n")
  clean { AWS_CONTAINER_CREDENTIALS_FULL_URI = base .. "/creds",
          AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = dir .. "/ctr-token" }
  script { { path = "/creds", ["require"] = { Authorization = "Bearer from-file" },
             responses = { { body = creds_json("ASIACTR2", "s2", 3600) } } } }
  T.eq(aws.session { region = "us-east-1" }:credentials().access_key_id, "ASIACTR2")
  clean { AWS_CONTAINER_CREDENTIALS_FULL_URI = "http://198.51.100.7/creds" }
  local e = raises_code(function () aws.session { region = "us-east-1" }:credentials() end,
                        "InvalidConfig")
  T.match(e.message, "loopback")
end)

T.test("container credentials: a failing endpoint is an error, not a fallthrough", function ()
  clean { AWS_CONTAINER_CREDENTIALS_FULL_URI = base .. "/creds" }
  script { { path = "/creds", responses = { { status = 500, body = "oops" } } } }
  local e = raises_code(function () aws.session { region = "us-east-1" }:credentials() end,
                        "CredentialsEndpointError")
  T.match(e.message, "HTTP 500")
  T.eq(#requests(), 3, "3 attempts")
  script { { path = "/creds", responses = { { body = '{"AccessKeyId": "x"}' } } } }
  e = raises_code(function () aws.session { region = "us-east-1" }:credentials() end,
                  "CredentialsEndpointError")
  T.match(e.message, "SecretAccessKey missing")
end)

T.test("credentials are refreshed before they expire", function ()
  clean { AWS_CONTAINER_CREDENTIALS_FULL_URI = base .. "/creds" }
  -- 5 minutes left: inside the 15-minute refresh window, so every use refreshes
  script { { path = "/creds", responses = {
    { body = creds_json("ASIAR1", "s", 300) }, { body = creds_json("ASIAR2", "s", 300) },
    { body = creds_json("ASIAR3", "s", 3600) } } } }
  local s = aws.session { region = "us-east-1" }
  T.eq(s:credentials().access_key_id, "ASIAR1")
  T.eq(s:credentials().access_key_id, "ASIAR2")
  T.eq(s:credentials().access_key_id, "ASIAR3")
  T.eq(s:credentials().access_key_id, "ASIAR3")
  T.eq(#requests(), 3)
  -- 12 minutes left and the endpoint fails: keep the current ones
  script { { path = "/creds", responses = { { body = creds_json("ASIAK1", "s", 720) },
                                             { status = 500 } } } }
  s = aws.session { region = "us-east-1" }
  T.eq(s:credentials().access_key_id, "ASIAK1")
  T.eq(s:credentials().access_key_id, "ASIAK1")
  -- 5 minutes left and the endpoint fails: an error
  script { { path = "/creds", responses = { { body = creds_json("ASIAE1", "s", 300) },
                                             { status = 500 } } } }
  s = aws.session { region = "us-east-1" }
  T.eq(s:credentials().access_key_id, "ASIAE1")
  raises_code(function () s:credentials() end, "CredentialsEndpointError")
end)

local function imds_routes(with_token)
  local req = with_token and { ["X-aws-ec2-metadata-token"] = "imds-tok-1" } or nil
  return {
    { method = "PUT", path = "/latest/api/token",
      ["require"] = { ["X-aws-ec2-metadata-token-ttl-seconds"] = "21600" },
      responses = { with_token and { body = "imds-tok-1" } or { status = 405 } } },
    { path = "/latest/meta-data/iam/security-credentials/", ["require"] = req,
      responses = { { body = "pgtide-role" } } },
    { path = "/latest/meta-data/iam/security-credentials/pgtide-role", ["require"] = req,
      responses = { { body = creds_json("ASIAIMDS", "imds-secret", 21600,
                                        { Code = "Success", Type = "AWS-HMAC" }) } } },
  }
end

T.test("instance metadata: IMDSv2 token, role, credentials", function ()
  clean { AWS_EC2_METADATA_SERVICE_ENDPOINT = base .. "/" }
  sys.setenv("AWS_EC2_METADATA_DISABLED", nil)
  script(imds_routes(true))
  local c = aws.session { region = "us-east-1" }:credentials()
  T.eq(c.access_key_id, "ASIAIMDS")
  T.eq(c.source, "instance metadata (role pgtide-role)")
  T.eq(c.secret_sha256, aws.sha256_hex("imds-secret"))
  local r = requests()
  T.eq(#r, 3)
  T.eq(r[1].method, "PUT")
end)

T.test("instance metadata: v1 fallback on 405, unless v1 is disabled", function ()
  clean { AWS_EC2_METADATA_SERVICE_ENDPOINT = base }
  sys.setenv("AWS_EC2_METADATA_DISABLED", nil)
  script(imds_routes(false))
  T.eq(aws.session { region = "us-east-1" }:credentials().access_key_id, "ASIAIMDS")
  T.eq(header(requests()[2], "X-aws-ec2-metadata-token"), nil)
  sys.setenv("AWS_EC2_METADATA_V1_DISABLED", "true")
  raises_code(function () aws.session { region = "us-east-1" }:credentials() end,
              "NoCredentials")
end)

T.test("instance metadata absent: no credentials, quickly", function ()
  clean { AWS_EC2_METADATA_SERVICE_ENDPOINT = "http://127.0.0.1:9" }
  sys.setenv("AWS_EC2_METADATA_DISABLED", nil)
  local t0 = sys.monotonic()
  local e = raises_code(function () aws.session { region = "us-east-1" }:credentials() end,
                        "NoCredentials")
  T.ok(sys.monotonic() - t0 < 3, "took %.1f s", sys.monotonic() - t0)
  T.match(e.message, "instance metadata")
end)

T.test("web identity: unsigned AssumeRoleWithWebIdentity", function ()
  write(dir .. "/oidc-token", "eyJ.fake-oidc-token.sig")
  clean { AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/oidc-token",
          AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/ci",
          AWS_ROLE_SESSION_NAME = "ci-run", AWS_ENDPOINT_URL_STS = base }
  script { { method = "POST", path = "/", match = "Action=AssumeRoleWithWebIdentity",
             responses = { { body = sts_xml("AssumeRoleWithWebIdentityResult", "ASIAWEB") } } } }
  local c = aws.session { region = "eu-west-1" }:credentials()
  T.eq(c.access_key_id, "ASIAWEB")
  T.match(c.source, "web identity")
  T.eq(c.secret_sha256, aws.sha256_hex("sts-secret-ASIAWEB"))
  local r = requests()[1]
  T.eq(header(r, "Authorization"), nil, "unsigned")
  T.match(header(r, "Content-Type"), "^application/x%-www%-form%-urlencoded")
  T.match(r.body, "RoleArn=arn%%3Aaws%%3Aiam%%3A%%3A123456789012%%3Arole%%2Fci")
  T.match(r.body, "RoleSessionName=ci%-run")
  T.match(r.body, "WebIdentityToken=eyJ%.fake%-oidc%-token%.sig")
  -- the same through a profile
  clean { AWS_ENDPOINT_URL_STS = base }
  write(dir .. "/config", "[profile oidc]\nrole_arn = arn:aws:iam::1:role/p\n" ..
        "web_identity_token_file = " .. dir .. "/oidc-token\n")
  T.eq(aws.session { profile = "oidc", region = "eu-west-1" }:credentials().access_key_id,
       "ASIAWEB")
  -- STS refusing the token
  script { { method = "POST", path = "/", responses = { { status = 400, body =
    "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>" ..
    "Incorrect token audience</Message></Error><RequestId>x</RequestId></ErrorResponse>" } } } }
  local e = raises_code(function ()
    aws.session { profile = "oidc", region = "eu-west-1" }:credentials()
  end, "InvalidIdentityToken")
  T.match(e.message, "audience")
end)

T.test("--debug aws: credential responses are logged with secrets masked", function ()
  write(dir .. "/oidc-token", "eyJ.debug-oidc-token.sig")
  clean()
  script {
    { method = "POST", path = "/", match = "Action=AssumeRoleWithWebIdentity",
      responses = { { body = sts_xml("AssumeRoleWithWebIdentityResult", "ASIADBG") } } },
    { target = "AmazonDMSv20160101.DescribeEndpoints",
      responses = { { body = '{"Endpoints":[]}' } } } }
  local child = dir .. "/debug.lua"
  write(child, 'local aws = require "aws"\n' ..
               'aws.client("dms", { endpoint_url = os.getenv("FAKE") }):DescribeEndpoints {}\n')
  local rc, _, stderr = T.run({ "--debug", "aws", "script", child }, { env = {
    FAKE = base, AWS_REGION = "eu-west-1", AWS_ENDPOINT_URL_STS = base,
    AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/oidc-token",
    AWS_ROLE_ARN = "arn:aws:iam::1:role/dbg" } })
  T.eq(rc, 0, stderr)
  T.match(stderr, "sts%.AssumeRoleWithWebIdentity attempt 1/3")
  T.match(stderr, "AssumeRoleWithWebIdentityResponse")       -- the response is logged
  T.match(stderr, "ASIADBG")                                 -- key ids are not secret
  T.match(stderr, "dms%.DescribeEndpoints %-> HTTP 200")
  T.match(stderr, "X%-Amz%-Security%-Token: %*%*%*")
  for _, secret in ipairs { "sts-secret-ASIADBG", "sts-token-ASIADBG",
                            "eyJ.debug-oidc-token.sig" } do
    T.nomatch(stderr, secret)
  end
end)

T.test("role_arn with credential_source signs AssumeRole with the source", function ()
  clean { AWS_CONTAINER_CREDENTIALS_FULL_URI = base .. "/creds", AWS_ENDPOINT_URL_STS = base }
  write(dir .. "/config", "[profile ecsrole]\nrole_arn = arn:aws:iam::1:role/target\n" ..
        "credential_source = EcsContainer\nexternal_id = ext-7\nregion = eu-west-1\n")
  script {
    { path = "/creds", responses = { { body = creds_json("ASIASRC", "src-secret", 3600) } } },
    { method = "POST", path = "/", match = "Action=AssumeRole&",
      responses = { { body = sts_xml("AssumeRoleResult", "ASIATARGET") } } } }
  local c = aws.session { profile = "ecsrole" }:credentials()
  T.eq(c.access_key_id, "ASIATARGET")
  T.match(c.source, "assume role arn:aws:iam::1:role/target")
  local r = requests()[2]
  T.match(header(r, "Authorization"), "Credential=ASIASRC/%d+/eu%-west%-1/sts/aws4_request")
  T.eq(header(r, "X-Amz-Security-Token"), "tok-ASIASRC")
  T.match(r.body, "ExternalId=ext%-7")
end)

T.test("explicit profile skips environment keys; unknown profiles are errors", function ()
  clean { AWS_ACCESS_KEY_ID = "AKIAENV", AWS_SECRET_ACCESS_KEY = "env-secret" }
  write(dir .. "/credentials", "[named]\naws_access_key_id = AKIANAMED\n" ..
        "aws_secret_access_key = named-secret\n")
  T.eq(aws.session { region = "us-east-1" }:credentials().access_key_id, "AKIAENV")
  T.eq(aws.session { region = "us-east-1", profile = "named" }:credentials().access_key_id,
       "AKIANAMED")
  sys.setenv("AWS_PROFILE", "named")
  T.eq(aws.session { region = "us-east-1" }:credentials().access_key_id, "AKIAENV")
  raises_code(function () aws.session { profile = "missing" } end, "ProfileNotFound")
  local s = aws.session { region = "us-east-1", credentials = {
    access_key_id = "AKIAEXPLICIT", secret_access_key = "x-secret" } }
  T.eq(s:credentials().source, "explicit")
end)

---------------------------------------------------------------------------
-- Retries and errors
---------------------------------------------------------------------------

local DESCRIBE = "AmazonDMSv20160101.DescribeEndpoints"
local function dms(opts)
  local o = { region = "us-east-1", retry_base = 0.01, endpoint_url = base,
              credentials = { access_key_id = "AKIATEST", secret_access_key = "test-secret" } }
  for k, v in pairs(opts or {}) do o[k] = v end
  return aws.client("dms", o)
end

T.test("5xx responses are retried, then succeed", function ()
  clean()
  script { { target = DESCRIBE, responses = {
    { status = 503, body = "" }, { status = 500, body = '{"__type":"InternalFailure"}' },
    { status = 200, body = '{"Endpoints":[{"EndpointIdentifier":"e1"}]}',
      headers = { ["x-amzn-RequestId"] = "req-ok" } } } } }
  local r = dms():DescribeEndpoints {}
  T.eq(r.Endpoints[1].EndpointIdentifier, "e1")
  T.eq(r.ResponseMetadata.RequestId, "req-ok")
  local reqs = requests()
  T.eq(#reqs, 3)
  for _, q in ipairs(reqs) do
    T.match(header(q, "Authorization"), "^AWS4%-HMAC%-SHA256 Credential=AKIATEST/")
    T.eq(header(q, "Content-Type"), "application/x-amz-json-1.1")
  end
end)

T.test("throttling is retried up to max_attempts; the error says so", function ()
  clean()
  script { { target = DESCRIBE, responses = { { status = 400,
    headers = { ["x-amzn-RequestId"] = "req-thr" },
    body = '{"__type":"ThrottlingException","message":"Rate exceeded"}' } } } }
  local e = raises_code(function () dms { max_attempts = 4 }:DescribeEndpoints {} end,
                        "ThrottlingException")
  T.eq(#requests(), 4)
  T.eq(e.attempts, 4)
  T.eq(e.throttling, true)
  T.eq(e.retryable, true)
  T.eq(e.request_id, "req-thr")
  T.eq(e.service, "dms")
  T.eq(e.operation, "DescribeEndpoints")
  T.eq(tostring(e), "aws dms.DescribeEndpoints: ThrottlingException: Rate exceeded " ..
                    "(HTTP 400, request id req-thr, 4 attempts)")
  -- AWS_MAX_ATTEMPTS configures the default
  clean { AWS_MAX_ATTEMPTS = "2" }
  script { { target = DESCRIBE, responses = { { status = 503 } } } }
  raises_code(function () dms():DescribeEndpoints {} end, "503")
  T.eq(#requests(), 2)
end)

T.test("client errors are not retried", function ()
  clean()
  script { { target = DESCRIBE, responses = { { status = 400,
    body = '{"__type":"com.amazonaws.dms#InvalidParameterValueException",' ..
           '"message":"bad filter"}' } } } }
  local e = raises_code(function () dms():DescribeEndpoints {} end,
                        "InvalidParameterValueException")
  T.eq(#requests(), 1)
  T.eq(e.retryable, false)
  T.eq(e.message, "bad filter")
end)

T.test("timeouts, refused and dropped connections are retried", function ()
  clean()
  script { { target = DESCRIBE, responses = { { delay = 1.0, body = "{}" } } } }
  local e = raises_code(function () dms { timeout = 0.3, max_attempts = 2 }:DescribeEndpoints {} end,
                        "Timeout")
  T.eq(e.attempts, 2)
  T.eq(e.retryable, true)
  e = raises_code(function ()
    dms { endpoint_url = "http://127.0.0.1:9" }:DescribeEndpoints {}
  end, "ConnectionError")
  T.eq(e.attempts, 3)
  script { { target = DESCRIBE, responses = { { close = true }, { body = '{"Endpoints":[]}' } } } }
  T.eq(#dms():DescribeEndpoints {}.Endpoints, 0)
  T.eq(#requests(), 2)
end)

T.test("clock skew: retried once with the server's time", function ()
  clean()
  script { { target = DESCRIBE, responses = {
    { status = 400, date_offset = 7200, body = '{"__type":"InvalidSignatureException",' ..
      '"message":"Signature expired: 20260101T000000Z is now earlier than ..."}' },
    { body = '{"Endpoints":[]}' } } } }
  local c = dms()
  c:DescribeEndpoints {}
  local r = requests()
  T.eq(#r, 2)
  local t1 = aws.parse_time((header(r[1], "X-Amz-Date"):gsub(
    "(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z", "%1-%2-%3T%4:%5:%6Z")))
  local t2 = aws.parse_time((header(r[2], "X-Amz-Date"):gsub(
    "(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z", "%1-%2-%3T%4:%5:%6Z")))
  T.ok(math.abs((t2 - t1) - 7200) < 10, "second request signed with server time (%d)", t2 - t1)
end)

T.test("malformed responses give clear errors", function ()
  clean()
  script { { target = DESCRIBE, responses = { { status = 200, body = "<html>proxy page</html>" } } } }
  local e = raises_code(function () dms():DescribeEndpoints {} end, "InvalidResponse")
  T.match(e.message, "not a JSON object")
  T.match(e.message, "proxy page")
  T.eq(e.operation, "DescribeEndpoints")
  -- query and EC2 protocols: broken XML
  local sts = aws.client("sts", { region = "us-east-1", endpoint_url = base, retry_base = 0.01,
    credentials = {
    access_key_id = "AKIATEST", secret_access_key = "test-secret" } })
  script { { method = "POST", responses = { { body = "<GetCallerIdentityResponse><Get" } } } }
  e = raises_code(function () sts:GetCallerIdentity() end, "InvalidResponse")
  T.match(e.message, "not well%-formed XML")
  T.match(e.message, "line 1")
  -- an HTML error page from a proxy: the status is the code, the page is quoted
  script { { method = "POST", responses = { { status = 502,
    body = "<html><body><h1>502 Bad Gateway</h1></body></html>" } } } }
  e = raises_code(function () sts:GetCallerIdentity() end, "502")
  T.match(e.message, "Bad Gateway")
  T.eq(e.attempts, 3)
  -- an empty 403 from S3 HEAD
  local s3 = aws.client("s3", { region = "us-east-1", endpoint_url = base, retry_base = 0.01,
    credentials = {
    access_key_id = "AKIATEST", secret_access_key = "test-secret" } })
  script { { method = "HEAD", responses = { { status = 403 } } } }
  e = raises_code(function () s3:HeadBucket { Bucket = "secret-bucket" } end, "403")
  T.eq(e.message, "HTTP 403 Forbidden")
end)

T.sh("kill $(cat " .. T.q(dir .. "/pid") .. ")")
T.sh("rm -rf " .. T.q(dir))
T.done()
