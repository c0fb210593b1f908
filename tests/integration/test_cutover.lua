-- Cutover of `pgtide run local` without `pgtide cutover`:
--   cutover=auto with write_fence=true, while a writer keeps writing: the
--     run cuts over by itself once lag stays low, the fence makes the
--     source read-only and ends the writer's session, and the target then
--     equals the source row for row;
--   on a terminal (a pty from util-linux `script`): Ctrl-C while streaming
--     opens the cutover menu, 'y' cuts over.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local sys = require "sys"
local json = require "json"

local src = T.cluster()
local dst = T.cluster()
local tmp = T.tmp .. "/cutover-" .. sys.getpid()
sys.mkdir_p(tmp)

local SCHEMA = [[
CREATE TABLE items (id bigserial PRIMARY KEY, qty int NOT NULL, label text, doc text);
ALTER TABLE items ALTER COLUMN doc SET STORAGE EXTERNAL;
CREATE TABLE moves (item_id bigint NOT NULL REFERENCES items (id) ON DELETE CASCADE, delta int, at timestamptz);
ALTER TABLE moves REPLICA IDENTITY FULL;
INSERT INTO items (qty, label, doc) SELECT g, 'l' || g, CASE WHEN g % 20 = 0 THEN repeat(md5(g::text), 100) END
  FROM generate_series(1, 3000) g;
INSERT INTO moves SELECT 1 + g % 3000, g % 9 - 4, now() FROM generate_series(1, 6000) g;
]]

local function setup(db)
  src:sql("CREATE DATABASE " .. db)
  dst:sql("CREATE DATABASE " .. db)
  src:sql(SCHEMA, db)
  return src.conninfo .. " dbname=" .. db, dst.conninfo .. " dbname=" .. db
end

-- A writer that runs until its stop file appears, its connection is
-- ended (the fence), or 120 s pass.  Prints why it stopped.
local writer = tmp .. "/writer.lua"
local f = assert(io.open(writer, "w"))
f:write([=[
local pg = require "pg"
local sys = require "sys"
local conninfo, stopfile = arg[1], arg[2]
local c = pg.connect(conninfo)
local n, why = 0, "stop file"
local deadline = sys.monotonic() + 120
while not sys.exists(stopfile) do
  if sys.monotonic() > deadline then why = "time limit"; break end
  local ok, err = pcall(function()
    c:exec("BEGIN")
    local id = math.random(1, 3500)
    c:exec("INSERT INTO items (qty, label) VALUES ($1, 'w')", id)
    c:exec("UPDATE items SET qty = qty + 1 WHERE id = $1", id)
    c:exec("INSERT INTO moves SELECT id, 1, now() FROM items WHERE id = $1", id)
    if id % 10 == 0 then c:exec("DELETE FROM items WHERE id = $1", id + 1) end
    c:exec("COMMIT")
  end)
  if not ok then
    pcall(c.exec, c, "ROLLBACK")
    if not pcall(c.query_one, c, "SELECT 1 AS x") then why = "connection lost: " .. tostring(err); break end
  else
    n = n + 1
  end
  sys.sleep(0.01)
end
print(string.format("writer: %d transactions, stopped by %s", n, why))
]=])
f:close()

local function start_writer(name, conninfo)
  local stop = tmp .. "/" .. name .. ".stop"
  local _, out = T.sh(string.format("%s script %s %s %s >%s/%s.log 2>&1 & echo $!", T.q(T.pgtide),
    T.q(writer), T.q(conninfo), T.q(stop), tmp, name))
  return { pid = tonumber(out:match("%d+")), stop = stop, log = tmp .. "/" .. name .. ".log" }
end

local function alive(pid) return T.sh("kill -0 " .. pid .. " 2>/dev/null") == 0 end

local function wait_writer(w, timeout)
  local deadline = sys.monotonic() + timeout
  while alive(w.pid) and sys.monotonic() < deadline do sys.sleep(0.05) end
  return not alive(w.pid)
end

