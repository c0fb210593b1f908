-- The monitoring of a real migration: a local CDC migration between two
-- PostgreSQL 15 clusters (the RDS-like owner on the source, PlanetScale's
-- default role on the target), a writer changing the source throughout,
-- `--metrics 127.0.0.1:0` and cutover=auto.
--   * Prometheus (Debian's package) scrapes the run's /metrics every
--     second; the series it stored are checked through its HTTP API:
--     rows copied per table equal to the source's, the stream step
--     running, lag and apply figures, the changes applied.
--   * The report: report.json and report.html in the state directory;
--     headless Chromium (Debian's package) loads report.html with every
--     network fetch forbidden, and the test checks that the page logged no
--     console error (the check is first shown to catch a page that does)
--     and that each chart's SVG polylines carry exactly one point per
--     sample recorded in samples.jsonl; a screenshot is taken
--     (PGTIDE_SCREENSHOT=PATH keeps a copy: docs/monitoring-report.png).
--   * No secret in the report, the samples or the events.
local T = require "t"
local roles = require "roles"
local sys = require "sys"
local json = require "json"

local tmp = T.tmp .. "/monitoring-" .. sys.getpid()
-- MONITORING_SCALE=N: N times the orders (a full load long enough to chart, for the docs' screenshot)
local SCALE = math.tointeger(tonumber(os.getenv("MONITORING_SCALE") or "1")) or 1
sys.mkdir_p(tmp)

local function have(cmd) return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true end

local function curl(url)
  local code, out, err = T.sh("curl -sS --max-time 5 " .. T.q(url))
  if code ~= 0 then return nil, err end
  return out
end

local function wait_for(what, timeout, fn)
  local deadline = sys.monotonic() + timeout
  while true do
    local v = fn()
    if v then return v end
    if sys.monotonic() > deadline then error("timed out after " .. timeout .. " s waiting for " .. what, 2) end
    sys.sleep(0.2)
  end
end

-- {==================================================================
-- The migration
-- ===================================================================

local src = T.cluster()
local dst = T.cluster()
local S = roles.rds(src, "shop")
local D = roles.planetscale(dst, "shop")
src:sql([[
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers (id),
                     amount numeric(12,2) NOT NULL, note text);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE events (id bigserial PRIMARY KEY, kind text, payload text);
INSERT INTO customers (name, email) SELECT 'c' || g, 'c' || g || '@example.com' FROM generate_series(1, 20000) g;
INSERT INTO orders (customer_id, amount, note) SELECT 1 + g % 20000, g % 1000, repeat('n', 60)
  FROM generate_series(1, 150000 * ]] .. SCALE .. [[) g;
INSERT INTO events (kind, payload) SELECT 'k' || g % 7, repeat(md5(g::text), 8) FROM generate_series(1, 40000) g;
]], "shop")
-- the tables belong to the master-like owner, as on RDS
for _, t in ipairs { "customers", "orders", "events" } do src:sql("ALTER TABLE " .. t .. " OWNER TO app", "shop") end
S.grant()

local writer = tmp .. "/writer.lua"
local f = assert(io.open(writer, "w"))
f:write([=[
local pg = require "pg"
local sys = require "sys"
local c = pg.connect(arg[1])
local deadline = sys.monotonic() + 150
local n = 0
while not sys.exists(arg[2]) and sys.monotonic() < deadline do
  local ok = pcall(function()
    c:exec("BEGIN")
    for _ = 1, 5 do
      local id = math.random(1, 20000)
      c:exec("INSERT INTO orders (customer_id, amount, note) VALUES ($1, 1, 'w')", id)
      c:exec("UPDATE customers SET name = name || '.' WHERE id = $1", id)
      c:exec("INSERT INTO events (kind, payload) VALUES ('w', md5(random()::text))")
    end
    c:exec("COMMIT")
  end)
  if not ok then pcall(c.exec, c, "ROLLBACK") end
  n = n + 1
  sys.sleep(0.02)
end
print("writer: " .. n .. " transactions")
]=])
f:close()
local stopfile = tmp .. "/writer.stop"
local _, wout = T.sh(string.format("%s script %s %s %s >%s/writer.log 2>&1 & echo $!", T.q(T.pgtide), T.q(writer),
  T.q(S.owner), T.q(stopfile), tmp))
T.background(tonumber(wout:match("%d+")))

local state = tmp .. "/state"
local runlog = tmp .. "/run.log"
local _, rout = T.sh(string.format("%s run local %s %s name=shop jobs=2 cutover=auto cutover_window=16 "
  .. "cutover_lag=5 --metrics 127.0.0.1:0 --state %s --yes >%s 2>&1 & echo $!", T.q(T.pgtide),
  T.q("source=" .. S.owner), T.q("target=" .. D.conninfo), T.q(state), T.q(runlog)))
local run_pid = T.background(tonumber(rout:match("%d+")))

local function run_alive() return os.execute("kill -0 " .. run_pid .. " 2>/dev/null") == true end

-- }==================================================================

-- {==================================================================
-- Prometheus scraping the run
-- ===================================================================

local prom_url
T.test("Prometheus scrapes the run's /metrics: copied rows, step, lag, apply", function()
  if not have("prometheus") then
    T.skip("prometheus", "Debian's prometheus package is not installed (make deps)")
    return
  end
  local metrics = wait_for("the metrics address in status.json", 60, function()
    local st = sys.readfile(state .. "/status.json")
    return st and json.decode(st).metrics
  end)
  T.match(metrics, "^http://127%.0%.0%.1:%d+/metrics$")
  local target = metrics:match("^http://([^/]+)")
  -- our own look first: the exposition is well-formed
  local text = assert(curl(metrics))
  T.match(text, '# TYPE pgtide_info gauge\npgtide_info{migration="shop",runbook="local",')
  T.match(text, '\npgtide_step_status{step="preflight",index="1",status="%a+"} 1\n')
  T.match(text, '\npgtide_step_status{step="cleanup",index="10",status="pending"} 1\n')
  -- a free port for Prometheus (it cannot be told to pick one and say which)
  local port = tonumber((select(2, T.sh([[python3 -c 'import socket; s=socket.socket(); ]]
    .. [[s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])']]))):match("%d+"))
  local cfg = tmp .. "/prometheus.yml"
  local pf = assert(io.open(cfg, "w"))
  pf:write(string.format([[
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pgtide
    static_configs:
      - targets: ['%s']
]], target))
  pf:close()
  local _, pout = T.sh(string.format("prometheus --config.file=%s --storage.tsdb.path=%s/tsdb "
    .. "--web.listen-address=127.0.0.1:%d >%s/prometheus.log 2>&1 & echo $!", T.q(cfg), tmp, port, tmp))
  T.background(tonumber(pout:match("%d+")))
  prom_url = "http://127.0.0.1:" .. port
  local function query(q)
    local body = curl(prom_url .. "/api/v1/query?query=" .. q:gsub("[^%w_]", function(c)
      return string.format("%%%02X", c:byte()) end))
    if not body then return nil end
    local ok, r = pcall(json.decode, body)
    if not ok or r.status ~= "success" then return nil end
    return r.data.result
  end
  -- the stream step running, seen by Prometheus, with lag and apply figures
  local res = wait_for("Prometheus to store pgtide_step_status{step=stream,status=running}", 90, function()
    local r = query('pgtide_step_status{step="stream",status="running"}')
    return r and #r > 0 and r
  end)
  T.eq(res[1].metric.job, "pgtide")
  local lag = wait_for("pgtide_cdc_lag_bytes", 30, function()
    local r = query("pgtide_cdc_lag_bytes")
    return r and #r > 0 and r
  end)
  T.ok(tonumber(lag[1].value[2]) >= 0, "lag bytes")
  T.ok(#query("pgtide_cdc_lag_seconds") == 1, "lag seconds")
  T.ok(#query("pgtide_cdc_apply_rate") == 1, "apply rate")
  -- changes applied, seen growing over the scrapes
  local changes = wait_for("changes applied", 30, function()
    local r = query('sum(pgtide_cdc_changes_total)')
    return r and #r > 0 and tonumber(r[1].value[2]) > 0 and r
  end)
  T.ok(tonumber(changes[1].value[2]) > 0)
  -- rows copied per table: the full load's figures (the writer ran before the slot's snapshot)
  local rows = query("pgtide_table_rows_copied")
  local by = {}
  for _, r in ipairs(rows) do by[r.metric.table] = tonumber(r.value[2]) end
  local summary = json.decode(sys.readfile(state .. "/state.json")).steps["full-load"].outputs.summary
  T.eq(#summary.tables, 3)
  for _, t in ipairs(summary.tables) do
    T.eq(by[t.name], t.rows, t.name .. " rows copied")
    T.ok(t.rows >= ({ ["public.customers"] = 20000, ["public.orders"] = 150000 * SCALE, ["public.events"] = 40000 })[t.name],
      t.name .. " has at least the rows made before the writer started")
  end
  T.eq(#query('pgtide_full_load_percent == 100'), 1, "full load complete")
  T.eq(#query('pgtide_phase{phase="streaming"}'), 1, "phase streaming")
  T.eq(#query('pgtide_errors_total'), 1, "errors counter")
  local up = query('up{job="pgtide"}')
  T.eq(tonumber(up[1].value[2]), 1, "scrapes succeed")
end)

-- }==================================================================

-- {==================================================================
-- The run's end, and its report
-- ===================================================================

T.test("the run cuts over by itself and finishes; the report is written", function()
  wait_for("the migration to finish", 150, function() return not run_alive() end)
  local log = sys.readfile(runlog) or ""
  T.match(log, "runbook local finished", "the run:\n" .. log:sub(-3000))
  T.match(log, "metrics: serving OpenMetrics/Prometheus text on http://127%.0%.0%.1:%d+/metrics")
  -- what the log says on the way (rough edges found by new users)
  T.nomatch(log, "starting at 0/0", "the stream's start is the slot's position")
  T.match(log, "stream: applying changes from slot pgtide_shop, starting at %x+/%x+, the slot's consistent point")
  T.nomatch(log, "INFO  [sequences] server: NOTICE", "server NOTICEs are debug output")
  T.match(log, "Update the application's connection strings to the target, host=127%.0%.0%.1 port=%d+ dbname=shop, "
    .. "with the application's own role and password %(not the migration's login%)")
  T.nomatch(log:match("Update the application's[^\n]*") or "", "pscale_admin", "the migration's login")
  T.ok(sys.exists(state .. "/report.html"), "report.html")
  T.ok(sys.exists(state .. "/report.json"), "report.json")
  -- the endpoint went away with the run
  local metrics = json.decode(sys.readfile(state .. "/status.json")).metrics
  T.eq(curl(metrics), nil, "the endpoint is closed once the run ended")
end)
assert(io.open(stopfile, "w")):close()

local samples = {}
for line in (sys.readfile(state .. "/samples.jsonl") or ""):gmatch("[^\n]+") do samples[#samples + 1] = json.decode(line) end

T.test("pgtide report rebuilds the report; report.json holds the run's figures", function()
  local code, out, err = T.run { "report", "--state", state }
  T.eq(code, 0, err)
  T.match(out, "report%.html\n.*report%.json")
  local r = json.decode(sys.readfile(state .. "/report.json"))
  T.eq(r.migration.status, "done")
  T.eq(#r.steps, 10)
  for _, s in ipairs(r.steps) do T.eq(s.status, "done", s.name) end
  T.eq(r.steps[3].title, "Full load: copy every table in parallel")
  local by = {}
  for _, t in ipairs(r.tables) do by[t.name] = t end
  local copied = json.decode(sys.readfile(state .. "/state.json")).steps["full-load"].outputs.summary.tables
  for _, t in ipairs(copied) do T.eq(by[t.name].rows, t.rows, t.name .. " rows") end
  T.ok(by["public.orders"].copy_seconds > 0, "copy time")
  T.ok(by["public.orders"].index_seconds, "index build time")
  T.eq(by["public.orders"].validation, "equal")
  T.eq(r.preflight.counts.fail, 0)
  T.ok(#r.validations >= 2, "count-check and cutover validations")
  T.eq(r.cutover.status, "done")
  T.ok(#r.cutover.phases >= 2, "cutover phases")
  T.ok(#r.series.lag_bytes >= 3, "lag samples: " .. #r.series.lag_bytes)
  T.ok(#r.series.apply_per_s >= 2, "apply samples: " .. #r.series.apply_per_s)
  T.ok(#samples >= 3, "samples recorded: " .. #samples)
  -- the test secrets (tests/lib/secrets.txt), the role password among them
  for line in sys.readfile(T.root .. "/tests/lib/secrets.txt"):gmatch("[^\n]+") do
    local name, value = line:match("^([^#%s]%S*)%s+(%S+)")
    if name then
      for _, file in ipairs { "report.html", "report.json", "samples.jsonl", "events.jsonl" } do
        T.nomatch(sys.readfile(state .. "/" .. file) or "", value, file .. " holds secret " .. name)
      end
    end
  end
end)

-- }==================================================================

-- {==================================================================
-- The report in a real browser
-- ===================================================================

local chromium = have("chromium") and "chromium" or have("chromium-browser") and "chromium-browser"

-- Load a file in headless Chromium; returns the DOM after load and the
-- browser's log (console messages).  opts.screenshot = PATH also takes one.
local profile = 0
local function browse(path, opts)
  opts = opts or {}
  profile = profile + 1
  local args = { chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" .. tmp .. "/chromium-" .. profile,
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000", "--window-size=1280," .. (opts.height or 900) }
  if opts.screenshot then args[#args + 1] = "--screenshot=" .. opts.screenshot else args[#args + 1] = "--dump-dom" end
  args[#args + 1] = "file://" .. path
  local q = {}
  for _, a in ipairs(args) do q[#q + 1] = T.q(a) end
  local code, out, err = T.sh("timeout 60 " .. table.concat(q, " "))
  return code, out, err
end

-- Console errors and uncaught exceptions in Chromium's log.
local function console_errors(log)
  local found = {}
  for line in log:gmatch("[^\n]+") do
    if line:find("CONSOLE", 1, true) or line:find("Uncaught", 1, true)
       or line:find("Content Security Policy", 1, true) or line:find("Refused to", 1, true) then
      found[#found + 1] = line
    end
  end
  return found
end

T.test("the console check catches a page with errors (so that it can fail)", function()
  if not chromium then T.skip("chromium", "Debian's chromium package is not installed (make deps)") return end
  local bad = tmp .. "/bad.html"
  local bf = assert(io.open(bad, "w"))
  bf:write([[<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'; ]]
    .. [[script-src 'unsafe-inline'"></head><body><script>console.error("broken page");</script>]]
    .. [[<script>undefined_function();</script><img src="http://127.0.0.1:9/x.png"></body></html>]])
  bf:close()
  local code, dom, log = browse(bad)
  T.eq(code, 0, "chromium: " .. log:sub(-2000))
  T.match(dom, "<body>")
  local errs = table.concat(console_errors(log), "\n")
  T.match(errs, "broken page", "console.error seen:\n" .. log:sub(-3000))
  T.match(errs, "undefined_function", "uncaught exception seen")
end)

T.test("Chromium loads report.html: no console error, every chart has one point per sample", function()
  if not chromium then T.skip("chromium", "Debian's chromium package is not installed (make deps)") return end
  local page = state .. "/report.html"
  local code, dom, log = browse(page)
  T.eq(code, 0, "chromium: " .. log:sub(-2000))
  T.eq(console_errors(log), {}, "console errors")
  T.match(dom, "<h1>Migration shop")
  -- the charts' points, per chart and series, against the samples recorded
  local want = { ["chart-copy"] = "copy_mb_s", ["chart-apply"] = "apply_per_s", ["chart-lag-bytes"] = "lag_bytes",
                 ["chart-lag-seconds"] = "lag_seconds", ["chart-wal"] = "wal_bytes" }
  for id, key in pairs(want) do
    local n = 0
    for _, s in ipairs(samples) do if type(s[key]) == "number" then n = n + 1 end end
    local svg = dom:match('<figure class="chart" id="' .. id:gsub("%-", "%%-") .. '">(.-)</figure>')
    T.ok(svg, "chart " .. id .. " in the DOM")
    local points, lines = 0, 0
    for pts in (svg or ""):gmatch('<polyline data%-series="' .. key .. '"[^>]- points="([^"]*)"') do
      lines = lines + 1
      for _ in pts:gmatch("[%d.]+,[%d.]+") do points = points + 1 end
    end
    T.eq(points, n, id .. " points")
    T.ok(key == "copy_mb_s" or n >= 2, id .. " has samples: " .. n)
    T.ok(n == 0 or lines >= 1, id .. " polyline")
  end
  -- the steps' timeline: one bar per attempt
  local r = json.decode(sys.readfile(state .. "/report.json"))
  local bars = 0
  for _ in (dom:match('<svg[^>]-id="timeline".-</svg>') or ""):gmatch('<rect[^>]-class="bar ') do bars = bars + 1 end
  T.eq(bars, #r.attempts, "timeline bars")
  -- the screenshot
  local shot = tmp .. "/report.png"
  code, _, log = browse(page, { screenshot = shot, height = 2400 })
  T.eq(code, 0, "screenshot: " .. log:sub(-2000))
  local png = sys.readfile(shot) or ""
  T.eq(png:sub(1, 8), "\137PNG\r\n\26\n", "a PNG")
  T.ok(#png > 50000, "a screenshot with content: " .. #png .. " bytes")
  local keep = os.getenv("PGTIDE_SCREENSHOT")
  if keep then T.sh("cp " .. T.q(shot) .. " " .. T.q(keep)) end
end)

T.done()
