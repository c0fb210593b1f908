--[[
pgtide.dms.awsx: the small layer the DMS runbooks put over the aws module.

  awsx.client(ctx, "dms")        -> a cached aws client for this run
  awsx.code(err)                 -> the AWS error code of an error value (or nil)
  awsx.not_found(err)            -> true for "this resource does not exist"
  awsx.try(fn, ...)              -> result, or nil + err for a not-found error
  awsx.all(client, op, input, list_key) -> every item over all pages
  awsx.wait{ what=, timeout=, interval=, poll=fn }   bounded wait
  awsx.settle(ctx, what, fn, ...) -> fn's results, retrying not-found right after a create
  awsx.young(ctx, since)         -> true while a resource made at 'since' may still be invisible
  awsx.unwrap(result, op)        -> result without an <Op>Result wrapper

Region, profile and endpoint come from the runbook parameters
(aws_region, aws_profile, aws_endpoint_url) or the config's aws table;
the aws module falls back to the usual AWS environment and profiles.
]]
local log = require "log"
local sys = require "sys"
local util = require "pgtide.util"
local runbook = require "pgtide.runbook"

local M = {}

-- The aws options for this run: params first, then the config's aws table.
function M.options(ctx)
  local p = ctx.params or {}
  local cfg = (ctx._opts and ctx._opts.config and ctx._opts.config.aws) or {}
  local opts = {
    region = p.aws_region ~= "" and p.aws_region or cfg.region,
    profile = p.aws_profile ~= "" and p.aws_profile or cfg.profile,
    endpoint_url = p.aws_endpoint_url ~= "" and p.aws_endpoint_url or cfg.endpoint_url,
    max_attempts = cfg.max_attempts,
  }
  return opts
end

--[[
awsx.client(ctx, service) -> client.  One client per service per run
(kept on ctx).  Raises a clear failure when the aws module is missing.
]]
function M.client(ctx, service)
  local cache = rawget(ctx, "_aws_clients")
  if not cache then cache = {}; rawset(ctx, "_aws_clients", cache) end
  if cache[service] then return cache[service] end
  local ok, aws = pcall(require, "aws")
  if not ok then
    runbook.fail("the aws module is not available in this build (%s)", tostring(aws))
  end
  local c = aws.client(service, M.options(ctx))
  cache[service] = c
  return c
end

-- The AWS error code of an error value, or nil when it is not an AWS error.
function M.code(err)
  if type(err) == "table" then
    if err.code then return tostring(err.code) end
    if type(err.cause) == "table" and err.cause.code then return tostring(err.cause.code) end
  end
  return nil
end

local not_found_codes = {
  ResourceNotFoundFault = true,          -- DMS
  NoSuchEntity = true,                   -- IAM
  NoSuchBucket = true,                   -- S3
  ["InvalidGroup.NotFound"] = true,      -- EC2
  ["InvalidPermission.NotFound"] = true,
  NotFound = true,                       -- SNS
  StateMachineDoesNotExist = true,       -- Step Functions
  ExecutionDoesNotExist = true,
  ReplicationSubnetGroupDoesNotCoverEnoughAZs = false,
}

-- True when 'err' says the resource does not exist.
function M.not_found(err)
  local code = M.code(err)
  if code and not_found_codes[code] then return true end
  if type(err) == "table" and err.status == 404 and (err.service == "s3" or code == "404") then
    return true      -- S3 HEAD requests carry no error body
  end
  if code == "ValidationError" then   -- CloudFormation: "Stack with id X does not exist"
    local msg = type(err) == "table" and tostring(err.message or "") or ""
    return msg:find("does not exist", 1, true) ~= nil
  end
  return false
end

--[[
awsx.try(fn, ...) -> fn's results, or nil, err when fn raised a
not-found error.  Any other error propagates.
]]
function M.try(fn, ...)
  local res = table.pack(pcall(fn, ...))
  if res[1] then return table.unpack(res, 2, res.n) end
  if M.not_found(res[2]) then return nil, res[2] end
  error(res[2], 0)
end

-- Seconds a new resource may stay invisible (consistency_timeout, 120).
local function settle_timeout(ctx)
  return (ctx and ctx.params and tonumber(ctx.params.consistency_timeout)) or 120
end

