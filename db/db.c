/*
** db.c: the kernel database.  See db.h, and db/schema.sql for the tables.
*/
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

/* The status codes (HATTN_OK, HATTN_E*) only; db/ calls nothing above it.
** The version it writes into export files is config.h's PACKAGE_VERSION. */
#include "hattn.h"
#include "db.h"

/* application_id of hattn.db ("hatn") and of export files ("hatx"). */
#define APP_ID_DB 0x6861746E
#define APP_ID_EXPORT 0x68617478

/* How many times a write transaction that found the file busy for the
** whole busy timeout is tried again before the caller hears of it. */
#define BUSY_RETRIES 5

struct hattn__db {
  sqlite3 *sq;
  char *path;
  int readonly;
  int busy_ms;       /* the busy timeout */
  int key_state;     /* 0: not read yet, 1: KEY holds the user's key, -1: KEY_ERR says why not */
  unsigned char key[HATTN__DB_KEY_LEN];
  char key_err[1024];
};

/* ---- migrations --------------------------------------------------------------
** migrations[i] takes a database from schema version i to i + 1.  Applied in
** order to an empty file they give db/schema.sql (tests/test_db.c compares
** the two).  Never edit one that has shipped: add another. */
static const char *const migrations[] = {
  /* 0 -> 1: the first schema. */
  "CREATE TABLE devices (\n"
  "  id         INTEGER PRIMARY KEY,\n"
  "  model      TEXT NOT NULL UNIQUE,\n"
  "  kind       TEXT NOT NULL CHECK (kind IN ('gpu', 'cpu')),\n"
  "  name       TEXT NOT NULL,\n"
  "  cc         INTEGER NOT NULL DEFAULT 0,\n"
  "  sm_count   INTEGER NOT NULL DEFAULT 0,\n"
  "  driver     TEXT NOT NULL DEFAULT '',\n"
  "  toolkit    TEXT NOT NULL DEFAULT '',\n"
  "  features   TEXT NOT NULL DEFAULT '',\n"
  "  cores      INTEGER NOT NULL DEFAULT 0,\n"
  "  first_seen INTEGER NOT NULL,\n"
  "  last_seen  INTEGER NOT NULL\n"
  ");\n"
  "CREATE TABLE kernels (\n"
  "  id       INTEGER PRIMARY KEY,\n"
  "  key      TEXT NOT NULL UNIQUE,\n"
  "  canon    TEXT NOT NULL,\n"
  "  backend  TEXT NOT NULL,\n"
  "  target   TEXT NOT NULL,\n"
  "  config   TEXT NOT NULL,\n"
  "  compiler TEXT NOT NULL,\n"
  "  binary   BLOB NOT NULL,\n"
  "  checksum TEXT NOT NULL,\n"
  "  created  INTEGER NOT NULL\n"
  ");\n"
  "CREATE INDEX kernels_compiler ON kernels (compiler);\n"
  "CREATE INDEX kernels_created ON kernels (created);\n"
  "CREATE TABLE tunings (\n"
  "  id           INTEGER PRIMARY KEY,\n"
  "  device_id    INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,\n"
  "  kernel_class TEXT NOT NULL,\n"
  "  compiler     TEXT NOT NULL,\n"
  "  lk_log2      INTEGER NOT NULL CHECK (lk_log2 BETWEEN 0 AND 62),\n"
  "  bh_class     INTEGER NOT NULL CHECK (bh_class BETWEEN 0 AND 4),\n"
  "  winner       TEXT NOT NULL,\n"
  "  winner_us    REAL NOT NULL,\n"
  "  created      INTEGER NOT NULL\n"
  ");\n"
  "CREATE INDEX tunings_lookup ON tunings (device_id, kernel_class, compiler, bh_class, lk_log2, created);\n"
  "CREATE INDEX tunings_created ON tunings (created);\n"
  "CREATE TABLE candidates (\n"
  "  tuning_id INTEGER NOT NULL REFERENCES tunings (id) ON DELETE CASCADE,\n"
  "  config    TEXT NOT NULL,\n"
  "  time_us   REAL NOT NULL,\n"
  "  spread_us REAL NOT NULL,\n"
  "  PRIMARY KEY (tuning_id, config)\n"
  ") WITHOUT ROWID;\n",
  /* 1 -> 2: what a kernel is (its class, dtype and head dim, for hattn db
  ** list) and the HMAC that authenticates its binary with the user's key.
  ** Kernels of schema 1 have none: they are ignored and compiled again. */
  "ALTER TABLE kernels ADD COLUMN kernel_class TEXT NOT NULL DEFAULT '';\n"
  "ALTER TABLE kernels ADD COLUMN dtype TEXT NOT NULL DEFAULT '';\n"
  "ALTER TABLE kernels ADD COLUMN head_dim INTEGER NOT NULL DEFAULT 0;\n"
  "ALTER TABLE kernels ADD COLUMN hmac TEXT NOT NULL DEFAULT '';\n",
};

_Static_assert(sizeof migrations / sizeof migrations[0] == HATTN__DB_SCHEMA_VERSION,
               "one migration per schema version");

/* ---- errors ------------------------------------------------------------------ */

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;
  if (err != NULL && errlen > 0) {
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* HATTN_EDB with a sentence about SQLite's result RC while doing WHAT on
** the file PATH.  The words "database is locked" never reach the user. */
static int sql_fail(sqlite3 *sq, const char *path, int busy_ms, int rc, const char *what, char *err,
                    size_t errlen) {
  const char *msg = sq ? sqlite3_errmsg(sq) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return fail(err, errlen, HATTN_EDB, "%s: %s: another process kept the file busy for more than %g s",
                path, what, busy_ms / 1000.0 * (BUSY_RETRIES + 1));
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
    return fail(err, errlen, HATTN_EDB, "%s is corrupt or not a hattn database (%s: %s)", path, what,
                msg);
  case SQLITE_READONLY:
    return fail(err, errlen, HATTN_EDB, "%s is read-only: %s: %s", path, what, msg);
  case SQLITE_FULL:
    return fail(err, errlen, HATTN_EDB, "%s: %s: the disk is full", path, what);
  case SQLITE_CANTOPEN:
    return fail(err, errlen, HATTN_EDB, "cannot open %s: %s", path, msg);
  default:
    return fail(err, errlen, HATTN_EDB, "%s: %s: %s", path, what, msg);
  }
}

static int db_fail(hattn__db *db, int rc, const char *what, char *err, size_t errlen) {
  return sql_fail(db->sq, db->path, db->busy_ms, rc, what, err, errlen);
}

/* ---- SHA-256 (FIPS 180-4) ----------------------------------------------------- */

typedef struct sha256 {
  uint32_t h[8];
  uint64_t len;
  unsigned char buf[64];
  size_t nbuf;
} sha256;

static const uint32_t sha_k[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(sha256 *s, const unsigned char *p) {
  uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           (uint32_t)p[4 * i + 3];
  for (i = 16; i < 64; i++)
    w[i] = (ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10)) + w[i - 7] +
           (ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 16];
  a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
  e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
  for (i = 0; i < 64; i++) {
    t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
    t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
  s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

/* Start the SHA-256 of a message in S. */
static void sha_init(sha256 *s) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof h0);
  s->len = 0;
  s->nbuf = 0;
}

/* Add N bytes at DATA (not NULL) to the message of S. */
static void sha_update(sha256 *s, const void *data, size_t n) {
  const unsigned char *p = data;
  s->len += (uint64_t)n * 8;
  if (s->nbuf > 0) {
    size_t take = n < 64 - s->nbuf ? n : 64 - s->nbuf;
    memcpy(s->buf + s->nbuf, p, take);
    s->nbuf += take, p += take, n -= take;
    if (s->nbuf < 64) return;
    sha_block(s, s->buf);
    s->nbuf = 0;
  }
  for (; n >= 64; n -= 64, p += 64) sha_block(s, p);
  if (n > 0) memcpy(s->buf, p, n);
  s->nbuf = n;
}

/* The 32 bytes of the digest into OUT. */
static void sha_final(sha256 *s, unsigned char out[32]) {
  uint64_t len = s->len;
  size_t i;
  memset(s->buf + s->nbuf, 0, 64 - s->nbuf);
  s->buf[s->nbuf] = 0x80;
  if (s->nbuf >= 56) {
    sha_block(s, s->buf);
    memset(s->buf, 0, sizeof s->buf);
  }
  for (i = 0; i < 8; i++) s->buf[56 + i] = (unsigned char)(len >> (56 - 8 * i));
  sha_block(s, s->buf);
  for (i = 0; i < 32; i++) out[i] = (unsigned char)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}

/* N bytes at B as 2N lower-case hex digits and a NUL into OUT. */
static void hex_of(const unsigned char *b, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = hex[b[i] >> 4];
    out[2 * i + 1] = hex[b[i] & 15];
  }
  out[2 * n] = '\0';
}

void hattn__db_sha256_hex(const void *data, size_t n, char out[65]) {
  unsigned char d[32];
  sha256 s;
  sha_init(&s);
  sha_update(&s, data, n);
  sha_final(&s, d);
  hex_of(d, 32, out);
}

/* ---- HMAC-SHA-256 (RFC 2104) ------------------------------------------------------ */

typedef struct hmac {
  sha256 inner;
  unsigned char okey[64];  /* the key XOR opad */
} hmac;

/* Start the HMAC of a message under KEYLEN bytes of KEY in M; the message
** goes to sha_update(&M->inner, ...). */
static void hmac_init(hmac *m, const void *key, size_t keylen) {
  unsigned char k[64], ikey[64];
  size_t i;
  memset(k, 0, sizeof k);
  if (keylen > 64) {
    sha256 s;
    sha_init(&s);
    sha_update(&s, key, keylen);
    sha_final(&s, k);
  } else if (keylen > 0) {
    memcpy(k, key, keylen);
  }
  for (i = 0; i < 64; i++) ikey[i] = k[i] ^ 0x36, m->okey[i] = k[i] ^ 0x5c;
  sha_init(&m->inner);
  sha_update(&m->inner, ikey, 64);
}

/* The HMAC of M's message as 64 hex digits and a NUL into OUT. */
static void hmac_final(hmac *m, char out[65]) {
  unsigned char d[32];
  sha256 outer;
  sha_final(&m->inner, d);
  sha_init(&outer);
  sha_update(&outer, m->okey, 64);
  sha_update(&outer, d, 32);
  sha_final(&outer, d);
  hex_of(d, 32, out);
}

void hattn__db_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t n, char out[65]) {
  hmac m;
  hmac_init(&m, key, keylen);
  sha_update(&m.inner, data, n);
  hmac_final(&m, out);
}

/* The fields of a kernel that its HMAC covers, in order: everything that
** decides what the binary is taken for, then the binary. */
enum { MAC_FIELDS = 9 };

