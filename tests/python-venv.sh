#!/bin/sh
# pip install of python/ (its pyproject.toml) into a fresh virtual
# environment, offline: --no-build-isolation --no-index, with the setuptools
# of the system's site packages.  The installed module imports outside the
# source tree, finds the library just built through LD_LIBRARY_PATH alone
# (no HATTN_LIBRARY), and its distribution's version is the library's.
# Skips (77) without venv, pip or setuptools for configure's Python, or
# without a shared libhattn, or in a sanitizer build.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
b=$(cd "$b" && pwd)
s=$(cd "$s" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case "${CFLAGS:-}" in
  *-fsanitize=*) echo "SKIP: sanitizer build (python would need the runtime preloaded)"; exit 77 ;;
esac
py=$(sed -n 's/^PYTHON = //p' "$b/Makefile")
if [ -z "$py" ] || [ "$py" = ":" ]; then
  echo "SKIP: configured without Python"
  exit 77
fi
if [ ! -f "$b/.libs/libhattn.so" ]; then
  echo "SKIP: no $b/.libs/libhattn.so (static build?)"
  exit 77
fi
if ! "$py" -m venv --system-site-packages "$tmp/venv" >"$tmp/venv.log" 2>&1; then
  cat "$tmp/venv.log"
  echo "SKIP: $py -m venv does not work (Debian: python3-venv)"
  exit 77
fi
vpy=$tmp/venv/bin/python
if ! "$vpy" -m pip --version >/dev/null 2>&1; then
  echo "SKIP: no pip in the virtual environment of $py (Debian: python3-pip)"
  exit 77
fi
if ! "$vpy" -c "import setuptools" >/dev/null 2>&1; then
  echo "SKIP: no setuptools for $py (Debian: python3-setuptools)"
  exit 77
fi
# A copy: pip builds in place and would leave build/ and *.egg-info behind.
mkdir "$tmp/src"
cp "$s/python/pyproject.toml" "$tmp/src/"
mkdir "$tmp/src/hattn"
cp "$s/python/hattn/__init__.py" "$tmp/src/hattn/"
if ! "$vpy" -m pip install --no-build-isolation --no-index --no-cache-dir "$tmp/src" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log"
  echo "FAIL: pip install of python/ into a virtual environment"
  exit 1
fi
cd "$tmp" || exit 1
env -u HATTN_LIBRARY LD_LIBRARY_PATH="$b/.libs" "$vpy" - "$tmp/venv" "$b/.libs" <<'PY'
import os, sys
venv, libdir = sys.argv[1], sys.argv[2]
import hattn
from importlib import metadata
assert hattn.__file__.startswith(venv), "module from %s, not the virtual environment" % hattn.__file__
lib = hattn._L()._name
assert os.path.dirname(os.path.realpath(lib)) == os.path.realpath(libdir), "library %s" % lib
assert metadata.version("hattn") == hattn.version(), (metadata.version("hattn"), hattn.version())
print("hattn", hattn.version(), "from", hattn.__file__, "with", lib)
PY
