-- Shared by the scenario scripts (loaded with dofile): counts the statuses a scenario does not
-- expect, and prints the run's figures as one JSON line (prefixed "RESULT ") for bench/http.py.
--
-- Script arguments (after `--` on wrk's command line), the same for every scenario:
--   1. threads: wrk's -t, so each thread takes its own share of the data file
--   2. expected statuses, comma-separated ("200" or "400")
--   3. reuse: "once" (each line is sent at most once: a single-use code) or "cycle"
--   4. a file with one request per line (a JSON body for POST, ignored for GET)
--   5. optional: milliseconds each connection waits before its next request (0: none), for a
--      steady background load rather than as many requests as the server can answer
-- A "once" file that runs out wraps around and counts "wrapped": the driver reports the run
-- as failed (its codes were used already), never as fast.

local M = {}

local threads = {}
local next_id = 0

function M.split(text, separator)
   local parts = {}
   for part in string.gmatch(text, "([^" .. separator .. "]+)") do
      table.insert(parts, part)
   end
   return parts
end

-- Defines wrk's callbacks. `build(line)` returns the request for one line of the data file.
function M.install(build)
   function setup(thread)
      thread:set("id", next_id)
      next_id = next_id + 1
      table.insert(threads, thread)
   end

   function init(args)
      local count = tonumber(args[1])
      expected = {}
      for _, status in ipairs(M.split(args[2], ",")) do
         expected[tonumber(status)] = true
      end
      once = args[3] == "once"
      lines = {}
      local index = 0
      for line in io.lines(args[4]) do
         if index % count == id then
            table.insert(lines, line)
         end
         index = index + 1
      end
      if #lines == 0 then
         table.insert(lines, "")
      end
      local pause = tonumber(args[5] or "0")
      if pause > 0 then
         function delay()
            return pause
         end
      end
      position = 0
      unexpected = 0
      wrapped = 0
      statuses = ""
   end

   function request()
      position = position + 1
      if position > #lines then
         position = 1
         if once then
            wrapped = wrapped + 1
         end
      end
      return build(lines[position])
   end

   function response(status, headers, body)
      if not expected[status] then
         unexpected = unexpected + 1
         if #statuses < 60 then
            statuses = statuses .. status .. " "
         end
      end
   end

   function done(summary, latency, requests)
      local unexpected_total, wrapped_total, seen = 0, 0, ""
      for _, thread in ipairs(threads) do
         unexpected_total = unexpected_total + thread:get("unexpected")
         wrapped_total = wrapped_total + thread:get("wrapped")
         seen = seen .. thread:get("statuses")
      end
      local errors = summary.errors
      io.write(string.format(
         'RESULT {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
         '"write_errors": %d, "timeouts": %d, "unexpected": %d, "unexpected_statuses": "%s", ' ..
         '"wrapped": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
         summary.requests, summary.duration, errors.connect, errors.read, errors.write,
         errors.timeout, unexpected_total, seen, wrapped_total,
         latency:percentile(50), latency:percentile(90), latency:percentile(99),
         latency.max, latency.mean))
   end
end

return M
