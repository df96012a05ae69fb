#!/bin/sh
# hattn loadgen end to end on the CPU: a small run of a hybrid model and of
# causal attention over the same requests (a trace, then Poisson arrivals),
# its formats and SVG, requests refused for the pool, and every refusal of
# bad input with its sentence.  Skips (77) when hattn was built without LLVM.
set -u
. "${top_srcdir:-.}/tests/cli-lib.sh"

printf 'pattern only = causal\n' >"$tmp/one.hattn"
"$hattn" run "$tmp/one.hattn" --seqlen 64 --heads 1 --head-dim 16 >"$tmp/out" 2>&1
if grep -q "built without LLVM" "$tmp/out"; then
  echo "SKIP: hattn was built without LLVM"
  exit 77
fi

cat >"$tmp/m.hattn" <<'EOF2'
pattern local = causal & window(64)
pattern global = causal
pattern sinky = causal & (window(64) | sink(4))
pattern docs = causal & document
model hybrid {
  layers 4
  heads 4 kv_heads 2 head_dim 32
  dtype fp32
  layer 0-3 : local
  layer 3 : global
  layer 1 heads 0-1 : sinky
}
model packed {
  layers 1
  heads 2 head_dim 32
  dtype fp32
  layer 0 : docs
}
model split {
  layers 1
  heads 4 kv_heads 2 head_dim 32
  dtype fp32
  layer 0 : local
  layer 0 heads 1 : global
}
model big {
  layers 1
  heads 2 head_dim 32
  layer 0 : global
}
EOF2
# A trace of six requests; the last is too long for the pool of --kv-memory.
cat >"$tmp/trace.csv" <<'EOF2'
# seconds,prompt,output
0,100,8
0.001,300,4
0.001,64,1
0.01,200,16   # a comment
0.02,129,3
0.03,20000,8
EOF2
lg="$hattn loadgen $tmp/m.hattn --model hybrid -t 2 --db $tmp/k.db --max-batch 4 --max-tokens 256 --chunk 128"
# Pages of 64 keys of 2 KV heads of 32 fp32 values: 16 KiB for K, as much for V: 20 pages.
expect 0 '"requests": 6, "done": 5, "unfinished": 0, "refused": 1' \
  $lg --trace "$tmp/trace.csv" --kv-memory 640k --format json
grep -c '"requests": 6, "done": 5, "unfinished": 0, "refused": 1' "$tmp/out" >"$tmp/n"
if [ "$(cat "$tmp/n")" -ne 2 ]; then
  echo "FAIL: the spec and causal runs should both serve 5 of the 6 requests"
  fails=$((fails + 1))
fi
expect 0 '"model": "causal"' $lg --trace "$tmp/trace.csv" --kv-memory 640k --format json
expect 0 '"pool_pages": 20, "page_size": 64' $lg --trace "$tmp/trace.csv" --kv-memory 640k --format json
# Poisson arrivals at two loads: the table, the savings lines, csv and svg.
expect 0 "at 40/s, spec over causal: throughput " \
  $lg --rate 20,40 --duration 0.5 --prompt-len uniform:64,400 --output-len lognormal:8,0.5 --kv-memory 4m \
  --svg "$tmp/curves.svg" --json "$tmp/curves.json"
expect 0 "rate/s model" $lg --rate 20 --duration 0.3 --kv-memory 4m --prompt-len 200 --output-len 4
expect 0 "rate,model,requests,done,unfinished,refused" \
  $lg --rate 20 --duration 0.3 --kv-memory 4m --prompt-len 200 --output-len 4 --format csv
if grep -q '"runs": \[' "$tmp/curves.json" && grep -q '<svg' "$tmp/curves.svg" && [ "$(grep -c '<polyline' "$tmp/curves.svg")" -eq 6 ]; then
  echo "ok: the SVG has three panels of two curves"
else
  echo "FAIL: $tmp/curves.svg lacks its curves"
  fails=$((fails + 1))
