#!/bin/sh
# The shared libraries (libhattn and libhattnrt) export the public API
# (hattn_*) and nothing else: no internal hattn__ function, no LLVM or
# SQLite symbol.  Skips (77) where nm or the shared libraries are missing
# (a static-only build).
set -u
b=${top_builddir:-.}
if ! command -v nm >/dev/null 2>&1; then
  echo "SKIP: no nm"
  exit 77
fi
for so in "$b/.libs/libhattn.so" "$b/.libs/libhattnrt.so"; do
if [ ! -f "$so" ]; then
  echo "SKIP: no $so (static build?)"
  exit 77
fi
syms=$(nm -D --defined-only "$so" | awk '{print $3}') || { echo "FAIL: nm -D $so"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -v '^$' | grep -v '^hattn_' | grep -v '^hattn__' |
      grep -Ev '^(_init|_fini|_edata|_end|__bss_start|__end__|_etext|_DYNAMIC|_GLOBAL_OFFSET_TABLE_)$' |
      grep -Ev '^_+[a-z_]*(start|end|init|fini)[a-z_]*$')
internal=$(printf '%s\n' "$syms" | grep '^hattn__')
n=$(printf '%s\n' "$syms" | grep -c '^hattn_')
if [ -n "$bad$internal" ]; then
  echo "FAIL: $so exports symbols outside the public API:"
  printf '%s\n' $bad $internal | head -50
  exit 1
fi
if [ "$n" -eq 0 ]; then
  echo "FAIL: $so exports no hattn_ symbol"
  exit 1
fi
echo "ok: $so exports $n hattn_ symbols and nothing else"
done
