-- standin: the AWS side of the DMS runbook tests.  Starts moto_server
-- (signature checking on) behind the DMS stand-in (tests/lib/dms_standin.py)
-- and gives the test what it needs to talk to them:
--
--   local S = standin.start("dms")   -- nil, why: moto_server is missing
--   S.endpoint, S.creds              -- endpoint URL, credentials file
--   S.env                            -- environment words for pgtide runs
--   S.script(body)                   -- run Lua with `client(service)`, decode its JSON output
--   S.set_network(tbl)               -- the stand-in's network.json (security groups)
--   S.set_admin{ c1, c2 }            -- the test's clusters: their administrator
--                                       (postgres) makes the publication the
--                                       stand-in's pgoutput mover reads, nothing else
--   S.throttle{ Op = n }             -- the next n calls of Op answer ThrottlingException
--   S.read_log()                     -- the stand-in's log
--   S.stop()
--
-- Raises when the services cannot start for another reason.
local T = require "t"
local json = require "json"
local sys = require "sys"

local M = {}

function M.start(prefix)
  local dir = string.format("%s/%s-env-%d", T.tmp, prefix, sys.getpid())
  -- every resource answers not-found once right after its creation
  -- (eventual consistency), transitions take a short while
  -- (and the workflow's Retry intervals are scaled down)
  local code, out, err = T.sh(string.format("STANDIN_NOT_FOUND=1 STANDIN_SFN_RETRY_SCALE=0.05 "
    .. "STANDIN_DELAYS=iam=2,minute=0.5 python3 %s/tests/lib/dms_standin.py up %s --pgtide %s",
    T.root, T.q(dir), T.q(T.pgtide)))
  if code == 3 then return nil, "moto_server is not installed" end
  assert(code == 0, "cannot start moto and the stand-in: " .. tostring(err))
  local S = { dir = dir, endpoint = out:match("endpoint=(%S+)"), creds = out:match("credentials=(%S+)") }
  S.env = string.format("AWS_SHARED_CREDENTIALS_FILE=%s AWS_CONFIG_FILE=/dev/null AWS_REGION=us-east-1 "
    .. "AWS_EC2_METADATA_DISABLED=true", T.q(S.creds))
  local lua_path = os.getenv("PGTIDE_LUA_PATH")
  if lua_path then S.env = S.env .. " PGTIDE_LUA_PATH=" .. T.q(lua_path) end

  -- Run a Lua snippet with the aws module against the stand-in; returns
  -- its JSON output, decoded.
  function S.script(body)
    local file = dir .. "/snippet.lua"
    local fh = assert(io.open(file, "w"))
    fh:write("local aws = require 'aws'\nlocal json = require 'json'\nlocal EP = ", string.format("%q", S.endpoint),
      "\nlocal function client(s) return aws.client(s, { region = 'us-east-1', endpoint_url = EP }) end\n", body)
    fh:close()
    local c, o, e = T.sh(string.format("env %s %s script %s", S.env, T.q(T.pgtide), T.q(file)))
    assert(c == 0, "aws snippet failed: " .. e)
    return json.decode(o)
  end

  function S.set_network(t)
    local fh = assert(io.open(dir .. "/standin/network.json", "w"))
    fh:write(json.encode(t)); fh:close()
  end

  function S.set_admin(clusters)
    local t = {}
    for _, c in ipairs(clusters) do
      t[c.conninfo:match("host=(%S+)") .. ":" .. c.port] = c.conninfo
    end
    local fh = assert(io.open(dir .. "/standin/admin.json", "w"))
    fh:write(json.encode(t)); fh:close()
  end

  -- S.throttle{ StartReplicationTask = 1 }: the next calls answer ThrottlingException
  function S.throttle(t)
    local fh = assert(io.open(dir .. "/standin/throttle.json", "w"))
    fh:write(json.encode(t)); fh:close()
  end

  function S.read_log()
    return sys.readfile(dir .. "/standin/dms_standin.log") or ""
  end

  function S.stop()
    T.sh(string.format("python3 %s/tests/lib/dms_standin.py down %s", T.root, T.q(dir)))
  end
  return S
end

return M
