-- pgtide.aws: the Lua half of the "aws" module (scripts `require "aws"`;
-- these functions are reached through its __index).
--
--   aws.client(service, opts)      -> client; client:OperationName{...}
--   aws.paginate(client, op, params) -> iterator over pages
--   aws.all(client, op, params [, key]) -> every item of a paginated list
--   aws.wait{...}                  -> generic waiter with a timeout
--   aws.s3_empty_bucket(s3, bucket) -> delete every version and marker
--
-- Clients: service is "dms", "cloudformation", "sns", "stepfunctions"
-- (or "sfn"), "s3", "ec2", "iam", "sts", "cloudwatch".  opts: region,
-- profile, endpoint_url, credentials = {access_key_id=, secret_access_key=,
-- session_token=}, max_attempts, retry_base, retry_cap, timeout, connect_timeout, s3_addressing
-- ("auto" | "path" | "virtual"), session (an aws.session to share).
-- Operations take and return tables shaped like the AWS API (member names
-- as in the API reference); errors are aws.error objects.
local aws = require "aws"
local log = require "log"
local sys = require "sys"
local model_util = require "pgtide.aws.model"
local serialize = require "pgtide.aws.serialize"
local parse = require "pgtide.aws.parse"

local M = {}

---------------------------------------------------------------------------
-- Sessions (credentials cache) shared by clients with the same options
---------------------------------------------------------------------------

local sessions = setmetatable({}, { __mode = "v" })

local function session_for(opts)
  if opts.session then return opts.session end
  local sopts = {
    profile = opts.profile, region = opts.region, credentials = opts.credentials,
    max_attempts = opts.max_attempts, retry_base = opts.retry_base, retry_cap = opts.retry_cap,
    timeout = opts.timeout, connect_timeout = opts.connect_timeout,
  }
  if opts.credentials then return aws.session(sopts) end
  local key = table.concat({ opts.profile or "", opts.region or "", opts.max_attempts or "",
                             opts.retry_base or "", opts.retry_cap or "", opts.timeout or "",
                             opts.connect_timeout or "" }, "\0")
  local s = sessions[key]
  if not s then
    s = aws.session(sopts)
    sessions[key] = s
  end
  return s
end

-- Forget shared sessions (tests that change the environment use this).
function M.reset_sessions()
  for k in pairs(sessions) do sessions[k] = nil end
end

---------------------------------------------------------------------------
-- Endpoints
---------------------------------------------------------------------------

local function dns_suffix(region)
  return (region or ""):match("^cn%-") and "amazonaws.com.cn" or "amazonaws.com"
end

-- Default endpoint and signing region of a service in a region.
local function default_endpoint(name, meta, region)
  if name == "iam" then
    if (region or ""):match("^cn%-") then
      return "https://iam.cn-north-1.amazonaws.com.cn", "cn-north-1"
    elseif (region or ""):match("^us%-gov%-") then
      return "https://iam.us-gov.amazonaws.com", "us-gov-west-1"
    end
    return "https://iam.amazonaws.com", "us-east-1"
  end
  return string.format("https://%s.%s.%s", meta.endpoint_prefix, region, dns_suffix(region)),
         region
end

local function iam_signing_region(region)
  if (region or ""):match("^cn%-") then return "cn-north-1" end
  if (region or ""):match("^us%-gov%-") then return "us-gov-west-1" end
  return "us-east-1"
end

local function virtual_hostable(bucket)
  return #bucket >= 3 and #bucket <= 63 and bucket:match("^[a-z0-9][a-z0-9%-]*[a-z0-9]$") ~= nil
end

---------------------------------------------------------------------------
-- Clients
---------------------------------------------------------------------------

local client_methods = {}
local client_mt = {}

function client_mt.__index(self, k)
  local m = client_methods[k]
  if m then return m end
  if type(k) == "string" and k:match("^%u%w*$") then
    local f = function (c, params, call_opts) return client_methods.call(c, k, params, call_opts) end
    rawset(self, k, f)
    return f
  end
  return nil
end

function client_mt.__tostring(self)
  return string.format("aws client %s (region %s, endpoint %s)", self.service,
                       tostring(self.region), self.endpoint)
end

