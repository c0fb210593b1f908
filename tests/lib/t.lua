-- t.lua: the test helper for Lua tests (tests/lua, tests/integration),
-- run by `pgtide script FILE`.  Prints one line per test in the format
-- tests/run.sh counts ("ok - name", "not ok - name", "skip - name: why").
--
--   local T = require "t"
--   T.test("name", function () T.eq(got, want) end)   -- TEST_ONLY=substring runs only matching tests
--   T.skip("name", "why")
--   local c = T.cluster{ tls = false, conf = {"key = value"}, version = 17 }
--       a throwaway cluster (default PostgreSQL 15; other versions run in a
--       chroot, see tests/lib/pgversions.sh); T.version_missing(17) says why
--       a version cannot be had here (nil when it can)
--   c.conninfo, c.dir, c.version, c:sql("select 1") (psql, returns stdout), c:stop(),
--   c:restart() (immediate, as after a crash)
--   c:bindir()  -- that version's client programs (pg_dump, psql...)
--   T.run{PGTIDE args...}  -> exit code, stdout, stderr  (runs the pgtide binary)
--   T.secret("pg_password")   -- a value from tests/lib/secrets.txt
--   T.psql(conninfo, sql), T.alive(pid), T.gone(pid), T.wait_for(what, timeout, cond),
--   T.state(dir), T.step_status(dir, step), T.current_step(dir), T.background(pid)
--       for tests that drive `pgtide run` in the background
--   T.done()  -- stops clusters, exits non-zero when a test failed
local T = {}

local root = os.getenv("PGTIDE_TEST_ROOT") or "."
T.root = root
T.pgtide = os.getenv("PGTIDE") or (root .. "/pgtide")
T.tmp = os.getenv("TEST_TMP") or "/tmp"