/* The HMAC of a kernel under KEY: "hattn-kernel-v1", then each text field
** of F (MAC_FIELDS of them: key, canon, backend, target, config, compiler,
** kernel class, dtype, head dim as decimal) with its length, then the
** binary, into OUT as hex. */
static void kernel_mac(const unsigned char *key, const char *const f[MAC_FIELDS], const void *bin, size_t n,
                       char out[65]) {
  static const char tag[] = "hattn-kernel-v1";
  unsigned char len[8];
  hmac m;
  size_t i, j, fl;
  hmac_init(&m, key, HATTN__DB_KEY_LEN);
  sha_update(&m.inner, tag, sizeof tag);
  for (i = 0; i < MAC_FIELDS; i++) {
    fl = strlen(f[i]);
    for (j = 0; j < 8; j++) len[j] = (unsigned char)((uint64_t)fl >> (8 * j));
    sha_update(&m.inner, len, 8);
    sha_update(&m.inner, f[i], fl);
  }
  for (j = 0; j < 8; j++) len[j] = (unsigned char)((uint64_t)n >> (8 * j));
  sha_update(&m.inner, len, 8);
  if (n) sha_update(&m.inner, bin, n);
  hmac_final(&m, out);
}

/* The SQL function hattn__kernel_hmac(key, canon, backend, target, config,
** compiler, kernel_class, dtype, head_dim, binary): kernel_mac under the
** key its user data points at (HATTN__DB_KEY_LEN bytes). */
static void sql_kernel_hmac(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *f[MAC_FIELDS];
  char out[65];
  const void *p;
  int i;
  (void)argc;
  for (i = 0; i < MAC_FIELDS; i++) {
    f[i] = (const char *)sqlite3_value_text(argv[i]);
    if (f[i] == NULL) f[i] = "";
  }
  p = sqlite3_value_blob(argv[MAC_FIELDS]);
  kernel_mac(sqlite3_user_data(ctx), f, p, (size_t)sqlite3_value_bytes(argv[MAC_FIELDS]), out);
  sqlite3_result_text(ctx, out, 64, SQLITE_TRANSIENT);
}

/* The SQL function hattn__sha256(X): the SHA-256 of the blob X in hex. */
static void sql_sha256(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  char hex[65];
  const void *p;
  (void)argc;
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
    sqlite3_result_null(ctx);
    return;
  }
  p = sqlite3_value_blob(argv[0]);
  hattn__db_sha256_hex(p ? p : "", (size_t)sqlite3_value_bytes(argv[0]), hex);
  sqlite3_result_text(ctx, hex, 64, SQLITE_TRANSIENT);
}

/* ---- small helpers ------------------------------------------------------------ */

static const char *str_or_empty(const char *s) { return s ? s : ""; }

static int64_t now_s(void) { return (int64_t)time(NULL); }

static int in_list(const char *s, const char *const *list) {
  for (; *list; list++)
    if (!strcmp(s, *list)) return 1;
  return 0;
}

/* Read the integer result of a one-row statement such as a PRAGMA. */
static int query_int(sqlite3 *sq, const char *sql, int64_t *out) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(sq, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *out = sqlite3_column_int64(st, 0);
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    *out = 0;
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc;
}

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wait 5 to 20 ms before trying a busy file again; returns 0 once
** (BUSY_RETRIES + 1) busy timeouts of BUSY_MS have passed since START. */
static int busy_wait(double start, int busy_ms) {
  struct timespec ts = {0, (5 + (long)(now_mono() * 1e6) % 16) * 1000000L};
  if (now_mono() - start > busy_ms / 1000.0 * (BUSY_RETRIES + 1)) return 0;
  nanosleep(&ts, NULL);
  return 1;
}

/* Run SQL (several statements), trying again while the file is busy: some
** busy answers (a journal mode change, WAL recovery) come at once, without
** the busy handler. */
static int exec_retry(sqlite3 *sq, const char *sql, int busy_ms) {
  double start = now_mono();
  int rc;
  while ((rc = sqlite3_exec(sq, sql, NULL, NULL, NULL)) != SQLITE_OK && (rc & 0xff) == SQLITE_BUSY &&
         busy_wait(start, busy_ms)) {
  }
  return rc;
}

static int prep(hattn__db *db, const char *sql, sqlite3_stmt **st, char *err, size_t errlen) {
  int rc = sqlite3_prepare_v2(db->sq, sql, -1, st, NULL);
  if (rc != SQLITE_OK) return db_fail(db, rc, "cannot prepare a query", err, errlen);
  return HATTN_OK;
}

/* Start a write transaction.  Read-only handles refuse here, with a
** sentence that says the result is not saved. */
static int begin(hattn__db *db, char *err, size_t errlen) {
  int rc;
  if (db->readonly)
    return fail(err, errlen, HATTN_EDB, "%s is open read-only: nothing is saved", db->path);
  rc = exec_retry(db->sq, "BEGIN IMMEDIATE", db->busy_ms);
  if (rc != SQLITE_OK) return db_fail(db, rc, "cannot start a write", err, errlen);
  return HATTN_OK;
}

static int commit(hattn__db *db, char *err, size_t errlen) {
  int rc = exec_retry(db->sq, "COMMIT", db->busy_ms);
  if (rc != SQLITE_OK) {
    rc = db_fail(db, rc, "cannot commit", err, errlen);
    sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
    return rc;
  }
  return HATTN_OK;
}

static void rollback(hattn__db *db) {
  if (!sqlite3_get_autocommit(db->sq)) sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- paths and file checks ---------------------------------------------------- */

int hattn__db_default_path(char *buf, size_t len, char *err, size_t errlen) {
  const char *env = getenv("HATTN_DB"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  int n;
  if (env != NULL && *env)
    n = snprintf(buf, len, "%s", env);
  else if (xdg != NULL && xdg[0] == '/')
    n = snprintf(buf, len, "%s/hattn/hattn.db", xdg);
  else if (home != NULL && *home)
    n = snprintf(buf, len, "%s/.cache/hattn/hattn.db", home);
  else
    return fail(err, errlen, HATTN_EINVAL,
                "no place for the kernel database: set HATTN_DB, XDG_CACHE_HOME or HOME");
  if (n < 0 || (size_t)n >= len) return fail(err, errlen, HATTN_EINVAL, "the kernel database path is too long");
  return HATTN_OK;
}

int hattn__db_key_path(char *buf, size_t len, char *err, size_t errlen) {
  const char *env = getenv("HATTN_CONFIG_DIR"), *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
  int n;
  if (env != NULL && *env)
    n = snprintf(buf, len, "%s/db.key", env);
  else if (xdg != NULL && xdg[0] == '/')
    n = snprintf(buf, len, "%s/hattn/db.key", xdg);
  else if (home != NULL && *home)
    n = snprintf(buf, len, "%s/.config/hattn/db.key", home);
  else
    return fail(err, errlen, HATTN_EINVAL,
                "no place for the key that authenticates kernel binaries: set HATTN_CONFIG_DIR, XDG_CONFIG_HOME "
                "or HOME");
  if (n < 0 || (size_t)n >= len) return fail(err, errlen, HATTN_EINVAL, "the key's path is too long");
  return HATTN_OK;
}

/* Create the directories above the file PATH, mode 0700, as mkdir -p does. */
static int make_parent_dirs(const char *path, char *err, size_t errlen) {
  char *dir = strdup(path), *p, c;
  int rc = HATTN_OK;
  struct stat st;
  if (dir == NULL) return fail(err, errlen, HATTN_ENOMEM, "out of memory");
  p = strrchr(dir, '/');
  if (p == NULL || p == dir) goto done;
  *p = '\0';
  for (p = dir + 1; ; p++) {
    if (*p != '/' && *p != '\0') continue;
    c = *p;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      rc = fail(err, errlen, HATTN_EDB, "cannot create the directory %s for %s: %s", dir, path,
                strerror(errno));
      goto done;
    }
    *p = c;
    if (c == '\0') break;
  }
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    rc = fail(err, errlen, HATTN_EDB, "cannot create %s: %s is not a directory", path, dir);
done:
  free(dir);
  return rc;
}

/* Whether ST, a file or directory, can be written by a user other than
** this one: group or others may write it, or it belongs to another user
** (root aside). */
static int others_may_write(const struct stat *st) {
  return (st->st_mode & (S_IWGRP | S_IWOTH)) != 0 || (st->st_uid != geteuid() && st->st_uid != 0);
}

/* Write a new key of random bytes to PATH (in the directory DIR) unless
** one is there: a temporary file of mode 0600, linked into place, so that
** a process never reads a key half written and two processes agree. */
static int key_create(const char *path, const char *dir, char *err, size_t errlen) {
  unsigned char key[HATTN__DB_KEY_LEN];
  char tmp[4200];
  int fd = -1, rfd, rc = HATTN_OK;
  ssize_t got = 0;
  if ((rfd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)) < 0 ||
      (got = read(rfd, key, sizeof key)) != (ssize_t)sizeof key) {
    rc = fail(err, errlen, HATTN_EDB, "cannot make a key for %s: /dev/urandom: %s", path,
              rfd < 0 || got < 0 ? strerror(errno) : "short read");
    goto done;
  }
  snprintf(tmp, sizeof tmp, "%s/.db.key.XXXXXX", dir);
  if ((fd = mkstemp(tmp)) < 0) {
    rc = fail(err, errlen, HATTN_EDB, "cannot make the key %s: %s", path, strerror(errno));
    goto done;
  }
  if (fchmod(fd, 0600) != 0 || write(fd, key, sizeof key) != (ssize_t)sizeof key || fsync(fd) != 0 ||
      (link(tmp, path) != 0 && errno != EEXIST))
    rc = fail(err, errlen, HATTN_EDB, "cannot write the key %s: %s", path, strerror(errno));
  unlink(tmp);
done:
  if (fd >= 0) close(fd);
  if (rfd >= 0) close(rfd);
  memset(key, 0, sizeof key);
  return rc;
}

int hattn__db_key(unsigned char key[HATTN__DB_KEY_LEN], char *err, size_t errlen) {
  char path[4096], *dir = NULL, *slash;
  struct stat st;
  int fd = -1, rc;
  ssize_t got;
  if ((rc = hattn__db_key_path(path, sizeof path, err, errlen)) != HATTN_OK) return rc;
  if ((rc = make_parent_dirs(path, err, errlen)) != HATTN_OK) return rc;
  if ((dir = strdup(path)) == NULL) return fail(err, errlen, HATTN_ENOMEM, "out of memory");
  if ((slash = strrchr(dir, '/')) != NULL && slash != dir) *slash = '\0';
  if (stat(dir, &st) != 0) {
    rc = fail(err, errlen, HATTN_EDB, "cannot read the directory %s of the key: %s", dir, strerror(errno));
    goto done;
  }
  if (others_may_write(&st)) {
    rc = fail(err, errlen, HATTN_EDB,
              "the directory %s of the key that authenticates kernel binaries can be written by other users "
              "(mode 0%03o): no stored binary is trusted until it cannot (chmod go-w %s)",
              dir, (unsigned)(st.st_mode & 0777), dir);
    goto done;
  }
  fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    if ((rc = key_create(path, dir, err, errlen)) != HATTN_OK) goto done;
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  }
  if (fd < 0 || fstat(fd, &st) != 0) {
    rc = fail(err, errlen, HATTN_EDB, "cannot read the key %s: %s", path, strerror(errno));
    goto done;
  }
  if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
    rc = fail(err, errlen, HATTN_EDB,
              "the key %s can be read or written by other users (mode 0%03o%s): no stored binary is trusted "
              "until only you can (chmod 600 %s, or remove it to make a new one)",
              path, (unsigned)(st.st_mode & 0777), st.st_uid != geteuid() ? ", another user's file" : "", path);
    goto done;
  }
  if (st.st_size != HATTN__DB_KEY_LEN || (got = read(fd, key, HATTN__DB_KEY_LEN)) != HATTN__DB_KEY_LEN) {
    rc = fail(err, errlen, HATTN_EDB, "the key %s is not %d bytes long: remove it to make a new one", path,
              HATTN__DB_KEY_LEN);
    goto done;
  }
  rc = HATTN_OK;
