-- encrypt.lua - single-item Transit encrypt of 64 bytes (see common.lua for the environment).
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
function init(args)
  bench.prepare("encrypt", '{"plaintext":"' .. bench.pt64 .. '"}')
end
