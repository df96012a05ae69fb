#!/bin/sh
# examples/embed built as another engine would build it: its Makefile runs
# hattn gen at build time and links the program against libhattnrt alone;
# the program runs every pattern in fp32 and bf16 with the registered
# kernels, then again with kernels that libhattn stored in a database, and
# compares each with the float64 reference.  Skips (77) where the host has
# no AVX2 (the kernels are built for x86-64-v3), hattn was built without
# LLVM, or there is no shared libhattnrt.
set -u
b=$(cd "${top_builddir:-.}" && pwd)
s=$(cd "${top_srcdir:-.}" && pwd)
ex=$s/examples/embed
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  echo "SKIP: this host has no AVX2, so it cannot run x86-64-v3 code"
  exit 77
fi
if ! grep -q '^#define HATTN_HAVE_LLVM 1' "$b/config.h"; then
  echo "SKIP: hattn was built without LLVM: hattn gen cannot write kernels"
  exit 77
fi
if [ ! -f "$b/.libs/libhattnrt.so" ]; then
  echo "SKIP: no shared libhattnrt"
  exit 77
fi
dlpack=$(sed -n 's/^DLPACK_CFLAGS = //p' "$b/Makefile")

cd "$tmp" || exit 1
make -f "$ex/Makefile" srcdir="$ex" HATTN="$b/tools/hattn" \
  HATTNRT_CFLAGS="-I$s/include $dlpack" HATTNRT_LIBS="-L$b/.libs -lhattnrt" \
  CFLAGS="-O1 -g ${CFLAGS:-}" LDFLAGS="${LDFLAGS:-}" embed || { echo "FAIL: the example does not build"; exit 1; }

fails=0
needed=$(readelf -d embed 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
echo "embed needs:" $needed
case " $needed " in
  *" libhattnrt.so"*) ;;
  *) echo "FAIL: embed does not link libhattnrt"; fails=$((fails + 1)) ;;
esac
case " $needed " in
  *LLVM* | *" libhattn.so"*) echo "FAIL: embed links LLVM or libhattn"; fails=$((fails + 1)) ;;
esac

LD_LIBRARY_PATH=$b/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ./embed "$ex/model.hattn" ||
  { echo "FAIL: embed with the registered kernels"; fails=$((fails + 1)); }

# The database path: libhattn compiles and stores each kernel (hattn verify
# --db), then libhattnrt loads the stored object files with its own loader.
for p in local sinks packed global; do
  for t in fp32 bf16; do
    "$b/tools/hattn" verify "$ex/model.hattn" --pattern $p --dtype $t --head-dim 64 --seqlen 333 \
      --heads 4 --kv-heads 2 --docs 100 --db "$tmp/k.db" >/dev/null ||
      { echo "FAIL: hattn verify --db for $p $t"; fails=$((fails + 1)); }
  done
done
LD_LIBRARY_PATH=$b/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ./embed --db "$tmp/k.db" "$ex/model.hattn" ||
  { echo "FAIL: embed with the database's kernels"; fails=$((fails + 1)); }

# Without kernels libhattnrt says what to do instead of compiling.
LD_LIBRARY_PATH=$b/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ./embed --db "$tmp/empty.db" "$ex/model.hattn" \
  >"$tmp/empty.out" 2>&1 && { echo "FAIL: embed ran with an empty database"; fails=$((fails + 1)); }
grep -q "libhattnrt does not compile kernels" "$tmp/empty.out" ||
  { echo "FAIL: no clear message without kernels:"; cat "$tmp/empty.out"; fails=$((fails + 1)); }

# CUDA: hattn gen writes cubins for sm_80 and sm_90a into hattn_prebuilt.c,
# which builds and links against libhattnrt everywhere; where a GPU answers,
# libhattnrt loads them (tests/embed_cuda.c).
if grep -q '^#define HATTN_HAVE_CUDA 1' "$b/config.h"; then
  "$b/tools/hattn" gen "$ex/model.hattn" --backend cuda --arch sm_80,sm_90a --head-dim 64 --name model_gpu \
    --out kgpu >/dev/null || { echo "FAIL: hattn gen --backend cuda"; fails=$((fails + 1)); }
  if ${CC:-cc} -O1 ${CFLAGS:-} -Ikgpu -I"$s/include" $dlpack "$s/tests/embed_cuda.c" kgpu/hattn_prebuilt.c \
      ${LDFLAGS:-} -L"$b/.libs" -lhattnrt -o embed_cuda; then
    LD_LIBRARY_PATH=$b/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ./embed_cuda "$ex/model.hattn" 64
    rc=$?
    case $rc in
      0) echo "ok: libhattnrt loaded the generated cubins" ;;
      77) echo "note: no GPU here: the generated CUDA registration builds and links, and was not loaded" ;;
      *) echo "FAIL: embed_cuda exited $rc"; fails=$((fails + 1)) ;;
    esac
  else
    echo "FAIL: the generated CUDA registration does not build against libhattnrt"
    fails=$((fails + 1))
  fi
fi

[ $fails -eq 0 ] || exit 1
echo "ok: the embed example builds against libhattnrt, runs, and matches the reference"