done:
  if (fd >= 0) close(fd);
  free(dir);
  return rc;
}

/* Read the user's key into DB once; HATTN_OK, or HATTN_EDB with the reason
** (kept for later calls). */
static int db_key(hattn__db *db, char *err, size_t errlen) {
  if (db->key_state == 0) {
    db->key_state = hattn__db_key(db->key, db->key_err, sizeof db->key_err) == HATTN_OK ? 1 : -1;
    if (db->key_state > 0 &&
        sqlite3_create_function_v2(db->sq, "hattn__kernel_hmac", MAC_FIELDS + 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                   db->key, sql_kernel_hmac, NULL, NULL, NULL) != SQLITE_OK) {
      db->key_state = -1;
      snprintf(db->key_err, sizeof db->key_err, "%s: cannot register the HMAC function", db->path);
    }
  }
  if (db->key_state > 0) return HATTN_OK;
  return fail(err, errlen, HATTN_EDB, "%s", db->key_err);
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Check the first 100 bytes of PATH, an SQLite file whose application_id is
** APP_ID (or 0, for a hattn.db): that it is an SQLite file at all, and that
** it is not shorter than its header says (a truncated copy).  An absent or
** empty file passes unless MUST_EXIST.  WHAT names the kind of file in
** messages. */
static int check_header(const char *path, uint32_t app_id, int must_exist, const char *what,
                        char *err, size_t errlen) {
  unsigned char h[100];
  struct stat st;
  char wal[4096];
  uint32_t page, pages, id;
  size_t n;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    if (errno == ENOENT && !must_exist) return HATTN_OK;
    return fail(err, errlen, errno == ENOENT ? HATTN_ENOENT : HATTN_EDB, "cannot open %s: %s", path,
                strerror(errno));
  }
  n = fread(h, 1, sizeof h, f);
  if (fstat(fileno(f), &st) != 0) st.st_size = 0;
  fclose(f);
  if (n == 0 && !must_exist) return HATTN_OK;
  if (n < sizeof h || memcmp(h, "SQLite format 3", 16) != 0)
    return fail(err, errlen, HATTN_EDB, "%s is not %s: it is not an SQLite file", path, what);
  id = be32(h + 68);
  /* A file in WAL mode may show 0 here until its first checkpoint. */
  if (id != app_id && !(app_id == APP_ID_DB && id == 0)) {
    if (id == 0) return fail(err, errlen, HATTN_EDB, "%s is not %s", path, what);
    return fail(err, errlen, HATTN_EDB, "%s is not %s (its application id is 0x%08x)", path, what,
                (unsigned)id);
  }
  /* While a -wal file exists a checkpoint may be growing the file; SQLite
  ** itself reports a short file as corrupt on the first read beyond it. */
  snprintf(wal, sizeof wal, "%s-wal", path);
  if (access(wal, F_OK) == 0) return HATTN_OK;
  page = (uint32_t)h[16] << 8 | h[17];
  if (page == 1) page = 65536;
  pages = be32(h + 28);
  if (be32(h + 24) == be32(h + 92) && pages > 0 && (uint64_t)page * pages > (uint64_t)st.st_size)
    return fail(err, errlen, HATTN_EDB,
                "%s is truncated: its header says %llu bytes, the file has %llu", path,
                (unsigned long long)page * pages, (unsigned long long)st.st_size);
  return HATTN_OK;
}

/* Percent-encode PATH as an SQLite URI with QUERY. */
static char *uri_of(const char *path, const char *query) {
  size_t n = strlen(path), o = 0;
  char *u = malloc(3 * n + strlen(query) + 16);
  if (u == NULL) return NULL;
  o += (size_t)sprintf(u, "file:");
  for (; *path; path++) {
    if (*path == '%' || *path == '?' || *path == '#') o += (size_t)sprintf(u + o, "%%%02X", (unsigned char)*path);
    else u[o++] = *path;
  }
  sprintf(u + o, "?%s", query);
  return u;
}

/* ---- open and close ------------------------------------------------------------- */

/* Bring DB's schema up to date in one transaction.  VERSION is what was read
** before; another process may have migrated in between. */
static int migrate(hattn__db *db, char *err, size_t errlen) {
  char sql[128];
  int64_t v;
  int rc = begin(db, err, errlen);
  if (rc != HATTN_OK) return rc;
  if ((rc = query_int(db->sq, "PRAGMA user_version", &v)) != SQLITE_OK) {
    rc = db_fail(db, rc, "cannot read the schema version", err, errlen);
    goto fail_txn;
  }
  if (v > HATTN__DB_SCHEMA_VERSION) {
    rc = fail(err, errlen, HATTN_EDB,
              "%s was written by a newer hattn (schema version %lld, this hattn knows up to %d)",
              db->path, (long long)v, HATTN__DB_SCHEMA_VERSION);
    goto fail_txn;
  }
  for (; v < HATTN__DB_SCHEMA_VERSION; v++) {
    if ((rc = sqlite3_exec(db->sq, migrations[v], NULL, NULL, NULL)) != SQLITE_OK) {
      rc = db_fail(db, rc, "cannot upgrade the schema", err, errlen);
      goto fail_txn;
    }
  }
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d; PRAGMA application_id = %d;",
           HATTN__DB_SCHEMA_VERSION, APP_ID_DB);
  if ((rc = sqlite3_exec(db->sq, sql, NULL, NULL, NULL)) != SQLITE_OK) {
    rc = db_fail(db, rc, "cannot set the schema version", err, errlen);
    goto fail_txn;
  }
  return commit(db, err, errlen);
fail_txn:
  rollback(db);
  return rc;
}

/* Whether the file open in DB (schema version V) is hattn's: its
** application id is hattn's, or it is 0 in a file without tables or schema
** version (a new, empty file).  Reads only; returns HATTN_OK or HATTN_EDB
** with a sentence, *SQRC set to SQLite's code when the read failed. */
static int check_owner(hattn__db *db, int64_t v, int *sqrc, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  char names[256];
  size_t o = 0;
  int64_t id;
  int rc, ntables = 0;
  if ((rc = query_int(db->sq, "PRAGMA application_id", &id)) != SQLITE_OK) goto fail_sql;
  if (id == APP_ID_DB) return HATTN_OK;
  if (id != 0)
    return fail(err, errlen, HATTN_EDB, "%s is not a hattn database (its application id is 0x%08x)", db->path,
                (unsigned)(uint32_t)id);
  rc = sqlite3_prepare_v2(db->sq, "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
                          -1, &st, NULL);
  if (rc != SQLITE_OK) goto fail_sql;
  names[0] = '\0';
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (o < sizeof names - 8)
      o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", ntables ? ", " : "", sqlite3_column_text(st, 0));
    ntables++;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) goto fail_sql;
  if (ntables > 0)
    return fail(err, errlen, HATTN_EDB, "%s is not a hattn database: it holds tables of another program (%s)",
                db->path, names);
  if (v != 0)
    return fail(err, errlen, HATTN_EDB,
                "%s is not a hattn database: its schema version is %lld but it lacks hattn's application id",
                db->path, (long long)v);
  return HATTN_OK;
fail_sql:
  *sqrc = rc;
  return db_fail(db, rc, "cannot read the file", err, errlen);
}