--[[
awsx.settle(ctx, what, fn, ...) -> fn(...)'s results.  AWS APIs are
eventually consistent: right after a create, a describe or an operation
naming the new resource can answer not-found ("Eventual consistency" in
the EC2, IAM and DMS documentation).  fn is called again while it raises
a not-found error or returns nil, with growing pauses (0.2 s doubling up
to 5 s), for at most consistency_timeout seconds; then its last answer
stands (the error is raised, or nil returned).  Each retry is logged
once with what it waits for.  Other errors propagate at once.
]]
function M.settle(ctx, what, fn, ...)
  local deadline = sys.monotonic() + settle_timeout(ctx)
  local nap, logged = 0.2, false
  while true do
    local res = table.pack(pcall(fn, ...))
    local missing = (res[1] and res[2] == nil) or (not res[1] and M.not_found(res[2]))
    if not missing or sys.monotonic() + nap > deadline then
      if res[1] then return table.unpack(res, 2, res.n) end
      error(res[2], 0)
    end
    if not logged then
      log.info("%s: not visible yet (AWS is eventually consistent after a create); retrying for up to %s",
        what, util.format_duration(deadline - sys.monotonic()))
      logged = true
    end
    if sys.sleep(nap) == false or sys.interrupted() then
      error(require("pgtide.errors").new { message = "interrupted", interrupted = true }, 0)
    end
    nap = math.min(nap * 2, 5)
  end
end

--[[
awsx.young(ctx, since) -> true while a resource pgtide created at
'since' (os.time(), recorded in the state so it holds across steps;
nil = not created by pgtide) may still be invisible to describes: a wait
that sees it missing then keeps waiting instead of concluding it is gone.
]]
function M.young(ctx, since)
  return since ~= nil and os.time() - since <= settle_timeout(ctx)
end

-- Strip a query-protocol "<Op>Result" wrapper if the aws module kept it.
function M.unwrap(result, op)
  if type(result) == "table" and op and type(result[op .. "Result"]) == "table" then
    return result[op .. "Result"]
  end
  return result or {}
end

local token_keys = {
  { "Marker", "Marker" },          -- DMS
  { "NextToken", "NextToken" },    -- CloudFormation, EC2, SNS, CloudWatch
  { "nextToken", "nextToken" },    -- Step Functions
}

--[[
awsx.all(client, op, input, list_key) -> list.  Calls op page after page
(following whichever continuation token the response carries) and
concatenates result[list_key].  Bounded at 1000 pages.
]]
function M.all(client, op, input, list_key)
  local items = {}
  input = util.copy(input or {})
  for _ = 1, 1000 do
    local res = M.unwrap(client[op](client, input), op)
    for _, v in ipairs(res[list_key] or {}) do items[#items + 1] = v end
    local more = false
    for _, k in ipairs(token_keys) do
      local tok = res[k[2]]
      if type(tok) == "string" and tok ~= "" then
        input[k[1]] = tok
        more = true
        break
      end
    end
    if not more then return items end
  end
  runbook.fail("%s: more than 1000 pages of results", op)
end

--[[
awsx.wait{ what = "replication instance available", timeout = seconds,
interval = seconds, poll = function () -> done, status, failure }.
Calls poll until it returns done = true; a non-nil 'failure' ends the
wait with that message.  Every distinct status is logged once; on a TTY
the current one is shown on the status line.  On timeout it raises,
naming what it waited for, how long, and the last status seen.
Interrupts (Ctrl-C) propagate.  Returns the last status.
]]
function M.wait(opts)
  local timeout = assert(opts.timeout, "wait needs a timeout")
  local interval = opts.interval or 15
  local t0 = sys.monotonic()
  local last, last_logged
  local n = 0
  while true do
    n = n + 1
    local done, status, failure = opts.poll(n)
    last = status or last
    if status and status ~= last_logged then
      log.info("%s: %s", opts.what, status)
      last_logged = status
    end
    if failure then
      log.status(nil)
      runbook.fail("%s: %s", opts.what, failure)
    end
    if done then
      log.status(nil)
      return last
    end
    local elapsed = sys.monotonic() - t0
    if elapsed >= timeout then
      log.status(nil)
      runbook.fail("timed out after %s waiting for %s; last status: %s",
        util.format_duration(elapsed), opts.what, tostring(last or "none seen"))
    end
    if log.is_tty() then
      log.status(string.format("%s: %s (%s)", opts.what, tostring(last or "..."),
        util.format_duration(elapsed)))
    end
    local nap = math.min(interval, math.max(0.05, timeout - elapsed))
    if sys.sleep(nap) == false or sys.interrupted() then
      log.status(nil)
      error(require("pgtide.errors").new { message = "interrupted", interrupted = true }, 0)
    end
  end
end

return M
