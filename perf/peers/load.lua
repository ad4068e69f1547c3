-- wrk script for perf/compare.py: each request posts the next body from BODIES (one JSON
-- document per line), and done() prints the run's figures as one JSON line.
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local counter = 0
local threads = {}

function setup(thread)
  thread:set("offset", counter * 997)
  counter = counter + 1
  threads[#threads + 1] = thread
end

function init(args)
  i = offset or 0
  shed, failed = 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[i % #bodies + 1])
end

function response(status, headers, body)
  if status == 429 then shed = shed + 1 elseif status ~= 200 then failed = failed + 1 end
end

function done(summary, latency, requests)
  local e = summary.errors
  local n429 = 0
  for _, thread in ipairs(threads) do n429 = n429 + thread:get("shed") end
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "errors": %d, "shed": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, e.connect + e.read + e.write + e.status + e.timeout, n429))
end