---@param service string
---@param opts table|nil
function M.client(service, opts)
  opts = opts or {}
  local model, name = model_util.load(service)
  local meta = model.metadata
  local session = session_for(opts)
  local region = opts.region or session:region()
  local endpoint = opts.endpoint_url or session:endpoint(meta.env_id)
  local signing_region = region
  local custom = endpoint ~= nil
  if name == "iam" then
    signing_region = iam_signing_region(region)
    if not endpoint then endpoint = default_endpoint(name, meta, region) end
  elseif not region then
    error(aws.error { code = "NoRegion", service = name,
                      message = "no AWS region: set aws.region in the configuration, " ..
                                "AWS_REGION, or region in the AWS profile" }, 2)
  elseif not endpoint then
    endpoint = default_endpoint(name, meta, region)
  end
  endpoint = endpoint:gsub("/+$", "")
  if not endpoint:match("^https?://[^/]") then
    error(aws.error { code = "InvalidEndpoint", service = name,
                      message = "endpoint URL must start with http:// or https://: " ..
                                endpoint }, 2)
  end
  local addressing = opts.s3_addressing or session:config("s3.addressing_style") or "auto"
  return setmetatable({
    service = name, model = model, session = session, region = region,
    signing_region = signing_region, endpoint = endpoint, custom_endpoint = custom,
    s3_addressing = addressing, max_attempts = opts.max_attempts,
  }, client_mt)
end

