#!/bin/sh
# cuda-sass-diff.sh: dump the machine code of the generated CUDA kernels, so
# that a change to gen/emit_cuda.c or templates/ that should not change the
# GPU code can be shown not to.
#
#   scripts/cuda-sass-diff.sh [-B BUILD] OUT [BASE]
#   scripts/cuda-sass-diff.sh redump OUT
#
# With BUILD/tools/hattn (BUILD defaults to build, beside this script's
# folder) it compiles the kernel of every pattern of examples/*.hattn and of
# a few patterns that the examples lack (dense, ALiBi, top-k), for head dims
# 64, 128 and 256, dtypes bf16 and fp16, at the default tile configuration
# and at one other per head dim:
#   - `hattn gen --emit cubin --arch sm_80,sm_90a`: the mma.sync kernel for
#     sm_80 and the warpgroup kernel for sm_90a;
#   - the mma.sync kernel for sm_90a, which `hattn gen` does not choose
#     there: its sm_80 source (`--emit source`) through NVRTC with the
#     options of runtime/cuda_nvrtc.c.
# OUT/<spec>/<hd>-<dtype>-<config>/<kernel>.<arch>.sass is `cuobjdump -sass`
# of each cubin where cuobjdump exists, else the code of the cubin in hex:
# each kernel's machine code, register count and barrier flags, attributes,
# parameter bank, shared memory and call graph, with symbol indices as
# names (equal dumps are equal machine code; the symbol table and unused
# constants are left out, as cuobjdump -sass leaves them).  With BASE, a directory written the same
# way by an earlier run, compare the two: exit 0 when every kernel's dump is
# identical, 1 otherwise (with the list of differences).  The cubins stay
# beside their dumps; `redump OUT` writes the dumps of OUT again (after a
# change of this script's dump, or where cuobjdump has appeared).
#
# Needs python3 (the NVRTC call and the hex dump) and NVRTC in
# $CUDA_HOME/lib64 (default /usr/local/cuda).  Takes a few minutes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cuda=${CUDA_HOME:-/usr/local/cuda}
self=$here/$(basename "$0")

case ${1:-} in
_nvrtc)
  # _nvrtc SRC NAME ARCH CUBIN: compile SRC (kernel NAME) to CUBIN.
  exec python3 - "$cuda" "$2" "$3" "$4" "$5" <<'EOF'
import ctypes, sys
cuda, src, name, arch, out = sys.argv[1:]
lib = ctypes.CDLL(cuda + "/lib64/libnvrtc.so")
prog = ctypes.c_void_p()
text = open(src, "rb").read()
if lib.nvrtcCreateProgram(ctypes.byref(prog), text, name.encode() + b".cu", 0, None, None):
    sys.exit("nvrtcCreateProgram failed")
opts = [b"--gpu-architecture=" + arch.encode(), b"-std=c++17", b"-default-device"]
arr = (ctypes.c_char_p * len(opts))(*opts)
if lib.nvrtcCompileProgram(prog, len(opts), arr):
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, log)
    sys.exit(src + ": " + log.value.decode(errors="replace"))
n = ctypes.c_size_t()
lib.nvrtcGetCUBINSize(prog, ctypes.byref(n))
buf = ctypes.create_string_buffer(n.value)
lib.nvrtcGetCUBIN(prog, buf)
open(out, "wb").write(buf.raw)
EOF
  ;;
_dump)
  # _dump CUBIN SASS: the machine code of CUBIN as text.
  if command -v cuobjdump >/dev/null 2>&1; then
    cuobjdump -sass "$2" > "$3"
    exit 0
  fi
  exec python3 - "$2" "$3" <<'EOF'
# The code of a cubin without its symbol bookkeeping: each kernel's machine
# code (.text.*: bytes, register count, flags), its attributes (.nv.info,
# .nv.info.*: records, symbol indices as names), its parameter bank
# (.nv.constant0.*), shared memory (.nv.shared.*), the call graph and the
# function symbols.  Symbol tables, relocations and the data of unused
# namespace-scope constants (which move with the symbols) are left out.
import struct, sys
data = open(sys.argv[1], "rb").read()
if data[:4] != b"\x7fELF" or data[4] != 2:
    sys.exit(sys.argv[1] + ": not a 64-bit ELF file")
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)
secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
def cstr(off):
    return data[off:data.index(b"\0", off)].decode()
def secname(i):
    return cstr(secs[shstrndx][4] + secs[i][0])
