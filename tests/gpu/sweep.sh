#!/bin/bash
# On the GPU machine, after run-on-device.sh has built hattn in /tmp/hattn-build:
# compare CUDA tile configurations at S = 4k (BM,BN,WARPS,STAGES,WGMMA: the
# warpgroup kernel first, then the mma.sync one), and run compute-sanitizer's
# memcheck over kernels of several patterns.  Output on stdout.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd /tmp/hattn-build || exit 1
# cfg_text BM,BN,WARPS,STAGES[,WGMMA]: the configuration as the database
# writes it, the form of HATTN_BENCH_CONFIG.
cfg_text() {
  IFS=, read -r m n w s g <<<"$1"
  printf 'bm=%s bn=%s warps=%s stages=%s%s' "$m" "$n" "$w" "$s" "$([ "${g:-0}" = 1 ] && echo ' wgmma')"
}
for c in ${HATTN_SWEEP:-128,128,8,2,1 64,64,4,2,1 128,64,8,2,1 64,128,4,2,1 128,64,4,2,0 64,64,4,2,0}; do
  echo "== config $c"
  HATTN_BENCH_CONFIG=$(cfg_text "$c") ./tools/hattn bench --backend cuda --seqlen 4k 2>&1 |
    grep -E "^\| (dense|causal|document)" | cut -d'|' -f2,3,5,6
done
echo "== compute-sanitizer memcheck"
printf 'pattern dense = full\n' >/tmp/hattn-dense.hattn
for p in /tmp/hattn-dense.hattn "$root/examples/streamingllm.hattn --pattern streaming" "$root/examples/packed_documents.hattn --docs 100" \
         "$root/examples/bigbird.hattn" "$root/tests/corpus/runtime.hattn --pattern c" "$root/tests/corpus/runtime.hattn --pattern r --docs 50"; do
  # shellcheck disable=SC2086
  compute-sanitizer --tool memcheck --error-exitcode 9 ./tools/hattn verify $p --backend cuda \
    --seqlen 333,400 --heads 4 --kv-heads 2 --head-dim 128 2>&1 | grep -E "ERROR SUMMARY|tolerance|error" | head -3
done
