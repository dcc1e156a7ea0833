-- rotate.lua - Transit key rotation of BENCH_KEY (default "bench"): every request adds a
-- version (see common.lua for the environment).
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
function init(args)
  local req = wrk.format(nil, "/v1/transit/keys/" .. bench.key .. "/rotate", nil, "{}")
  request = function()
    return req
  end
end
