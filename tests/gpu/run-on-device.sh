#!/bin/bash
# Build, test and benchmark hattn on the GPU machine in one go.
#
# Here (the CPU machine), once per checkout and after each change:
#   ../shared/device/make-deps.sh            # .device-deps/: headers and static libs
#   tests/gpu/run-on-device.sh --pack         # .device-dist/: the distribution tarball
# There, in one call (carry .device-deps and .device-dist):
#   tests/gpu/run-on-device.sh [PHASE ...]    # phases: check cpu-bench gpu-check cuda-tools host-cost decode-bench decode-tune prefill-bench varlen-cli loadgen ab-bench ab-commits gpu-bench sanitize
# For ab-commits, put an earlier commit's tarball (make dist there) in
# .device-dist/base/.
# Logs and tables go to $OUT (default ./device-out).  The GPU machine has no
# libtool, llvm-config or Check: the tarball needs no autoreconf, and the
# precious variables point configure at .device-deps.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/device-out}
mkdir -p "$out"

if [ "${1:-}" = --pack ]; then
  set -e
  mkdir -p "$root/.device-dist"
  grep -qx '/.device-dist/' "$root/.git/info/exclude" 2>/dev/null || echo '/.device-dist/' >>"$root/.git/info/exclude"
  cd "$root/build"
  make dist >/dev/null
  rm -f "$root"/.device-dist/hattn-*.tar.gz
  cp hattn-*.tar.gz "$root/.device-dist/"
  # The committed kernel template, for the ab-bench phase.
  git -C "$root" show HEAD:templates/attn_fwd.cuh >"$root/.device-dist/base.cuh"
  ls -la "$root/.device-dist"
  exit 0
fi

phases=${*:-check cpu-bench gpu-check gpu-bench}
D=$root/.device-deps
b=/tmp/hattn-build
# A warm machine keeps /tmp: a build of the same tarball is reused.
sum=$(cat "$root"/.device-dist/hattn-*.tar.gz | md5sum | cut -d' ' -f1)
if [ -x "$b/tools/hattn" ] && [ "$(cat "$b/.tarball-sum" 2>/dev/null)" = "$sum" ]; then
  echo "build: reused ($sum)"
  cd "$b"
else
  rm -rf "$b" /tmp/hattn-ab-* && mkdir -p "$b"
  tar -xzf "$root"/.device-dist/hattn-*.tar.gz -C "$b" --strip-components=1
  cd "$b"
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|Flags" | cut -c1-200
  } >"$out/machine.txt" 2>&1
  ./configure \
    LLVM_CFLAGS="-I$D/include" LLVM_LIBS="-l:libLLVM-16.so.1" \
    SQLITE3_CFLAGS="-I$D/include" SQLITE3_LIBS="-l:libsqlite3.so.0" \
    CHECK_CFLAGS="-I$D/include" CHECK_LIBS="$D/lib/libcheck.a $D/lib/libsubunit.a -lm -lrt -lpthread" \
    DLPACK_CFLAGS="-I$D/include" >"$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
  tail -14 "$out/configure.log"
  make -j16 >"$out/build.log" 2>&1 || { grep -E "error|Error" "$out/build.log" | head -40; exit 1; }
  echo "$sum" >"$b/.tarball-sum"
  echo "build: ok"
fi