/* Configure a fresh connection and check the file: returns an SQLite code
** in *SQRC (for the caller's fallbacks) besides the hattn status. */
static int setup(hattn__db *db, int *sqrc, char *err, size_t errlen) {
  int64_t v;
  int rc;
  *sqrc = SQLITE_OK;
  sqlite3_busy_timeout(db->sq, db->busy_ms);
  sqlite3_extended_result_codes(db->sq, 1);
  rc = sqlite3_create_function_v2(db->sq, "hattn__sha256", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                  sql_sha256, NULL, NULL, NULL);
  if (rc != SQLITE_OK) goto fail_sql;
  /* Before anything writes: a file that is neither empty nor hattn's is
  ** left exactly as it is.  The schema version, application id and tables
  ** are read in one read transaction, from one snapshot: read one by one,
  ** another process's first migration could commit between them, and the
  ** application id of the empty file beside that migration's tables read
  ** as another program's file (test_db's two_processes, on a loaded
  ** machine). */
  if ((rc = sqlite3_exec(db->sq, "BEGIN", NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  if ((rc = query_int(db->sq, "PRAGMA user_version", &v)) != SQLITE_OK) {
    sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
    goto fail_sql;
  }
  rc = check_owner(db, v, sqrc, err, errlen);
  sqlite3_exec(db->sq, "COMMIT", NULL, NULL, NULL);   /* ends the read; nothing was written */
  if (rc != HATTN_OK) return rc;
  if (v > HATTN__DB_SCHEMA_VERSION)
    return fail(err, errlen, HATTN_EDB,
                "%s was written by a newer hattn (schema version %lld, this hattn knows up to %d)",
                db->path, (long long)v, HATTN__DB_SCHEMA_VERSION);
  if (!db->readonly) {
    if ((rc = exec_retry(db->sq, "PRAGMA journal_mode = WAL", db->busy_ms)) != SQLITE_OK) goto fail_sql;
    if ((rc = sqlite3_exec(db->sq, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL)) != SQLITE_OK)
      goto fail_sql;
  }
  if ((rc = sqlite3_exec(db->sq, "PRAGMA foreign_keys = ON", NULL, NULL, NULL)) != SQLITE_OK)
    goto fail_sql;
  if (v < HATTN__DB_SCHEMA_VERSION) {
    if (db->readonly)
      return fail(err, errlen, HATTN_EDB,
                  "%s is read-only and has schema version %lld: this hattn needs %d and cannot upgrade it",
                  db->path, (long long)v, HATTN__DB_SCHEMA_VERSION);
    /* Make the caller fall back to read-only where the file cannot be written. */
    rc = migrate(db, err, errlen);
    if (rc != HATTN_OK) *sqrc = sqlite3_extended_errcode(db->sq);
    return rc;
  }
  /* Touch the schema, so that a damaged one shows here and not later. */
  if ((rc = query_int(db->sq, "SELECT count(*) FROM devices", &v)) != SQLITE_OK) goto fail_sql;
  return HATTN_OK;
fail_sql:
  *sqrc = rc;
  return db_fail(db, rc, "cannot read the file", err, errlen);
}

/* Open NAME and set it up, trying again while the file is busy. */
static int connect(hattn__db *db, const char *name, int oflags, int *sqrc, char *err, size_t errlen) {
  double start = now_mono();
  int rc;
again:
  rc = sqlite3_open_v2(name, &db->sq, oflags, NULL);
  if (rc != SQLITE_OK) {
    *sqrc = rc;
    rc = sql_fail(db->sq, db->path, db->busy_ms, rc, "cannot open", err, errlen);
    sqlite3_close(db->sq);
    db->sq = NULL;
    return rc;
  }
  rc = setup(db, sqrc, err, errlen);
  if (rc != HATTN_OK) {
    sqlite3_close(db->sq);
    db->sq = NULL;
    if ((*sqrc & 0xff) == SQLITE_BUSY && busy_wait(start, db->busy_ms)) goto again;
  }
  return rc;
}

static int is_access_error(int sqrc) {
  sqrc &= 0xff;
  return sqrc == SQLITE_READONLY || sqrc == SQLITE_CANTOPEN || sqrc == SQLITE_PERM;
}

/* Refuse the database PATH when a user other than this one could change
** it: the file, or the directory that holds it and its journals (where
** another user could plant a journal that SQLite would replay). */
static int check_writers(const char *path, char *err, size_t errlen) {
  char *dir = strdup(path), *slash;
  struct stat st;
  int rc = HATTN_OK;
  if (dir == NULL) return fail(err, errlen, HATTN_ENOMEM, "out of memory");
  if (stat(path, &st) == 0 && others_may_write(&st)) {
    rc = fail(err, errlen, HATTN_EDB,
              "%s can be written by other users (mode 0%03o%s): hattn does not use it (chmod go-w %s, or use "
              "another file)", path, (unsigned)(st.st_mode & 0777),
              st.st_uid != geteuid() && st.st_uid != 0 ? ", another user's file" : "", path);
    goto done;
  }
  slash = strrchr(dir, '/');
  if (slash == NULL) strcpy(dir, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
  if (stat(dir, &st) == 0 && others_may_write(&st))
    rc = fail(err, errlen, HATTN_EDB,
              "%s is in %s, a directory other users can write (mode 0%03o%s): hattn does not use it (put the "
              "database in a directory of your own)", path, dir, (unsigned)(st.st_mode & 07777),
              st.st_uid != geteuid() && st.st_uid != 0 ? ", another user's directory" : "");
done:
  free(dir);
  return rc;
}

int hattn__db_open(const char *path, int flags, hattn__db **out, char *err, size_t errlen) {
  char defpath[4096];
  hattn__db *db;
  struct stat st;
  int rc, sqrc, exists;

  assert(out != NULL);
  *out = NULL;
  if (path == NULL) {
    if ((rc = hattn__db_default_path(defpath, sizeof defpath, err, errlen)) != HATTN_OK) return rc;
    path = defpath;
  }
  if (*path == '\0')
    return fail(err, errlen, HATTN_EINVAL,
                "the kernel database path is empty: name a file (nothing would be kept in a temporary one)");
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return fail(err, errlen, HATTN_EDB, "%s is a directory, not a database file", path);
  if ((db = calloc(1, sizeof *db)) == NULL || (db->path = strdup(path)) == NULL) {
    rc = fail(err, errlen, HATTN_ENOMEM, "out of memory");
    goto fail_db;
  }
  db->readonly = (flags & HATTN__DB_READONLY) != 0;
  db->busy_ms = HATTN__DB_BUSY_MS;
  if (!db->readonly && (rc = make_parent_dirs(path, err, errlen)) != HATTN_OK) goto fail_db;
  if ((rc = check_writers(path, err, errlen)) != HATTN_OK) goto fail_db;
  rc = check_header(path, APP_ID_DB, 0, "a hattn database", err, errlen);
  if (rc != HATTN_OK) goto fail_db;
  exists = stat(path, &st) == 0;
  if (!db->readonly && exists && access(path, W_OK) != 0) db->readonly = 1;
  if (db->readonly && !exists) {
    rc = fail(err, errlen, HATTN_EDB, "cannot open %s read-only: it does not exist", path);
    goto fail_db;
  }
  rc = connect(db, path, db->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
               &sqrc, err, errlen);
  if (rc != HATTN_OK && !db->readonly && exists && is_access_error(sqrc)) {
    /* A writable file in a directory that is not: WAL needs its side files. */
    db->readonly = 1;
    rc = connect(db, path, SQLITE_OPEN_READONLY, &sqrc, err, errlen);
  }
  if (rc != HATTN_OK && db->readonly && exists && is_access_error(sqrc)) {
    /* A WAL file that nobody may write next to: read it as it is. */
    char *uri = uri_of(path, "immutable=1");
    if (uri == NULL) {
      rc = fail(err, errlen, HATTN_ENOMEM, "out of memory");
      goto fail_db;
    }
    rc = connect(db, uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, &sqrc, err, errlen);
    free(uri);
  }
  if (rc != HATTN_OK) goto fail_db;
  *out = db;
  return HATTN_OK;
fail_db:
  if (db) free(db->path);
  free(db);
  return rc;
}

void hattn__db_close(hattn__db *db) {
  if (db == NULL) return;
  sqlite3_close(db->sq);
  free(db->path);
  free(db);
}

const char *hattn__db_path(const hattn__db *db) { return db->path; }

void hattn__db_busy_timeout(hattn__db *db, int ms) {
  db->busy_ms = ms;
  sqlite3_busy_timeout(db->sq, ms);
}
int hattn__db_readonly(const hattn__db *db) { return db->readonly; }

/* ---- buckets and devices ---------------------------------------------------- */

void hattn__db_bucket(int64_t lk, int64_t bh, int *lk_log2, int *bh_class) {
  int n = 0;
  while (n < 62 && ((int64_t)1 << n) < lk) n++;
  *lk_log2 = n;
  *bh_class = bh <= 1 ? 0 : bh <= 8 ? 1 : bh <= 32 ? 2 : bh <= 128 ? 3 : 4;
}

const char *hattn__db_bh_class_name(int bh_class) {
  static const char *const names[] = {"1", "2-8", "9-32", "33-128", ">128"};
  return bh_class >= 0 && bh_class < 5 ? names[bh_class] : "?";
}

int hattn__db_device_model(const hattn__db_device *dev, char *buf, size_t len) {
  if (!strcmp(str_or_empty(dev->kind), "gpu"))
    return snprintf(buf, len, "gpu:%s:sm_%d:%d", str_or_empty(dev->name), dev->cc, dev->sm_count);
  return snprintf(buf, len, "%s:%s:%s:%d", str_or_empty(dev->kind), str_or_empty(dev->name),
                  str_or_empty(dev->features), dev->cores);
}

/* Insert or update DEV inside the caller's transaction; sets *ID. */
static int device_upsert(hattn__db *db, const hattn__db_device *dev, int64_t *id, char *err, size_t errlen) {
  static const char *const sql[] = {
    ("INSERT OR IGNORE INTO devices (model, kind, name, cc, sm_count, driver, toolkit, features, cores, "
     "first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)"),
    "UPDATE devices SET driver = ?6, toolkit = ?7, last_seen = ?10 WHERE model = ?1",
    "SELECT id FROM devices WHERE model = ?1"};
  char model[1024];
  sqlite3_stmt *st = NULL;
  size_t i;
  int rc;
  if (hattn__db_device_model(dev, model, sizeof model) >= (int)sizeof model)
    return fail(err, errlen, HATTN_EINVAL, "the device's name and features are too long");
  if (strcmp(str_or_empty(dev->kind), "gpu") && strcmp(str_or_empty(dev->kind), "cpu"))
    return fail(err, errlen, HATTN_EINVAL, "a device is a \"gpu\" or a \"cpu\", not \"%s\"",
                str_or_empty(dev->kind));
  for (i = 0; i < sizeof sql / sizeof sql[0]; i++) {
    if ((rc = prep(db, sql[i], &st, err, errlen)) != HATTN_OK) return rc;
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    if (i == 0) {
      sqlite3_bind_text(st, 2, dev->kind, -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 3, str_or_empty(dev->name), -1, SQLITE_STATIC);
      sqlite3_bind_int(st, 4, dev->cc);
      sqlite3_bind_int(st, 5, dev->sm_count);
      sqlite3_bind_text(st, 8, str_or_empty(dev->features), -1, SQLITE_STATIC);
      sqlite3_bind_int(st, 9, dev->cores);
    }
    if (i < 2) {
      sqlite3_bind_text(st, 6, str_or_empty(dev->driver), -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 7, str_or_empty(dev->toolkit), -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 10, now_s());
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(db, rc, "cannot record the device", err, errlen);
  }
  return HATTN_OK;
}

int hattn__db_device_models(hattn__db *db, char ***models, int *n, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  char **list = NULL, **t;
  int rc, count = 0, cap = 0;
  *models = NULL;
  if ((rc = prep(db, "SELECT model FROM devices ORDER BY model", &st, err, errlen)) != HATTN_OK) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (count + 2 > cap) {
      if ((t = realloc(list, (size_t)(cap = cap ? 2 * cap : 8) * sizeof *t)) == NULL) goto fail_nomem;
      list = t;
    }
    if ((list[count] = strdup((const char *)sqlite3_column_text(st, 0))) == NULL) goto fail_nomem;
    list[++count] = NULL;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    rc = db_fail(db, rc, "cannot read devices", err, errlen);
    goto fail_list;
  }
  if (list == NULL && (list = calloc(1, sizeof *list)) == NULL) {
    rc = fail(err, errlen, HATTN_ENOMEM, "out of memory");
    goto fail_list;
  }
  *models = list;
  if (n) *n = count;
  return HATTN_OK;
fail_nomem:
  sqlite3_finalize(st);
  rc = fail(err, errlen, HATTN_ENOMEM, "out of memory");
fail_list:
  while (count > 0) free(list[--count]);
  free(list);
  return rc;
}

int hattn__db_device_put(hattn__db *db, const hattn__db_device *dev, char *err, size_t errlen) {
  int64_t id;
  int rc = begin(db, err, errlen);
  if (rc != HATTN_OK) return rc;
  if ((rc = device_upsert(db, dev, &id, err, errlen)) != HATTN_OK) {
    rollback(db);
    return rc;
  }
  return commit(db, err, errlen);
}

/* ---- kernels ------------------------------------------------------------------ */

int hattn__db_kernel_put(hattn__db *db, const hattn__db_kernel *k, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  const char *f[MAC_FIELDS];
  char sum[65], mac[65], hd[16];
  int rc;
  assert(k->key != NULL && (k->binary != NULL || k->size == 0));
  if (k->size > (size_t)INT32_MAX)
    return fail(err, errlen, HATTN_EINVAL, "kernel %s: a binary of %zu bytes is too large to store", k->key,
                k->size);
  hattn__db_sha256_hex(k->binary ? k->binary : "", k->size, sum);
  if (db->readonly) return begin(db, err, errlen);
  if ((rc = db_key(db, err, errlen)) != HATTN_OK) return rc;
  snprintf(hd, sizeof hd, "%d", k->head_dim);
  f[0] = k->key, f[1] = str_or_empty(k->canon), f[2] = str_or_empty(k->backend), f[3] = str_or_empty(k->target);
  f[4] = str_or_empty(k->config), f[5] = str_or_empty(k->compiler), f[6] = str_or_empty(k->kernel_class);
  f[7] = str_or_empty(k->dtype), f[8] = hd;
  kernel_mac(db->key, f, k->binary ? k->binary : "", k->size, mac);
  if ((rc = begin(db, err, errlen)) != HATTN_OK) return rc;
  rc = prep(db,
            "INSERT OR REPLACE INTO kernels (key, canon, backend, target, config, compiler, binary, "
            "checksum, created, kernel_class, dtype, head_dim, hmac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &st, err, errlen);
  if (rc != HATTN_OK) goto fail_txn;
  sqlite3_bind_text(st, 1, k->key, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, str_or_empty(k->canon), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, str_or_empty(k->backend), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, str_or_empty(k->target), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, str_or_empty(k->config), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 6, str_or_empty(k->compiler), -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 7, k->binary ? k->binary : "", (int)k->size, SQLITE_STATIC);
  sqlite3_bind_text(st, 8, sum, 64, SQLITE_STATIC);
  sqlite3_bind_int64(st, 9, k->created ? k->created : now_s());
  sqlite3_bind_text(st, 10, f[6], -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 11, f[7], -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 12, k->head_dim);
  sqlite3_bind_text(st, 13, mac, 64, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    rc = db_fail(db, rc, "cannot store a kernel", err, errlen);
    goto fail_txn;
  }
  return commit(db, err, errlen);
fail_txn:
  rollback(db);
  return rc;
}

/* Copy the text of column I of ST to *CUR and advance it. */
static const char *take_text(sqlite3_stmt *st, int i, char **cur) {
  const char *s = (const char *)sqlite3_column_text(st, i);
  size_t n = (size_t)sqlite3_column_bytes(st, i);
  char *d = *cur;
  if (n) memcpy(d, s, n);
  d[n] = '\0';
  *cur += n + 1;
  return d;
}

/* What becomes of a kernel that DB has no usable binary of, as the end of
** a sentence: DB's path comes before it when DB is read-only. */
static const char *rebuilt(const hattn__db *db) {
  return db->readonly ? " is open read-only, so the kernel is compiled for this process and not kept"
                      : "it is rebuilt";
}

int hattn__db_kernel_get(hattn__db *db, const char *key, const char *compiler,
                         hattn__db_kernel **out, int *miss, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  hattn__db_kernel *k;
  char *cur, sum[65], kerr[1024];
  size_t total;
  int rc, i, why;

  assert(key != NULL && out != NULL);
  *out = NULL;
  if (miss == NULL) miss = &why;
  *miss = HATTN__DB_MISS_NONE;
  rc = prep(db,
            "SELECT key, canon, backend, target, config, compiler, binary, checksum, created, kernel_class, "
            "dtype, head_dim, hmac FROM kernels WHERE key = ?",
            &st, err, errlen);
  if (rc != HATTN_OK) return rc;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    *miss = HATTN__DB_MISS_ABSENT;
    rc = fail(err, errlen, HATTN_ENOENT, "no kernel %s in %s", key, db->path);
    goto done;
  }
  if (rc != SQLITE_ROW) {
    rc = db_fail(db, rc, "cannot read a kernel", err, errlen);
    goto done;
  }
  if (compiler != NULL && strcmp((const char *)sqlite3_column_text(st, 5), compiler) != 0) {
    *miss = HATTN__DB_MISS_COMPILER;
    rc = fail(err, errlen, HATTN_ENOENT, "kernel %s in %s was built by %s, not %s: %s%s", key, db->path,
              sqlite3_column_text(st, 5), compiler, db->readonly ? db->path : "", rebuilt(db));
    goto done;
  }
  total = sizeof *k + 16 + (size_t)sqlite3_column_bytes(st, 6) + (size_t)sqlite3_column_bytes(st, 9) +
          (size_t)sqlite3_column_bytes(st, 10) + 2;
  for (i = 0; i < 6; i++) total += (size_t)sqlite3_column_bytes(st, i) + 1;
  if ((k = calloc(1, total)) == NULL) {
    rc = fail(err, errlen, HATTN_ENOMEM, "out of memory");
    goto done;
  }
  /* The binary first, 16-byte aligned, then the strings. */
  cur = (char *)k + (sizeof *k + 15) / 16 * 16;
  k->size = (size_t)sqlite3_column_bytes(st, 6);
  if (k->size) memcpy(cur, sqlite3_column_blob(st, 6), k->size);
  k->binary = cur;
  cur += k->size;
  k->key = take_text(st, 0, &cur);
  k->canon = take_text(st, 1, &cur);
  k->backend = take_text(st, 2, &cur);
  k->target = take_text(st, 3, &cur);
  k->config = take_text(st, 4, &cur);
  k->compiler = take_text(st, 5, &cur);
  k->kernel_class = take_text(st, 9, &cur);
  k->dtype = take_text(st, 10, &cur);
  k->head_dim = sqlite3_column_int(st, 11);
  snprintf(k->checksum, sizeof k->checksum, "%s", (const char *)sqlite3_column_text(st, 7));
  k->created = sqlite3_column_int64(st, 8);
  hattn__db_sha256_hex(k->binary, k->size, sum);
  if (strcmp(sum, k->checksum) != 0) {
    *miss = HATTN__DB_MISS_CHECKSUM;
    rc = fail(err, errlen, HATTN_ENOENT, "kernel %s in %s fails its checksum: %s%s", key, db->path,
              db->readonly ? db->path : "", rebuilt(db));
    free(k);
    goto done;
  }
  /* The checksum finds accidents; the HMAC finds binaries that this user's
  ** hattn did not store (written before schema 2, by another user, edited). */
  if ((rc = db_key(db, kerr, sizeof kerr)) != HATTN_OK) {
    *miss = HATTN__DB_MISS_HMAC;
    rc = fail(err, errlen, HATTN_ENOENT,
              "%s; so the binary of kernel %s in %s is not trusted: it is compiled for this process and not kept",
              kerr, key, db->path);
    free(k);
    goto done;
  }
  {
    const char *f[MAC_FIELDS];
    char hd[16];
    snprintf(hd, sizeof hd, "%d", k->head_dim);
    f[0] = k->key, f[1] = k->canon, f[2] = k->backend, f[3] = k->target, f[4] = k->config, f[5] = k->compiler;
    f[6] = k->kernel_class, f[7] = k->dtype, f[8] = hd;
    kernel_mac(db->key, f, k->binary, k->size, sum);
  }
  if (strcmp(sum, (const char *)sqlite3_column_text(st, 12)) != 0) {
    *miss = HATTN__DB_MISS_HMAC;
    rc = fail(err, errlen, HATTN_ENOENT,
              "kernel %s in %s has no valid HMAC of this user's key (stored by an older hattn or another user, "
              "imported, or edited): %s%s", key, db->path, db->readonly ? db->path : "", rebuilt(db));
    free(k);
    goto done;
  }
  *out = k;
  rc = HATTN_OK;
done:
  sqlite3_finalize(st);
  return rc;
}

/* ---- tunings ----------------------------------------------------------------- */

int hattn__db_tuning_put(hattn__db *db, const hattn__db_device *dev, const hattn__db_tuning *t,
                         char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int64_t device_id = 0, tuning_id;
  int rc, i;

  assert(t->kernel_class != NULL && t->compiler != NULL && t->winner != NULL);
  assert(t->ncandidates == 0 || t->candidates != NULL);
  if (t->lk_log2 < 0 || t->lk_log2 > 62 || t->bh_class < 0 || t->bh_class > 4)
    return fail(err, errlen, HATTN_EINVAL, "bucket %d/%d is not one of hattn__db_bucket's", t->lk_log2,
                t->bh_class);
  if ((rc = begin(db, err, errlen)) != HATTN_OK) return rc;
  if ((rc = device_upsert(db, dev, &device_id, err, errlen)) != HATTN_OK) goto fail_txn;
  rc = prep(db,
            "INSERT INTO tunings (device_id, kernel_class, compiler, lk_log2, bh_class, winner, "
            "winner_us, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            &st, err, errlen);
  if (rc != HATTN_OK) goto fail_txn;
  sqlite3_bind_int64(st, 1, device_id);
  sqlite3_bind_text(st, 2, t->kernel_class, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, t->compiler, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 4, t->lk_log2);
  sqlite3_bind_int(st, 5, t->bh_class);
  sqlite3_bind_text(st, 6, t->winner, -1, SQLITE_STATIC);
  sqlite3_bind_double(st, 7, t->winner_us);
  sqlite3_bind_int64(st, 8, t->created ? t->created : now_s());
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    rc = db_fail(db, rc, "cannot store a tuning record", err, errlen);
    goto fail_txn;
  }
  tuning_id = sqlite3_last_insert_rowid(db->sq);
  rc = prep(db,
            "INSERT OR REPLACE INTO candidates (tuning_id, config, time_us, spread_us) VALUES (?, ?, ?, ?)",
            &st, err, errlen);
  if (rc != HATTN_OK) goto fail_txn;
  for (i = 0; i < t->ncandidates; i++) {
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, tuning_id);
    sqlite3_bind_text(st, 2, str_or_empty(t->candidates[i].config), -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, t->candidates[i].time_us);
    sqlite3_bind_double(st, 4, t->candidates[i].spread_us);
    if ((rc = sqlite3_step(st)) != SQLITE_DONE) {
      rc = db_fail(db, rc, "cannot store a tuning candidate", err, errlen);
      sqlite3_finalize(st);
      goto fail_txn;
    }
  }
  sqlite3_finalize(st);
  return commit(db, err, errlen);
fail_txn:
  rollback(db);
  return rc;
}

/* Read the candidates of tuning ID into one block with the record in ROW
** (columns: kernel_class, compiler, lk_log2, bh_class, winner, winner_us,
** created, model). */
static int tuning_load(hattn__db *db, sqlite3_stmt *row, int64_t id, hattn__db_tuning **out,
                       char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  hattn__db_tuning *t;
  hattn__db_candidate *c;
  size_t total = sizeof *t;
  char *cur;
  int rc, n = 0, i;
  static const int text_cols[] = {0, 1, 4, 7};

  rc = prep(db, "SELECT config, time_us, spread_us FROM candidates WHERE tuning_id = ? ORDER BY time_us, config",
            &st, err, errlen);
  if (rc != HATTN_OK) return rc;
  sqlite3_bind_int64(st, 1, id);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    total += sizeof *c + (size_t)sqlite3_column_bytes(st, 0) + 1;
    n++;
  }
  if (rc != SQLITE_DONE) {
    rc = db_fail(db, rc, "cannot read tuning candidates", err, errlen);
    goto done;
  }
  for (i = 0; i < 4; i++) total += (size_t)sqlite3_column_bytes(row, text_cols[i]) + 1;
  if ((t = calloc(1, total)) == NULL) {
    rc = fail(err, errlen, HATTN_ENOMEM, "out of memory");
    goto done;
  }
  c = (hattn__db_candidate *)(t + 1);
  cur = (char *)(c + n);
  t->kernel_class = take_text(row, 0, &cur);
  t->compiler = take_text(row, 1, &cur);
  t->lk_log2 = sqlite3_column_int(row, 2);
  t->bh_class = sqlite3_column_int(row, 3);
  t->winner = take_text(row, 4, &cur);
  t->winner_us = sqlite3_column_double(row, 5);
  t->created = sqlite3_column_int64(row, 6);
  t->device_model = take_text(row, 7, &cur);
  t->candidates = c;
  sqlite3_reset(st);
  for (i = 0; i < n && sqlite3_step(st) == SQLITE_ROW; i++) {
    c[i].config = take_text(st, 0, &cur);
    c[i].time_us = sqlite3_column_double(st, 1);
    c[i].spread_us = sqlite3_column_double(st, 2);
  }
  t->ncandidates = i;
  *out = t;
  rc = HATTN_OK;
done:
  sqlite3_finalize(st);
  return rc;
}

int hattn__db_tuning_get(hattn__db *db, const char *model, const char *kernel_class,
                         const char *compiler, int64_t lk, int64_t bh,
                         hattn__db_tuning **out, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc, lk_log2, bh_class;

  assert(model != NULL && kernel_class != NULL && out != NULL);
  *out = NULL;
  hattn__db_bucket(lk, bh, &lk_log2, &bh_class);
  rc = prep(db,
            "SELECT t.kernel_class, t.compiler, t.lk_log2, t.bh_class, t.winner, t.winner_us, t.created, "
            "d.model, t.id FROM tunings t JOIN devices d ON d.id = t.device_id "
            "WHERE d.model = ?1 AND t.kernel_class = ?2 AND (?3 IS NULL OR t.compiler = ?3) "
            "ORDER BY abs(t.bh_class - ?4), abs(t.lk_log2 - ?5), t.lk_log2 DESC, t.created DESC, t.id DESC "
            "LIMIT 1",
            &st, err, errlen);
  if (rc != HATTN_OK) return rc;
  sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, kernel_class, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, compiler, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 4, bh_class);
  sqlite3_bind_int(st, 5, lk_log2);
  rc = sqlite3_step(st);
  if (rc == SQLITE_DONE)
    rc = fail(err, errlen, HATTN_ENOENT, "no tuning of %s by %s on %s in %s", kernel_class,
              compiler ? compiler : "any compiler", model, db->path);
  else if (rc != SQLITE_ROW)
    rc = db_fail(db, rc, "cannot read a tuning record", err, errlen);
  else
    rc = tuning_load(db, st, sqlite3_column_int64(st, 8), out, err, errlen);
  sqlite3_finalize(st);
  return rc;
}

/* ---- list, show, prune, verify --------------------------------------------------- */

static void print_time(FILE *out, int64_t t) {
  time_t tt = (time_t)t;
  struct tm tm;
  char buf[32];
  if (gmtime_r(&tt, &tm) && strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm)) fputs(buf, out);
  else fprintf(out, "%lld", (long long)t);
}

