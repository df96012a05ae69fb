#!/bin/sh
# The hattn tools end to end, beyond cli.sh: tune and gen take a model's
# dtype, the tuner's progress line, verify's note on a long reference,
# bench's markdown escaping, and report's groups, lengths and formats.
# Skips (77) when hattn was built without LLVM.
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
model m {
  layers 2
  heads 2 kv_heads 2 head_dim 32
  dtype bf16
  layer 0-1 : local
}
EOF2

# tune --model and gen take the model's dtype unless --dtype says otherwise.
expect 0 "| cpu | q 1x2x128x32 kv 1x2x128x32 bf16" \
  "$hattn" tune "$tmp/m.hattn" --model m --seqlen 128 --budget 3 --no-store --quiet
expect 0 "| cpu | q 1x2x128x32 kv 1x2x128x32 fp32" \
  "$hattn" tune "$tmp/m.hattn" --model m --seqlen 128 --budget 3 --no-store --quiet --dtype fp32
expect 0 "1 kernel for x86-64-v3: bf16, head_dim 32" \
  "$hattn" gen "$tmp/m.hattn" --cpu x86-64-v3 --head-dim 32 --out "$tmp/g1"
expect 0 "1 kernel for x86-64-v3: fp16, head_dim 32" \
  "$hattn" gen "$tmp/m.hattn" --cpu x86-64-v3 --head-dim 32 --dtype fp16 --out "$tmp/g2"
expect 0 "1 kernel for x86-64-v3: fp32, head_dim 32" \
  "$hattn" gen "$tmp/one.hattn" --cpu x86-64-v3 --head-dim 32 --out "$tmp/g3"

# The tuner's progress line: elapsed time, what remains, the best time so far.
expect 0 "s elapsed, about " \
  "$hattn" tune "$tmp/one.hattn" --seqlen 128 --heads 2 --head-dim 32 --budget 3 --no-store
expect 0 "s left | best so far " \
  "$hattn" tune "$tmp/one.hattn" --seqlen 128 --heads 2 --head-dim 32 --budget 3 --no-store

# verify says when the float64 reference will take long: causal at 64 is
# 64 * 65 / 2 = 2,080 pairs a head.
HATTN_VERIFY_NOTE_S=0 expect 0 "hattn verify: note: the float64 reference does 4,160 visible pairs at head dim 16; this takes about" \
  "$hattn" verify "$tmp/one.hattn" --seqlen 64 --heads 2 --head-dim 16 --seed 1
expect 0 ": ok" "$hattn" verify "$tmp/one.hattn" --seqlen 64 --heads 2 --head-dim 16 --seed 1
lacks "the float64 reference does"
expect 0 "HATTN_VERIFY_NOTE_S" "$hattn" verify --help

# bench: '|' in a pattern's name is escaped in the markdown table.
expect 0 '| causal & (window(64) \| sink(4)) | 256 |' \
  "$hattn" bench --seqlen 256 --reps 1 --baselines none --heads 1 --head-dim 32 --window 64 --sink 4 --doc 128
lacks '(window(64) | sink(4))'

# report: equal layers grouped (Gemma 3: 52 local layers, 10 global ones).
expect 0 "   52      0.778%        2.190         8.00  local  (layers 0-4, 6-10," \
  "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k
expect 0 "   10     " "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k
lacks "   61   "
# report: several lengths, each its own table.
expect 0 "prefill of 4,096 tokens" "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 4k,32k
expect 0 "prefill of 32,768 tokens" "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 4k,32k
expect 2 "--seqlen: expected a positive length" "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 4k,,8k
# report: CSV and JSON.
expect 0 "model,seqlen,layers,count,patterns,density,flops,kv_bytes,receptive_field" \
  "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 4k,128k --format csv
expect 0 'gemma3_27b,131072,"0-4, 6-10, 12-16, 18-22, 24-28, 30-34, 36-40, 42-46, 48-52, 54-58, 60-61",52,local,' \
  "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 4k,128k --format csv
