-- kill -9 of a process running the full-load engine in the middle of the
-- copy, then a resume from the recorded units: the target ends exactly
-- equal to the source, with no duplicate rows (key ranges redone with
-- DELETE + COPY, CTID-split tables reloaded, whole tables truncated).
-- The copy is throttled by an ALWAYS trigger on the target so the kill
-- lands while units are in flight.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local sys = require "sys"
local json = require "json"

local src = T.cluster()
local dst = T.cluster()
local dir = T.tmp .. "/fullload-kill-" .. sys.getpid()
sys.mkdir_p(dir)

local ddl = {
  "CREATE TABLE big (id bigint %s, v text)",
  "CREATE TABLE heap (a int, v text)",
  "CREATE TABLE small (id int %s, t text)",
}
for _, d in ipairs(ddl) do
  src:sql(string.format(d, "PRIMARY KEY"))
  dst:sql(string.format(d, ""))             -- no keys on the target: duplicates would stay
end
src:sql([[
INSERT INTO big SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, 200000) g;
INSERT INTO heap SELECT g, repeat('h', 80) FROM generate_series(1, 100000) g;
INSERT INTO small SELECT g, 'row ' || g FROM generate_series(1, 1000) g;
ANALYZE big;
]])
-- throttle: 20 ms every 500 rows, even with session_replication_role = replica
dst:sql([[
CREATE FUNCTION slow_big() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id % 500 = 0 THEN PERFORM pg_sleep(0.02); END IF;
  RETURN NEW;
END $$;
CREATE FUNCTION slow_heap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.a % 500 = 0 THEN PERFORM pg_sleep(0.02); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER slow BEFORE INSERT ON big FOR EACH ROW EXECUTE FUNCTION slow_big();
CREATE TRIGGER slow BEFORE INSERT ON heap FOR EACH ROW EXECUTE FUNCTION slow_heap();
ALTER TABLE big ENABLE ALWAYS TRIGGER slow;
ALTER TABLE heap ENABLE ALWAYS TRIGGER slow;
]])

-- The driver: plans once, records the plan and each finished unit
-- atomically in a JSON state file, resumes from it.
local driver = dir .. "/driver.lua"
local f = assert(io.open(driver, "w"))
f:write([[
local load = require "core.load"
local json = require "json"
local sys = require "sys"
local source, target, path = arg[1], arg[2], arg[3]
local state = { done = {} }
if sys.exists(path) then state = json.decode(sys.readfile(path)) end
local function save() assert(sys.write_atomic(path, json.encode(state))) end
if not state.units then
  state.units = load.plan { source = source, split_threshold_bytes = 4 << 20, max_parts = 4 }
  save()
end
local s = load.full_load { source = source, target = target, jobs = 2, units = state.units,
  done_units = state.done, progress = false,
  on_unit_done = function (u) state.done[#state.done + 1] = u.id; save() end }
print("loaded " .. s.loaded .. " skipped " .. s.units_skipped)
]])
f:close()

local statefile = dir .. "/state.json"
local function run_driver(background)
  local cmd = string.format("%s script %s %s %s %s >>%s/driver.log 2>&1", T.q(T.pgtide), T.q(driver),
    T.q(src.conninfo), T.q(dst.conninfo), T.q(statefile), dir)
  if background then
    local _, out = T.sh(cmd .. " & echo $!")
    return tonumber(out:match("%d+"))
  end
  return T.sh(cmd)
end

local function read_state()
  if not sys.exists(statefile) then return nil end
  local ok, s = pcall(json.decode, sys.readfile(statefile))
  return ok and s or nil
end

local function digest(c, tbl)
  return c:sql(string.format(
    "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM %s t", tbl))
end

T.test("kill -9 during the copy, resume: exact equality, no duplicates", function ()
  local pid = run_driver(true)
  T.ok(pid, "driver did not start")
  -- wait until some unit finished while others are still pending
  local deadline, st = sys.monotonic() + 60, nil
  local alive
  repeat
    sys.sleep(0.05)
    st = read_state()
    alive = T.sh("kill -0 " .. pid .. " 2>/dev/null") == 0
  until (st and st.units and #st.done >= 1) or sys.monotonic() > deadline or not alive
  T.ok(alive, "the driver exited early: " .. (sys.readfile(dir .. "/driver.log") or ""))
  T.ok(st and #st.done >= 1, "no unit finished within 60 s")
  sys.kill(pid, "KILL")
  T.sh("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
  st = read_state()
  io.stderr:write(string.format("killed with %d of %d units done: %s\n", #st.done, #st.units,
    table.concat(st.done, " ")))
  T.ok(#st.done < #st.units, string.format("the kill came too late: %d of %d units done", #st.done, #st.units))
  local partial = tonumber(dst:sql("SELECT (SELECT count(*) FROM big) + (SELECT count(*) FROM heap)"))
  T.ok(partial < 300000, "the target should be incomplete after the kill")
  -- resume
  local code = run_driver(false)
  T.eq(code, 0, "resume exit code")
  local log = sys.readfile(dir .. "/driver.log")
  T.match(log, "skipped " .. #st.done)
  for _, t in ipairs { "big", "heap", "small" } do
    T.eq(digest(dst, t), digest(src, t), t)
  end
  T.eq(dst:sql("SELECT count(*) - count(DISTINCT id) FROM big"), "0", "duplicates in big")
  T.eq(dst:sql("SELECT count(*) - count(DISTINCT a) FROM heap"), "0", "duplicates in heap")
  local final = read_state()
  T.eq(#final.done >= #final.units, true, "every unit recorded")
end)

T.done()
