#!/bin/sh
# The README's commands run as shown.  Every ```sh block of README.md runs
# in its own `sh -e`, and every ```python block in python3, each from the
# top of a fresh copy of the source tree, against this build installed with
# make install DESTDIR=...: the installed bin/ comes first on PATH,
# pkg-config finds the installed .pc files (PKG_CONFIG_SYSROOT_DIR maps
# their paths into DESTDIR), LD_LIBRARY_PATH the installed libraries (as
# ldconfig would after a real install), and
# HOME and XDG_CACHE_HOME are empty folders (the default kernel database).
# `cc` is the build's compiler with its sanitizer flags, so that a program
# links against a sanitized library as it must.
#
# A line `<!-- readme.sh: needs WHAT... -->` just above a block says what
# it needs, and the block is reported as skipped where that is missing:
# gpu and root always (this test has neither), llvm and nvrtc when the
# build lacks the CPU or CUDA backend, avx2 when the host lacks it, numpy
# when there is no python3 with NumPy (or the build is sanitized).
# `<!-- readme.sh: skip: REASON -->` skips a block with that reason.  ```text
# blocks (synopses, output) are not run.  Any other block (a fence without
# a language or with another, an indented code block, a marker that no
# fence follows, an unknown need) fails the test, so that nothing in the
# README escapes it by accident.
set -u
b=$(cd "${top_builddir:-.}" && pwd)
s=$(cd "${top_srcdir:-.}" && pwd)
readme=$s/README.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ran=0
skipped=0

fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}

# ---- the blocks ------------------------------------------------------------
mkdir "$tmp/blocks"
awk -v dir="$tmp/blocks" '
  function bad(msg) { print "BAD " NR " " msg > (dir "/meta"); }
  BEGIN { n = 0; inb = 0; need = ""; needline = 0; blank = 1 }
  inb {
    if ($0 ~ /^```[ \t]*$/) { inb = 0; close(file); blank = 0; next }
    print > file
    next
  }
  /^<!-- readme\.sh: .* -->[ \t]*$/ {
    need = $0
    sub(/^<!-- readme\.sh: /, "", need)
    sub(/ -->[ \t]*$/, "", need)
    needline = NR
    next
  }
  /^```/ {
    lang = substr($0, 4)
    sub(/[ \t].*$/, "", lang)
    if (lang != "sh" && lang != "python" && lang != "text")
      bad("a block of language \"" lang "\": use sh or python (run) or text (not run)")
    n++
    file = dir "/" n "." lang
    printf "%d %s %d %s\n", n, lang, NR, need > (dir "/meta")
    need = ""
    inb = 1
    next
  }
  {
    if (need != "") { bad("the marker of line " needline " is not followed by a block"); need = "" }
    if (blank && $0 ~ /^    [^ ]/) bad("an indented code block: fence it as sh (run) or text (not run)")
    blank = $0 ~ /^[ \t]*$/
  }
  END { if (inb) bad("a block is not closed") }
' "$readme"
touch "$tmp/blocks/meta"
while read -r tag line msg; do
  [ "$tag" = BAD ] && fail "README.md:$line: $msg"
done <"$tmp/blocks/meta"
grep -q ' sh ' "$tmp/blocks/meta" || fail "README.md has no sh block: the extraction is broken"

# ---- what the blocks may need ------------------------------------------------
have_llvm=no
have_cuda=no
have_avx2=no
py=
grep -q '^#define HATTN_HAVE_LLVM 1' "$b/config.h" && have_llvm=yes
grep -q '^#define HATTN_HAVE_CUDA 1' "$b/config.h" && have_cuda=yes
grep -qw avx2 /proc/cpuinfo 2>/dev/null && have_avx2=yes
case "${CFLAGS:-}" in
  *-fsanitize=*) ;;   # python would need the sanitizer runtime preloaded
  *) for c in ${PYTHON:-} python3 /usr/bin/python3; do
       if "$c" -c "import numpy" >/dev/null 2>&1; then py=$c; break; fi
     done ;;
esac

# why_not NEEDS: empty when every need is met, else why the block cannot run.
why_not() {
  case $1 in
    "skip: "*) echo "${1#skip: }"; return ;;
    "needs "*) ;;
    "") return ;;
    *) echo "BAD unknown marker '$1'"; return ;;
  esac
  for w in ${1#needs }; do
    case $w in
      gpu) echo "needs a GPU (this test uses none)"; return ;;
      root) echo "needs root (it installs Debian packages)"; return ;;
      llvm) [ $have_llvm = yes ] || { echo "needs the CPU backend (hattn was built without LLVM)"; return; } ;;
      nvrtc) [ $have_cuda = yes ] || { echo "needs NVRTC (hattn was built without the CUDA backend)"; return; } ;;
      avx2) [ $have_avx2 = yes ] || { echo "needs AVX2 (this host has none)"; return; } ;;
      numpy) [ -n "$py" ] || { echo "needs python3 with NumPy in a build without sanitizers"; return; } ;;
      *) echo "BAD unknown need '$w'"; return ;;
    esac
  done
}