local function digest(c, db, tbl)
  return c:sql(string.format(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM %s t", tbl), db)
end

T.test("cutover=auto with write_fence: cuts over once lag stays low, fences the source, equal", function()
  local SRC, DST = setup("auto")
  local w = start_writer("auto", SRC)
  sys.sleep(0.3)
  local state = tmp .. "/state-auto"
  local code, out, err = T.run { "run", "local", "source=" .. SRC, "target=" .. DST, "name=auto",
    "cutover=auto", "cutover_window=2", "cutover_lag=2", "write_fence=true", "jobs=2",
    "--state", state, "--yes" }
  T.eq(code, 0, "exit code:\n" .. err)
  T.match(err, "streaming until cutover: [^\n]*automatically once lag stays under 2 s for 2 s")
  T.match(err, "cutover requested by cutover=auto")
  T.match(err, "fence: database auto on the source is read%-only for new sessions; %d+ session%(s%) ended")
  T.match(err, "validate: comparing data %(offline mode%)")
  T.match(err, "Result: EQUAL")
  T.match(err, "To undo: ALTER DATABASE \"?auto\"? RESET default_transaction_read_only")
  T.ok(wait_writer(w, 20), "the writer is still running")
  local wlog = sys.readfile(w.log) or ""
  T.match(wlog, "stopped by connection lost", "the fence ended the writer's session: " .. wlog)
  local n = tonumber(wlog:match("writer: (%d+) transactions"))
  T.ok(n and n > 20, "the writer wrote during the migration: " .. wlog)
  for _, t in ipairs { "items", "moves" } do
    T.eq(digest(dst, "auto", t), digest(src, "auto", t), t)
  end
  -- new sessions on the source are read-only now
  T.eq(src:sql("SHOW default_transaction_read_only", "auto"), "on")
  local ok = pcall(src.sql, src, "INSERT INTO items (qty) VALUES (1)", "auto")
  T.eq(ok, false, "a write on the fenced source must fail")
  -- the migration's status afterwards
  local c2, sout = T.run { "status", "--state", state, "--json" }
  T.eq(c2, 0)
  local s = json.decode(sout)
  T.eq(s.phase, "done")
  T.eq(s.running, false)
  T.eq(s.cutover.status, "done")
  T.eq(s.cutover.fenced, true)
  T.eq(s.cutover.mode, "auto")
  T.eq(s.slot.name, "pgtide_auto")
  T.eq(s.slot.exists, false)
  src:sql("ALTER DATABASE auto RESET default_transaction_read_only")
end)

T.test("on a terminal: Ctrl-C while streaming opens the cutover menu, 'y' cuts over", function()
  if os.execute("command -v script >/dev/null 2>&1") ~= true then
    T.skip("terminal cutover", "util-linux 'script' is not installed")
    return
  end
  local SRC, DST = setup("tty")
  local state = tmp .. "/state-tty"
  local w = start_writer("tty", SRC)
  -- the keyboard: Ctrl-C once streaming, then 'y'; it stays until the run ends
  local feeder = string.format([[
    s=%s/status.json; st=%s/state.json
    for i in $(seq 1 600); do grep -q '"phase":.*"streaming"' "$s" 2>/dev/null && break; sleep 0.1; done
    sleep 1.5; touch %s; sleep 0.5
    printf '\003'; sleep 1; printf 'y\n'
    for i in $(seq 1 600); do grep -q '"finished"' "$st" 2>/dev/null && break; sleep 0.1; done]],
    T.q(state), T.q(state), T.q(w.stop))
  local cmd = table.concat({ T.q(T.pgtide), "run", "local", T.q("source=" .. SRC), T.q("target=" .. DST),
    "name=tty", "jobs=2", "--state", T.q(state), "--yes" }, " ")
  -- a real terminal, whatever the caller's environment says.  `script` runs
  -- the command with $SHELL -c (dash when SHELL is unset), and a shell left
  -- waiting in the terminal's foreground group dies of the Ctrl-C itself:
  -- exec, so pgtide is the only process the Ctrl-C reaches.
  local code, out = T.sh(string.format("(%s) | env -u PGTIDE_NO_TTY SHELL=/bin/sh script -qfec %s /dev/null",
    feeder, T.q("exec " .. cmd)))
  out = out:gsub("\r", "")
  T.eq(code, 0, "exit code:\n" .. out:sub(-3000))
  T.match(out, "Cut over now%? %[y%] yes, cut over")
  T.match(out, "cutover requested by terminal")
  T.match(out, "Result: EQUAL")
  T.match(out, "runbook local finished")
  T.ok(wait_writer(w, 20), "writer stopped")
  for _, t in ipairs { "items", "moves" } do
    T.eq(digest(dst, "tty", t), digest(src, "tty", t), t)
  end
end)

T.done()