syms = []
for i, s in enumerate(secs):
    if s[1] == 2:                                  # SHT_SYMTAB
        stroff = secs[s[6]][4]
        for j in range(s[5] // 24):
            nm, info, other, shndx, value, size = struct.unpack_from("<IBBHQQ", data, s[4] + 24 * j)
            syms.append((cstr(stroff + nm), info, shndx, value, size))
def sym(i):
    return syms[i][0] or "section " + secname(syms[i][2]) if i < len(syms) else "#%#x" % i
def hexdump(f, body):
    for i in range(0, len(body), 32):
        f.write("  %06x %s\n" % (i, body[i:i + 32].hex()))
# EIATTR records whose data starts with a symbol index.
SYMREF = {0x0a, 0x11, 0x12, 0x23, 0x2f}
with open(sys.argv[2], "w") as f:
    for i, s in enumerate(secs):
        nm, typ, flags, _, off, size, link, info, align, _ = s
        name = secname(i)
        body = data[off:off + size]
        if name.startswith(".text."):
            f.write("%s flags %#x registers %d symbol %s align %d size %d\n"
                    % (name, flags, info >> 24, sym(info & 0xffffff), align, size))
            hexdump(f, body)
        elif name == ".nv.info" or name.startswith(".nv.info."):
            f.write("%s\n" % name)
            p = 0
            while p + 4 <= len(body):
                fmt, attr, val = struct.unpack_from("<BBH", body, p)
                p += 4
                if fmt != 4:
                    f.write("  attr %#04x fmt %d value %#x\n" % (attr, fmt, val))
                    continue
                rec = body[p:p + val]
                p += val
                if attr in SYMREF and len(rec) >= 4:
                    f.write("  attr %#04x symbol %s %s\n" % (attr, sym(struct.unpack_from("<I", rec)[0]), rec[4:].hex()))
                else:
                    f.write("  attr %#04x %s\n" % (attr, rec.hex()))
        elif name == ".nv.callgraph":
            f.write("%s\n" % name)
            for j in range(0, size // 8 * 8, 8):
                a, b = struct.unpack_from("<II", body, j)
                f.write("  %s -> %s\n" % (sym(a) if a < len(syms) else hex(a), sym(b) if b < len(syms) else hex(b)))
        elif name.startswith(".nv.constant0.") or name.startswith(".nv.shared."):
            f.write("%s flags %#x align %d size %d\n" % (name, flags, align, size))
            if typ != 8:
                hexdump(f, body)
    for nm, info, shndx, value, size in sorted(syms):
        if info & 0xf == 2:                        # STT_FUNC
            f.write("function %s in %s at %#x size %d bind %d\n"
                    % (nm, secname(shndx), value, size, info >> 4))
EOF
  ;;
_job)
  # _job HATTN SPEC DIR HD DTYPE BLOCK: one spec at one head dim, dtype and
  # configuration (BLOCK "default" or "BM,BN").
  hattn=$2 spec=$3 dir=$4 hd=$5 dt=$6 blk=$7
  set -- -t "$dt" -d "$hd"
  [ "$blk" = default ] || set -- "$@" -b "$blk"
  mkdir -p "$dir/src"
  "$hattn" gen "$spec" --backend cuda --arch sm_80,sm_90a --emit cubin "$@" --out "$dir" >/dev/null
  "$hattn" gen "$spec" --backend cuda --arch sm_80 --emit source "$@" --out "$dir/src" >/dev/null
  for cu in "$dir"/src/*.cu; do
    k=$(basename "$cu" .cu)
    "$self" _nvrtc "$cu" "$k" sm_90a "$dir/$k.sm_90a.cubin"
  done
  rm -rf "$dir/src" "$dir"/hattn_prebuilt.*
  for c in "$dir"/*.cubin; do
    "$self" _dump "$c" "${c%.cubin}.sass"
  done
  exit 0
  ;;
esac

if [ "${1:-}" = redump ]; then
  find "$2" -name '*.cubin' | while read -r c; do "$self" _dump "$c" "${c%.cubin}.sass"; done
  exit 0
fi

build=$top/build
if [ "${1:-}" = -B ]; then
  build=$2
  shift 2
fi
[ $# -ge 1 ] || { echo "usage: $0 [-B BUILD] OUT [BASE]" >&2; exit 2; }
out=$1
base=${2:-}
hattn=$build/tools/hattn
[ -x "$hattn" ] || { echo "$0: no $hattn (build first)" >&2; exit 2; }
case $out in /*) ;; *) out=$(pwd)/$out ;; esac

rm -rf "$out"
mkdir -p "$out"
# Patterns the examples lack: dense (the warpgroup kernel's 128 x 128
# default), both ALiBi forms, top-k routing.
cat > "$out/extra.hattn" <<'EOF'
pattern dense = full
pattern dense_alibi = full with alibi
pattern alibi_fixed = causal with alibi(0.25), softcap(30)
pattern routed = causal & topk(3)
EOF

# One configuration besides the default per head dim, valid for both
# kernels (-b sets block_m and block_n; warps and stages stay the
# default's): head dim 256 allows the warpgroup kernel 64 x 64 only.
other() {
  case $1 in
  64) echo 128,128 ;;
  128) echo 64,128 ;;
  256) echo 64,64 ;;
  esac
}

jobs=$out/jobs
: > "$jobs"
for spec in "$top"/examples/*.hattn "$out/extra.hattn"; do
  s=$(basename "$spec" .hattn)
  for hd in 64 128 256; do
    for dt in bf16 fp16; do
      for blk in default "$(other $hd)"; do
        tag=$(echo "$blk" | tr , x)
        echo "$hattn $spec $out/$s/$hd-$dt-$tag $hd $dt $blk" >> "$jobs"
      done
    done
  done
done
n=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
xargs -P "$n" -L 1 "$self" _job < "$jobs"
rm -f "$jobs"

total=$(find "$out" -name '*.sass' | wc -l)
echo "$total kernels dumped into $out"
[ -n "$base" ] || exit 0

(cd "$base" && find . -name '*.sass' | sort) > "$out.base.list"
(cd "$out" && find . -name '*.sass' | sort) > "$out.new.list"
status=0
if ! cmp -s "$out.base.list" "$out.new.list"; then
  echo "the kernels differ:"
  diff "$out.base.list" "$out.new.list" || true
  status=1
fi
same=0 differ=0
for f in $(comm -12 "$out.base.list" "$out.new.list"); do
  if cmp -s "$base/$f" "$out/$f"; then
    same=$((same + 1))
  else
    differ=$((differ + 1))
    echo "differs: $f"
  fi
done
rm -f "$out.base.list" "$out.new.list"
echo "$same kernels identical, $differ differ"
[ "$differ" -eq 0 ] || status=1
exit $status
