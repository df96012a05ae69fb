#!/bin/sh
# hattn db, and the --db option of tune and run, end to end: the files it
# refuses (a directory, an empty path, another program's SQLite file) with
# their exit status and message.  Keys and databases live in a temporary
# directory, never in the user's.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
hattn=$b/tools/hattn
ex=$s/examples
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
HATTN_CONFIG_DIR=$tmp/config
HATTN_DB=$tmp/default.db
export HATTN_CONFIG_DIR HATTN_DB

# expect STATUS PATTERN CMD...: CMD exits with STATUS and its output (stdout
# and stderr) holds the fixed string PATTERN.
expect() {
  want=$1 pat=$2
  shift 2
  "$@" >"$tmp/out" 2>&1
  got=$?
  if [ "$got" -ne "$want" ] || ! grep -qF -- "$pat" "$tmp/out"; then
    echo "FAIL: $* (exit $got, wanted $want and '$pat'):"
    sed 's/^/  | /' "$tmp/out" | head -n 30
    fails=$((fails + 1))
  else
    echo "ok: $*"
  fi
}

# not_in PATTERN: the last command's output lacks the fixed string PATTERN.
not_in() {
  if grep -qF -- "$1" "$tmp/out"; then
    echo "FAIL: the output says '$1':"
    sed 's/^/  | /' "$tmp/out" | head -n 30
    fails=$((fails + 1))
  fi
}

# An empty --db named a temporary database: tune said "stored in :".
expect 2 "--db: an empty path names no database file, and nothing would be kept" \
  "$hattn" tune "$ex/mistral_7b.hattn" --seqlen 256 --head-dim 64 --budget 1 --db ""
not_in "stored in"
expect 2 "--db: an empty path names no database file" "$hattn" db list --db ""
expect 2 "--db: an empty path names no database file" \
  "$hattn" run "$ex/mistral_7b.hattn" --seqlen 128 --head-dim 64 --db ""

# A directory is not a database file (it was "disk I/O error").
mkdir "$tmp/dir"
expect 1 "$tmp/dir is a directory, not a database file" "$hattn" db list --db "$tmp/dir"
expect 1 "$tmp/dir is a directory, not a database file" "$hattn" db import "$tmp/x" --db "$tmp/dir"

# Another program's SQLite file is refused, not called read-only, and left
# byte for byte as it was (it used to get hattn's tables and WAL mode).
if command -v sqlite3 >/dev/null 2>&1; then
  sqlite3 "$tmp/theirs.db" "CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('mine');"
  cp "$tmp/theirs.db" "$tmp/theirs.orig"
  expect 1 "$tmp/theirs.db is not a hattn database: it holds tables of another program (notes)" \
    "$hattn" db list --db "$tmp/theirs.db"
  not_in "read-only"
  expect 1 "$tmp/theirs.db is not a hattn database: it holds tables of another program (notes)" \
    "$hattn" db prune --older-than 1 --db "$tmp/theirs.db"
  not_in "read-only"
  cmp -s "$tmp/theirs.db" "$tmp/theirs.orig" || { echo "FAIL: $tmp/theirs.db was changed"; fails=$((fails + 1)); }
  [ ! -e "$tmp/theirs.db-wal" ] || { echo "FAIL: $tmp/theirs.db-wal was made"; fails=$((fails + 1)); }
else
  echo "skip: no sqlite3 program to make another program's file"
fi

echo "cli_db.sh: $fails failure(s)"
[ "$fails" -eq 0 ]