local failed, clusters = 0, {}

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function deep_eq(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not deep_eq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
T.deep_eq = deep_eq

function T.eq(got, want, what)
  if not deep_eq(got, want) then
    error(string.format("%sgot %s, want %s", what and (what .. ": ") or "", fmt(got), fmt(want)), 2)
  end
end

function T.ok(cond, msg, ...)
  if not cond then error(string.format(msg or "assertion failed", ...), 2) end
  return cond
end

function T.match(s, pattern, what)
  if type(s) ~= "string" or not s:find(pattern) then
    error(string.format("%s%s does not match %q", what and (what .. ": ") or "", fmt(s), pattern), 2)
  end
end

function T.nomatch(s, pattern, what)
  if type(s) == "string" and s:find(pattern, 1, true) then
    error(string.format("%s%q unexpectedly contains %q", what and (what .. ": ") or "", s, pattern), 2)
  end
end

-- T.raises(fn, pattern): fn must raise an error whose tostring matches pattern.
function T.raises(fn, pattern)
  local ok, err = pcall(fn)
  if ok then error("expected an error matching " .. fmt(pattern), 2) end
  if pattern and not tostring(err):find(pattern) then
    error(string.format("error %s does not match %q", fmt(tostring(err)), pattern), 2)
  end
  return err
end

-- TEST_ONLY=substring in the environment runs only the tests whose name contains it.
local only = os.getenv("TEST_ONLY")
if only == "" then only = nil end

function T.test(name, fn)
  if only and not name:find(only, 1, true) then return end
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    print("ok - " .. name)
  else
    failed = failed + 1
    print("not ok - " .. name)
    io.stderr:write("FAILED: ", name, "\n", tostring(err), "\n")
  end
  io.stdout:flush()
end

function T.skip(name, why)
  print("skip - " .. name .. ": " .. why)
end

local secrets
function T.secret(name)
  if not secrets then
    secrets = {}
    for line in io.lines(root .. "/tests/lib/secrets.txt") do
      local k, v = line:match("^(%S+)%s+(%S+)")
      if k and not k:find("^#") then secrets[k] = v end
    end
  end
  return assert(secrets[name], "no secret " .. name)
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
T.q = sh_quote

-- Run a shell command; returns exit code, stdout, stderr.
function T.sh(cmd)
  local errf = os.tmpname()
  local p = io.popen(cmd .. " 2>" .. errf, "r")
  local out = p:read("a")
  local _, _, code = p:close()
  local f = io.open(errf); local err = f:read("a"); f:close(); os.remove(errf)
  return code, out, err
end

-- Run the pgtide binary with arguments (a list), optional env table and stdin text.
function T.run(args, opts)
  opts = opts or {}
  local parts = {}
  for k, v in pairs(opts.env or {}) do parts[#parts + 1] = k .. "=" .. sh_quote(v) end
  if #parts > 0 then table.insert(parts, 1, "env") end
  parts[#parts + 1] = sh_quote(T.pgtide)
  for _, a in ipairs(args) do parts[#parts + 1] = sh_quote(a) end
  local cmd = table.concat(parts, " ")
  if opts.stdin then
    local inf = os.tmpname()
    local f = io.open(inf, "w"); f:write(opts.stdin); f:close()
    cmd = cmd .. " <" .. inf
    local code, out, err = T.sh(cmd)
    os.remove(inf)
    return code, out, err
  end
  return T.sh(cmd .. " </dev/null")
end

local cluster_mt = {}
cluster_mt.__index = cluster_mt

function cluster_mt:sql(sql, db)
  local code, out, err = T.sh(string.format("psql %s -X -A -t -q -v ON_ERROR_STOP=1 -c %s",
    sh_quote(self.conninfo .. (db and (" dbname=" .. db) or "")), sh_quote(sql)))
  if code ~= 0 then error("psql failed: " .. err, 2) end
  return (out:gsub("\n$", ""))
end

-- An immediate restart (as after a crash), same port.
function cluster_mt:restart()
  local code, _, err = T.sh(root .. "/tests/lib/pgcluster.sh restart " .. sh_quote(self.dir))
  if code ~= 0 then error("cannot restart cluster: " .. err, 2) end
end

function cluster_mt:stop()
  if self.dir then
    T.sh(root .. "/tests/lib/pgcluster.sh stop " .. sh_quote(self.dir))
    self.dir = nil
  end
end

-- The directory of version v's client programs (pg_dump, pg_restore, psql, pgbench).
function T.bindir(v)
  local code, out, err = T.sh(root .. "/tests/lib/pgversions.sh bindir " .. math.tointeger(v))
  if code ~= 0 then error("no PostgreSQL " .. v .. " clients: " .. err, 2) end
  return (out:gsub("%s+$", ""))
end

function cluster_mt:bindir() return T.bindir(self.version) end

-- Why PostgreSQL version v cannot run here, or nil when it can.
function T.version_missing(v)
  local code, out = T.sh(root .. "/tests/lib/pgversions.sh available " .. math.tointeger(v))
  if code == 0 then return nil end
  return (out:gsub("%s+$", ""))
end

local ncluster = 0
-- Start a throwaway cluster (tests/lib/pgcluster.sh): PostgreSQL 15 unless
-- opts.version says otherwise.
function T.cluster(opts)
  opts = opts or {}
  ncluster = ncluster + 1
  local dir = string.format("%s/pg-%d-%d-%d", T.tmp, math.random(1e6), ncluster, os.time())
  local args = { root .. "/tests/lib/pgcluster.sh", "start", dir }
  if opts.tls then args[#args + 1] = "--tls" end
  if opts.version then args[#args + 1] = "--version"; args[#args + 1] = tostring(opts.version) end
  for _, c in ipairs(opts.conf or {}) do
    args[#args + 1] = "--conf"; args[#args + 1] = c
  end
  local cmd = {}
  for _, a in ipairs(args) do cmd[#cmd + 1] = sh_quote(a) end
  local code, out, err = T.sh(table.concat(cmd, " "))
  if code ~= 0 then error("cannot start cluster: " .. err, 2) end
  local c = setmetatable({ dir = dir, conninfo = out:gsub("%s+$", ""), version = opts.version or 15 },
                         cluster_mt)
  c.port = tonumber(c.conninfo:match("port=(%d+)"))
  clusters[#clusters + 1] = c
  return c
end

-- {==================================================================
-- Driving `pgtide run` from a test
-- ===================================================================

-- T.psql(conninfo, sql) -> stdout: run SQL as the role of 'conninfo'; raises on error.
function T.psql(conninfo, sql)
  local code, out, err = T.sh(string.format("psql %s -X -A -t -q -v ON_ERROR_STOP=1 -c %s", sh_quote(conninfo),
    sh_quote(sql)))
  if code ~= 0 then error("psql failed: " .. err, 2) end
  return (out:gsub("\n$", ""))
end

-- T.alive(pid) -> is the process running?
function T.alive(pid) return pid ~= nil and T.sh("kill -0 " .. math.tointeger(pid) .. " 2>/dev/null") == 0 end

-- T.gone(pid): wait until the process has ended.
function T.gone(pid) T.sh("while kill -0 " .. math.tointeger(pid) .. " 2>/dev/null; do sleep 0.05; done") end

-- T.wait_for(what, timeout, cond): poll cond() until true; raises naming 'what' after timeout s.
function T.wait_for(what, timeout, cond)
  local sys = require "sys"
  local deadline = sys.monotonic() + timeout
  while sys.monotonic() < deadline do
    if cond() then return true end
    sys.sleep(0.1)
  end
  error("timed out waiting for " .. what, 2)
end

-- T.state(dir) -> the state.json of a state directory (nil while there is none).
function T.state(dir)
  local json, sys = require "json", require "sys"
  local ok, st = pcall(json.decode, sys.readfile(dir .. "/state.json") or "")
  return ok and type(st) == "table" and st or nil
end

-- T.step_status(dir, name) -> "pending" | "running" | "done" | "failed" | ...
function T.step_status(dir, name)
  local st = T.state(dir)
  local s = st and st.steps and st.steps[name]
  return s and s.status or "pending"
end

-- T.current_step(dir) -> the first step not done and its status ("finished" when all are).
function T.current_step(dir)
  local st = T.state(dir)
  if not st then return "none", "none" end
  for _, name in ipairs(st.order or {}) do
    local s = st.steps[name]
    if not s or s.status ~= "done" then return name, s and s.status or "pending" end
  end
  return "finished", "done"
end

-- }==================================================================

-- T.background(pid): a process this test started; T.done kills it if it still runs
-- (a failed test must not leave a migration running against the next one's clusters).
local background = {}
function T.background(pid)
  if pid then background[#background + 1] = pid end
  return pid
end

function T.done()
  for _, pid in ipairs(background) do os.execute("kill -9 " .. math.tointeger(pid) .. " 2>/dev/null") end
  for _, c in ipairs(clusters) do c:stop() end
  io.stdout:flush()
  os.exit(failed == 0 and 0 or 1)
end

math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
return T