/* Print the rows of one query; EACH prints a row. */
static int print_rows(hattn__db *db, const char *sql, const char *key, FILE *out,
                      void (*each)(sqlite3_stmt *, FILE *), int64_t *nrows, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int rc = prep(db, sql, &st, err, errlen);
  int64_t n = 0;
  if (rc != HATTN_OK) return rc;
  if (key) sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    each(st, out);
    n++;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return db_fail(db, rc, "cannot read", err, errlen);
  if (nrows) *nrows = n;
  return HATTN_OK;
}

static void print_device(sqlite3_stmt *st, FILE *out) {
  fprintf(out, "  %s", sqlite3_column_text(st, 0));
  if (sqlite3_column_bytes(st, 1)) fprintf(out, "  driver %s", sqlite3_column_text(st, 1));
  if (sqlite3_column_bytes(st, 2)) fprintf(out, "  toolkit %s", sqlite3_column_text(st, 2));
  fputs("  last seen ", out);
  print_time(out, sqlite3_column_int64(st, 3));
  fprintf(out, "  (%lld tunings)\n", (long long)sqlite3_column_int64(st, 4));
}

/* A kernel: key, what it computes (pattern, dtype, head dim; "?" where a
** kernel of schema 1 does not say), configuration, backend, target,
** compiler, size, date, and the shape buckets whose tuning it won. */
static void print_kernel(sqlite3_stmt *st, FILE *out) {
  fprintf(out, "  %s  %s  %s d%s  %s  %s %s  %s  %lld bytes  ", sqlite3_column_text(st, 0),
          sqlite3_column_text(st, 6), sqlite3_column_bytes(st, 7) ? (const char *)sqlite3_column_text(st, 7) : "?",
          sqlite3_column_int(st, 8) ? (const char *)sqlite3_column_text(st, 8) : "?", sqlite3_column_text(st, 9),
          sqlite3_column_text(st, 1), sqlite3_column_text(st, 2), sqlite3_column_text(st, 3),
          (long long)sqlite3_column_int64(st, 4));
  print_time(out, sqlite3_column_int64(st, 5));
  if (sqlite3_column_bytes(st, 10)) fprintf(out, "  winner for %s", sqlite3_column_text(st, 10));
  fputc('\n', out);
}

