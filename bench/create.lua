-- create.lua - Transit key creation (aes256-gcm96), one new key per request: names
-- <BENCH_KEY_PREFIX>-<thread>-<n> (see common.lua for the environment).
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
local prefix = os.getenv("BENCH_KEY_PREFIX") or "c"
local n = 0
function init(args)
  local t = tonumber(rawget(_G, "thread_no")) or 1
  request = function()
    n = n + 1
    return wrk.format(nil, string.format("/v1/transit/keys/%s-%d-%d", prefix, t, n), nil, "{}")
  end
end
