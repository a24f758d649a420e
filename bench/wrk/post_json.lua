-- POST one JSON body per request, each line of the data file in turn (see common.lua).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local headers = { ["Content-Type"] = "application/json" }

bench.install(function(body)
   return wrk.format("POST", nil, headers, body)
end)
