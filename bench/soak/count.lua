-- wrk script: each thread sends at most SOAK_WRK_LIMIT requests, then stops itself and
-- prints SOAK_THREAD_DONE (wrk has no request count of its own, and its main thread sleeps
-- for the whole -d even when every thread stopped: run.py sends wrk SIGINT once all threads
-- said so, which ends the run with the real duration; -d still bounds it). The request is
-- the one wrk builds from the URL and -H flags. `done` prints one JSON line.
local limit = tonumber(os.getenv("SOAK_WRK_LIMIT") or "0")
local sent = 0
local stopped = false
local req

function init(args)
  req = wrk.format()
end

function request()
  sent = sent + 1
  if limit > 0 and sent > limit and not stopped then
    stopped = true
    io.write("SOAK_THREAD_DONE\n")
    io.flush()
    wrk.thread:stop()
  end
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SOAK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"http_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.timeout, e.status, latency:percentile(50), latency:percentile(99), latency.max))
end