static void print_tuning(sqlite3_stmt *st, FILE *out) {
  fprintf(out, "  %s  %s%s%s%s  %s  lk<=%lld bh %s: %s %.2f us of %lld candidates  ", sqlite3_column_text(st, 0),
          sqlite3_column_text(st, 1), sqlite3_column_bytes(st, 10) ? " (" : "",
          sqlite3_column_bytes(st, 10) ? (const char *)sqlite3_column_text(st, 10) : "",
          sqlite3_column_bytes(st, 10) ? ")" : "", sqlite3_column_text(st, 2), 1LL << sqlite3_column_int(st, 3),
          hattn__db_bh_class_name(sqlite3_column_int(st, 4)), sqlite3_column_text(st, 5),
          sqlite3_column_double(st, 6), (long long)sqlite3_column_int64(st, 8));
  print_time(out, sqlite3_column_int64(st, 7));
  fputc('\n', out);
}

static void print_candidate(sqlite3_stmt *st, FILE *out) {
  fprintf(out, "      %-32s %10.2f us +- %.2f%s\n", sqlite3_column_text(st, 0), sqlite3_column_double(st, 1),
          sqlite3_column_double(st, 2), sqlite3_column_int(st, 3) ? "  winner" : "");
}

#define TUNING_COLS                                                                                   \
  "SELECT d.model, t.kernel_class, t.compiler, t.lk_log2, t.bh_class, t.winner, t.winner_us, t.created, " \
  "(SELECT count(*) FROM candidates c WHERE c.tuning_id = t.id), t.id, "                             \
  "(SELECT k.canon || ' ' || k.dtype || ' d' || k.head_dim FROM kernels k WHERE k.kernel_class = t.kernel_class " \
  "AND k.dtype <> '' LIMIT 1) "                                                                        \
  "FROM tunings t JOIN devices d ON d.id = t.device_id "

int hattn__db_list(hattn__db *db, FILE *out, char *err, size_t errlen) {
  int64_t n;
  int rc;
  fprintf(out, "%s: schema version %d\ndevices:\n", db->path, HATTN__DB_SCHEMA_VERSION);
  rc = print_rows(db,
                  "SELECT model, driver, toolkit, last_seen, (SELECT count(*) FROM tunings t WHERE "
                  "t.device_id = d.id) FROM devices d ORDER BY model",
                  NULL, out, print_device, &n, err, errlen);
  if (rc != HATTN_OK) return rc;
  fputs("kernels:\n", out);
  rc = print_rows(db,
                  "SELECT key, backend, target, compiler, length(binary), created, canon, dtype, head_dim, config, "
                  "(SELECT group_concat(b, ', ') FROM (SELECT DISTINCT 'lk<=' || (1 << t.lk_log2) || ' bh ' || "
                  "CASE t.bh_class WHEN 0 THEN '1' WHEN 1 THEN '2-8' WHEN 2 THEN '9-32' WHEN 3 THEN '33-128' "
                  "ELSE '>128' END AS b FROM tunings t WHERE t.kernel_class = k.kernel_class AND k.kernel_class <> '' "
                  "AND (t.winner = k.config OR t.winner LIKE k.config || ' threads=%') "
                  "ORDER BY t.bh_class, t.lk_log2)) FROM kernels k ORDER BY canon, dtype, head_dim, key",
                  NULL, out, print_kernel, &n, err, errlen);
  if (rc != HATTN_OK) return rc;
  fputs("tunings:\n", out);
  return print_rows(db, TUNING_COLS "ORDER BY d.model, t.kernel_class, t.bh_class, t.lk_log2, t.created",
                    NULL, out, print_tuning, &n, err, errlen);
}

int hattn__db_show(hattn__db *db, const char *key, FILE *out, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int64_t nk = 0, nt = 0;
  int rc = prep(db,
                "SELECT key, canon, backend, target, config, compiler, length(binary), checksum, created "
                "FROM kernels WHERE key = ?",
                &st, err, errlen);
  if (rc != HATTN_OK) return rc;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    fprintf(out, "kernel   %s\npattern  %s\nbackend  %s\ntarget   %s\nconfig   %s\ncompiler %s\n"
            "binary   %lld bytes, sha256 %s\ncreated  ",
            sqlite3_column_text(st, 0), sqlite3_column_text(st, 1), sqlite3_column_text(st, 2),
            sqlite3_column_text(st, 3), sqlite3_column_text(st, 4), sqlite3_column_text(st, 5),
            (long long)sqlite3_column_int64(st, 6), sqlite3_column_text(st, 7));
    print_time(out, sqlite3_column_int64(st, 8));
    fputc('\n', out);
    nk = 1;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(db, rc, "cannot read a kernel", err, errlen);
  rc = prep(db, TUNING_COLS "WHERE t.kernel_class = ?1 ORDER BY d.model, t.bh_class, t.lk_log2, t.created",
            &st, err, errlen);
  if (rc != HATTN_OK) return rc;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    char id[32];
    if (nt++ == 0) fprintf(out, "tunings of %s:\n", key);
    print_tuning(st, out);
    snprintf(id, sizeof id, "%lld", (long long)sqlite3_column_int64(st, 9));
    rc = print_rows(db,
                    "SELECT c.config, c.time_us, c.spread_us, c.config = t.winner FROM candidates c "
                    "JOIN tunings t ON t.id = c.tuning_id WHERE c.tuning_id = CAST(?1 AS INTEGER) "
                    "ORDER BY c.time_us, c.config",
                    id, out, print_candidate, NULL, err, errlen);
    if (rc != HATTN_OK) {
      sqlite3_finalize(st);
      return rc;
    }
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return db_fail(db, rc, "cannot read tuning records", err, errlen);
  if (nk == 0 && nt == 0)
    return fail(err, errlen, HATTN_ENOENT, "no kernel and no tuning of %s in %s", key, db->path);
  return HATTN_OK;
}

