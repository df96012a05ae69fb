#!/bin/sh
# libhattnrt, the runtime alone, depends on neither LLVM nor NVRTC, and not
# on libcuda either (the driver is dlopen'ed): its NEEDED entries and its
# undefined symbols are read with readelf.  libhattn needs no CUDA library
# either (NVRTC is dlopen'ed too).  Skips (77) where readelf or the
# shared library is missing.
set -u
b=${top_builddir:-.}
so=$b/.libs/libhattnrt.so
if ! command -v readelf >/dev/null 2>&1; then
  echo "SKIP: no readelf"
  exit 77
fi
if [ ! -f "$so" ]; then
  echo "SKIP: no $so (static build?)"
  exit 77
fi
fails=0
needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "$so needs:" $needed
for lib in $needed; do
  case $lib in
    *LLVM* | *llvm* | *nvrtc* | *libcuda* | *libcudart* | libhattn.so*)
      echo "FAIL: libhattnrt depends on $lib"
      fails=$((fails + 1)) ;;
  esac
done
undef=$(readelf -W --dyn-syms "$so" | awk '$7 == "UND" {print $8}' | sed 's/@.*//' | sort -u)
bad=$(printf '%s\n' $undef | grep -E '^(LLVM|llvm|nvrtc|cu[A-Z]|cuda)' || true)
if [ -n "$bad" ]; then
  echo "FAIL: libhattnrt has undefined symbols of LLVM, NVRTC or CUDA:"
  printf '%s\n' $bad | head -20
  fails=$((fails + 1))
fi
# libhattn, the library with everything, reaches NVRTC through dlopen as it
# reaches the driver, so that it loads where the CUDA toolkit is not
# installed (runtime/cuda_nvrtc.c): no NEEDED entry for libnvrtc or
# libcuda, with or without the CUDA backend.
if [ -f "$b/.libs/libhattn.so" ]; then
  full=$(readelf -d "$b/.libs/libhattn.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  echo "$b/.libs/libhattn.so needs:" $full
  for lib in $full; do
    case $lib in
      *nvrtc* | *libcuda* | *libcudart*)
        echo "FAIL: libhattn depends on $lib, so it does not load without the CUDA toolkit"
        fails=$((fails + 1)) ;;
    esac
  done
fi
# The library with everything does depend on LLVM when it was built with it:
# the check above would catch a libhattnrt that pulled it in by accident.
if [ -f "$b/.libs/libhattn.so" ] && grep -q '^#define HATTN_HAVE_LLVM 1' "$b/config.h" 2>/dev/null; then
  readelf -d "$b/.libs/libhattn.so" | grep -q 'NEEDED.*LLVM' ||
    { echo "FAIL: libhattn.so does not need LLVM, so this test could not tell the two apart"; fails=$((fails + 1)); }
fi
[ $fails -eq 0 ] || exit 1
echo "ok: libhattnrt needs $(printf '%s ' $needed)and no LLVM, NVRTC or CUDA library"
