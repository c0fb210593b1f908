--[[
pgtide.dms.endpoints: the source and target endpoints and their
connection tests (the seed's Steps 3, 4 and 5).

  endpoints.find(dms, id)                       -> endpoint or nil
  endpoints.ensure(ctx, names, which, spec)     -> arn      (which: "source" | "target")
  endpoints.test(ctx, instance_arn, arn, label) -> raises with DMS's failure message
  endpoints.source_spec(ctx, names) / target_spec(ctx, names)

Passwords come from pgtide.dms.conn (registered as secrets at once);
they are sent to DMS only and never written to the state or logs.
]]
local awsx = require "pgtide.dms.awsx"
local conn = require "pgtide.dms.conn"
local naming = require "pgtide.dms.naming"
local settings = require "pgtide.dms.settings"
local infra = require "pgtide.dms.infra"
local log = require "log"
local runbook = require "pgtide.runbook"

local M = {}

function M.find(dms, id)
  return infra.describe_one(dms, "DescribeEndpoints", "endpoint-id", id, "Endpoints")
end

--[[
The source endpoint as the seed configures it: engine postgres, the
seed's extra connection attributes (test_decoding, a slot name unique to
this migration, captureDDLs=false, maxFileSize=32768) plus DMS's WAL
heartbeat (heartbeat, heartbeat_frequency minutes), SSL mode from
source_ssl_mode.
]]
function M.source_spec(ctx, names)
  local d = conn.details(ctx, "source")
  return {
    EndpointIdentifier = names.source_endpoint, EndpointType = "source", EngineName = "postgres",
    ServerName = d.host, Port = d.port, DatabaseName = d.dbname, Username = d.user,
    Password = d.password, SslMode = ctx.params.source_ssl_mode,
    ExtraConnectionAttributes = settings.source_attributes {
      slot = naming.slot(ctx, names), plugin = ctx.params.slot_plugin,
      -- the heartbeat is for CDC: a full load reads no WAL
      heartbeat = (ctx.params.heartbeat and ctx.params.migration_type ~= "full-load") and ctx.params.heartbeat_frequency
        or 0,
      heartbeat_schema = ctx.params.heartbeat_schema,
    },
    Tags = naming.tags(names),
  }
end

-- The target endpoint: engine postgres, SSL mode require (the seed's
-- "SSL Configuration"), optional AfterConnectScript.
function M.target_spec(ctx, names)
  local d = conn.details(ctx, "target")
  local spec = {
    EndpointIdentifier = names.target_endpoint, EndpointType = "target", EngineName = "postgres",
    ServerName = d.host, Port = d.port, DatabaseName = d.dbname, Username = d.user,
    Password = d.password, SslMode = ctx.params.target_ssl_mode, Tags = naming.tags(names),
  }
  if ctx.params.after_connect_script and ctx.params.after_connect_script ~= "" then
    spec.PostgreSQLSettings = { AfterConnectScript = ctx.params.after_connect_script }
  end
  return spec
end

-- Does an existing endpoint carry the non-secret settings of 'spec'?
local function same_settings(ep, spec)
  return ep.ServerName == spec.ServerName and tonumber(ep.Port) == tonumber(spec.Port)
    and ep.DatabaseName == spec.DatabaseName and ep.Username == spec.Username
    and (ep.SslMode or "none") == (spec.SslMode or "none")
    and (spec.ExtraConnectionAttributes == nil
         or (ep.ExtraConnectionAttributes or "") == spec.ExtraConnectionAttributes)
end

-- Wait until an endpoint is gone (bounded).
local function wait_deleted(ctx, dms, id)
  awsx.wait {
    what = "endpoint " .. id .. " deleted", timeout = ctx.params.delete_timeout,
    interval = math.min(ctx.params.poll_interval, 5),
    poll = function()
      local ep = M.find(dms, id)
      if not ep then return true, "deleted" end
      return false, ep.Status or "deleting"
    end,
  }
end
M.wait_deleted = wait_deleted