-- URL for a serialised request (S3: bucket in the host or in the path).
local function request_url(c, req)
  local endpoint, path = c.endpoint, req.path
  if req.bucket and c.service == "s3" then
    local style = c.s3_addressing
    if style == "auto" then
      style = (not c.custom_endpoint and virtual_hostable(req.bucket)) and "virtual" or "path"
    end
    if style == "virtual" then
      local enc = "/" .. aws.uri_encode(req.bucket)
      if path:sub(1, #enc) == enc then
        path = path:sub(#enc + 1)
        if path == "" or path:sub(1, 1) == "?" then path = "/" .. path end
        endpoint = endpoint:gsub("^(https?://)", "%1" .. req.bucket .. ".")
      end
    end
  end
  return endpoint .. path
end

-- Build the HTTP request an operation would send, without sending it
-- (tests compare it with botocore's serializer).
function client_methods.build(c, opname, params)
  params = params or {}
  local op = c.model.operations[opname]
  if op then
    serialize.validate(c.model, c.service, opname, op.input, params)
  elseif c.model.metadata.protocol == "rest-xml" then
    error(aws.error { code = "UnknownOperation", service = c.service, operation = opname,
                      message = "operation not in pgtide's S3 model" }, 0)
  end
  local req = serialize.request(c.model, opname, op, params)
  req.url = request_url(c, req)
  return req, op
end

function client_methods.call(c, opname, params, call_opts)
  call_opts = call_opts or {}
  local req, op = client_methods.build(c, opname, params)
  if not op and aws.debug_enabled() then
    aws.debug(string.format("aws: %s.%s is not in pgtide's model: serialised generically",
                            c.service, opname))
  end
  local meta = c.model.metadata
  local status, headers, body = c.session:request {
    protocol = meta.protocol, service = c.service, operation = opname,
    signing_name = meta.signing_name, region = c.signing_region,
    method = req.method, url = req.url, headers = req.headers, body = req.body,
    s3 = c.service == "s3", unsigned = op and op.unsigned or false,
    max_attempts = call_opts.max_attempts or c.max_attempts,
  }
  return parse.response(c.model, op, { service = c.service, operation = opname,
                                       status = status, headers = headers }, body)
end

function client_methods.paginate(c, opname, params) return M.paginate(c, opname, params) end
function client_methods.all(c, opname, params, key) return M.all(c, opname, params, key) end

---------------------------------------------------------------------------
-- Pagination
---------------------------------------------------------------------------

-- Token names to try when the model has no paginator for an operation.
local FALLBACK = {
  { input = "Marker", output = "Marker" }, { input = "NextToken", output = "NextToken" },
  { input = "nextToken", output = "nextToken" },
}

local function copy(t)
  local o = {}
  for k, v in pairs(t or {}) do o[k] = v end
  return o
end

local function paginator(c, opname)
  local p = c.model.paginators[opname]
  if p then return p end
  return nil
end

---@return function iterator yielding each page (a result table)
function M.paginate(c, opname, params)
  local p = paginator(c, opname)
  local cur = copy(params)
  local done, pages, seen = false, 0, {}
  return function ()
    if done then return nil end
    local page = c[opname](c, cur)
    pages = pages + 1
    local inputs, outputs = {}, {}
    if p then
      inputs, outputs = p.input_token, p.output_token
    else
      for _, f in ipairs(FALLBACK) do
        if page[f.output] ~= nil then inputs, outputs = { f.input }, { f.output } break end
      end
    end
    local any, sig = false, {}
    for i, out in ipairs(outputs) do
      local v = page[out]
      cur[inputs[i]] = v
      if v ~= nil and v ~= "" then any = true end
      sig[#sig + 1] = tostring(v)
    end
    if p and p.more_results and not page[p.more_results] then any = false end
    local key = table.concat(sig, "\0")
    if not any or seen[key] or pages >= 10000 then
      done = true
    end
    seen[key] = true
    return page
  end
end

-- Every item of the paginated list 'key' (default: the paginator's first
-- result key).
function M.all(c, opname, params, key)
  local p = paginator(c, opname)
  key = key or (p and p.result_key and p.result_key[1])
  if not key then
    error(string.format("aws.all: no result key known for %s.%s: pass one", c.service, opname), 2)
  end
  local items = {}
  for page in M.paginate(c, opname, params) do
    for _, x in ipairs(page[key] or {}) do items[#items + 1] = x end
  end
  return items
end

---------------------------------------------------------------------------
-- Waiter
---------------------------------------------------------------------------

local function matcher(spec)
  if spec == nil then return function () return false end end
  if type(spec) == "function" then return spec end
  local set = {}
  for _, s in ipairs(type(spec) == "table" and spec or { spec }) do set[s] = true end
  return function (state) return set[state] == true end
end

--[[
aws.wait{
  what = "replication task tk1 to be ready",   -- used in messages
  poll = function () return state, value end,   -- may raise
  success = {"ready"} | function (state, value) -> boolean,
  failure = {"failed"} | function (state, value) -> boolean,
  errors = { ResourceNotFoundFault = "deleted" },  -- error code -> state
  interval = 15, timeout = 1800,                  -- seconds
  progress = function (state, elapsed, value) end, -- optional
}
Returns state, value on success.  Raises aws.error WaiterFailed (a
failure state) or WaiterTimeout, both with last_state and the elapsed time.
]]
function M.wait(spec)
  assert(type(spec) == "table" and type(spec.poll) == "function", "aws.wait{poll=...} needed")
  local what = spec.what or "an AWS resource"
  local interval = spec.interval or 15
  local timeout = spec.timeout or 1800
  local ok_state, bad_state = matcher(spec.success), matcher(spec.failure)
  local start = sys.monotonic()
  local last, last_logged, last_log_time
  while true do
    local ok, state, value = pcall(spec.poll)
    if not ok then
      local err = state
      local mapped = spec.errors and type(err) == "table" and err.code and spec.errors[err.code]
      if not mapped then error(err, 0) end
      state, value = mapped, err
    end
    last = state
    local elapsed = sys.monotonic() - start
    if spec.progress then spec.progress(state, elapsed, value) end
    if state ~= last_logged or sys.monotonic() - last_log_time >= 60 then
      log.info("waiting for %s: %s (%d s)", what, tostring(state), math.floor(elapsed))
      last_logged, last_log_time = state, sys.monotonic()
    end
    if ok_state(state, value) then return state, value end
    if bad_state(state, value) then
      error(aws.error { code = "WaiterFailed", last_state = tostring(state),
                        elapsed = elapsed,
                        message = string.format("%s reached state %s", what, tostring(state)) }, 0)
    end
    if elapsed + interval > timeout then
      error(aws.error { code = "WaiterTimeout", last_state = tostring(last), elapsed = elapsed,
                        message = string.format("timed out after %d s waiting for %s; last " ..
                                                "state: %s", math.floor(timeout), what,
                                                tostring(last)) }, 0)
    end
    if not sys.sleep(interval) then
      error(aws.error { code = "Interrupted", last_state = tostring(last),
                        message = "interrupted while waiting for " .. what }, 0)
    end
  end
end

---------------------------------------------------------------------------
-- S3: empty a (versioned) bucket
---------------------------------------------------------------------------

-- Delete every object version and delete marker; returns the count.
-- Per-key failures reported by DeleteObjects raise an aws.error.
function M.s3_empty_bucket(s3, bucket)
  local deleted = 0
  for _ = 1, 100000 do
    local page = s3:ListObjectVersions { Bucket = bucket, MaxKeys = 1000 }
    local objects = {}
    for _, list in ipairs { page.Versions or {}, page.DeleteMarkers or {} } do
      for _, v in ipairs(list) do
        objects[#objects + 1] = { Key = v.Key, VersionId = v.VersionId }
      end
    end
    if #objects == 0 then return deleted end
    for i = 1, #objects, 1000 do
      local batch = table.move(objects, i, math.min(i + 999, #objects), 1, {})
      local r = s3:DeleteObjects { Bucket = bucket, Delete = { Objects = batch, Quiet = true } }
      if r.Errors and #r.Errors > 0 then
        local e = r.Errors[1]
        error(aws.error { code = e.Code or "DeleteFailed", service = "s3",
                          operation = "DeleteObjects",
                          message = string.format("%d objects could not be deleted from %s; " ..
                                                  "first: %s (version %s): %s", #r.Errors,
                                                  bucket, tostring(e.Key),
                                                  tostring(e.VersionId), tostring(e.Message)) }, 0)
      end
      deleted = deleted + #batch
    end
  end
  error(aws.error { code = "TooManyPages", service = "s3",
                    message = "bucket " .. bucket .. " did not become empty" }, 0)
end

return M