expect 0 "gemma3_27b,131072,total,62,," "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k --format csv
expect 0 "gemma3_27b,131072,causal,62,," "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k --format csv
expect 0 '"seqlen": 131072' "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 4k,128k --format json
expect 0 '"kv_bytes": 11173625856' "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k --format json
if command -v python3 >/dev/null 2>&1; then
  "$hattn" report "$ex/duoattention_llama3_8b.hattn" --seqlen 4k,32k --format json >"$tmp/r.json" 2>&1
  python3 - "$tmp/r.json" <<'EOF2' || { echo "FAIL: report --format json is not the JSON expected"; fails=$((fails + 1)); }
import json, sys
r = json.load(open(sys.argv[1]))
m = r["models"][0]
assert [x["seqlen"] for x in m["lengths"]] == [4096, 32768], m
g = m["lengths"][0]["groups"]
assert sum(x["count"] for x in g) == m["layers"], g
EOF2
fi
# report: the receptive field (StreamingLLM's sink and window reach 32 windows
# back; Gemma's global layers reach everything).
expect 0 "reach     99.527%  of the 32,768 positions reach the last token" \
  "$hattn" report "$ex/streamingllm.hattn" --seqlen 32k
expect 0 "reach    100.000%  of the 4,096 positions" "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 4k
expect 0 '"receptive_field": 0.99527}' "$hattn" report "$ex/streamingllm.hattn" --seqlen 32k --format json
expect 0 "streaming_llama2_7b,32768,total,32,,0.0307622,17317576572928,536870912,0.99527" \
  "$hattn" report "$ex/streamingllm.hattn" --seqlen 32k --format csv
# report --measure: one layer of each pattern timed on the CPU, summed over
# the layers beside causal everywhere; the records carry the times.
cat >"$tmp/mm.hattn" <<'EOF2'
pattern local = causal & window(64)
pattern global = causal
pattern routed = causal & topk(2)
model hybrid {
  layers 4
  heads 4 kv_heads 2 head_dim 32
  dtype fp32
  layer 0-3 : local
  layer 3 : global
}
model r {
  layers 1
  heads 2 head_dim 32
  dtype fp32
  layer 0 : routed
}
EOF2
expect 0 "measured on cpu (" "$hattn" report "$tmp/mm.hattn" --model hybrid --seqlen 256 --measure --db "$tmp/m.db"
expect 0 "decode " "$hattn" report "$tmp/mm.hattn" --model hybrid --seqlen 256 --measure --db "$tmp/m.db"
expect 0 "receptive_field,prefill_ms,decode_ms" \
  "$hattn" report "$tmp/mm.hattn" --model hybrid --seqlen 256 --measure --db "$tmp/m.db" --format csv
expect 0 '"measured": {"backend": "cpu"' \
  "$hattn" report "$tmp/mm.hattn" --model hybrid --seqlen 256 --measure --db "$tmp/m.db" --format json
expect 2 "hattn report: --backend, --batch, --db and --threads go with --measure" \
  "$hattn" report "$tmp/mm.hattn" --seqlen 256 --backend cpu
expect 2 "hattn report: --backend: unknown backend 'tpu'" \
  "$hattn" report "$tmp/mm.hattn" --seqlen 256 --measure --backend tpu
# Without a GPU driver --measure on cuda says so; with one, the fp32 model
# is refused by the backend's dtypes.
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  expect 2 "hattn report: --measure: the cuda backend does not run fp32, the dtype of model hybrid" \
    "$hattn" report "$tmp/mm.hattn" --model hybrid --seqlen 256 --measure --backend cuda --db "$tmp/m.db"
else
  expect 2 "hattn report: --measure: no CUDA driver: libcuda.so.1" \
    "$hattn" report "$tmp/mm.hattn" --model hybrid --seqlen 256 --measure --backend cuda --db "$tmp/m.db"
fi
expect 2 "hattn report: --measure: pattern 'routed' is routed by data (topk) at run time" \
  "$hattn" report "$tmp/mm.hattn" --model r --seqlen 256 --measure --db "$tmp/m.db"
expect 2 "--format: expected text, json or csv, got 'xml'" "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 4k --format xml

echo "cli_tools.sh: $fails failure(s)"
[ "$fails" -eq 0 ]
