-- wrk script of bench/bench_webhook_intake.py: send a fixed, pre-built set of webhook deliveries, each exactly once.
--
-- The bench writes one file per wrk thread into $WRK_DELIVERIES_DIR: t1.req, t2.req, ... Each holds complete HTTP
-- requests (signed deliveries, re-sends included), as records "<byte length>\n<bytes>". Thread i sends the
-- requests of ti.req in order, each once; when its slice is handed out, its connections that ask for more get an
-- empty request (nothing is written, so nothing is answered and nothing is timed: the connection idles), and the
-- thread stops as soon as every request of its slice has been answered. The set of deliveries sent is therefore
-- known exactly; the bench counts the rows afterwards.
--
-- Environment: WRK_DELIVERIES_DIR, WRK_DELIVERY_THREADS (= wrk -t), WRK_DELIVERY_CONNECTIONS (= wrk -c).
-- done() writes $WRK_DELIVERIES_DIR/result.txt: "key value" lines (duration_us, requests, connections, errors),
-- per thread its items, sent, answered, already_recorded answers and the wall-clock microseconds of its first
-- request written and last answer read, "status <code> <count>" lines, and "latency <us> <count>" lines: wrk's
-- whole latency histogram (one line per distinct value), so the bench can pool rounds exactly. wrk 4.1 has added
-- coordinated-omission correction samples to that histogram before done(); the bench removes them (it knows
-- wrk's formula: duration, requests and connections are written for that).
--
-- wrk measures closed-loop latency: a connection sends its next request only after the answer to the previous one,
-- so a slow server is sent less (coordinated omission); this is latency under saturation, not at a given rate.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
int getpid(void);
int kill(int pid, int sig);
]]

local dir = os.getenv("WRK_DELIVERIES_DIR")
local n_threads = tonumber(os.getenv("WRK_DELIVERY_THREADS"))
local threads = {}
local counter = 1
local tv = ffi.new("bench_timeval")

local function now_us()                -- wrk's own clock (gettimeofday), in microseconds
   ffi.C.gettimeofday(tv, nil)
   return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end

local function exists(path)
   local f = io.open(path, "r")
   if f then f:close() end
   return f ~= nil
end

-- wrk's main thread sleeps for the whole -d duration whatever its threads do; SIGINT ends that sleep. The last
-- thread to finish (each marks itself done first, then looks at the others) sends it.
local function finished()
   wrk.thread:stop()
   io.open(dir .. "/done." .. id, "w"):close()
   for i = 1, n_threads do
      if not exists(dir .. "/done." .. i) then return end
   end
   ffi.C.kill(ffi.C.getpid(), 2)
end

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   items = {}
   local f = assert(io.open(dir .. "/t" .. id .. ".req", "rb"))
   while true do
      local len = f:read("*l")
      if not len then break end
      items[#items + 1] = f:read(tonumber(len))
   end
   f:close()
   n_items = #items
   sent = 0
   answered = 0
   already = 0
   statuses = {}
   -- wrk calls request() once on its first thread before starting, only to check the request parses (it is never
   -- sent): answer that call with the first request without handing it out.
   verify_call = (id == 1)
end

function request()
   if verify_call then
      verify_call = false
      return items[1]
   end
   if sent >= #items then
      return ""                -- slice handed out: this connection idles until the thread stops
   end
   if sent == 0 then first_us = now_us() end
   sent = sent + 1
   return items[sent]
end

function response(status, headers, body)
   answered = answered + 1
   statuses[status] = (statuses[status] or 0) + 1
   if string.find(body, "already_recorded", 1, true) then
      already = already + 1
   end
   if answered == n_items then
      last_us = now_us()
      finished()
   end
end

function done(summary, latency, requests)
   local out = assert(io.open(dir .. "/result.txt", "w"))
   out:write(string.format("duration_us %d\nrequests %d\nconnections %d\n", summary.duration, summary.requests,
                           tonumber(os.getenv("WRK_DELIVERY_CONNECTIONS"))))
   for _, k in ipairs({"connect", "read", "write", "status", "timeout"}) do
      out:write(string.format("error_%s %d\n", k, summary.errors[k]))
   end
   for _, thread in ipairs(threads) do
      out:write(string.format("thread %d items %d sent %d answered %d already_recorded %d first_us %d last_us %d\n",
                              thread:get("id"), thread:get("n_items"), thread:get("sent"), thread:get("answered"),
                              thread:get("already"), thread:get("first_us") or 0, thread:get("last_us") or 0))
      for status, n in pairs(thread:get("statuses")) do
         out:write(string.format("status %d %d\n", status, n))
      end
   end
   for i = 1, #latency do
      local value, count = latency(i)
      out:write(string.format("latency %d %d\n", value, count))
   end
   out:close()
end