/* Run DELETE FROM TABLE of rows older than CUTOFF (when HAS_CUTOFF) or of a
** compiler not in COMPILERS (when not NULL); *N counts them. */
static int prune_table(hattn__db *db, const char *table, int has_cutoff, int64_t cutoff,
                       const char *const *compilers, int64_t *n, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  char *sql;
  size_t cap = 256, o, nc = 0, i;
  int rc;
  while (compilers && compilers[nc]) nc++;
  cap += 3 * nc;
  if ((sql = malloc(cap)) == NULL) return fail(err, errlen, HATTN_ENOMEM, "out of memory");
  o = (size_t)snprintf(sql, cap, "DELETE FROM %s WHERE (?1 AND created < ?2)", table);
  if (compilers) {
    o += (size_t)snprintf(sql + o, cap - o, " OR compiler NOT IN (");
    for (i = 0; i < nc; i++) o += (size_t)snprintf(sql + o, cap - o, i ? ",?" : "?");
    snprintf(sql + o, cap - o, ")");
  }
  rc = prep(db, sql, &st, err, errlen);
  free(sql);
  if (rc != HATTN_OK) return rc;
  sqlite3_bind_int(st, 1, has_cutoff);
  sqlite3_bind_int64(st, 2, cutoff);
  for (i = 0; i < nc; i++) sqlite3_bind_text(st, (int)i + 3, compilers[i], -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return db_fail(db, rc, "cannot prune", err, errlen);
  *n = sqlite3_changes(db->sq);
  return HATTN_OK;
}

int hattn__db_prune(hattn__db *db, double older_than_days, const char *const *compilers,
                    int64_t *nkernels, int64_t *ntunings, char *err, size_t errlen) {
  int64_t cutoff = now_s() - (int64_t)(older_than_days * 86400.0), nk = 0, nt = 0;
  int has_cutoff = older_than_days >= 0, rc;
  if ((rc = begin(db, err, errlen)) != HATTN_OK) return rc;
  if ((rc = prune_table(db, "kernels", has_cutoff, cutoff, compilers, &nk, err, errlen)) != HATTN_OK)
    goto fail_txn;
  if ((rc = prune_table(db, "tunings", has_cutoff, cutoff, compilers, &nt, err, errlen)) != HATTN_OK)
    goto fail_txn;
  rc = sqlite3_exec(db->sq, "DELETE FROM devices WHERE id NOT IN (SELECT device_id FROM tunings)", NULL,
                    NULL, NULL);
  if (rc != SQLITE_OK) {
    rc = db_fail(db, rc, "cannot prune", err, errlen);
    goto fail_txn;
  }
  if ((rc = commit(db, err, errlen)) != HATTN_OK) return rc;
  if (nkernels) *nkernels = nk;
  if (ntunings) *ntunings = nt;
  return HATTN_OK;
fail_txn:
  rollback(db);
  return rc;
}

int hattn__db_verify(hattn__db *db, FILE *out, int64_t *nbad, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int64_t bad = 0;
  char sum[65], kerr[1024];
  int rc = prep(db, "PRAGMA quick_check", &st, err, errlen);
  if (rc != HATTN_OK) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *msg = (const char *)sqlite3_column_text(st, 0);
    if (msg && !strcmp(msg, "ok")) continue;
    if (out) fprintf(out, "%s: %s\n", db->path, msg ? msg : "?");
    bad++;
  }
  sqlite3_finalize(st);
  if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB) {
    if (out) fprintf(out, "%s: %s\n", db->path, sqlite3_errmsg(db->sq));
    *nbad = bad + 1;
    return HATTN_OK;
  }
  if (rc != SQLITE_DONE) return db_fail(db, rc, "cannot check the file", err, errlen);
  if (db_key(db, kerr, sizeof kerr) != HATTN_OK) {
    if (out) fprintf(out, "%s\n", kerr);
    bad++;
  }
  if ((rc = prep(db,
                 "SELECT key, binary, checksum, hmac, key, canon, backend, target, config, compiler, kernel_class, "
                 "dtype, head_dim FROM kernels ORDER BY key",
                 &st, err, errlen)) != HATTN_OK)
    return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const void *p = sqlite3_column_blob(st, 1);
    const char *f[MAC_FIELDS];
    int i;
    hattn__db_sha256_hex(p ? p : "", (size_t)sqlite3_column_bytes(st, 1), sum);
    if (strcmp(sum, (const char *)sqlite3_column_text(st, 2)) != 0) {
      if (out)
        fprintf(out, "kernel %s: checksum mismatch (stored %s, binary %s)\n", sqlite3_column_text(st, 0),
                sqlite3_column_text(st, 2), sum);
      bad++;
      continue;
    }
    if (db->key_state <= 0) continue;
    for (i = 0; i < MAC_FIELDS; i++) f[i] = (const char *)sqlite3_column_text(st, 4 + i);
    kernel_mac(db->key, f, p ? p : "", (size_t)sqlite3_column_bytes(st, 1), sum);
    if (strcmp(sum, (const char *)sqlite3_column_text(st, 3)) != 0) {
      if (out)
        fprintf(out, "kernel %s: no valid HMAC of this user's key (stored by an older hattn or another user, "
                "imported, or edited): it is not used, and compiled again when needed\n", sqlite3_column_text(st, 0));
      bad++;
    }
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    if ((rc & 0xff) == SQLITE_CORRUPT) {
      if (out) fprintf(out, "%s: %s\n", db->path, sqlite3_errmsg(db->sq));
      *nbad = bad + 1;
      return HATTN_OK;
    }
    return db_fail(db, rc, "cannot read kernels", err, errlen);
  }
  *nbad = bad;
  return HATTN_OK;
}

/* ---- export and import ------------------------------------------------------------ */

/* Run SQL on SQ with text parameters A and B (either may be NULL); *N
** (may be NULL) gets the number of rows changed. */
static int run2(sqlite3 *sq, const char *sql, const char *a, const char *b, int64_t *n) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(sq, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  if (sqlite3_bind_parameter_count(st) >= 1) sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
  if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return rc;
  if (n) *n = sqlite3_changes(sq);
  return SQLITE_OK;
}

