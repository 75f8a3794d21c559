-- wrk script of bench/heartbeat.py: `wrk -s requests.lua URL -- FILE`.
-- FILE holds one request a line, "METHOD<tab>PATH<tab>BEARER TOKEN<tab>JSON BODY" (token and
-- body may be empty); the connections send them in turn, over and over. At the end one JSON line of figures is printed, with the count of
-- responses that were not 2xx (wrk itself only counts those >= 400).

local threads = {}
local prepared = {}
local next_request = 1
non_2xx = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {}
    if token ~= "" then
      headers["Authorization"] = "Bearer " .. token
    end
    if body ~= "" then
      headers["Content-Type"] = "application/json"
    else
      body = nil
    end
    table.insert(prepared, wrk.format(method, path, headers, body))
  end
end

function request()
  local prepared_request = prepared[next_request]
  next_request = next_request % #prepared + 1
  return prepared_request
end

function response(status)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
  end
end

function done(summary, latency)
  local not_ok = 0
  for _, thread in ipairs(threads) do
    not_ok = not_ok + thread:get("non_2xx")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "non_2xx": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, not_ok, e.connect + e.read + e.write + e.timeout))
end
