-- GET the URL's path with "Authorization: Bearer <line>", each line of the data file in turn
-- (an access token per line: /me); see common.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

bench.install(function(token)
   return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. token })
end)
