-- GET the URL's path on every request (healthz while a login flood runs); see common.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

bench.install(function(_)
   return wrk.format("GET")
end)
