#!/bin/sh
# The Python binding (python/hattn, ctypes) against a NumPy reference, on the
# library just built.  Skips (77) without python3 and NumPy, or without a
# shared libhattn.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
# The first python3 that has NumPy (PYTHON if set; a pyenv python3 may
# shadow the system's, which has Debian's python3-numpy).
py=
for c in ${PYTHON:-} python3 /usr/bin/python3; do
  if "$c" -c "import numpy" >/dev/null 2>&1; then py=$c; break; fi
done
if [ -z "$py" ]; then
  echo "SKIP: no python3 with numpy"
  exit 77
fi
lib=$b/.libs/libhattn.so
if [ ! -f "$lib" ]; then
  echo "SKIP: no $lib (static build?)"
  exit 77
fi
# A sanitizer build's library needs its runtime preloaded into python.
case "${CFLAGS:-}" in
  *-fsanitize=*) echo "SKIP: sanitizer build (python would need the runtime preloaded)"; exit 77 ;;
esac
HATTN_LIBRARY=$lib "$py" "$s/python/tests/test_hattn.py" && \
  HATTN_LIBRARY=$lib "$py" "$s/python/tests/test_hardening.py" && \
  HATTN_LIBRARY=$lib "$py" "$s/python/tests/test_varlen.py" && \
  HATTN_LIBRARY=$lib exec "$py" "$s/python/tests/test_pyhost.py"