for phase in $phases; do
  echo "== $phase"
  case $phase in
    check)
      make -j16 check ${HATTN_CHECK_TESTS:+TESTS="$HATTN_CHECK_TESTS"} >"$out/check.log" 2>&1
      grep -E "^(PASS|FAIL|ERROR|SKIP|XFAIL)" "$out/check.log"
      for t in tests/*.log; do grep -q "^:test-result: \(FAIL\|ERROR\)" "${t%.log}.trs" 2>/dev/null && cp "$t" "$out/failed-${t#tests/}" && tail -30 "$t"; done
      ;;
    gpu-check)
      # HATTN_GPU_TESTS picks (default both).
      case " ${HATTN_GPU_TESTS:-test_cuda test_backend} " in *" test_cuda "*)
        make tests/test_cuda >/dev/null && ./tests/test_cuda 2>&1 | tee "$out/test_cuda.log" | tail -25 ;;
      esac
      case " ${HATTN_GPU_TESTS:-test_cuda test_backend} " in *" test_backend "*)
        make tests/test_backend >/dev/null &&
          HATTN_TEST_BACKEND=cuda ./tests/test_backend 2>&1 | tee "$out/test_backend.log" | tail -25 ;;
      esac
      ;;
    sanitize)
      make tests/test_cuda >/dev/null && compute-sanitizer --tool memcheck ./tests/test_cuda >"$out/sanitizer.log" 2>&1
      make tests/test_backend >/dev/null && HATTN_TEST_BACKEND=cuda compute-sanitizer --tool memcheck \
        ./tests/test_backend >>"$out/sanitizer.log" 2>&1
      tail -5 "$out/sanitizer.log"
      ;;
    cpu-bench)
      ./tools/hattn bench --backend cpu --seqlen 4k,16k --baselines none 2>&1 | tee "$out/bench_cpu.md"
      PYTHONUNBUFFERED=1 python3 "$root/tests/gpu/bench_torch.py" --cpu 2>&1 | tee "$out/bench_torch_cpu.md"
      ;;
    ab-bench)
      # Kernel templates side by side in one run.  HATTN_AB_RUNS lists
      # NAME:CONFIG pairs (default "base:default cur:default"): NAME cur is
      # this build, any other NAME the same build with the template
      # .device-dist/NAME.cuh swapped in (--pack writes base.cuh, the
      # committed template); CONFIG is BM,BN,WARPS,STAGES[,WGMMA] or default
      # (WGMMA 1: the warpgroup kernel, 2: the warp-specialised one).
      # HATTN_AB_TEMPLATE names the template that NAME.cuh replaces
      # (default attn_fwd.cuh; attn_fwd_sm90.cuh for the wgmma kernel).
      # HATTN_AB_ARGS go to hattn bench (e.g. --seqlen 4k).
      for run in ${HATTN_AB_RUNS:-base:default cur:default}; do
        name=${run%%:*} c=${run#*:} dir=$b
        if [ "$name" != cur ]; then
          dir=/tmp/hattn-ab-$name
          if [ ! -d "$dir" ]; then
            cp -a "$b" "$dir" && cp "$root/.device-dist/$name.cuh" "$dir/templates/${HATTN_AB_TEMPLATE:-attn_fwd.cuh}" &&
              (cd "$dir" && make -j16 tools/hattn >/dev/null 2>&1) || { echo "$name: build failed"; continue; }
          fi
        fi
        if [ "$c" = default ]; then cfg=; else cfg=$c; fi
        # HATTN_BENCH_CONFIG takes the database's text form; builds before it
        # read the comma form from HATTN_CUDA_CONFIG.
        cfgtext=
        if [ -n "$cfg" ]; then
          IFS=, read -r m n w s g <<<"$cfg"
          cfgtext="bm=$m bn=$n warps=$w stages=$s$(case ${g:-0} in 1) echo ' wgmma' ;; 2) echo ' ws' ;; esac)"
        fi
        echo "-- $name $c"
        (cd "$dir" && env ${cfg:+HATTN_CUDA_CONFIG=$cfg} ${cfg:+"HATTN_BENCH_CONFIG=$cfgtext"} ./tools/hattn bench \
           --backend cuda ${HATTN_AB_ARGS:-} 2>&1) |
          tee -a "$out/bench_ab.md" |
          awk -F'|' '/^\| (dense|causal|document)/ { printf "%-26s %6s %7s\n", $2, $(NF-8), $(NF-5) }'
      done
      ;;
    ab-commits)
      # The CUDA benchmark of an earlier commit (.device-dist/base/*.tar.gz)
      # and of this build, alternated HATTN_AB_ROUNDS times (default 2) in
      # one run, timed the same way.  HATTN_AB_ARGS go to hattn bench.
      bb=/tmp/hattn-base
      if [ ! -x "$bb/tools/hattn" ]; then
        rm -rf "$bb" && mkdir -p "$bb" && tar -xzf "$root"/.device-dist/base/hattn-*.tar.gz -C "$bb" --strip-components=1 &&
          (cd "$bb" && ./configure \
            LLVM_CFLAGS="-I$D/include" LLVM_LIBS="-l:libLLVM-16.so.1" \
            SQLITE3_CFLAGS="-I$D/include" SQLITE3_LIBS="-l:libsqlite3.so.0" \
            CHECK_CFLAGS="-I$D/include" CHECK_LIBS="$D/lib/libcheck.a $D/lib/libsubunit.a -lm -lrt -lpthread" \
            DLPACK_CFLAGS="-I$D/include" >/dev/null 2>&1 && make -j16 tools/hattn >/dev/null 2>&1) ||
          { echo "base: build failed"; continue; }
      fi
      for r in $(seq "${HATTN_AB_ROUNDS:-2}"); do
        for name in base cur; do
          dir=$b; [ $name = base ] && dir=$bb
          echo "-- $name round $r" | tee -a "$out/bench_commits.md"
          (cd "$dir" && ./tools/hattn bench --backend cuda ${HATTN_AB_ARGS:-} 2>&1) |
            tee -a "$out/bench_commits.md" | grep "^|" | cut -c1-150
        done
      done
      ;;
    cuda-tools)
      # The tools and the Python module on the CUDA backend, as a user runs
      # them: run, verify, tune (lookup after), gen, a short bench; then
      # Python's close-then-use and two threads forwarding on one context.
      export HATTN_CONFIG_DIR=$b/cfg HATTN_DB=$b/cuda-tools.db
      ex=examples/gemma3_27b.hattn; sh="--heads 4 --kv-heads 2 --head-dim 128 --seqlen 2k"
      {
        set -x
        ./tools/hattn verify $ex --pattern local --backend cuda $sh --dtype bf16
        ./tools/hattn run $ex --pattern global --backend cuda $sh --out $b/run-out
        ./tools/hattn tune $ex --pattern local --backend cuda $sh --repeat 1
        ./tools/hattn tune $ex --pattern local --backend cuda $sh --lookup
        ./tools/hattn run $ex --pattern local --backend cuda $sh --db $HATTN_DB --out $b/run-db
        ./tools/hattn gen $ex --backend cuda --arch sm_90a --out $b/gen-cuda && ls $b/gen-cuda
        ./tools/hattn db list
        ./tools/hattn bench --backend cuda --seqlen 4k
        set +x
      } >"$out/cuda_tools.log" 2>&1
      echo "cuda-tools: exit $? (last command)"; grep -E "^\+ |max abs|error|PASS|FAIL|hattn [a-z]*:" "$out/cuda_tools.log" | cut -c1-200 | head -60
      HATTN_LIBRARY=$b/.libs/libhattn.so PYTHONPATH=$b/python python3 "$root/tests/gpu/python_cuda.py" 2>&1 | tee "$out/python_cuda.log" | tail -15
      ;;
    loadgen)
      # hattn loadgen on CUDA: a model's attention (HATTN_LG_MODEL, default
      # Gemma 3 27B) beside causal everywhere, at the offered loads
      # HATTN_LG_RATES, prompts HATTN_LG_PROMPT, outputs HATTN_LG_OUTPUT, a
      # KV pool of HATTN_LG_KV, more options in HATTN_LG_ARGS; the table,
      # JSON and SVG go to $OUT as HATTN_LG_TAG.*.
      export HATTN_CONFIG_DIR=$b/cfg
      tag=${HATTN_LG_TAG:-loadgen}
      ./tools/hattn loadgen "${HATTN_LG_MODEL:-examples/gemma3_27b.hattn}" --backend cuda \
        --rate "${HATTN_LG_RATES:-0.5,1,2}" --duration "${HATTN_LG_DURATION:-30}" \
        --prompt-len "${HATTN_LG_PROMPT:-32k}" --output-len "${HATTN_LG_OUTPUT:-256}" \
        --kv-memory "${HATTN_LG_KV:-100g}" ${HATTN_LG_ARGS:-} \
        --json "$out/$tag.json" --svg "$out/$tag.svg" >"$out/$tag.txt" 2>&1
      echo "loadgen: exit $?"; cat "$out/$tag.txt"
      ;;
    varlen-cli)
      # hattn verify on CUDA with a variable-length batch (the lengths go to
      # the device with the plan), contiguous and paged, decode and prefill.
      export HATTN_CONFIG_DIR=$b/cfg
      vl="examples/gemma3_27b.hattn --backend cuda --heads 8 --kv-heads 2 --head-dim 128 --dtype bf16"
      {
        set -x
        ./tools/hattn verify $vl --pattern local --seqlen 1 --kv-lens 100,4000,0,2500
        ./tools/hattn verify $vl --pattern global --seqlen 4 --kv-lens 100,4000,3,2500 --page-size 16
        ./tools/hattn verify $vl --pattern local --q-lens 700,0,1500 --kv-lens 700,20,1500
        set +x
      } >"$out/varlen_cli.log" 2>&1
      echo "varlen-cli: exit $?"; grep -E "^\+ |max|error|PASS|FAIL|ok|hattn [a-z]*:" "$out/varlen_cli.log" | cut -c1-200 | head -30
      ;;
    decode-tune)
      # The tuner on decode problems (GQA 32/8, head dim 128, bf16): only the
      # decode kernels' warps, blocks and splits vary; every candidate's
      # median beside the default's, then what the runtime's lookup takes.
      export HATTN_CONFIG_DIR=$b/cfg HATTN_DB=$b/decode-tune.db
      dt="--pattern global --backend cuda --heads 32 --kv-heads 8 --head-dim 128 --budget ${HATTN_TUNE_BUDGET:-30}"
      for s in "--batch 8 --seqlen 1,8k" "--batch 1 --seqlen 1,128k"; do
        ./tools/hattn tune examples/gemma3_27b.hattn $dt $s -q 2>&1
        ./tools/hattn tune examples/gemma3_27b.hattn $dt $s --lookup 2>&1
      done | tee "$out/decode_tune.log" | grep -v "^hattn tune: candidate" | head -80
      ;;
    host-cost)
      # The host's cost of a forward through the public API, back to back:
      # hattn_forward against hattn_run on a plan made once.
      gcc -std=c11 -O2 -Iinclude -I/usr/local/cuda/include -I"$D/include" "$root/tests/gpu/host_cost.c" \
        -o host_cost .libs/libhattn.so -l:libcuda.so.1 -Wl,-rpath,"$b/.libs" &&
        HATTN_CONFIG_DIR=$b/cfg ./host_cost 1000 2>&1 | tee "$out/host_cost.md"
      # From Python: Plan.run and Kernel.forward on PyTorch CUDA tensors
      # against the C call, cached and uncached; side by side with an
      # older module where .device-dist/hattn_old.py is one (e.g.
      # git show a62adb6:python/hattn/__init__.py, before the caches).
      old=(); [ -f "$root/.device-dist/hattn_old.py" ] && old=(--old "$root/.device-dist/hattn_old.py")
      HATTN_CONFIG_DIR=$b/cfg HATTN_LIBRARY=$b/.libs/libhattn.so PYTHONPATH=$b/python \
        python3 "$root/tests/gpu/bench_pyhost.py" "${old[@]}" 2>&1 | tee "$out/bench_pyhost.md"
      ;;
    decode-bench)
      # Decode: hattn's decode kernels, its forward kernel and PyTorch's
      # SDPA and FlexAttention, timed the same way (tests/gpu/bench_decode.py).
      OUT=$out HATTN_LIBRARY=$b/.libs/libhattn.so PYTHONPATH=$b/python PYTHONUNBUFFERED=1 \
        python3 "$root/tests/gpu/bench_decode.py" 2>&1 | tee "$out/bench_decode.md"
      ;;
    prefill-bench)
      # Prefill: hattn's public API and PyTorch's SDPA (flash, cuDNN) and
      # FlexAttention, timed the same way (tests/gpu/bench_prefill.py);
      # HATTN_BENCH_CASES picks cases.
      OUT=$out HATTN_CONFIG_DIR=$b/cfg HATTN_LIBRARY=$b/.libs/libhattn.so PYTHONPATH=$b/python PYTHONUNBUFFERED=1 \
        python3 "$root/tests/gpu/bench_prefill.py" 2>&1 | tee "$out/bench_prefill.md"
      ;;
    gpu-bench)
      # hattn's kernels alone (hattn bench), then the fair comparison.
      ./tools/hattn bench --backend cuda 2>&1 | tee "$out/bench_cuda.md"
      OUT=$out HATTN_CONFIG_DIR=$b/cfg HATTN_LIBRARY=$b/.libs/libhattn.so PYTHONPATH=$b/python PYTHONUNBUFFERED=1 \
        python3 "$root/tests/gpu/bench_prefill.py" 2>&1 | tee "$out/bench_prefill.md"
      ;;
  esac
done
