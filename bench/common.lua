-- common.lua - shared by the wrk scripts of `make bench` (loaded with dofile; BENCH_LUA_DIR).
--
-- Environment: BENCH_TOKEN (X-Vault-Token), BENCH_KEY (key name, default "bench"),
-- BENCH_NKEYS (> 0: each request names a random key k0000000 .. k<N-1>, as kmsd-mkstore made
-- them), BENCH_NREQ (requests prepared per thread, default 4096).
--
-- Every single-item script goes through request() cycling over prepared requests, so the
-- client does the same work for every scenario (bare ceiling, fresh store, 1M-key store).
-- done() prints one machine-readable line that run.sh parses:
--   BENCH requests=… duration_s=… rps=… p50_us=… p99_us=… errors=… non2xx=…

bench = {}
bench.token = os.getenv("BENCH_TOKEN") or ""
bench.key = os.getenv("BENCH_KEY") or "bench"
bench.nkeys = tonumber(os.getenv("BENCH_NKEYS") or "0")
bench.nreq = tonumber(os.getenv("BENCH_NREQ") or "4096")
-- base64 of 64 bytes of plaintext
bench.pt64 = "a21zZC1iZW5jaC1wbGFpbnRleHQtNjQtYnl0ZXMtb2YtZGF0YS0wMTIzNDU2Nzg5YWJjZGVmZ2hpamtsbW5vcA=="

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if bench.token ~= "" then
  wrk.headers["X-Vault-Token"] = bench.token
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

-- Prepare bench.nreq requests for `op` (encrypt/decrypt) with `body`.
function bench.prepare(op, body)
  local reqs = {}
  math.randomseed(7919 * (tonumber(rawget(_G, "thread_no")) or 1))
  for i = 1, bench.nreq do
    local name = bench.key
    if bench.nkeys > 0 then
      name = string.format("k%07d", math.random(0, bench.nkeys - 1))
    end
    reqs[i] = wrk.format(nil, "/v1/transit/" .. op .. "/" .. name, nil, body)
  end
  local n, i = #reqs, 0
  request = function()
    i = i + 1
    if i > n then i = 1 end
    return reqs[i]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d duration_s=%.3f rps=%.1f p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, secs, summary.requests / secs, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
