-- tests/lib/latency.lua: start tests/lib/latency_proxy.py from a test.
--
--   local latency = require "latency"
--   local p = latency.proxy(T, cluster, 10)   -- 10 ms each way (20 ms round trip)
--   p:conninfo("dbname=app")   --> "host=127.0.0.1 port=N user=postgres dbname=app"
--   p:cut()                    -- every connection through it reset at once
--   p:stop()
--
-- The proxy forwards to the cluster's Unix socket, so a client coming
-- through it is a local one to the server (trust, no password), and it
-- is registered with T.background: T.done() ends it.
local sys = require "sys"

local M = {}
local mt = {}
mt.__index = mt

function M.proxy(T, cluster, delay_ms)
  local dir = T.tmp .. "/latency-" .. sys.getpid() .. "-" .. math.random(1e9)
  sys.mkdir_p(dir)
  local portfile = dir .. "/port"
  local socket = cluster.dir .. "/.s.PGSQL." .. cluster.port
  local _, out = T.sh(string.format("python3 %s --delay-ms %s --target %s --port-file %s >%s/log 2>&1 & echo $!",
    T.q(T.root .. "/tests/lib/latency_proxy.py"), tostring(delay_ms), T.q(socket), T.q(portfile), dir))
  local pid = T.background(tonumber(out:match("%d+")))
  local deadline = sys.monotonic() + 10
  while not sys.exists(portfile) and sys.monotonic() < deadline do sys.sleep(0.05) end
  if not sys.exists(portfile) then
    error("latency proxy did not start: " .. (sys.readfile(dir .. "/log") or ""), 2)
  end
  return setmetatable({ pid = pid, port = tonumber(sys.readfile(portfile):match("%d+")), dir = dir }, mt)
end

function mt:conninfo(extra)
  return string.format("host=127.0.0.1 port=%d user=postgres%s", self.port, extra and (" " .. extra) or "")
end

-- SIGUSR1: the proxy resets every open connection.
function mt:cut() sys.kill(self.pid, 10) end

function mt:stop() sys.kill(self.pid, "TERM") end

return M