# ---- the installed build and the copy of the tree ----------------------------
if [ ! -f "$b/.libs/libhattnrt.so" ]; then
  echo "SKIP: no shared libhattnrt (a static build): the README's commands link against it"
  exit 77
fi
dest=$tmp/dest
if ! MAKEFLAGS= make -C "$b" install DESTDIR="$dest" >"$tmp/install.log" 2>&1; then
  echo "FAIL: make install DESTDIR=$dest:"
  tail -n 30 "$tmp/install.log"
  exit 1
fi
bindir=$(dirname "$(find "$dest" -path '*/bin/hattn' | head -n 1)")
pcdir=$(dirname "$(find "$dest" -name hattnrt.pc | head -n 1)")
libdir=$(dirname "$(find "$dest" -name 'libhattnrt.so*' | head -n 1)")
if [ ! -x "$bindir/hattn" ] || [ ! -f "$pcdir/hattnrt.pc" ] || [ ! -d "$libdir" ]; then
  echo "FAIL: make install did not install bin/hattn, hattnrt.pc and libhattnrt.so"
  exit 1
fi

# cc: the build's compiler and sanitizer flags (CC, CFLAGS, LDFLAGS from make check).
cc_cmd=${CC:-cc}
cc_abs=$(command -v "${cc_cmd%% *}") || { echo "FAIL: no compiler $cc_cmd"; exit 1; }
case $cc_cmd in *" "*) cc_abs="$cc_abs ${cc_cmd#* }" ;; esac
mkdir "$tmp/wrap" "$tmp/home" "$tmp/cache"
# PKG_CONFIG_SYSROOT_DIR prefixes every -I of the .pc files with the staging
# directory, DLPack's too: the wrapper adds the build's DLPACK_CFLAGS as found.
dlpack=$(sed -n 's/^DLPACK_CFLAGS = //p' "$b/Makefile")
printf '#!/bin/sh\nexec %s %s %s "$@" %s\n' "$cc_abs" "${CFLAGS:-}" "$dlpack" "${LDFLAGS:-}" >"$tmp/wrap/cc"
chmod +x "$tmp/wrap/cc"

run_block() {   # run_block N LANG LINE: 0 when block N ran and succeeded
  copy=$tmp/copy$1
  mkdir "$copy"
  (cd "$s" && cp -R README.md docs examples python scripts "$copy/") && chmod -R u+w "$copy" || return 1
  if [ "$2" = sh ]; then
    (cd "$copy" && PATH="$bindir:$tmp/wrap:$PATH" PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$dest" \
      LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" HOME="$tmp/home" XDG_CACHE_HOME="$tmp/cache" \
      sh -ex "$tmp/blocks/$1.sh") </dev/null >"$tmp/out" 2>&1
  else
    (cd "$copy" && PYTHONPATH="$copy/python" HATTN_LIBRARY="$libdir/libhattn.so" HOME="$tmp/home" \
      XDG_CACHE_HOME="$tmp/cache" "$py" "$tmp/blocks/$1.python") </dev/null >"$tmp/out" 2>&1
  fi
}

# ---- run them ----------------------------------------------------------------
while read -r n lang line need; do
  case $n in BAD) continue ;; esac
  [ "$lang" = text ] && continue
  why=$(why_not "$need")
  case $why in
    BAD*) fail "README.md:$line: ${why#BAD }"; continue ;;
    ?*) echo "[SKIP] README.md:$line ($lang block): $why"; skipped=$((skipped + 1)); continue ;;
  esac
  if run_block "$n" "$lang" "$line"; then
    echo "ok: README.md:$line ($lang block)"
    sed 's/^/  | /' "$tmp/out" | grep '^  | +' | head -n 8
    ran=$((ran + 1))
  else
    fail "README.md:$line ($lang block) does not run as shown:"
    sed 's/^/  | /' "$tmp/blocks/$n.$lang"
    echo "  output:"
    sed 's/^/  | /' "$tmp/out" | tail -n 40
  fi
  rm -rf "$tmp/copy$n"
done <"$tmp/blocks/meta"

[ $fails -eq 0 ] || exit 1
echo "ok: $ran README blocks run as shown; $skipped skipped, each for the reason above"