--[[
endpoints.ensure(ctx, names, which, spec) -> arn.  Creates the endpoint
unless one with the same settings and a successful connection test
(ctx.out.tested[which]) exists.  An endpoint whose settings changed, or
whose last test failed (the user fixed a password or a host), is
recreated so DMS gets the new values; that is only done before the task
exists, when nothing references the endpoint.
]]
function M.ensure(ctx, names, which, spec)
  local dms = awsx.client(ctx, "dms")
  ctx.out.tested = ctx.out.tested or {}
  local ep = M.find(dms, spec.EndpointIdentifier)
  local used_by = ep and infra.describe_one(dms, "DescribeReplicationTasks", "endpoint-arn", ep.EndpointArn,
    "ReplicationTasks")
  if ep and used_by and not same_settings(ep, spec) then
    -- a task references it: update in place
    log.info("%s endpoint %s: settings changed; modifying it (task %s uses it)", which,
      spec.EndpointIdentifier, used_by.ReplicationTaskIdentifier)
    local mod = {}
    for k, v in pairs(spec) do
      if k ~= "EndpointIdentifier" and k ~= "Tags" and k ~= "EngineName" then mod[k] = v end
    end
    mod.EndpointArn = ep.EndpointArn
    dms:ModifyEndpoint(mod)
  elseif ep and not used_by and not (same_settings(ep, spec) and ctx.out.tested[which] == "successful") then
    log.info("%s endpoint %s: %s; recreating it with the current settings", which,
      spec.EndpointIdentifier, same_settings(ep, spec) and "its last connection test did not succeed"
        or "its settings changed")
    dms:DeleteEndpoint { EndpointArn = ep.EndpointArn }
    wait_deleted(ctx, dms, spec.EndpointIdentifier)
    ep = nil
    ctx.out.tested[which] = nil
  end
  if not ep then
    local res = dms:CreateEndpoint(spec)
    ep = res.Endpoint
    log.info("created %s endpoint %s (%s:%d/%s, SSL mode %s)", which, spec.EndpointIdentifier,
      spec.ServerName, spec.Port, spec.DatabaseName, spec.SslMode or "none")
  end
  ctx.out[which .. "_endpoint_arn"] = ep.EndpointArn
  ctx.out[which .. "_endpoint_id"] = spec.EndpointIdentifier
  ctx:save()
  return ep.EndpointArn
end

local function connection(dms, instance_arn, arn)
  local res = awsx.try(dms.DescribeConnections, dms, {
    Filters = { { Name = "endpoint-arn", Values = { arn } },
                { Name = "replication-instance-arn", Values = { instance_arn } } } })
  for _, c in ipairs(res and res.Connections or {}) do
    if c.EndpointArn == arn and c.ReplicationInstanceArn == instance_arn then return c end
  end
  return nil
end

local hints = {
  source = "check the source host, port, user and password, that the source's security group and "
    .. "pg_hba.conf allow the replication instance, and the SSL mode (source_ssl_mode)",
  target = "check the PlanetScale host, port, user and password from the console, that the instance "
    .. "can reach the Internet, and that SSL mode is require",
}

--[[
endpoints.test(ctx, instance_arn, arn, which) -> "successful".  Starts a
DMS connection test (unless one is already running) and waits, bounded
by connection_timeout, for its result.  A failed test raises with DMS's
LastFailureMessage and what to check.
]]
function M.test(ctx, instance_arn, arn, which)
  local dms = awsx.client(ctx, "dms")
  local cur = connection(dms, instance_arn, arn)
  if not (cur and cur.Status == "testing") then
    -- right after CreateEndpoint, DMS may not know the endpoint yet
    local ok, err = pcall(awsx.settle, ctx, "endpoint " .. arn, dms.TestConnection, dms,
                          { ReplicationInstanceArn = instance_arn, EndpointArn = arn })
    if not ok and awsx.code(err) ~= "InvalidResourceStateFault" then error(err, 0) end
  end
  local last
  local ok, err = pcall(awsx.wait, {
    what = which .. " endpoint connection test",
    timeout = ctx.params.connection_timeout,
    interval = math.min(ctx.params.poll_interval, 5),
    poll = function()
      last = connection(dms, instance_arn, arn)
      if not last then return false, "no result yet" end
      if last.Status == "successful" then return true, "successful" end
      if last.Status == "failed" then
        return false, "failed", string.format("failed: %s. Fix: %s",
          (last.LastFailureMessage and last.LastFailureMessage ~= "") and last.LastFailureMessage
            or "(DMS gave no message)", hints[which])
      end
      return false, last.Status
    end,
  })
  ctx.out.tested = ctx.out.tested or {}
  ctx.out.tested[which] = ok and "successful" or (last and last.Status or "unknown")
  ctx:save()
  if not ok then error(err, 0) end
  return "successful"
end

return M
