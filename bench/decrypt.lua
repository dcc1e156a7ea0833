-- decrypt.lua - single-item Transit decrypt of a 64-byte plaintext; BENCH_CIPHERTEXT holds a
-- "vault:v1:…" ciphertext made under BENCH_KEY (run.sh encrypts one first).
dofile((os.getenv("BENCH_LUA_DIR") or ".") .. "/common.lua")
function init(args)
  bench.prepare("decrypt", '{"ciphertext":"' .. (os.getenv("BENCH_CIPHERTEXT") or "") .. '"}')
end
