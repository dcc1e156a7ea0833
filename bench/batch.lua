-- batch.lua - batch Transit encrypt: BENCH_BATCH items (default 1000) of 64 bytes per request.
-- Items per second = requests per second × BENCH_BATCH.
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
function init(args)
  local n = tonumber(os.getenv("BENCH_BATCH") or "1000")
  local items = {}
  for i = 1, n do
    items[i] = '{"plaintext":"' .. bench.pt64 .. '"}'
  end
  bench.nkeys = 0
  bench.nreq = 1
  bench.prepare("encrypt", '{"batch_input":[' .. table.concat(items, ",") .. ']}')
end
