#!/bin/sh
# hattn db, and the --db option of tune and run, end to end: the files it
# refuses (a directory, an empty path, another program's SQLite file) with
# their exit status and message.  Keys and databases live in a temporary
# directory, never in the user's.
set -u
. "${top_srcdir:-.}/tests/cli-lib.sh"
HATTN_CONFIG_DIR=$tmp/config
HATTN_DB=$tmp/default.db
export HATTN_CONFIG_DIR HATTN_DB

# An empty --db named a temporary database: tune said "stored in :".
expect 2 "--db: an empty path names no database file, and nothing would be kept" \
  "$hattn" tune "$ex/mistral_7b.hattn" --seqlen 256 --head-dim 64 --budget 1 --db ""
lacks "stored in"
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
  lacks "read-only"
  expect 1 "$tmp/theirs.db is not a hattn database: it holds tables of another program (notes)" \
    "$hattn" db prune --older-than 1 --db "$tmp/theirs.db"
  lacks "read-only"
  cmp -s "$tmp/theirs.db" "$tmp/theirs.orig" || { echo "FAIL: $tmp/theirs.db was changed"; fails=$((fails + 1)); }
  [ ! -e "$tmp/theirs.db-wal" ] || { echo "FAIL: $tmp/theirs.db-wal was made"; fails=$((fails + 1)); }
else
  echo "skip: no sqlite3 program to make another program's file"
fi

# Tune a little into a.db: hattn db list says what each kernel computes and
# which shape bucket it won (it showed the hash alone).
tune="$hattn tune $ex/mistral_7b.hattn --seqlen 256 --head-dim 64 --budget 2 --reps 3 -q"
expect 0 "stored in $tmp/a.db" $tune --db "$tmp/a.db"
expect 0 "  window(4k)  fp32 d64  bm=" "$hattn" db list --db "$tmp/a.db"
expect 0 "winner for lk<=256 bh 2-8" "$hattn" db list --db "$tmp/a.db"
expect 0 " (window(4k) fp32 d64)  llvm " "$hattn" db list --db "$tmp/a.db"
[ "$(stat -c %a "$HATTN_CONFIG_DIR/db.key")" = 600 ] ||
  { echo "FAIL: $HATTN_CONFIG_DIR/db.key is not mode 600"; fails=$((fails + 1)); }
expect 0 "$tmp/a.db: ok" "$hattn" db verify --db "$tmp/a.db"

# Import into a fresh database needs no --device: the tuning records come
# for the devices the export names, and their kernels are compiled here.
expect 0 "exported 1 tuning records and 1 kernels" "$hattn" db export "$tmp/a.hattnx" --db "$tmp/a.db"
expect 0 "imported 1 tuning records from $tmp/a.hattnx into $tmp/b.db; their kernels are compiled here when first used" \
  "$hattn" db import "$tmp/a.hattnx" --db "$tmp/b.db"
expect 0 "kernels:
tunings:" "$hattn" db list --db "$tmp/b.db"
expect 0 ": compiled k" $tune --db "$tmp/b.db" --lookup
expect 0 " (tuned)" $tune --db "$tmp/b.db" --lookup
expect 0 ": db k" $tune --db "$tmp/b.db" --lookup
# Binaries only when asked, and then as the importer's own.
expect 0 "imported 1 tuning records and 1 kernels from $tmp/a.hattnx into $tmp/c.db; the kernels are trusted" \
  "$hattn" db import "$tmp/a.hattnx" --with-binaries --db "$tmp/c.db"
expect 0 ": db k" $tune --db "$tmp/c.db" --lookup
expect 0 "--with-binaries   import: take FILE's compiled kernels too" "$hattn" db --help

# A binary edited in the database (its SHA-256 recomputed) is not run: it
# lacks the HMAC of the user's key.
if command -v sqlite3 >/dev/null 2>&1; then
  cp "$tmp/c.db" "$tmp/d.db"
  sqlite3 "$tmp/d.db" "UPDATE kernels SET hmac = '00' || substr(hmac, 3)"
  expect 1 "no valid HMAC of this user's key" "$hattn" db verify --db "$tmp/d.db"
  expect 0 "has no valid HMAC of this user's key (stored by an older hattn or another user, imported, or edited)" \
    $tune --db "$tmp/d.db" --lookup
  grep -qF ": compiled k" "$tmp/out" || { echo "FAIL: the edited kernel was not compiled again"; fails=$((fails + 1)); }
  expect 0 ": db k" $tune --db "$tmp/d.db" --lookup
fi

# A key others may read, or a database others may write, is refused.
chmod 644 "$HATTN_CONFIG_DIR/db.key"
expect 1 "the key $HATTN_CONFIG_DIR/db.key can be read or written by other users (mode 0644)" \
  "$hattn" db verify --db "$tmp/a.db"
expect 0 ": compiled k" $tune --db "$tmp/a.db" --lookup
chmod 600 "$HATTN_CONFIG_DIR/db.key"
chmod 666 "$tmp/a.db"
expect 1 "$tmp/a.db can be written by other users (mode 0666): hattn does not use it" "$hattn" db list --db "$tmp/a.db"
chmod 600 "$tmp/a.db"

echo "cli_db.sh: $fails failure(s)"
[ "$fails" -eq 0 ]
