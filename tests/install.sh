#!/bin/sh
# make install into a staging directory (DESTDIR), then use what it put
# there and nothing else: hattn.h and cpu_abi.h (which the header `hattn
# gen` writes includes) compile from the installed include directory alone;
# hattn.pc and hattnrt.pc say how DLPack's header is found; the Python
# module sits where configure's Python looks under the prefix, imports with
# that Python from the staging directory and finds the installed libhattn by
# itself.  Parts that need LLVM, AVX2 or NumPy skip themselves.
#
# Environment: top_builddir, top_srcdir, CC, CFLAGS (sanitizer flags skip the
# Python part: python would need the sanitizer's runtime preloaded), MAKE.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
b=$(cd "$b" && pwd)
s=$(cd "$s" && pwd)
cc=${CC:-cc}
make=${MAKE:-make}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
# The value of a make variable of the build, expanded.
echo 'print-%: ; @echo '"'"'$($*)'"'"'' >"$tmp/print.mk"
# (Run from make check: the parent's flags and level would make it chatty.)
var() {
  env MAKEFLAGS= MFLAGS= MAKELEVEL= "$make" -s --no-print-directory -C "$b" -f Makefile -f "$tmp/print.mk" "print-$1"
}

root=$tmp/root
if ! env MAKEFLAGS= MFLAGS= MAKELEVEL= "$make" -C "$b" install DESTDIR="$root" >"$tmp/install.log" 2>&1; then
  tail -n 30 "$tmp/install.log"
  echo "FAIL: make install DESTDIR=$root"
  exit 1
fi
prefix=$(var prefix)
incdir=$root$(var includedir)
pcdir=$root$(var pkgconfigdir)
libdir=$root$(var libdir)
echo "prefix $prefix, staged in $root"

# ---- headers -------------------------------------------------------------------
for h in hattn.h cpu_abi.h; do
  [ -f "$incdir/$h" ] || fail "$h is not installed in $(var includedir)"
done
dlpack=$(var DLPACK_CFLAGS)
for pc in hattn hattnrt; do
  grep -q 'dlpack' "$pcdir/$pc.pc" || fail "$pc.pc says nothing of DLPack"
  cflags=$(PKG_CONFIG_PATH=$pcdir pkg-config --define-prefix --cflags "$pc" 2>&1) || fail "pkg-config $pc: $cflags"
  case " $cflags " in
    *" $dlpack "*) ;;
    *) fail "pkg-config --cflags $pc ($cflags) lacks configure's DLPACK_CFLAGS ($dlpack)" ;;
  esac
done
printf '#include <hattn.h>\nint main(void) { return HATTN_VERSION_NUMBER > 0 ? 0 : 1; }\n' >"$tmp/v.c"
$cc -std=c11 -I"$incdir" $dlpack -fsyntax-only "$tmp/v.c" || fail "hattn.h does not compile from the installed include directory"
# The header hattn gen writes includes "cpu_abi.h": it must compile against the
# installed headers alone (not the source tree's gen/).
if grep -q '^#define HATTN_HAVE_LLVM 1' "$b/config.h" && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  printf 'pattern local = causal & window(64)\n' >"$tmp/s.hattn"
  if "$b/tools/hattn" gen "$tmp/s.hattn" --backend cpu --cpu x86-64-v3 --head-dim 64 --out "$tmp/k" >"$tmp/gen.log" 2>&1; then
    grep -q '#include "cpu_abi.h"' "$tmp/k/hattn_kernels.h" || echo "note: hattn_kernels.h no longer includes cpu_abi.h"
    printf '#include <hattn.h>\n#include "hattn_kernels.h"\nint main(void) { return HATTN_CPU_ABI_VERSION == HATTN_PREBUILT_ABI ? 0 : 1; }\n' >"$tmp/g.c"
    $cc -std=c11 -I"$tmp/k" -I"$incdir" $dlpack "$tmp/g.c" "$tmp/k"/*.o -lm -o "$tmp/g" && "$tmp/g" ||
      fail "hattn gen's hattn_kernels.h does not compile against the installed headers"
  else
    cat "$tmp/gen.log"
    fail "hattn gen failed"
  fi
else
  echo "note: no LLVM or no AVX2: hattn gen's header not compiled"
fi

# ---- the Python module ---------------------------------------------------------
case "${CFLAGS:-}" in
  *-fsanitize=*) echo "note: sanitizer build: the Python part is skipped"; [ $fails -eq 0 ] && exit 0; exit 1 ;;
esac
py=$(var PYTHON)
pydir=$(var pythondir)
if [ -z "$py" ] || [ "$py" = ":" ]; then
  echo "note: configured without Python: the module is not installed"
  [ $fails -eq 0 ] && exit 0
  exit 1
fi
echo "Python $py, module directory $pydir"
for c in python3 /usr/bin/python3; do
  if "$c" -c "import numpy" >/dev/null 2>&1 && ! "$py" -c "import numpy" >/dev/null 2>&1; then
    fail "configure took $py, which lacks NumPy, though $c has it"
  fi
done
[ -f "$root$pydir/hattn/__init__.py" ] || fail "the module is not installed in $pydir"
# A virtual environment's Python looks in the environment, not under the
# prefix (pip install ./python is the way into one: python-venv.sh).
if "$py" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)'; then
  echo "note: $py is a virtual environment's: $pydir is not expected on its sys.path"
else case $prefix in
  /usr | /usr/local)
    "$py" -c 'import sys; sys.exit(0 if sys.argv[1] in sys.path else 1)' "$pydir" ||
      fail "$pydir is not on $py's sys.path: that Python would not find the module" ;;
esac; fi
cat >"$tmp/t.py" <<'PY'
import os, sys
root = sys.argv[1]
import hattn
assert hattn.__file__.startswith(root), "module from %s, not the staging directory" % hattn.__file__
lib = hattn._L()._name
assert os.path.realpath(lib).startswith(os.path.realpath(root)), "library %s is not the installed one" % lib
print("hattn", hattn.version(), "from", hattn.__file__, "with", lib)
try:
    import numpy as np
except ImportError:
    print("note: no NumPy: no forward")
    sys.exit(0)
try:
    ctx = hattn.Context("cpu", db="", threads=1)
except hattn.HattnError as e:
    print("note: no CPU backend (%s): no forward" % e)
    sys.exit(0)
rng = np.random.default_rng()
q, k, v = (rng.uniform(-1, 1, (1, 1, 17, 16)).astype(np.float32) for _ in range(3))
o, lse = ctx.parse("pattern c = causal\n").kernel("c", 1, 1, 1, 17, 17, 16).forward(q, k, v)
s = q[0, 0] @ k[0, 0].T / 4.0
s = np.where(np.tril(np.ones((17, 17), bool)), s, -np.inf)
p = np.exp(s - s.max(1, keepdims=True))
ref = (p / p.sum(1, keepdims=True)) @ v[0, 0]
assert np.abs(o[0, 0] - ref).max() < 1e-4, np.abs(o[0, 0] - ref).max()
print("forward: ok")
PY
(cd "$tmp" && env -u HATTN_LIBRARY PYTHONPATH="$root$pydir" "$py" "$tmp/t.py" "$root") ||
  fail "the installed module does not import or run with $py"

[ $fails -eq 0 ] && echo "ok" && exit 0
exit 1
