-- schema.sql: the schema of the hattn kernel database (hattn.db) at the
-- version that user_version names.  db/db.c creates and upgrades databases
-- with its list of forward migrations; applied in order to an empty file
-- they give exactly this schema, which tests/test_db.c checks.  A change
-- here needs a new migration there, and a higher user_version.
--
-- Times are Unix seconds, durations microseconds.  A device model is the
-- string hattn__db_device_model() makes: results tuned on one machine serve
-- every machine with the same model string.

PRAGMA application_id = 1751217262;  -- 0x6861746E, "hatn"
PRAGMA user_version = 2;

-- One row per device model this database has seen.  The driver and toolkit
-- versions are those of the machine that wrote the row last.
CREATE TABLE devices (
  id         INTEGER PRIMARY KEY,
  model      TEXT NOT NULL UNIQUE,
  kind       TEXT NOT NULL CHECK (kind IN ('gpu', 'cpu')),
  name       TEXT NOT NULL,
  cc         INTEGER NOT NULL DEFAULT 0,
  sm_count   INTEGER NOT NULL DEFAULT 0,
  driver     TEXT NOT NULL DEFAULT '',
  toolkit    TEXT NOT NULL DEFAULT '',
  features   TEXT NOT NULL DEFAULT '',
  cores      INTEGER NOT NULL DEFAULT 0,
  first_seen INTEGER NOT NULL,
  last_seen  INTEGER NOT NULL
);

-- One compiled kernel per key.  The key includes the tile configuration; the
-- compiler identity ("llvm 16.0.6", "nvrtc 12.4") is not part of it, so a
-- kernel rebuilt by a new compiler replaces the old binary.  checksum is the
-- SHA-256 of binary in lower-case hex, which finds accidents.  hmac is the
-- HMAC-SHA-256 of the kernel's fields and binary under the user's key
-- (db.key in the user's config directory, mode 0600), which finds binaries
-- this user's hattn did not store: a kernel without a valid one is treated
-- as absent and compiled again (kernels of schema 1 have '').  kernel_class,
-- dtype and head_dim say what the kernel is, for hattn db list (schema 2).
CREATE TABLE kernels (
  id       INTEGER PRIMARY KEY,
  key      TEXT NOT NULL UNIQUE,
  canon    TEXT NOT NULL,
  backend  TEXT NOT NULL,
  target   TEXT NOT NULL,
  config   TEXT NOT NULL,
  compiler TEXT NOT NULL,
  binary   BLOB NOT NULL,
  checksum TEXT NOT NULL,
  created  INTEGER NOT NULL,
  kernel_class TEXT NOT NULL DEFAULT '',
  dtype    TEXT NOT NULL DEFAULT '',
  head_dim INTEGER NOT NULL DEFAULT 0,
  hmac     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX kernels_compiler ON kernels (compiler);
CREATE INDEX kernels_created ON kernels (created);

-- One row per tuning run: the device model, the kernel key without its
-- configuration, the compiler, the shape bucket (keys up to 2^lk_log2; the
-- batch*heads class of hattn__db_bucket) and the winning configuration.
-- A re-tune adds a row, so that it can be compared with the last one.
CREATE TABLE tunings (
  id           INTEGER PRIMARY KEY,
  device_id    INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  kernel_class TEXT NOT NULL,
  compiler     TEXT NOT NULL,
  lk_log2      INTEGER NOT NULL CHECK (lk_log2 BETWEEN 0 AND 62),
  bh_class     INTEGER NOT NULL CHECK (bh_class BETWEEN 0 AND 4),
  winner       TEXT NOT NULL,
  winner_us    REAL NOT NULL,
  created      INTEGER NOT NULL
);
CREATE INDEX tunings_lookup ON tunings (device_id, kernel_class, compiler, bh_class, lk_log2, created);
CREATE INDEX tunings_created ON tunings (created);

-- Every configuration a tuning run timed: its median time and the spread of
-- its repetitions (the interquartile range).
CREATE TABLE candidates (
  tuning_id INTEGER NOT NULL REFERENCES tunings (id) ON DELETE CASCADE,
  config    TEXT NOT NULL,
  time_us   REAL NOT NULL,
  spread_us REAL NOT NULL,
  PRIMARY KEY (tuning_id, config)
) WITHOUT ROWID;