fi
# Every run's numbers: each request served, times positive, the pool used.
expect 0 ',spec,' $lg --rate 30 --duration 0.4 --kv-memory 4m --prompt-len uniform:50,300 --output-len 6 --format csv
awk -F, 'NR > 1 && ($4 != $3 || $5 != 0 || $8 <= 0 || $10 <= 0 || $13 <= 0 || $20 <= 0 || $20 > 1) { bad = 1 }
  END { exit bad }' "$tmp/out" || {
  echo "FAIL: a run left requests, or measured no time or no pool use:"
  sed 's/^/  | /' "$tmp/out"
  fails=$((fails + 1))
}
# --other-ms-per-token charges each step its tokens' time for the rest of the
# model: a decode step of one request takes 5 ms more, so every time per
# output token is at least 5 ms.
expect 0 ',causal,' $lg --rate 20 --duration 0.3 --kv-memory 4m --prompt-len 100 --output-len 4 \
  --other-ms-per-token 5 --format csv
awk -F, 'NR > 1 && !($13 >= 5) { bad = 1 } END { exit bad }' "$tmp/out" || {
  echo "FAIL: --other-ms-per-token 5 left a time per output token below 5 ms:"
  sed 's/^/  | /' "$tmp/out"
  fails=$((fails + 1))
}
expect 2 "--other-ms-per-token: expected milliseconds from 0 to 1000, got '-1'" $lg --other-ms-per-token -1
expect 0 "Poisson" "$hattn" loadgen --help

# Refusals.
expect 2 "--rate: expected up to 16 rates above 0" $lg --rate 0
expect 2 "--rate: expected up to 16 rates above 0" $lg --rate 2,x
expect 2 "--prompt-len: uniform:A,B needs A <= B, got 'uniform:9,3'" $lg --prompt-len uniform:9,3
expect 2 "--output-len: expected N, uniform:A,B or lognormal:MEDIAN,SIGMA (sigma 0 to 4), got 'lognormal:1k'" \
  $lg --output-len lognormal:1k
expect 2 "--page-size: expected a power of two up to 256, got '48'" $lg --page-size 48
expect 2 "--kv-memory: expected a size such as 512m or 80g, got '-1g'" $lg --kv-memory -1g
expect 2 "--kv-memory: 1024 bytes make 0 pages of 32768 bytes (K and V)" $lg --kv-memory 1k
expect 2 "--max-tokens (8) must be at least --max-batch (16)" \
  "$hattn" loadgen "$tmp/m.hattn" --model hybrid --max-batch 16 --max-tokens 8
expect 2 "--format: expected text, json or csv, got 'xml'" $lg --format xml
expect 2 "--duration: expected seconds above 0" $lg --duration 0
printf '0,100,8\nsoon,1,1\n' >"$tmp/bad.csv"
expect 2 "bad.csv:2: expected 'seconds,prompt,output'" $lg --trace "$tmp/bad.csv"
printf '1,100,8\n0.5,10,1\n' >"$tmp/order.csv"
expect 2 "order.csv:2: arrival 0.5 before the previous line's 1: a trace is in order of arrival" \
  $lg --trace "$tmp/order.csv"
printf '# nothing\n' >"$tmp/empty.csv"
expect 2 "empty.csv: no requests" $lg --trace "$tmp/empty.csv"
expect 2 "has several models: name one with --model" "$hattn" loadgen "$tmp/m.hattn"
expect 2 "has no model 'nope'" "$hattn" loadgen "$tmp/m.hattn" --model nope
expect 2 "pattern 'docs' (layer 0) reads run-time data (document, blocks, random or topk)" \
  "$hattn" loadgen "$tmp/m.hattn" --model packed
expect 2 "layer 0: heads 0-0 use 'local' and split a group of 2 query heads that share a KV head" \
  "$hattn" loadgen "$tmp/m.hattn" --model split
expect 2 "hattn loadgen: the cuda backend does not run fp32, the dtype of model hybrid" \
  $lg --backend cuda
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  expect 2 "no CUDA driver: libcuda.so.1" "$hattn" loadgen "$tmp/m.hattn" --model big --backend cuda
fi
expect 2 "expected one spec FILE" "$hattn" loadgen

echo "cli_loadgen.sh: $fails failure(s)"
[ "$fails" -eq 0 ]
