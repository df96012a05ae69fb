# Sourced by the shell suites that drive the hattn command (cli.sh,
# cli_db.sh, cli_tools.sh, cli_bounds.sh, run-verify.sh):
#   . "${top_srcdir:-.}/tests/cli-lib.sh"
# It sets b (the build tree), s (the source tree), hattn (the command), ex
# (the bundled examples), tmp (a directory removed on exit) and fails (the
# count of failed expectations), and defines the helpers below.
b=${top_builddir:-.}
s=${top_srcdir:-.}
hattn=$b/tools/hattn
ex=$s/examples
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
cli_shown=0     # lines of a passing command's output to show (run-verify.sh: 3)

# cli_run CMD...: how expect runs a command.  A suite may define its own
# after sourcing this file (cli_bounds.sh: under time and memory limits).
cli_run() {
  "$@"
}

# expect STATUS PATTERN CMD...: CMD exits with STATUS and its output (stdout
# and stderr, kept in $tmp/out) holds the fixed string PATTERN.
expect() {
  want=$1 pat=$2
  shift 2
  cli_run "$@" >"$tmp/out" 2>&1
  got=$?
  if [ "$got" -ne "$want" ] || ! grep -qF -- "$pat" "$tmp/out"; then
    echo "FAIL: $* (exit $got, wanted $want and '$pat'):"
    sed 's/^/  | /' "$tmp/out" | head -n 30
    fails=$((fails + 1))
  else
    echo "ok: $*"
    [ "$cli_shown" -gt 0 ] && sed 's/^/  | /' "$tmp/out" | head -n "$cli_shown"
  fi
  return 0
}

# lacks PATTERN: the output of the last expect does not hold PATTERN.
lacks() {
  if grep -qF -- "$1" "$tmp/out"; then
    echo "FAIL: the output holds '$1':"
    sed 's/^/  | /' "$tmp/out" | head -n 30
    fails=$((fails + 1))
  else
    echo "ok: no '$1'"
  fi
}