int hattn__db_export(hattn__db *db, const char *path, const char *model, const char *compiler,
                     int64_t *ntunings, int64_t *nkernels, char *err, size_t errlen) {
  sqlite3 *ex = NULL;
  char sql[256], side[4096];
  int64_t nt = 0, nk = 0, i;
  int rc;

  /* Only binaries this user's hattn stored leave in an export. */
  if ((rc = db_key(db, err, errlen)) != HATTN_OK) return rc;
  if (unlink(path) != 0 && errno != ENOENT)
    return fail(err, errlen, HATTN_EDB, "cannot replace %s: %s", path, strerror(errno));
  snprintf(side, sizeof side, "%s-journal", path);
  unlink(side);
  rc = sqlite3_open_v2(path, &ex, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc != SQLITE_OK) {
    rc = sql_fail(ex, path, HATTN__DB_BUSY_MS, rc, "cannot create", err, errlen);
    goto fail_open;
  }
  sqlite3_busy_timeout(ex, HATTN__DB_BUSY_MS);
  if ((rc = sqlite3_exec(ex, "BEGIN", NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  for (i = 0; i < HATTN__DB_SCHEMA_VERSION; i++)
    if ((rc = sqlite3_exec(ex, migrations[i], NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  snprintf(sql, sizeof sql,
           "PRAGMA user_version = %d; PRAGMA application_id = %d; CREATE TABLE export (format INTEGER NOT "
           "NULL, hattn TEXT NOT NULL, created INTEGER NOT NULL);",
           HATTN__DB_SCHEMA_VERSION, APP_ID_EXPORT);
  if ((rc = sqlite3_exec(ex, sql, NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  snprintf(sql, sizeof sql, "INSERT INTO export VALUES (%d, ?1, %lld)", HATTN__DB_EXPORT_VERSION,
           (long long)now_s());
  if ((rc = run2(ex, sql, PACKAGE_VERSION, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  if ((rc = sqlite3_exec(ex, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  /* The source is read through a second connection, in one read transaction. */
  if ((rc = sqlite3_create_function_v2(ex, "hattn__sha256", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                       sql_sha256, NULL, NULL, NULL)) != SQLITE_OK ||
      (rc = sqlite3_create_function_v2(ex, "hattn__kernel_hmac", MAC_FIELDS + 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                       db->key, sql_kernel_hmac, NULL, NULL, NULL)) != SQLITE_OK)
    goto fail_sql;
  if ((rc = run2(ex, "ATTACH DATABASE ?1 AS src", db->path, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  if ((rc = sqlite3_exec(ex, "BEGIN", NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  if ((rc = run2(ex, "INSERT INTO devices SELECT * FROM src.devices WHERE ?1 IS NULL OR model = ?1", model,
                 NULL, &i)) != SQLITE_OK)
    goto fail_sql;
  if (model != NULL && i == 0) {
    rc = fail(err, errlen, HATTN_ENOENT, "no device %s in %s", model, db->path);
    goto fail_open;
  }
  if ((rc = run2(ex,
                 "INSERT INTO tunings SELECT t.* FROM src.tunings t WHERE t.device_id IN (SELECT id FROM "
                 "main.devices) AND (?1 IS NULL OR t.compiler = ?1)",
                 compiler, NULL, &nt)) != SQLITE_OK)
    goto fail_sql;
  if ((rc = run2(ex,
                 "INSERT INTO candidates SELECT c.* FROM src.candidates c WHERE c.tuning_id IN (SELECT id "
                 "FROM main.tunings)",
                 NULL, NULL, NULL)) != SQLITE_OK)
    goto fail_sql;
  if ((rc = run2(ex,
                 "INSERT INTO kernels SELECT * FROM src.kernels WHERE (?1 IS NULL OR compiler = ?1) AND "
                 "hattn__sha256(binary) = checksum AND hattn__kernel_hmac(key, canon, backend, target, config, "
                 "compiler, kernel_class, dtype, head_dim, binary) = hmac",
                 compiler, NULL, &nk)) != SQLITE_OK)
    goto fail_sql;
  if ((rc = run2(ex, "UPDATE kernels SET hmac = ''", NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  if ((rc = run2(ex, "DELETE FROM devices WHERE id NOT IN (SELECT device_id FROM tunings)", NULL, NULL, NULL))
      != SQLITE_OK)
    goto fail_sql;
  if ((rc = sqlite3_exec(ex, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  if ((rc = sqlite3_exec(ex, "DETACH DATABASE src", NULL, NULL, NULL)) != SQLITE_OK) goto fail_sql;
  if ((rc = sqlite3_close(ex)) != SQLITE_OK) {
    ex = NULL;
    rc = fail(err, errlen, HATTN_EDB, "cannot finish %s: %s", path, sqlite3_errstr(rc));
    goto fail_open;
  }
  if (ntunings) *ntunings = nt;
  if (nkernels) *nkernels = nk;
  return HATTN_OK;
fail_sql:
  {
    /* Name the database at fault: the source when it is the corrupt one. */
    const char *msg = sqlite3_errmsg(ex);
    if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_BUSY)
      rc = sql_fail(ex, db->path, db->busy_ms, rc, "cannot export", err, errlen);
    else
      rc = fail(err, errlen, HATTN_EDB, "cannot write %s: %s", path, msg);
  }
fail_open:
  sqlite3_close_v2(ex);
  unlink(path);
  return rc;
}

/* Check the export file attached as imp against MODELS, COMPILERS and its
** checksums. */
static int import_check(hattn__db *db, const char *path, int flags, const char *const *models,
                        const char *const *compilers, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int64_t v;
  char sum[65];
  int rc;

  if ((rc = query_int(db->sq, "PRAGMA imp.user_version", &v)) != SQLITE_OK) goto fail_sql;
  if (v > HATTN__DB_SCHEMA_VERSION)
    return fail(err, errlen, HATTN_EDB,
                "%s was written by a newer hattn (schema version %lld, this hattn knows up to %d)", path,
                (long long)v, HATTN__DB_SCHEMA_VERSION);
  if ((rc = query_int(db->sq, "SELECT max(format) FROM imp.export", &v)) != SQLITE_OK) goto fail_sql;
  if (v > HATTN__DB_EXPORT_VERSION)
    return fail(err, errlen, HATTN_EDB,
                "%s was written by a newer hattn (export format %lld, this hattn knows up to %d)", path,
                (long long)v, HATTN__DB_EXPORT_VERSION);
  if (models) {
    if ((rc = sqlite3_prepare_v2(db->sq, "SELECT model FROM imp.devices ORDER BY model", -1, &st, NULL)))
      goto fail_sql;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *m = (const char *)sqlite3_column_text(st, 0);
      if (!in_list(m, models)) {
        rc = fail(err, errlen, HATTN_EDB, "%s holds results for the device %s, not for %s%s: refused", path, m,
                  models[0] ? models[0] : "(none)", models[0] && models[1] ? " or the others" : "");
        sqlite3_finalize(st);
        return rc;
      }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) goto fail_sql;
  }
  if (compilers) {
    if ((rc = sqlite3_prepare_v2(db->sq,
                                 flags & HATTN__DB_IMPORT_BINARIES
                                   ? "SELECT compiler FROM imp.kernels UNION SELECT compiler FROM imp.tunings"
                                   : "SELECT DISTINCT compiler FROM imp.tunings ORDER BY compiler",
                                 -1, &st, NULL)))
      goto fail_sql;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *c = (const char *)sqlite3_column_text(st, 0);
      if (!in_list(c, compilers)) {
        rc = fail(err, errlen, HATTN_EDB, "%s holds results built by %s, not by %s%s: refused", path, c,
                  compilers[0] ? compilers[0] : "(none)", compilers[0] && compilers[1] ? " or the others" : "");
        sqlite3_finalize(st);
        return rc;
      }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) goto fail_sql;
  }
  if (!(flags & HATTN__DB_IMPORT_BINARIES)) return HATTN_OK;
  if ((rc = sqlite3_prepare_v2(db->sq, "SELECT key, binary, checksum FROM imp.kernels", -1, &st, NULL)))
    goto fail_sql;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const void *p = sqlite3_column_blob(st, 1);
    hattn__db_sha256_hex(p ? p : "", (size_t)sqlite3_column_bytes(st, 1), sum);
    if (strcmp(sum, (const char *)sqlite3_column_text(st, 2)) != 0) {
      rc = fail(err, errlen, HATTN_EDB, "kernel %s in %s fails its checksum: %s refused", sqlite3_column_text(st, 0),
                path, path);
      sqlite3_finalize(st);
      return rc;
    }
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) goto fail_sql;
  return HATTN_OK;
fail_sql:
  return sql_fail(db->sq, path, db->busy_ms, rc, "cannot read the export file", err, errlen);
}

/* Copy the tunings of imp that main lacks, with their candidates. */
static int import_tunings(hattn__db *db, int64_t *n, char *err, size_t errlen) {
  static const char *const sql[] = {
    ("SELECT t.id, d.model, t.kernel_class, t.compiler, t.lk_log2, t.bh_class, t.winner, t.winner_us, "
    "t.created FROM imp.tunings t JOIN imp.devices d ON d.id = t.device_id ORDER BY t.id"),
    ("SELECT count(*) FROM main.tunings x JOIN main.devices md ON md.id = x.device_id WHERE md.model = ?2 "
    "AND x.kernel_class = ?3 AND x.compiler = ?4 AND x.lk_log2 = ?5 AND x.bh_class = ?6 AND x.winner = ?7 "
    "AND x.winner_us = ?8 AND x.created = ?9"),
    ("INSERT INTO main.tunings (device_id, kernel_class, compiler, lk_log2, bh_class, winner, winner_us, "
    "created) VALUES ((SELECT id FROM main.devices WHERE model = ?2), ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
    ("INSERT INTO main.candidates (tuning_id, config, time_us, spread_us) SELECT ?10, config, time_us, "
    "spread_us FROM imp.candidates WHERE tuning_id = ?1")};
  sqlite3_stmt *st[4] = {NULL, NULL, NULL, NULL};
  int rc, i, j;
  *n = 0;
  for (i = 0; i < 4; i++)
    if ((rc = prep(db, sql[i], &st[i], err, errlen)) != HATTN_OK) goto done;
  while ((rc = sqlite3_step(st[0])) == SQLITE_ROW) {
    for (i = 1; i < 4; i++) {
      sqlite3_reset(st[i]);
      for (j = 0; j < 9; j++)
        if (j + 1 <= sqlite3_bind_parameter_count(st[i])) sqlite3_bind_value(st[i], j + 1, sqlite3_column_value(st[0], j));
    }
    if ((rc = sqlite3_step(st[1])) != SQLITE_ROW) goto fail_sql;
    if (sqlite3_column_int64(st[1], 0) > 0) continue;
    if ((rc = sqlite3_step(st[2])) != SQLITE_DONE) goto fail_sql;
    sqlite3_bind_int64(st[3], 10, sqlite3_last_insert_rowid(db->sq));
    if ((rc = sqlite3_step(st[3])) != SQLITE_DONE) goto fail_sql;
    ++*n;
  }
  if (rc != SQLITE_DONE) goto fail_sql;
  rc = HATTN_OK;
  goto done;
fail_sql:
  rc = db_fail(db, rc, "cannot import tuning records", err, errlen);
done:
  for (i = 0; i < 4; i++) sqlite3_finalize(st[i]);
  return rc;
}

int hattn__db_import(hattn__db *db, const char *path, int flags, const char *const *models,
                     const char *const *compilers, int64_t *ntunings, int64_t *nkernels,
                     char *err, size_t errlen) {
  int64_t nt = 0, nk = 0, v = 0;
  int rc;

  if (db->readonly)
    return fail(err, errlen, HATTN_EDB, "%s is open read-only: nothing is imported", db->path);
  rc = check_header(path, APP_ID_EXPORT, 1, "a hattn export file", err, errlen);
  if (rc != HATTN_OK) return rc == HATTN_ENOENT ? HATTN_EDB : rc;
  if ((rc = run2(db->sq, "ATTACH DATABASE ?1 AS imp", path, NULL, NULL)) != SQLITE_OK)
    return sql_fail(db->sq, path, db->busy_ms, rc, "cannot open the export file", err, errlen);
  if ((rc = import_check(db, path, flags, models, compilers, err, errlen)) != HATTN_OK) goto fail_attach;
  if ((flags & HATTN__DB_IMPORT_BINARIES) && (rc = db_key(db, err, errlen)) != HATTN_OK) goto fail_attach;
  if ((rc = query_int(db->sq, "PRAGMA imp.user_version", &v)) != SQLITE_OK) goto fail_sql_attach;
  if ((rc = begin(db, err, errlen)) != HATTN_OK) goto fail_attach;
  rc = sqlite3_exec(db->sq,
                    "INSERT OR IGNORE INTO main.devices (model, kind, name, cc, sm_count, driver, toolkit, "
                    "features, cores, first_seen, last_seen) SELECT model, kind, name, cc, sm_count, driver, "
                    "toolkit, features, cores, first_seen, last_seen FROM imp.devices",
                    NULL, NULL, NULL);
  if (rc != SQLITE_OK) goto fail_sql;
  if (flags & HATTN__DB_IMPORT_BINARIES) {
    /* The user vouches for these binaries: they get the user's HMAC.  An
    ** export of schema 1 does not say what its kernels are. */
    rc = sqlite3_exec(db->sq,
                      v >= 2 ? "INSERT OR REPLACE INTO main.kernels (key, canon, backend, target, config, compiler, "
                               "binary, checksum, created, kernel_class, dtype, head_dim, hmac) SELECT key, canon, "
                               "backend, target, config, compiler, binary, checksum, created, kernel_class, dtype, "
                               "head_dim, hattn__kernel_hmac(key, canon, backend, target, config, compiler, "
                               "kernel_class, dtype, head_dim, binary) FROM imp.kernels"
                             : "INSERT OR REPLACE INTO main.kernels (key, canon, backend, target, config, compiler, "
                               "binary, checksum, created, hmac) SELECT key, canon, backend, target, config, "
                               "compiler, binary, checksum, created, hattn__kernel_hmac(key, canon, backend, target, "
                               "config, compiler, '', '', 0, binary) FROM imp.kernels",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto fail_sql;
    nk = sqlite3_changes(db->sq);
  }
  if ((rc = import_tunings(db, &nt, err, errlen)) != HATTN_OK) goto fail_txn;
  if ((rc = commit(db, err, errlen)) != HATTN_OK) goto fail_attach;
  sqlite3_exec(db->sq, "DETACH DATABASE imp", NULL, NULL, NULL);
  if (ntunings) *ntunings = nt;
  if (nkernels) *nkernels = nk;
  return HATTN_OK;
fail_sql:
  rc = db_fail(db, rc, "cannot import", err, errlen);
fail_txn:
  rollback(db);
  goto fail_attach;
fail_sql_attach:
  rc = sql_fail(db->sq, path, db->busy_ms, rc, "cannot read the export file", err, errlen);
fail_attach:
  sqlite3_exec(db->sq, "DETACH DATABASE imp", NULL, NULL, NULL);
  return rc;
}
