/*
** test_db.c: the kernel database.  Round trips of kernels and tuning
** records on fresh random binaries (the seed is printed), the schema of the
** migrations against db/schema.sql, and every failure it must survive: a
** corrupt or truncated file, a missing directory, a read-only file, a file
** from a newer hattn, a binary whose checksum or compiler does not match,
** two processes tuning into one file at once, and export files that must be
** refused.
*/
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "hattn.h"
#include "db.h"

static unsigned seed;
static char tmp[1024];   /* this test's directory */
static char err[1024];

/* ---- fixtures ---------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  chmod(path, 0700);
  return remove(path);
}

static void setup(void) {
  const char *base = getenv("TMPDIR");
  char conf[1100];
  snprintf(tmp, sizeof tmp, "%s/test_db.XXXXXX", base && *base ? base : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(tmp));
  /* The user's key, in this test's directory: never the real one. */
  snprintf(conf, sizeof conf, "%s/config", tmp);
  setenv("HATTN_CONFIG_DIR", conf, 1);
  srand(seed);
  err[0] = '\0';
}

static void teardown(void) { nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static char *path_in(const char *name) {
  static char buf[8][4096];
  static int next;
  char *p = buf[next++ % 8];
  snprintf(p, sizeof buf[0], "%s/%s", tmp, name);
  return p;
}

static unsigned char *random_blob(size_t n) {
  unsigned char *b = malloc(n ? n : 1);
  size_t i;
  ck_assert_ptr_nonnull(b);
  for (i = 0; i < n; i++) b[i] = (unsigned char)(rand() >> 7);
  return b;
}

static const hattn__db_device gpu = {"gpu", "NVIDIA H100 80GB HBM3", 90, 132, "550.54.15", "12.4", "", 0};
static const hattn__db_device gpu2 = {"gpu", "NVIDIA A100-SXM4-80GB", 80, 108, "550.54.15", "12.4", "", 0};
static const hattn__db_device cpu = {"cpu", "AMD EPYC 7763", 0, 0, "", "", "avx2,fma", 64};

static hattn__db *open_ok(const char *path, int flags) {
  hattn__db *db = NULL;
  int rc = hattn__db_open(path, flags, &db, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "open %s: %s: %s", path, hattn_err_name(rc), err);
  return db;
}

/* Open PATH, which must fail with HATTN_EDB and a message holding PATH and WANT. */
static void open_fails(const char *path, int flags, const char *want) {
  hattn__db *db = NULL;
  int rc = hattn__db_open(path, flags, &db, err, sizeof err);
  ck_assert_msg(rc == HATTN_EDB, "open %s: %s (%s), wanted HATTN_EDB", path, hattn_err_name(rc), err);
  ck_assert_ptr_null(db);
  ck_assert_msg(strstr(err, path) != NULL, "'%s' does not name %s", err, path);
  ck_assert_msg(strstr(err, want) != NULL, "'%s' does not say '%s'", err, want);
}

static void put_kernel(hattn__db *db, const char *key, const char *compiler, const void *bin, size_t n,
                       int64_t created) {
  hattn__db_kernel k = {key, "window(4k) with softcap(50)", "cuda", "sm_90a", "bm=128 bn=64 warps=4",
                        compiler, bin, n, "", created, "cls", "bf16", 128};
  int rc = hattn__db_kernel_put(db, &k, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "kernel_put: %s", err);
}

/* A tuning of CLASS at LK x BH with N random candidates; the fastest wins. */
static void put_tuning(hattn__db *db, const hattn__db_device *dev, const char *cls, const char *compiler,
                       int64_t lk, int64_t bh, int n, int64_t created) {
  hattn__db_candidate c[16];
  char names[16][32];
  hattn__db_tuning t = {0};
  int i, best = 0, rc;
  ck_assert_int_le(n, 16);
  for (i = 0; i < n; i++) {
    snprintf(names[i], sizeof names[i], "bm=%d bn=%d w=%d", 64 << (i % 3), 32 << (i % 2), 4 + i);
    c[i].config = names[i];
    c[i].time_us = 10.0 + (double)(rand() % 100000) / 1000.0;
    c[i].spread_us = (double)(rand() % 1000) / 1000.0;
    if (c[i].time_us < c[best].time_us) best = i;
  }
  t.kernel_class = cls;
  t.compiler = compiler;
  hattn__db_bucket(lk, bh, &t.lk_log2, &t.bh_class);
  t.winner = c[best].config;
  t.winner_us = c[best].time_us;
  t.created = created;
  t.ncandidates = n;
  t.candidates = c;
  rc = hattn__db_tuning_put(db, dev, &t, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "tuning_put: %s", err);
}

static char *model_of(const hattn__db_device *dev) {
  static char buf[4][256];
  static int next;
  char *p = buf[next++ % 4];
  hattn__db_device_model(dev, p, sizeof buf[0]);
  return p;
}

/* Run SQL on the file PATH directly through SQLite. */
static void raw_exec(const char *path, const char *sql) {
  sqlite3 *sq;
  char *msg = NULL;
  ck_assert_int_eq(sqlite3_open(path, &sq), SQLITE_OK);
  ck_assert_msg(sqlite3_exec(sq, sql, NULL, NULL, &msg) == SQLITE_OK, "%s: %s", sql, msg);
  sqlite3_close(sq);
}

static int64_t raw_int(const char *path, const char *sql) {
  sqlite3 *sq;
  sqlite3_stmt *st;
  int64_t v = -1;
  ck_assert_int_eq(sqlite3_open(path, &sq), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(sq, sql, -1, &st, NULL), SQLITE_OK);
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(sq);
  return v;
}

/* Every record of the file PATH as text, without row ids. */
static char *dump(const char *path) {
  static const char *const sql[] = {
    "SELECT model, kind, name, cc, sm_count, driver, toolkit, features, cores, first_seen, last_seen "
    "FROM devices ORDER BY model",
    "SELECT key, canon, backend, target, config, compiler, hex(binary), checksum, created FROM kernels "
    "ORDER BY key",
    "SELECT d.model, t.kernel_class, t.compiler, t.lk_log2, t.bh_class, t.winner, t.winner_us, t.created, "
    "(SELECT group_concat(s, ';') FROM (SELECT c.config || '=' || c.time_us || '/' || c.spread_us AS s "
    "FROM candidates c WHERE c.tuning_id = t.id ORDER BY c.config)) FROM tunings t JOIN devices d ON "
    "d.id = t.device_id ORDER BY 1, 2, 3, 4, 5, 8, 6"};
  sqlite3 *sq;
  sqlite3_stmt *st;
  char *out = NULL;
  size_t len = 0, i;
  FILE *f = open_memstream(&out, &len);
  int c;
  ck_assert_int_eq(sqlite3_open(path, &sq), SQLITE_OK);
  for (i = 0; i < 3; i++) {
    ck_assert_int_eq(sqlite3_prepare_v2(sq, sql[i], -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
      for (c = 0; c < sqlite3_column_count(st); c++) {
        const unsigned char *t = sqlite3_column_text(st, c);
        fprintf(f, "%s|", t ? (const char *)t : "NULL");
      }
      fputc('\n', f);
    }
    sqlite3_finalize(st);
    fputs("--\n", f);
  }
  sqlite3_close(sq);
  fclose(f);
  return out;
}

/* ---- units --------------------------------------------------------------------- */

START_TEST(sha256_vectors) {
  static const char *const want[] = {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"};
  char hex[65];
  char *million = malloc(1000000);
  memset(million, 'a', 1000000);
  hattn__db_sha256_hex("", 0, hex);
  ck_assert_str_eq(hex, want[0]);
  hattn__db_sha256_hex("abc", 3, hex);
  ck_assert_str_eq(hex, want[1]);
  hattn__db_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, hex);
  ck_assert_str_eq(hex, want[2]);
  hattn__db_sha256_hex(million, 1000000, hex);
  ck_assert_str_eq(hex, want[3]);
  free(million);
}
END_TEST

START_TEST(buckets) {
  static const int64_t lks[] = {0, 1, 2, 3, 1000, 1024, 1025, 131072};
  static const int want_lk[] = {0, 0, 1, 2, 10, 10, 11, 17};
  static const int64_t bhs[] = {1, 2, 8, 9, 32, 33, 128, 129, 4096};
  static const int want_bh[] = {0, 1, 1, 2, 2, 3, 3, 4, 4};
  int i, l, b;
  for (i = 0; i < 8; i++) {
    hattn__db_bucket(lks[i], 1, &l, &b);
    ck_assert_int_eq(l, want_lk[i]);
  }
  for (i = 0; i < 9; i++) {
    hattn__db_bucket(1, bhs[i], &l, &b);
    ck_assert_int_eq(b, want_bh[i]);
  }
  ck_assert_str_eq(hattn__db_bh_class_name(2), "9-32");
  ck_assert_str_eq(model_of(&gpu), "gpu:NVIDIA H100 80GB HBM3:sm_90:132");
  ck_assert_str_eq(model_of(&cpu), "cpu:AMD EPYC 7763:avx2,fma:64");
}
END_TEST

/* Strip SQL comments and spacing, so that formatting does not count. */
static void normalise(const char *s, char *out, size_t len) {
  size_t o = 0;
  int space = 0;
  for (; *s && o + 2 < len; s++) {
    if (s[0] == '-' && s[1] == '-') {
      while (*s && *s != '\n') s++;
      if (!*s) break;
    }
    if (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') {
      space = 1;
      continue;
    }
    if (space && o > 0 && !strchr("(),;", out[o - 1]) && !strchr("(),;", *s)) out[o++] = ' ';
    space = 0;
    out[o++] = *s;
  }
  out[o] = '\0';
}

static char *schema_text(const char *path) {
  sqlite3 *sq;
  sqlite3_stmt *st;
  char *out = NULL, norm[8192];
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  ck_assert_int_eq(sqlite3_open(path, &sq), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(sq, "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name",
                                      -1, &st, NULL), SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *sql = (const char *)sqlite3_column_text(st, 3);
    normalise(sql ? sql : "", norm, sizeof norm);
    fprintf(f, "%s %s %s: %s\n", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
            sqlite3_column_text(st, 2), norm);
  }
  sqlite3_finalize(st);
  sqlite3_close(sq);
  fclose(f);
  return out;
}

START_TEST(migrations_match_schema_sql) {
  const char *top = getenv("top_srcdir");
  char sqlpath[4096], *text, *a, *b;
  FILE *f;
  long n;
  hattn__db *db;
  snprintf(sqlpath, sizeof sqlpath, "%s/db/schema.sql", top && *top ? top : ".");
  f = fopen(sqlpath, "rb");
  ck_assert_msg(f != NULL, "cannot open %s (set top_srcdir)", sqlpath);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  rewind(f);
  text = calloc(1, (size_t)n + 1);
  ck_assert_int_eq(fread(text, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  raw_exec(path_in("from_sql.db"), text);
  free(text);
  db = open_ok(path_in("from_migrations.db"), 0);
  hattn__db_close(db);
  a = schema_text(path_in("from_sql.db"));
  b = schema_text(path_in("from_migrations.db"));
  ck_assert_str_eq(a, b);
  ck_assert_int_eq(raw_int(path_in("from_sql.db"), "PRAGMA user_version"), HATTN__DB_SCHEMA_VERSION);
  ck_assert_int_eq(raw_int(path_in("from_migrations.db"), "PRAGMA user_version"), HATTN__DB_SCHEMA_VERSION);
  ck_assert_int_eq(raw_int(path_in("from_sql.db"), "PRAGMA application_id"),
                   raw_int(path_in("from_migrations.db"), "PRAGMA application_id"));
  free(a);
  free(b);
}
END_TEST

/* ---- round trips ------------------------------------------------------------------ */

START_TEST(kernel_round_trip) {
  hattn__db *db = open_ok(path_in("k.db"), 0);
  size_t n = 1 + (size_t)(rand() % 200000);
  unsigned char *bin = random_blob(n);
  hattn__db_kernel *k = NULL;
  char sum[65];
  int miss = -1, rc;

  put_kernel(db, "k1", "nvrtc 12.4", bin, n, 0);
  rc = hattn__db_kernel_get(db, "k1", "nvrtc 12.4", &k, &miss, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "%s", err);
  ck_assert_int_eq(miss, HATTN__DB_MISS_NONE);
  ck_assert_uint_eq(k->size, n);
  ck_assert_int_eq(memcmp(k->binary, bin, n), 0);
  ck_assert_int_eq((int)((uintptr_t)k->binary % 16), 0);
  ck_assert_str_eq(k->key, "k1");
  ck_assert_str_eq(k->canon, "window(4k) with softcap(50)");
  ck_assert_str_eq(k->backend, "cuda");
  ck_assert_str_eq(k->target, "sm_90a");
  ck_assert_str_eq(k->config, "bm=128 bn=64 warps=4");
  ck_assert_str_eq(k->compiler, "nvrtc 12.4");
  hattn__db_sha256_hex(bin, n, sum);
  ck_assert_str_eq(k->checksum, sum);
  ck_assert_int_ge(k->created, (int64_t)time(NULL) - 60);
  free(k);

  /* A rebuild replaces it; an empty binary is a binary. */
  put_kernel(db, "k1", "nvrtc 12.4", "", 0, 0);
  ck_assert_int_eq(hattn__db_kernel_get(db, "k1", "nvrtc 12.4", &k, NULL, err, sizeof err), HATTN_OK);
  ck_assert_uint_eq(k->size, 0);
  free(k);
  ck_assert_int_eq(raw_int(path_in("k.db"), "SELECT count(*) FROM kernels"), 1);

  rc = hattn__db_kernel_get(db, "nope", "nvrtc 12.4", &k, &miss, err, sizeof err);
  ck_assert_int_eq(rc, HATTN_ENOENT);
  ck_assert_int_eq(miss, HATTN__DB_MISS_ABSENT);
  ck_assert_ptr_null(k);
  ck_assert_msg(strstr(err, "no kernel nope in ") != NULL, "%s", err);
  free(bin);
  hattn__db_close(db);
}
END_TEST

START_TEST(tuning_round_trip) {
  hattn__db *db = open_ok(path_in("t.db"), 0);
  hattn__db_tuning *t = NULL;
  int rc, i;
  const char *m = model_of(&gpu);

  put_tuning(db, &gpu, "cls", "nvrtc 12.4", 4096, 16, 12, 1000);
  put_tuning(db, &gpu, "cls", "nvrtc 12.4", 32768, 16, 5, 1000);
  put_tuning(db, &gpu, "cls", "nvrtc 12.4", 4096, 1, 3, 1000);

  /* The exact bucket: lk 3000 -> 4096, bh 10 -> 9-32. */
  rc = hattn__db_tuning_get(db, m, "cls", "nvrtc 12.4", 3000, 10, &t, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "%s", err);
  ck_assert_str_eq(t->device_model, m);
  ck_assert_str_eq(t->kernel_class, "cls");
  ck_assert_str_eq(t->compiler, "nvrtc 12.4");
  ck_assert_int_eq(t->lk_log2, 12);
  ck_assert_int_eq(t->bh_class, 2);
  ck_assert_int_eq(t->ncandidates, 12);
  ck_assert_int_eq(t->created, 1000);
  ck_assert_str_eq(t->winner, t->candidates[0].config);   /* sorted by time */
  ck_assert(t->winner_us == t->candidates[0].time_us);
  for (i = 1; i < t->ncandidates; i++) ck_assert(t->candidates[i - 1].time_us <= t->candidates[i].time_us);
  free(t);

  /* The nearest bucket by key length: 2^14 is nearer 2^15 than 2^12. */
  ck_assert_int_eq(hattn__db_tuning_get(db, m, "cls", "nvrtc 12.4", 16384, 16, &t, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(t->lk_log2, 15);
  ck_assert_int_eq(t->ncandidates, 5);
  free(t);
  /* The nearest batch*heads class first. */
  ck_assert_int_eq(hattn__db_tuning_get(db, m, "cls", "nvrtc 12.4", 32768, 1, &t, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(t->lk_log2, 12);
  ck_assert_int_eq(t->bh_class, 0);
  free(t);

  /* A re-tune is kept beside the last one, and wins the lookup. */
  put_tuning(db, &gpu, "cls", "nvrtc 12.4", 4096, 16, 7, 2000);
  ck_assert_int_eq(hattn__db_tuning_get(db, m, "cls", "nvrtc 12.4", 4096, 16, &t, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(t->created, 2000);
  ck_assert_int_eq(t->ncandidates, 7);
  free(t);
  ck_assert_int_eq(raw_int(path_in("t.db"), "SELECT count(*) FROM tunings"), 4);
  ck_assert_int_eq(raw_int(path_in("t.db"), "SELECT count(*) FROM devices"), 1);

  /* Another class, compiler or device has none. */
  ck_assert_int_eq(hattn__db_tuning_get(db, m, "other", "nvrtc 12.4", 4096, 16, &t, err, sizeof err), HATTN_ENOENT);
  ck_assert_int_eq(hattn__db_tuning_get(db, m, "cls", "nvrtc 12.5", 4096, 16, &t, err, sizeof err), HATTN_ENOENT);
  ck_assert_int_eq(hattn__db_tuning_get(db, model_of(&gpu2), "cls", "nvrtc 12.4", 4096, 16, &t, err, sizeof err),
                   HATTN_ENOENT);
  ck_assert_ptr_null(t);
  ck_assert_msg(strstr(err, "no tuning of cls by nvrtc 12.4 on gpu:NVIDIA A100") != NULL, "%s", err);

  /* The device row follows the driver. */
  {
    hattn__db_device g = gpu;
    g.driver = "560.1";
    ck_assert_int_eq(hattn__db_device_put(db, &g, err, sizeof err), HATTN_OK);
    ck_assert_int_eq(raw_int(path_in("t.db"), "SELECT count(*) FROM devices WHERE driver = '560.1'"), 1);
    g.kind = "tpu";
    ck_assert_int_eq(hattn__db_device_put(db, &g, err, sizeof err), HATTN_EINVAL);
  }
  hattn__db_close(db);
}
END_TEST

START_TEST(list_show_prune_verify) {
  hattn__db *db = open_ok(path_in("l.db"), 0);
  unsigned char *bin = random_blob(1000);
  const char *compilers[] = {"nvrtc 12.4", NULL};
  char *text = NULL;
  size_t len = 0;
  int64_t nk = -1, nt = -1, nbad = -1;
  FILE *f;
  int64_t old = (int64_t)time(NULL) - 10 * 86400;

  put_kernel(db, "k-new", "nvrtc 12.4", bin, 1000, 0);
  put_kernel(db, "k-old", "nvrtc 12.4", bin, 1000, old);
  put_kernel(db, "k-other", "nvrtc 12.2", bin, 1000, 0);
  put_tuning(db, &gpu, "cls", "nvrtc 12.4", 4096, 16, 3, 0);
  put_tuning(db, &gpu, "cls", "nvrtc 12.4", 8192, 16, 3, old);
  put_tuning(db, &cpu, "cls", "llvm 16.0.6", 4096, 16, 3, 0);

  f = open_memstream(&text, &len);
  ck_assert_int_eq(hattn__db_list(db, f, err, sizeof err), HATTN_OK);
  fclose(f);
  ck_assert_msg(strstr(text, "gpu:NVIDIA H100 80GB HBM3:sm_90:132  driver 550.54.15  toolkit 12.4") != NULL, "%s", text);
  ck_assert_msg(strstr(text, "k-old  window(4k) with softcap(50)  bf16 d128  bm=128 bn=64 warps=4  cuda sm_90a  "
                "nvrtc 12.4  1000 bytes") != NULL, "%s", text);
  ck_assert_msg(strstr(text, "lk<=8192 bh 9-32") != NULL, "%s", text);
  free(text);

  f = open_memstream(&text, &len);
  ck_assert_int_eq(hattn__db_show(db, "cls", f, err, sizeof err), HATTN_OK);
  fclose(f);
  ck_assert_msg(strstr(text, "tunings of cls:") != NULL && strstr(text, "winner") != NULL, "%s", text);
  free(text);
  f = open_memstream(&text, &len);
  ck_assert_int_eq(hattn__db_show(db, "k-new", f, err, sizeof err), HATTN_OK);
  fclose(f);
  ck_assert_msg(strstr(text, "binary   1000 bytes, sha256 ") != NULL, "%s", text);
  free(text);
  ck_assert_int_eq(hattn__db_show(db, "nothing", stdout, err, sizeof err), HATTN_ENOENT);

  ck_assert_int_eq(hattn__db_verify(db, NULL, &nbad, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nbad, 0);

  /* Older than 5 days: one kernel and one tuning. */
  ck_assert_int_eq(hattn__db_prune(db, 5, NULL, &nk, &nt, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nk, 1);
  ck_assert_int_eq(nt, 1);
  /* Other compilers: a kernel and the CPU's tuning, and then the CPU itself. */
  ck_assert_int_eq(hattn__db_prune(db, -1, compilers, &nk, &nt, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nk, 1);
  ck_assert_int_eq(nt, 1);
  ck_assert_int_eq(raw_int(path_in("l.db"), "SELECT count(*) FROM kernels"), 1);
  ck_assert_int_eq(raw_int(path_in("l.db"), "SELECT count(*) FROM tunings"), 1);
  ck_assert_int_eq(raw_int(path_in("l.db"), "SELECT count(*) FROM devices"), 1);
  /* Candidates go with their tunings. */
  ck_assert_int_eq(raw_int(path_in("l.db"), "SELECT count(*) FROM candidates"), 3);
  free(bin);
  hattn__db_close(db);
}
END_TEST

/* ---- paths ---------------------------------------------------------------------- */

/* Issue 12: hattn db list named kernels by their hash alone.  It says what
** each computes and which shape buckets it won; a kernel of schema 1, which
** does not record it, shows "?". */
START_TEST(list_names_kernels) {
  char *path = path_in("names.db");
  hattn__db *db = open_ok(path, 0);
  hattn__db_candidate c[2] = {{"bm=128 bn=64 warps=4", 10, 1}, {"bm=64 bn=64 warps=4", 12, 1}};
  hattn__db_tuning t = {0};
  char *text = NULL;
  size_t len = 0;
  FILE *f;
  put_kernel(db, "k-win", "nvrtc 12.4", "bin", 3, 0);
  t.kernel_class = "cls", t.compiler = "nvrtc 12.4", t.winner = c[0].config, t.winner_us = 10;
  t.ncandidates = 2, t.candidates = c;
  hattn__db_bucket(4096, 16, &t.lk_log2, &t.bh_class);
  ck_assert_int_eq(hattn__db_tuning_put(db, &gpu, &t, err, sizeof err), HATTN_OK);
  hattn__db_bucket(512, 1, &t.lk_log2, &t.bh_class);
  ck_assert_int_eq(hattn__db_tuning_put(db, &gpu, &t, err, sizeof err), HATTN_OK);
  raw_exec(path, "INSERT INTO kernels (key, canon, backend, target, config, compiler, binary, checksum, created) "
                 "VALUES ('k-v1', 'causal', 'cpu', 'x86-64/1', 'bm=64', 'llvm 16.0.6', x'00', '', 0)");
  f = open_memstream(&text, &len);
  ck_assert_int_eq(hattn__db_list(db, f, err, sizeof err), HATTN_OK);
  fclose(f);
  ck_assert_msg(strstr(text, "  k-win  window(4k) with softcap(50)  bf16 d128  bm=128 bn=64 warps=4  cuda sm_90a  "
                "nvrtc 12.4  3 bytes  ") != NULL, "%s", text);
  ck_assert_msg(strstr(text, "  winner for lk<=512 bh 1, lk<=4096 bh 9-32\n") != NULL, "%s", text);
  ck_assert_msg(strstr(text, "  k-v1  causal  ? d?  bm=64  cpu x86-64/1  llvm 16.0.6  1 bytes  ") != NULL, "%s", text);
  ck_assert_msg(strstr(text, "  cls (window(4k) with softcap(50) bf16 d128)  nvrtc 12.4  lk<=4096 bh 9-32") != NULL,
                "%s", text);
  free(text);
  hattn__db_close(db);
}
END_TEST

START_TEST(missing_directory_is_created) {
  char *path = path_in("a/b/c/hattn.db");
  struct stat st;
  hattn__db *db = open_ok(path, 0);
  hattn__db_close(db);
  ck_assert_int_eq(stat(path_in("a/b/c"), &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0700);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_str_eq(hattn__db_path(db = open_ok(path, 0)), path);
  hattn__db_close(db);

  /* A file where a directory should be. */
  raw_exec(path_in("plain"), "CREATE TABLE x (y)");
  open_fails(path_in("plain/sub/hattn.db"), 0, "cannot create the directory");
}
END_TEST

START_TEST(default_path) {
  char buf[4096];
  hattn__db *db;
  unsetenv("HATTN_DB");
  setenv("XDG_CACHE_HOME", tmp, 1);
  ck_assert_int_eq(hattn__db_default_path(buf, sizeof buf, err, sizeof err), HATTN_OK);
  ck_assert_str_eq(buf, path_in("hattn/hattn.db"));
  setenv("XDG_CACHE_HOME", "relative/is/ignored", 1);
  setenv("HOME", tmp, 1);
  ck_assert_int_eq(hattn__db_default_path(buf, sizeof buf, err, sizeof err), HATTN_OK);
  ck_assert_str_eq(buf, path_in(".cache/hattn/hattn.db"));
  setenv("HATTN_DB", path_in("env.db"), 1);
  ck_assert_int_eq(hattn__db_default_path(buf, sizeof buf, err, sizeof err), HATTN_OK);
  ck_assert_str_eq(buf, path_in("env.db"));
  db = open_ok(NULL, 0);
  ck_assert_str_eq(hattn__db_path(db), path_in("env.db"));
  hattn__db_close(db);
  unsetenv("HATTN_DB");
  unsetenv("XDG_CACHE_HOME");
  unsetenv("HOME");
  ck_assert_int_eq(hattn__db_default_path(buf, sizeof buf, err, sizeof err), HATTN_EINVAL);
  ck_assert_msg(strstr(err, "HATTN_DB") != NULL, "%s", err);
}
END_TEST

/* ---- damaged files -------------------------------------------------------------- */

/* A real database of a few kernels of LEN random bytes each, closed. */
static void make_db(const char *path, int nkernels, size_t len) {
  hattn__db *db = open_ok(path, 0);
  int i;
  for (i = 0; i < nkernels; i++) {
    char key[32];
    unsigned char *bin = random_blob(len);
    snprintf(key, sizeof key, "k%d", i);
    put_kernel(db, key, "nvrtc 12.4", bin, len, 0);
    free(bin);
  }
  put_tuning(db, &gpu, "cls", "nvrtc 12.4", 4096, 16, 8, 0);
  hattn__db_close(db);
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

START_TEST(corrupt_file) {
  unsigned char *junk = random_blob(8192);
  char *path = path_in("junk.db");
  FILE *f;
  write_file(path, junk, 8192);
  open_fails(path, 0, "is not a hattn database: it is not an SQLite file");
  open_fails(path, HATTN__DB_READONLY, "is not a hattn database: it is not an SQLite file");
  /* A few bytes only. */
  write_file(path, junk, 7);
  open_fails(path, 0, "not an SQLite file");

  /* A real file whose first page (the schema) is random after the header. */
  path = path_in("scrambled.db");
  make_db(path, 2, 5000);
  f = fopen(path, "r+b");
  fseek(f, 100, SEEK_SET);
  fwrite(junk, 1, 3900, f);
  fclose(f);
  open_fails(path, 0, "is corrupt or not a hattn database");

  /* Another SQLite application's file. */
  path = path_in("other.db");
  raw_exec(path, "PRAGMA application_id = 42; CREATE TABLE t (x)");
  open_fails(path, 0, "is not a hattn database (its application id is 0x0000002a)");
  free(junk);
}
END_TEST

/* The bytes of the file PATH (malloc'd), *N their count. */
static unsigned char *read_bytes(const char *path, size_t *n) {
  struct stat st;
  unsigned char *b;
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fstat(fileno(f), &st), 0);
  b = malloc((size_t)st.st_size + 1);
  ck_assert_ptr_nonnull(b);
  ck_assert_uint_eq(fread(b, 1, (size_t)st.st_size, f), (size_t)st.st_size);
  fclose(f);
  *n = (size_t)st.st_size;
  return b;
}

/* Issue 12: an SQLite file of another program, with application id 0, was
** taken over (switched to WAL, hattn's tables added), or called read-only
** when it was not.  It is refused, and left byte for byte as it was. */
START_TEST(foreign_sqlite_file_untouched) {
  char *path = path_in("theirs.db"), side[4200];
  unsigned char *before, *after;
  size_t nb, na;
  int flags;
  raw_exec(path, "CREATE TABLE mine (x); INSERT INTO mine VALUES (1)");
  before = read_bytes(path, &nb);
  for (flags = 0; flags <= HATTN__DB_READONLY; flags += HATTN__DB_READONLY) {
    open_fails(path, flags, "is not a hattn database: it holds tables of another program (mine)");
    ck_assert_msg(strstr(err, "read-only") == NULL, "%s", err);
  }
  after = read_bytes(path, &na);
  ck_assert_uint_eq(na, nb);
  ck_assert_int_eq(memcmp(before, after, nb), 0);
  snprintf(side, sizeof side, "%s-wal", path);
  ck_assert_int_ne(access(side, F_OK), 0);
  free(before);
  free(after);
  /* A file with a schema version but no hattn id is not ours either. */
  path = path_in("versioned.db");
  raw_exec(path, "PRAGMA user_version = 1");
  open_fails(path, 0, "is not a hattn database: its schema version is 1 but it lacks hattn's application id");
}
END_TEST

/* Issue 12: a directory given as the database was reported as an I/O
** error or as read-only. */
START_TEST(directory_refused) {
  char *path = path_in("adir.db");
  ck_assert_int_eq(mkdir(path, 0700), 0);
  open_fails(path, 0, "is a directory, not a database file");
  open_fails(path, HATTN__DB_READONLY, "is a directory, not a database file");
}
END_TEST

/* Issue 12: an empty path opened a temporary database that kept nothing. */
START_TEST(empty_path_refused) {
  hattn__db *db = NULL;
  ck_assert_int_eq(hattn__db_open("", 0, &db, err, sizeof err), HATTN_EINVAL);
  ck_assert_ptr_null(db);
  ck_assert_str_eq(err, "the kernel database path is empty: name a file (nothing would be kept in a temporary one)");
}
END_TEST

START_TEST(truncated_file) {
  char *path = path_in("cut.db");
  struct stat st;
  make_db(path, 6, 60000);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_gt(st.st_size, 300000);
  ck_assert_int_eq(truncate(path, st.st_size / 2), 0);
  open_fails(path, 0, "is truncated");
  open_fails(path, HATTN__DB_READONLY, "is truncated");
}
END_TEST

/* Lookups in a file that breaks after it was opened fail with HATTN_EDB and
** the file's name, and never crash. */
START_TEST(corrupt_after_open) {
  char *path = path_in("late.db");
  hattn__db *db;
  hattn__db_kernel *k = NULL;
  int64_t nbad = 0;
  int rc, fd;
  unsigned char *junk = random_blob(1 << 20);
  struct stat st;
  make_db(path, 4, 100000);
  db = open_ok(path, HATTN__DB_READONLY);
  /* Scramble everything after the first two pages. */
  ck_assert_int_eq(stat(path, &st), 0);
  fd = open(path, O_WRONLY);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pwrite(fd, junk, (size_t)st.st_size - 8192, 8192), st.st_size - 8192);
  close(fd);
  rc = hattn__db_kernel_get(db, "k1", "nvrtc 12.4", &k, NULL, err, sizeof err);
  ck_assert_msg(rc == HATTN_EDB || rc == HATTN_ENOENT, "%s: %s", hattn_err_name(rc), err);
  ck_assert_msg(strstr(err, path) != NULL, "%s", err);
  ck_assert_int_eq(hattn__db_verify(db, NULL, &nbad, err, sizeof err), HATTN_OK);
  ck_assert_int_gt(nbad, 0);
  hattn__db_close(db);
  free(junk);
}
END_TEST

START_TEST(newer_schema_refused) {
  char *path = path_in("new.db"), want[256];
  make_db(path, 1, 100);
  raw_exec(path, "PRAGMA user_version = 99");
  snprintf(want, sizeof want, "was written by a newer hattn (schema version 99, this hattn knows up to %d)",
           HATTN__DB_SCHEMA_VERSION);
  open_fails(path, 0, want);
  open_fails(path, HATTN__DB_READONLY, want);
  /* Nothing was changed. */
  ck_assert_int_eq(raw_int(path, "PRAGMA user_version"), 99);
}
END_TEST

START_TEST(read_only) {
  char *path = path_in("ro.db"), want[4200];
  hattn__db *db;
  hattn__db_kernel k = {"k9", "", "cpu", "", "", "llvm 16.0.6", "x", 1, "", 0, "", "", 0};
  hattn__db_tuning t = {0};
  make_db(path, 1, 100);
  snprintf(want, sizeof want, "%s is open read-only: nothing is saved", path);

  db = open_ok(path, HATTN__DB_READONLY);
  ck_assert_int_eq(hattn__db_readonly(db), 1);
  {
    hattn__db_kernel *got = NULL;
    hattn__db_tuning *tg = NULL;
    ck_assert_int_eq(hattn__db_kernel_get(db, "k0", "nvrtc 12.4", &got, NULL, err, sizeof err), HATTN_OK);
    free(got);
    ck_assert_int_eq(hattn__db_tuning_get(db, model_of(&gpu), "cls", "nvrtc 12.4", 4096, 16, &tg, err, sizeof err),
                     HATTN_OK);
    free(tg);
  }
  ck_assert_int_eq(hattn__db_kernel_put(db, &k, err, sizeof err), HATTN_EDB);
  ck_assert_str_eq(err, want);
  t.kernel_class = "c", t.compiler = "x", t.winner = "w";
  ck_assert_int_eq(hattn__db_tuning_put(db, &gpu, &t, err, sizeof err), HATTN_EDB);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(hattn__db_prune(db, 0, NULL, NULL, NULL, err, sizeof err), HATTN_EDB);
  ck_assert_int_eq(hattn__db_import(db, path, HATTN__DB_IMPORT_BINARIES, NULL, NULL, NULL, NULL, err, sizeof err), HATTN_EDB);
  hattn__db_close(db);

  /* A file that does not exist cannot be opened read-only. */
  open_fails(path_in("absent.db"), HATTN__DB_READONLY, "does not exist");

  if (geteuid() == 0) {
    printf("read_only: running as root, which ignores file modes: chmod 0444 not tried\n");
    return;
  }
  ck_assert_int_eq(chmod(path, 0444), 0);
  db = open_ok(path, 0);
  ck_assert_int_eq(hattn__db_readonly(db), 1);
  ck_assert_int_eq(hattn__db_kernel_put(db, &k, err, sizeof err), HATTN_EDB);
  ck_assert_str_eq(err, want);
  hattn__db_close(db);
  /* And in a directory nobody may write, where WAL has no side files. */
  ck_assert_int_eq(chmod(tmp, 0555), 0);
  db = open_ok(path, 0);
  ck_assert_int_eq(hattn__db_readonly(db), 1);
  {
    hattn__db_kernel *got = NULL;
    ck_assert_int_eq(hattn__db_kernel_get(db, "k0", "nvrtc 12.4", &got, NULL, err, sizeof err), HATTN_OK);
    free(got);
  }
  hattn__db_close(db);
  chmod(tmp, 0700);
}
END_TEST

START_TEST(checksum_mismatch_rebuilt) {
  char *path = path_in("sum.db");
  size_t n = 100 + (size_t)(rand() % 5000), at = (size_t)rand() % n;
  unsigned char *bin = random_blob(n);
  hattn__db *db = open_ok(path, 0);
  hattn__db_kernel *k = NULL;
  sqlite3 *sq;
  sqlite3_stmt *st;
  int64_t nbad = 0;
  int miss = 0, rc;
  char *text = NULL;
  size_t len;
  FILE *f;

  put_kernel(db, "kx", "nvrtc 12.4", bin, n, 0);
  /* Flip one byte of the stored binary behind hattn's back. */
  bin[at] ^= 0x5a;
  ck_assert_int_eq(sqlite3_open(path, &sq), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(sq, "UPDATE kernels SET binary = ? WHERE key = 'kx'", -1, &st, NULL), SQLITE_OK);
  sqlite3_bind_blob(st, 1, bin, (int)n, SQLITE_STATIC);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  sqlite3_close(sq);

  rc = hattn__db_kernel_get(db, "kx", "nvrtc 12.4", &k, &miss, err, sizeof err);
  ck_assert_int_eq(rc, HATTN_ENOENT);
  ck_assert_int_eq(miss, HATTN__DB_MISS_CHECKSUM);
  ck_assert_ptr_null(k);
  ck_assert_msg(strstr(err, "kernel kx in ") && strstr(err, path) && strstr(err, "fails its checksum: it is rebuilt"),
                "%s", err);
  f = open_memstream(&text, &len);
  ck_assert_int_eq(hattn__db_verify(db, f, &nbad, err, sizeof err), HATTN_OK);
  fclose(f);
  ck_assert_int_eq(nbad, 1);
  ck_assert_msg(strstr(text, "kernel kx: checksum mismatch") != NULL, "%s", text);
  free(text);

  /* The caller rebuilds and stores it again. */
  bin[at] ^= 0x5a;
  put_kernel(db, "kx", "nvrtc 12.4", bin, n, 0);
  ck_assert_int_eq(hattn__db_kernel_get(db, "kx", "nvrtc 12.4", &k, &miss, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(memcmp(k->binary, bin, n), 0);
  free(k);
  free(bin);
  hattn__db_close(db);
}
END_TEST

/* Issue 12: a read-only database said of a kernel it cannot replace that
** "it is rebuilt". */
START_TEST(read_only_mismatch_not_rebuilt) {
  char *path = path_in("ro-miss.db"), want[8192];
  hattn__db *db;
  hattn__db_kernel *k = NULL;
  int miss = 0;
  make_db(path, 1, 100);
  db = open_ok(path, HATTN__DB_READONLY);
  ck_assert_int_eq(hattn__db_kernel_get(db, "k0", "nvrtc 12.8", &k, &miss, err, sizeof err), HATTN_ENOENT);
  ck_assert_int_eq(miss, HATTN__DB_MISS_COMPILER);
  snprintf(want, sizeof want,
           "kernel k0 in %s was built by nvrtc 12.4, not nvrtc 12.8: %s is open read-only, so the kernel is "
           "compiled for this process and not kept", path, path);
  ck_assert_str_eq(err, want);
  hattn__db_close(db);
}
END_TEST

START_TEST(compiler_mismatch_rebuilt) {
  hattn__db *db = open_ok(path_in("cc.db"), 0);
  unsigned char *bin = random_blob(777);
  hattn__db_kernel *k = NULL;
  int miss = 0;
  put_kernel(db, "kc", "llvm 15.0.7", bin, 777, 0);
  ck_assert_int_eq(hattn__db_kernel_get(db, "kc", "llvm 16.0.6", &k, &miss, err, sizeof err), HATTN_ENOENT);
  ck_assert_int_eq(miss, HATTN__DB_MISS_COMPILER);
  ck_assert_ptr_null(k);
  ck_assert_msg(strstr(err, "was built by llvm 15.0.7, not llvm 16.0.6: it is rebuilt") != NULL, "%s", err);
  put_kernel(db, "kc", "llvm 16.0.6", bin, 777, 0);
  ck_assert_int_eq(hattn__db_kernel_get(db, "kc", "llvm 16.0.6", &k, &miss, err, sizeof err), HATTN_OK);
  ck_assert_str_eq(k->compiler, "llvm 16.0.6");
  free(k);
  free(bin);
  hattn__db_close(db);
}
END_TEST

/* ---- two processes ----------------------------------------------------------------- */

enum { PER_PROCESS = 200, CANDIDATES = 4 };

static int tune_many(const char *path, int who) {
  hattn__db *db = NULL;
  char e[1024], cls[64];
  int i, rc = hattn__db_open(path, 0, &db, e, sizeof e);
  if (rc != HATTN_OK) {
    fprintf(stderr, "process %d: open: %s\n", who, e);
    return 1;
  }
  for (i = 0; i < PER_PROCESS; i++) {
    hattn__db_candidate c[CANDIDATES] = {{"a", 1, 0.1}, {"b", 2, 0.2}, {"c", 3, 0.3}, {"d", 4, 0.4}};
    hattn__db_tuning t = {0};
    snprintf(cls, sizeof cls, "class-%d-%d", who, i);
    t.kernel_class = cls;
    t.compiler = "nvrtc 12.4";
    hattn__db_bucket(1 << (i % 20), i % 200, &t.lk_log2, &t.bh_class);
    t.winner = "a";
    t.winner_us = 1;
    t.ncandidates = CANDIDATES;
    t.candidates = c;
    rc = hattn__db_tuning_put(db, who ? &gpu : &gpu2, &t, e, sizeof e);
    if (rc == HATTN_OK && i % 10 == 0) {
      hattn__db_tuning *got = NULL;
      rc = hattn__db_tuning_get(db, model_of(who ? &gpu : &gpu2), cls, "nvrtc 12.4", 1 << (i % 20), i % 200, &got,
                                e, sizeof e);
      free(got);
    }
    if (rc != HATTN_OK) {
      fprintf(stderr, "process %d, record %d: %s\n", who, i, e);
      hattn__db_close(db);
      return 1;
    }
  }
  hattn__db_close(db);
  return 0;
}

START_TEST(two_processes) {
  char *path = path_in("shared/hattn.db");
  pid_t pid[2];
  int i, status;
  /* Both start on a file that does not exist yet. */
  for (i = 0; i < 2; i++) {
    pid[i] = fork();
    ck_assert_int_ge(pid[i], 0);
    if (pid[i] == 0) _exit(tune_many(path, i));
  }
  for (i = 0; i < 2; i++) {
    ck_assert_int_eq(waitpid(pid[i], &status, 0), pid[i]);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "process %d failed (status %d)", i, status);
  }
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM tunings"), 2 * PER_PROCESS);
  ck_assert_int_eq(raw_int(path, "SELECT count(DISTINCT kernel_class) FROM tunings"), 2 * PER_PROCESS);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM candidates"), 2 * PER_PROCESS * CANDIDATES);
  ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM devices"), 2);
}
END_TEST

/* A writer that holds the file longer than the busy timeout gets a sentence
** that names the file, not "database is locked". */
START_TEST(busy_message) {
  char *path = path_in("busy.db");
  hattn__db *db;
  sqlite3 *sq;
  hattn__db_kernel k = {"k", "", "cpu", "", "", "llvm 16.0.6", "x", 1, "", 0, "", "", 0};
  int rc;
  make_db(path, 0, 0);
  db = open_ok(path, 0);
  hattn__db_busy_timeout(db, 50);
  ck_assert_int_eq(sqlite3_open(path, &sq), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(sq, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  rc = hattn__db_kernel_put(db, &k, err, sizeof err);
  ck_assert_int_eq(rc, HATTN_EDB);
  ck_assert_msg(strstr(err, path) && strstr(err, "another process kept the file busy for more than 0.3 s") &&
                !strstr(err, "locked"), "%s", err);
  sqlite3_exec(sq, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(sq);
  ck_assert_int_eq(hattn__db_kernel_put(db, &k, err, sizeof err), HATTN_OK);
  hattn__db_close(db);
}
END_TEST

/* ---- export and import ------------------------------------------------------------- */

START_TEST(export_import_round_trip) {
  char *a = path_in("a.db"), *b = path_in("b.db"), *x = path_in("out.hattnx");
  const char *models[] = {model_of(&gpu), NULL}, *compilers[] = {"nvrtc 12.4", NULL};
  hattn__db *da = open_ok(a, 0), *dbb;
  unsigned char *bin = random_blob(30000);
  int64_t nt = 0, nk = 0;
  char *da_text, *db_text;
  int i;

  for (i = 0; i < 5; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    put_kernel(da, key, "nvrtc 12.4", bin + i * 1000, 20000, 1000 + i);
    put_tuning(da, &gpu, i % 2 ? "cls-a" : "cls-b", "nvrtc 12.4", 1024 << i, 1 << (2 * i), 3 + i, 5000 + i);
  }
  ck_assert_int_eq(hattn__db_export(da, x, NULL, NULL, &nt, &nk, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nt, 5);
  ck_assert_int_eq(nk, 5);
  ck_assert_int_eq(raw_int(x, "PRAGMA application_id"), 0x68617478);
  ck_assert_int_eq(raw_int(x, "SELECT format FROM export"), HATTN__DB_EXPORT_VERSION);

  dbb = open_ok(b, 0);
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, models, compilers, &nt, &nk, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nt, 5);
  ck_assert_int_eq(nk, 5);
  da_text = dump(a);
  db_text = dump(b);
  ck_assert_str_eq(da_text, db_text);
  /* Importing twice adds no tuning twice. */
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, models, compilers, &nt, &nk, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nt, 0);
  free(db_text);
  db_text = dump(b);
  ck_assert_str_eq(da_text, db_text);
  free(da_text);
  free(db_text);

  /* And the imported records serve lookups. */
  {
    hattn__db_kernel *k = NULL;
    hattn__db_tuning *t = NULL;
    ck_assert_int_eq(hattn__db_kernel_get(dbb, "k3", "nvrtc 12.4", &k, NULL, err, sizeof err), HATTN_OK);
    ck_assert_int_eq(memcmp(k->binary, bin + 3000, 20000), 0);
    free(k);
    ck_assert_int_eq(hattn__db_tuning_get(dbb, models[0], "cls-a", "nvrtc 12.4", 2048, 4, &t, err, sizeof err), HATTN_OK);
    ck_assert_int_eq(t->ncandidates, 4);
    free(t);
  }
  hattn__db_close(dbb);

  /* One device of two: the file holds that device's records only. */
  put_tuning(da, &cpu, "cls-cpu", "llvm 16.0.6", 4096, 1, 3, 0);
  ck_assert_int_eq(hattn__db_export(da, x, model_of(&cpu), "llvm 16.0.6", &nt, &nk, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nt, 1);
  ck_assert_int_eq(nk, 0);
  ck_assert_int_eq(raw_int(x, "SELECT count(*) FROM devices"), 1);
  ck_assert_int_eq(hattn__db_export(da, x, "gpu:none:sm_0:0", NULL, &nt, &nk, err, sizeof err), HATTN_ENOENT);
  hattn__db_close(da);
  free(bin);
}
END_TEST

START_TEST(import_refusals) {
  char *a = path_in("a.db"), *b = path_in("b.db"), *x = path_in("out.hattnx"), want[8192];
  const char *gpu_models[] = {model_of(&gpu), NULL}, *other_models[] = {model_of(&gpu2), NULL};
  const char *compilers[] = {"nvrtc 12.4", NULL}, *other_compilers[] = {"nvrtc 12.8", NULL};
  hattn__db *da = open_ok(a, 0), *dbb = open_ok(b, 0);
  unsigned char *bin = random_blob(4000);

  put_kernel(da, "k0", "nvrtc 12.4", bin, 4000, 0);
  put_tuning(da, &gpu, "cls", "nvrtc 12.4", 4096, 16, 4, 0);
  ck_assert_int_eq(hattn__db_export(da, x, NULL, NULL, NULL, NULL, err, sizeof err), HATTN_OK);

  /* Another device model. */
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, other_models, compilers, NULL, NULL, err, sizeof err), HATTN_EDB);
  snprintf(want, sizeof want, "%s holds results for the device %s, not for %s: refused", x, gpu_models[0],
           other_models[0]);
  ck_assert_str_eq(err, want);
  /* Another compiler. */
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, gpu_models, other_compilers, NULL, NULL, err, sizeof err), HATTN_EDB);
  snprintf(want, sizeof want, "%s holds results built by nvrtc 12.4, not by nvrtc 12.8: refused", x);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(raw_int(b, "SELECT count(*) FROM tunings"), 0);
  ck_assert_int_eq(raw_int(b, "SELECT count(*) FROM kernels"), 0);

  /* A binary changed in the file. */
  raw_exec(x, "UPDATE kernels SET binary = zeroblob(4000)");
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, gpu_models, compilers, NULL, NULL, err, sizeof err), HATTN_EDB);
  snprintf(want, sizeof want, "kernel k0 in %s fails its checksum: %s refused", x, x);
  ck_assert_str_eq(err, want);

  /* A newer export. */
  ck_assert_int_eq(hattn__db_export(da, x, NULL, NULL, NULL, NULL, err, sizeof err), HATTN_OK);
  raw_exec(x, "UPDATE export SET format = 7");
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, NULL, NULL, NULL, NULL, err, sizeof err), HATTN_EDB);
  ck_assert_msg(strstr(err, "was written by a newer hattn (export format 7") != NULL, "%s", err);

  /* Not an export file: a hattn.db, random bytes, nothing. */
  ck_assert_int_eq(hattn__db_import(dbb, a, HATTN__DB_IMPORT_BINARIES, NULL, NULL, NULL, NULL, err, sizeof err), HATTN_EDB);
  ck_assert_msg(strstr(err, "is not a hattn export file") != NULL, "%s", err);
  hattn__db_close(da);
  da = NULL;
  /* Closed, the file's header is up to date and names what it is. */
  ck_assert_int_eq(hattn__db_import(dbb, a, HATTN__DB_IMPORT_BINARIES, NULL, NULL, NULL, NULL, err, sizeof err), HATTN_EDB);
  ck_assert_msg(strstr(err, "is not a hattn export file (its application id is 0x6861746e)") != NULL, "%s", err);
  write_file(x, bin, 4000);
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, NULL, NULL, NULL, NULL, err, sizeof err), HATTN_EDB);
  ck_assert_msg(strstr(err, "is not a hattn export file: it is not an SQLite file") != NULL, "%s", err);
  ck_assert_int_eq(hattn__db_import(dbb, path_in("absent"), HATTN__DB_IMPORT_BINARIES, NULL, NULL, NULL, NULL, err, sizeof err), HATTN_EDB);
  ck_assert_msg(strstr(err, "cannot open") != NULL, "%s", err);

  ck_assert_int_eq(raw_int(b, "SELECT count(*) FROM tunings"), 0);
  hattn__db_close(da);
  hattn__db_close(dbb);
  free(bin);
}
END_TEST

/* ---- authenticated binaries (issue 12) -------------------------------------------- */

START_TEST(hmac_vectors) {
  /* RFC 4231, test cases 1, 2 and 6 (a key longer than a block). */
  unsigned char k1[20], k6[131];
  char hex[65];
  memset(k1, 0x0b, sizeof k1);
  memset(k6, 0xaa, sizeof k6);
  hattn__db_hmac_sha256_hex(k1, sizeof k1, "Hi There", 8, hex);
  ck_assert_str_eq(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  hattn__db_hmac_sha256_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
  ck_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  hattn__db_hmac_sha256_hex(k6, sizeof k6, "Test Using Larger Than Block-Size Key - Hash Key First", 54, hex);
  ck_assert_str_eq(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}
END_TEST

/* Replace the binary of KEY in PATH by BIN (N bytes) and store its SHA-256,
** as anyone who can write the file could. */
static void tamper(const char *path, const char *key, const void *bin, size_t n) {
  sqlite3 *sq;
  sqlite3_stmt *st;
  char sum[65];
  hattn__db_sha256_hex(bin, n, sum);
  ck_assert_int_eq(sqlite3_open(path, &sq), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(sq, "UPDATE kernels SET binary = ?1, checksum = ?2 WHERE key = ?3", -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_blob(st, 1, bin, (int)n, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, sum, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
  ck_assert_int_eq(sqlite3_changes(sq), 1);
  sqlite3_finalize(st);
  sqlite3_close(sq);
}

/* A binary replaced with its SHA-256 recomputed passed the checksum and was
** run.  It lacks the user's HMAC now: absent, rebuilt, then served. */
START_TEST(tampered_binary_refused) {
  char *path = path_in("tamper.db"), want[8192];
  size_t n = 200 + (size_t)(rand() % 3000);
  unsigned char *bin = random_blob(n), *evil = random_blob(n);
  hattn__db *db = open_ok(path, 0);
  hattn__db_kernel *k = NULL;
  int64_t nbad = 0;
  int miss = 0;
  char *text = NULL;
  size_t len;
  FILE *f;
  put_kernel(db, "kx", "nvrtc 12.4", bin, n, 0);
  put_kernel(db, "ky", "nvrtc 12.4", bin, n, 0);
  tamper(path, "kx", evil, n);
  ck_assert_int_eq(hattn__db_kernel_get(db, "kx", "nvrtc 12.4", &k, &miss, err, sizeof err), HATTN_ENOENT);
  ck_assert_int_eq(miss, HATTN__DB_MISS_HMAC);
  ck_assert_ptr_null(k);
  snprintf(want, sizeof want,
           "kernel kx in %s has no valid HMAC of this user's key (stored by an older hattn or another user, "
           "imported, or edited): it is rebuilt", path);
  ck_assert_str_eq(err, want);
  /* A genuine binary moved to another key (the HMAC covers the key). */
  {
    sqlite3 *sq;
    ck_assert_int_eq(sqlite3_open(path, &sq), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(sq, "UPDATE kernels SET key = 'kz' WHERE key = 'ky'", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(sq);
  }
  ck_assert_int_eq(hattn__db_kernel_get(db, "kz", "nvrtc 12.4", &k, &miss, err, sizeof err), HATTN_ENOENT);
  ck_assert_int_eq(miss, HATTN__DB_MISS_HMAC);
  f = open_memstream(&text, &len);
  ck_assert_int_eq(hattn__db_verify(db, f, &nbad, err, sizeof err), HATTN_OK);
  fclose(f);
  ck_assert_int_eq(nbad, 2);
  ck_assert_msg(strstr(text, "kernel kx: no valid HMAC of this user's key") != NULL, "%s", text);
  free(text);
  /* Rebuilt and stored again, it is served. */
  put_kernel(db, "kx", "nvrtc 12.4", bin, n, 0);
  ck_assert_int_eq(hattn__db_kernel_get(db, "kx", "nvrtc 12.4", &k, &miss, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(memcmp(k->binary, bin, n), 0);
  free(k);
  hattn__db_close(db);
  free(bin);
  free(evil);
}
END_TEST

/* A database of schema 1 (binaries with a bare SHA-256) is upgraded; its
** binaries are treated as absent, its tunings kept. */
START_TEST(schema1_binaries_ignored) {
  char *path = path_in("old.db");
  hattn__db *db;
  hattn__db_kernel *k = NULL;
  hattn__db_tuning *t = NULL;
  int miss = 0;
  make_db(path, 2, 300);
  raw_exec(path, "ALTER TABLE kernels DROP COLUMN hmac; ALTER TABLE kernels DROP COLUMN head_dim; "
                 "ALTER TABLE kernels DROP COLUMN dtype; ALTER TABLE kernels DROP COLUMN kernel_class; "
                 "PRAGMA user_version = 1");
  db = open_ok(path, 0);
  ck_assert_int_eq(raw_int(path, "PRAGMA user_version"), HATTN__DB_SCHEMA_VERSION);
  ck_assert_int_eq(hattn__db_kernel_get(db, "k1", "nvrtc 12.4", &k, &miss, err, sizeof err), HATTN_ENOENT);
  ck_assert_int_eq(miss, HATTN__DB_MISS_HMAC);
  ck_assert_msg(strstr(err, "has no valid HMAC of this user's key") != NULL, "%s", err);
  ck_assert_int_eq(hattn__db_tuning_get(db, model_of(&gpu), "cls", "nvrtc 12.4", 4096, 16, &t, err, sizeof err),
                   HATTN_OK);
  free(t);
  hattn__db_close(db);
}
END_TEST

/* The key: made once, mode 0600, in HATTN_CONFIG_DIR; refused, and nothing
** trusted, when others may read or write it or its directory. */
START_TEST(key_file) {
  char *path = path_in("key.db"), *key = path_in("config/db.key"), want[8192];
  unsigned char k1[HATTN__DB_KEY_LEN], k2[HATTN__DB_KEY_LEN];
  hattn__db *db;
  hattn__db_kernel *k = NULL;
  struct stat st;
  int miss = 0;
  ck_assert_int_ne(access(key, F_OK), 0);
  make_db(path, 1, 100);
  ck_assert_int_eq(stat(key, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0600);
  ck_assert_int_eq(st.st_size, HATTN__DB_KEY_LEN);
  ck_assert_int_eq(stat(path_in("config"), &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0700);
  ck_assert_int_eq(hattn__db_key(k1, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__db_key(k2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(memcmp(k1, k2, sizeof k1), 0);

  ck_assert_int_eq(chmod(key, 0644), 0);
  snprintf(want, sizeof want,
           "the key %s can be read or written by other users (mode 0644): no stored binary is trusted until only "
           "you can (chmod 600 %s, or remove it to make a new one)", key, key);
  ck_assert_int_eq(hattn__db_key(k2, err, sizeof err), HATTN_EDB);
  ck_assert_str_eq(err, want);
  db = open_ok(path, 0);
  ck_assert_int_eq(hattn__db_kernel_get(db, "k0", "nvrtc 12.4", &k, &miss, err, sizeof err), HATTN_ENOENT);
  ck_assert_int_eq(miss, HATTN__DB_MISS_HMAC);
  ck_assert_msg(strstr(err, want) == err && strstr(err, "; so the binary of kernel k0 in ") != NULL &&
                strstr(err, "is not trusted: it is compiled for this process and not kept") != NULL, "%s", err);
  {
    hattn__db_kernel kk = {"k5", "", "cpu", "", "", "llvm 16.0.6", "x", 1, "", 0, "", "", 0};
    ck_assert_int_eq(hattn__db_kernel_put(db, &kk, err, sizeof err), HATTN_EDB);
    ck_assert_str_eq(err, want);
  }
  hattn__db_close(db);
  ck_assert_int_eq(chmod(key, 0600), 0);

  /* Its directory writable by others: the key could be swapped. */
  ck_assert_int_eq(chmod(path_in("config"), 0777), 0);
  ck_assert_int_eq(hattn__db_key(k2, err, sizeof err), HATTN_EDB);
  ck_assert_msg(strstr(err, "the directory ") && strstr(err, "/config of the key that authenticates kernel binaries "
                "can be written by other users (mode 0777)"), "%s", err);
  ck_assert_int_eq(chmod(path_in("config"), 0700), 0);

  /* Wrong length: refused, not truncated or padded. */
  ck_assert_int_eq(truncate(key, 16), 0);
  ck_assert_int_eq(hattn__db_key(k2, err, sizeof err), HATTN_EDB);
  ck_assert_msg(strstr(err, "is not 32 bytes long") != NULL, "%s", err);
}
END_TEST

/* A database, or its directory, that other users can write is refused. */
START_TEST(others_may_write_refused) {
  char *path = path_in("shared.db"), want[8192];
  make_db(path, 1, 100);
  ck_assert_int_eq(chmod(path, 0666), 0);
  snprintf(want, sizeof want, "%s can be written by other users (mode 0666): hattn does not use it", path);
  open_fails(path, 0, want);
  open_fails(path, HATTN__DB_READONLY, want);
  ck_assert_int_eq(chmod(path, 0644), 0);
  ck_assert_int_eq(mkdir(path_in("pub"), 0700), 0);
  ck_assert_int_eq(chmod(path_in("pub"), 01777), 0);
  snprintf(want, sizeof want, "%s is in %s, a directory other users can write (mode 01777)", path_in("pub/h.db"),
           path_in("pub"));
  open_fails(path_in("pub/h.db"), 0, want);
  ck_assert_int_ne(access(path_in("pub/h.db"), F_OK), 0);
}
END_TEST

/* db import takes tuning records by default, binaries only when asked;
** imported binaries are signed with the importer's key. */
START_TEST(import_records_not_binaries) {
  char *a = path_in("a.db"), *b = path_in("b.db"), *x = path_in("out.hattnx");
  hattn__db *da = open_ok(a, 0), *dbb = open_ok(b, 0);
  unsigned char *bin = random_blob(3000);
  hattn__db_kernel *k = NULL;
  hattn__db_tuning *t = NULL;
  int64_t nt = -1, nk = -1;
  put_kernel(da, "k0", "nvrtc 12.4", bin, 3000, 0);
  put_tuning(da, &gpu, "cls", "nvrtc 12.4", 4096, 16, 4, 0);
  ck_assert_int_eq(hattn__db_export(da, x, NULL, NULL, &nt, &nk, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nk, 1);
  ck_assert_int_eq(raw_int(x, "SELECT count(*) FROM kernels WHERE hmac <> ''"), 0);
  /* Into a fresh database, naming no device. */
  ck_assert_int_eq(hattn__db_import(dbb, x, 0, NULL, NULL, &nt, &nk, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(nt, 1);
  ck_assert_int_eq(nk, 0);
  ck_assert_int_eq(raw_int(b, "SELECT count(*) FROM kernels"), 0);
  ck_assert_int_eq(hattn__db_tuning_get(dbb, model_of(&gpu), "cls", "nvrtc 12.4", 4096, 16, &t, err, sizeof err),
                   HATTN_OK);
  free(t);
  /* An edited binary in the file does not matter then... */
  raw_exec(x, "UPDATE kernels SET binary = zeroblob(3000)");
  ck_assert_int_eq(hattn__db_import(dbb, x, 0, NULL, NULL, &nt, &nk, err, sizeof err), HATTN_OK);
  /* ...and with the binaries it refuses the file. */
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, NULL, NULL, &nt, &nk, err, sizeof err),
                   HATTN_EDB);
  ck_assert_msg(strstr(err, "kernel k0 in ") && strstr(err, "fails its checksum"), "%s", err);
  ck_assert_int_eq(hattn__db_export(da, x, NULL, NULL, &nt, &nk, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__db_import(dbb, x, HATTN__DB_IMPORT_BINARIES, NULL, NULL, &nt, &nk, err, sizeof err),
                   HATTN_OK);
  ck_assert_int_eq(nk, 1);
  ck_assert_int_eq(hattn__db_kernel_get(dbb, "k0", "nvrtc 12.4", &k, NULL, err, sizeof err), HATTN_OK);
  ck_assert_str_eq(k->kernel_class, "cls");
  ck_assert_str_eq(k->dtype, "bf16");
  ck_assert_int_eq(k->head_dim, 128);
  free(k);
  hattn__db_close(da);
  hattn__db_close(dbb);
  free(bin);
}
END_TEST

static Suite *db_suite(void) {
  Suite *s = suite_create("db");
  TCase *tc = tcase_create("db");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, sha256_vectors);
  tcase_add_test(tc, buckets);
  tcase_add_test(tc, migrations_match_schema_sql);
  tcase_add_test(tc, kernel_round_trip);
  tcase_add_test(tc, tuning_round_trip);
  tcase_add_test(tc, list_show_prune_verify);
  tcase_add_test(tc, list_names_kernels);
  tcase_add_test(tc, missing_directory_is_created);
  tcase_add_test(tc, default_path);
  tcase_add_test(tc, corrupt_file);
  tcase_add_test(tc, truncated_file);
  tcase_add_test(tc, foreign_sqlite_file_untouched);
  tcase_add_test(tc, directory_refused);
  tcase_add_test(tc, empty_path_refused);
  tcase_add_test(tc, corrupt_after_open);
  tcase_add_test(tc, newer_schema_refused);
  tcase_add_test(tc, read_only);
  tcase_add_test(tc, checksum_mismatch_rebuilt);
  tcase_add_test(tc, compiler_mismatch_rebuilt);
  tcase_add_test(tc, read_only_mismatch_not_rebuilt);
  tcase_add_test(tc, two_processes);
  tcase_add_test(tc, busy_message);
  tcase_add_test(tc, export_import_round_trip);
  tcase_add_test(tc, import_refusals);
  tcase_add_test(tc, hmac_vectors);
  tcase_add_test(tc, tampered_binary_refused);
  tcase_add_test(tc, schema1_binaries_ignored);
  tcase_add_test(tc, key_file);
  tcase_add_test(tc, others_may_write_refused);
  tcase_add_test(tc, import_records_not_binaries);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(db_suite());
  const char *env = getenv("HATTN_TEST_SEED");
  int failed;
  seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
  printf("test_db: seed %u (HATTN_TEST_SEED=%u repeats this run)\n", seed, seed);
  fflush(stdout);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
