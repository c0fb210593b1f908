-- pgtide.monitor and pgtide.report without servers: samples kept bounded
-- (thinned evenly past the limit), the metrics exposition well-formed with
-- labels escaped, and the report built from a state directory written by
-- hand (attempts, a killed process, chart points, no network reference,
-- secrets masked).  The real thing end to end: tests/integration/test_monitoring.lua.
local T = require "t"
local json = require "json"
local sys = require "sys"
local monitor = require "pgtide.monitor"
local report = require "pgtide.report"

local n = 0
local function dir()
  n = n + 1
  local d = string.format("%s/monitor-%d-%d", T.tmp, sys.getpid(), n)
  assert(sys.mkdir_p(d))
  return d
end

local function lines(path)
  local out = {}
  for l in (sys.readfile(path) or ""):gmatch("[^\n]+") do out[#out + 1] = json.decode(l) end
  return out
end

T.test("samples stay under the limit, thinned evenly, the first and the last kept", function()
  local d = dir()
  local ctx = { state_dir = d }
  local interval, max = monitor.SAMPLE_INTERVAL, monitor.MAX_SAMPLES
  monitor.SAMPLE_INTERVAL, monitor.MAX_SAMPLES = 0, 10
  for i = 1, 35 do
    monitor.observe(ctx, { phase = "streaming", cdc = { lag_bytes = i, lag_seconds = i / 10, inserts = i * 10,
                                                        retained_bytes = 1000 * i } })
  end
  monitor.SAMPLE_INTERVAL, monitor.MAX_SAMPLES = interval, max
  local s = lines(d .. "/samples.jsonl")
  T.ok(#s <= 10 and #s >= 5, "%d samples kept", #s)
  T.eq(s[1].lag_bytes, 1, "the first sample stays")
  T.eq(s[#s].lag_bytes, 35, "the last sample stays")
  for i = 2, #s do T.ok(s[i].t > s[i - 1].t and s[i].lag_bytes > s[i - 1].lag_bytes, "in order") end
  T.eq(s[#s].wal_bytes, 35000)
  T.ok(s[#s].apply_per_s ~= nil, "apply rate from the change counters")
  -- a phase change is an event
  local e = lines(d .. "/events.jsonl")
  T.eq(e[1].kind, "phase")
  T.eq(e[1].phase, "streaming")
  T.eq(#e, 1)
end)

T.test("the exposition is well-formed: HELP/TYPE once per family, labels escaped", function()
  local data = { name = 'we"ird\nname', runbook = "local", order = { "preflight", "full-load" },
                 steps = { preflight = { status = "done", seconds = 1.5 },
                           ["full-load"] = { status = "running", outputs = {} } } }
  local live = { phase = "full-load", full_load = { percent = 42.5, rows = 10, bytes = 2048, mb_per_s = 1.5,
    tables = { { name = "public.a\\b", rows = 10, bytes = 2048 } } },
    cdc = { state = "streaming", lag_bytes = 5, lag_seconds = 0.25, inserts = 3, txns = 2, retained_bytes = 77 } }
  local text = monitor.metrics_text(data, live, { errors = 2, warnings = 1, step_failures = 0, apply_per_s = 12.5 })
  local families, typed = {}, {}
  for line in text:gmatch("[^\n]+") do
    local kind, name = line:match("^# (%u+) ([%w_]+)")
    if kind then
      T.ok(kind == "HELP" or kind == "TYPE", line)
      if kind == "TYPE" then T.eq(typed[name], nil, "TYPE once: " .. name); typed[name] = true end
    else
      local metric, labels, value = line:match('^([%a_][%w_]*)(%b{}) (%S+)$')
      if not metric then metric, value = line:match("^([%a_][%w_]*) (%S+)$") end
      T.ok(metric and tonumber(value), "sample line: %s", line)
      families[metric] = true
      T.ok(typed[metric], "TYPE before %s", metric)
      if labels then T.ok(not labels:find("\n"), "no raw newline in labels") end
    end
  end
  T.match(text, 'pgtide_info{migration="we\\"ird\\nname",runbook="local",version="[^"]+"} 1\n')
  T.match(text, 'pgtide_table_rows_copied{table="public.a\\\\b"} 10\n')
  T.match(text, 'pgtide_step_status{step="full%-load",index="2",status="running"} 1\n')
  T.match(text, "\npgtide_cdc_lag_seconds 0.25\n")
  T.match(text, "\npgtide_cdc_apply_rate 12.5\n")
  T.match(text, '\npgtide_cdc_changes_total{kind="insert"} 3\n')
  T.match(text, "\npgtide_errors_total 2\n")
  T.match(text, "\npgtide_full_load_throughput_bytes_per_second 1572864\n")
  T.ok(families.pgtide_slot_retained_wal_bytes, "retained WAL")
end)

T.test("the report from a state written by hand: attempts, a killed run, points, no fetch, no secret", function()
  local d = dir()
  local pw = T.secret("pg_password")
  sys.register_secret(pw)
  local t0 = 1700000000
  local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end
  local st = { version = 1, name = "orders", runbook = "local", title = "Migrate", created = iso(t0),
    order = { "preflight", "full-load", "stream" },
    titles = { preflight = "Check both databases", ["full-load"] = "Full load", stream = "Stream" },
    params = { source = "host=db user=app password=" .. pw, target = "host=t", jobs = 4 },
    steps = {
      preflight = { status = "done", started = iso(t0), finished = iso(t0 + 1), seconds = 1, attempts = 1,
        outputs = { preflight = { counts = { pass = 1, warn = 1, fail = 0 },
          results = { { id = "a", title = "Check A", status = "pass", message = "fine" },
                      { id = "b", title = "Check B", status = "warn", message = "hmm <b>" } } } } },
      ["full-load"] = { status = "done", seconds = 20, attempts = 2, outputs = { complete = true,
        units = { { schema = "public", table = "t", bytes = 100 } },
        summary = { rows = 5, bytes = 100, mb_per_s = 1, tables = { { name = "public.t", rows = 5, bytes = 100,
                                                                         index_seconds = 0.5 } } } } },
      stream = { status = "failed", error = "boom", attempts = 1 },
    } }
  assert(sys.write_atomic(d .. "/state.json", json.encode(st)))
  local ev = {
    { t = t0, kind = "step", step = "preflight", event = "start", pid = 1 },
    { t = t0 + 1, kind = "step", step = "preflight", event = "done", pid = 1 },
    { t = t0 + 1, kind = "step", step = "full-load", event = "start", pid = 1 },
    { t = t0 + 5, kind = "phase", phase = "full-load", pid = 1 },       -- then kill -9
    { t = t0 + 10, kind = "step", step = "full-load", event = "start", pid = 2 },
    { t = t0 + 14, kind = "unit", unit = "public.t", table = "public.t", rows = 5, bytes = 100, seconds = 2 },
    { t = t0 + 30, kind = "step", step = "full-load", event = "done", pid = 2 },
    { t = t0 + 30, kind = "step", step = "stream", event = "start", pid = 2 },
    { t = t0 + 40, kind = "step", step = "stream", event = "failed", error = "boom", pid = 2 },
  }
  local f = assert(io.open(d .. "/events.jsonl", "w"))
  for _, e in ipairs(ev) do f:write(json.encode(e), "\n") end
  f:close()
  f = assert(io.open(d .. "/samples.jsonl", "w"))
  for i = 1, 6 do
    f:write(json.encode { t = t0 + 30 + i, lag_bytes = i * 100, lag_seconds = i / 2, apply_per_s = i > 1 and 10 * i or nil,
                          changes = i * 10, wal_bytes = 4096 * i }, "\n")
  end
  f:write("{torn\n")   -- a line cut by a crash is skipped
  f:close()
  -- (a real state.json is redacted when saved; this one holds the secret on purpose, as a
  -- state written before the secret was registered would: it is removed once read)
  local ok, jpath, hpath = pcall(report.write, d)
  os.remove(d .. "/state.json")
  assert(ok, jpath)
  local r = json.decode(sys.readfile(jpath))
  T.eq(r.migration.status, "failed")
  T.eq(r.migration.failed_step, "stream")
  T.eq(#r.attempts, 4)
  T.eq(r.attempts[2].result, "killed", "the attempt of the killed process")
  T.eq(r.attempts[2].finish, t0 + 5, "ends at its last sign of life")
  T.eq(r.attempts[4].result, "failed")
  T.eq(r.tables[1].copy_seconds, 2)
  T.eq(r.tables[1].index_seconds, 0.5)
  T.eq(#r.series.lag_bytes, 6)
  T.eq(#r.series.apply_per_s, 5)
  T.eq(r.steps[2].title, "Full load")
  local html = sys.readfile(hpath)
  T.nomatch(html, pw)
  T.nomatch(sys.readfile(jpath), pw)
  T.match(html, "password=%*%*%*" )
  T.nomatch(html, "http://")
  T.nomatch(html, "https://")
  T.nomatch(html, "<script")
  T.match(html, "Content%-Security%-Policy\" content=\"default%-src 'none'")
  T.match(html, "hmm &lt;b&gt;", "text is escaped")
  T.match(html, 'data%-series="lag_bytes" data%-points="6"')
  T.match(html, 'data%-series="apply_per_s" data%-points="5"')
  local bars = 0
  for _ in html:gmatch('class="bar ') do bars = bars + 1 end
  T.eq(bars, 4, "one bar per attempt")
end)

T.done()
