/*
** test_tuner.c: the autotuner (tuner/) and the runtime's kernel lookup
** (runtime/kernel_cache.c) on the CPU backend.
**
** Selection, statistics and agreement are checked with a fake timer; real
** tunings check that a deliberately wrong candidate (corrupted through the
** test hook) is thrown out, that a tuning stores its winner's binary and
** every candidate, that a fresh process finds the kernel in the database,
** and that a corrupt database file warns and still yields a working kernel.
** The time from asking for a kernel to holding a runnable one is measured
** in fresh processes, cold (empty database) and warm (a hit), and printed.
** Exits 77 (skip) when hattn was built without LLVM.
*/
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "hattn.h"
#include "cpu.h"
#include "db.h"
#include "kernel_cache.h"
#include "reference.h"
#include "spec.h"
#include "tuner.h"

#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) ck_abort_msg(__VA_ARGS__);                                  \
  } while (0)

static const char g_spec_text[] = "pattern causal = causal\npattern local = causal & window(100)\n";
static char g_self[4096];
static char g_dir[4096];

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static hattn__spec *load_spec(void) {
  hattn__spec *spec = NULL;
  if (hattn__spec_parse(g_spec_text, strlen(g_spec_text), "test", &spec, NULL) != HATTN_OK) return NULL;
  return spec;
}

/* A fresh database path in the test's directory. */
static void db_path(char *buf, size_t len, const char *name) {
  snprintf(buf, len, "%s/%s.db", g_dir, name);
  unlink(buf);
  {
    char x[4200];
    snprintf(x, sizeof x, "%s-wal", buf), unlink(x);
    snprintf(x, sizeof x, "%s-shm", buf), unlink(x);
  }
}

/* Run K (fp32) on a small problem of pattern P and return the relative
** error of O against the reference. */
static double run_kernel(const hattn__kc_kernel *k, const hattn__pattern *p) {
  hattn__shape s = {1, 2, 2, 150, 150, 0};
  hattn__mask_env env;
  hattn__tensor tq, tk, tv, to, tl;
  hattn__pool *pool = NULL;
  size_t n, i;
  float *q, *kk, *v, *o, *lse;
  double *qd, *kd, *vd, *od, *oref, *lref, e;
  char err[1024];
  uint64_t st = 7;

  s.head_dim = k->desc.head_dim;
  n = (size_t)(s.heads * s.lq * s.head_dim);
  q = malloc(n * 4), kk = malloc(n * 4), v = malloc(n * 4), o = malloc(n * 4), lse = malloc(300 * 4);
  qd = malloc(n * 8), kd = malloc(n * 8), vd = malloc(n * 8), od = malloc(n * 8), oref = malloc(n * 8);
  lref = malloc(300 * 8);
  for (i = 0; i < n; i++) {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    q[i] = (float)((double)(st >> 40) / (double)(1 << 24) * 2 - 1);
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    kk[i] = (float)((double)(st >> 40) / (double)(1 << 24) * 2 - 1);
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    v[i] = (float)((double)(st >> 40) / (double)(1 << 24) * 2 - 1);
    qd[i] = q[i], kd[i] = kk[i], vd[i] = v[i], o[i] = NAN;
  }
  memset(&env, 0, sizeof env);
  env.lq = s.lq, env.lk = s.lk, env.batch = 1, env.heads = s.heads;
  tq.data = q, tk.data = kk, tv.data = v, to.data = o, tl.data = lse;
  tq.stride[0] = tk.stride[0] = tv.stride[0] = to.stride[0] = (int64_t)n;
  tq.stride[1] = tk.stride[1] = tv.stride[1] = to.stride[1] = s.lq * s.head_dim;
  tq.stride[2] = tk.stride[2] = tv.stride[2] = to.stride[2] = s.head_dim;
  tq.stride[3] = tk.stride[3] = tv.stride[3] = to.stride[3] = 1;
  tl.stride[0] = 300, tl.stride[1] = 150, tl.stride[2] = tl.stride[3] = 1;
  e = INFINITY;
  if (hattn__pool_create(2, &pool) == HATTN_OK &&
      hattn__cpu_forward(hattn__cpu_kernel_fn(k->kern), &k->desc, &k->cfg.cpu, &s, &env, &tq, &tk, &tv, &to, &tl, pool, err, sizeof err) ==
          HATTN_OK &&
      hattn__reference(p, &s, &env, 0, qd, kd, vd, oref, lref, err, sizeof err) == HATTN_OK) {
    for (i = 0; i < n; i++) od[i] = o[i];
    e = hattn__rel_error(od, oref, n);
  }
  hattn__pool_destroy(pool);
  free(q), free(kk), free(v), free(o), free(lse), free(qd), free(kd), free(vd), free(od), free(oref), free(lref);
  return e;
}

/* ---- selection with a fake timer -------------------------------------------------- */

static void set_cand(hattn__tune_cand *c, const char *cfg, double med, double spread) {
  memset(c, 0, sizeof *c);
  snprintf(c->config, sizeof c->config, "%s", cfg);
  c->status = HATTN__CAND_TIMED;
  c->median_us = med;
  c->spread_us = spread;
}

START_TEST(test_stats) {
  double s[] = {5, 1, 4, 2, 3}, med, iqr;
  double t[] = {10, 10, 10, 10};
  hattn__tune_stats(s, 5, &med, &iqr);
  CHECK(med == 3 && iqr == 2, "median %g iqr %g of 1..5", med, iqr);
  hattn__tune_stats(t, 4, &med, &iqr);
  CHECK(med == 10 && iqr == 0, "constant samples: median %g iqr %g", med, iqr);
}
END_TEST

START_TEST(test_select) {
  hattn__tune_cand c[4];
  int f, w;
  /* The default (first) is within the fastest's spread and 3%: it wins. */
  set_cand(&c[0], "a", 102, 1), set_cand(&c[1], "b", 100, 3), set_cand(&c[2], "c", 110, 1);
  set_cand(&c[3], "d", 90, 0);
  c[3].status = HATTN__CAND_WRONG; /* faster, but thrown out */
  w = hattn__tune_select(c, 4, &f);
  CHECK(f == 1 && w == 0, "fastest %d winner %d, expected 1 and 0", f, w);
  /* Outside the spread: the fastest wins. */
  c[1].spread_us = 0.5, c[0].spread_us = 0.5;
  w = hattn__tune_select(c, 4, &f);
  CHECK(w == 1, "winner %d, expected 1", w);
  /* A huge spread never lets a candidate more than 3% slower win. */
  set_cand(&c[0], "a", 120, 50);
  set_cand(&c[1], "b", 100, 40);
  w = hattn__tune_select(c, 2, &f);
  CHECK(w == 1, "winner %d, expected 1 (3%% cap)", w);
  /* Nothing timed. */
  c[0].status = c[1].status = HATTN__CAND_FAILED;
  CHECK(hattn__tune_select(c, 2, &f) == -1 && f == -1, "no winner expected");
}
END_TEST

START_TEST(test_agree) {
  hattn__tune_cand a[3], b[3];
  hattn__tune_result ra, rb;
  memset(&ra, 0, sizeof ra), memset(&rb, 0, sizeof rb);
  ra.cands = a, rb.cands = b, ra.ncands = rb.ncands = 3;
  set_cand(&a[0], "x", 100, 5), set_cand(&a[1], "y", 103, 2), set_cand(&a[2], "z", 150, 2);
  set_cand(&b[0], "x", 104, 5), set_cand(&b[1], "y", 101, 2), set_cand(&b[2], "z", 150, 2);
  ra.winner = 0, rb.winner = 0;
  CHECK(hattn__tune_agree(&ra, &rb) == HATTN__TUNE_SAME, "same winner");
  rb.winner = 1;
  CHECK(hattn__tune_agree(&ra, &rb) == HATTN__TUNE_WITHIN, "y is within x's spread in run a");
  rb.winner = 2;
  CHECK(hattn__tune_agree(&ra, &rb) == HATTN__TUNE_DIFFER, "z is far outside");
}
END_TEST

/* The fake timer: samples around a time chosen per configuration. */
static int fake_timer(void *ctx, const hattn__tune_cand *c, double *s, int n) {
  int i, k = 9;
  double base = 1000;
  (void)ctx;
  if (c->cfg.cpu.bm == 64 && c->cfg.cpu.bn == 32) base = 500;      /* fastest, by far */
  else if (c->cfg.cpu.bm == 256 && c->cfg.cpu.bn == 128) base = 700;
  for (i = 0; i < k && i < n; i++) s[i] = base + (i % 3) * 2;
  return k;
}

/* Corrupt O of the 64 x 32 tile: a deliberately wrong candidate. */
static void corrupt_64x32(void *ctx, const hattn__tune_cand *c, void *o, size_t n, hattn__dtype t) {
  (void)ctx;
  if (c->cfg.cpu.bm == 64 && c->cfg.cpu.bn == 32 && t == HATTN_DTYPE_FP32) ((float *)o)[n / 2] += 0.5f;
}

static hattn__tune_problem small_problem(const hattn__spec *spec, int pi) {
  hattn__tune_problem p;
  memset(&p, 0, sizeof p);
  p.pattern = &spec->patterns[pi];
  p.dtype = HATTN_DTYPE_FP32;
  p.head_dim = 64;
  p.batch = 1, p.heads = 4, p.kv_heads = 2, p.lq = 512, p.lk = 512;
  return p;
}

START_TEST(test_fake_timer_run) {
  hattn__spec *spec = load_spec();
  hattn__tune_problem p = small_problem(spec, 0);
  hattn__tune_opts opt;
  hattn__tune_result r;
  char err[2048];
  int rc, i;
  memset(&opt, 0, sizeof opt);
  opt.progress = 0; /* plain lines: stderr of a test is not a terminal */
  opt.hooks.timer = fake_timer;
  rc = hattn__tune_run(HATTN__BACKEND_CPU, &p, &opt, &r, err, sizeof err);
  CHECK(rc == HATTN_OK, "tune: %s", err);
  CHECK(r.ncands >= 5 && r.ncands <= 20, "a pruned space: %d candidates", r.ncands);
  CHECK(r.winner >= 0 && r.cands[r.winner].cfg.cpu.bm == 64 && r.cands[r.winner].cfg.cpu.bn == 32,
        "the 64 x 32 tile is fastest under the fake timer, winner %s", r.winner >= 0 ? r.cands[r.winner].config : "-");
  for (i = 0; i < r.ncands; i++) CHECK(r.cands[i].status == HATTN__CAND_TIMED, "%s: %s", r.cands[i].config, r.cands[i].why);
  hattn__tune_result_clear(&r);
  hattn__spec_destroy(spec);
}
END_TEST

START_TEST(test_wrong_thrown_out) {
  hattn__spec *spec = load_spec();
  hattn__tune_problem p = small_problem(spec, 1);
  hattn__tune_opts opt;
  hattn__tune_result r;
  char err[2048];
  int rc, i, wrong = 0;
  memset(&opt, 0, sizeof opt);
  opt.progress = 0;
  opt.hooks.timer = fake_timer;      /* would make the wrong one win */
  opt.hooks.corrupt = corrupt_64x32;
  rc = hattn__tune_run(HATTN__BACKEND_CPU, &p, &opt, &r, err, sizeof err);
  CHECK(rc == HATTN_OK, "tune: %s", err);
  for (i = 0; i < r.ncands; i++) {
    const hattn__tune_cand *c = &r.cands[i];
    if (c->cfg.cpu.bm == 64 && c->cfg.cpu.bn == 32) {
      wrong++;
      CHECK(c->status == HATTN__CAND_WRONG, "the corrupted candidate is %s", hattn__cand_status_name(c->status));
      CHECK(strstr(c->why, "wrong on the gate") != NULL, "why: %s", c->why);
    } else {
      CHECK(c->status == HATTN__CAND_TIMED, "%s: %s", c->config, c->why);
    }
  }
  CHECK(wrong == 1, "the space holds the 64 x 32 tile once (%d)", wrong);
  CHECK(r.winner >= 0 && r.cands[r.winner].cfg.cpu.bm == 256 && r.cands[r.winner].cfg.cpu.bn == 128,
        "the next fastest wins: %s", r.winner >= 0 ? r.cands[r.winner].config : "-");
  hattn__tune_result_clear(&r);
  hattn__spec_destroy(spec);
}
END_TEST

/* ---- real tunings, the database and lookups -------------------------------------------- */

/* Tune pattern PI for real (small budget) into the database PATH. */
static void tune_into(const char *path, const hattn__spec *spec, int pi, hattn__tune_result *r) {
  hattn__tune_problem p = small_problem(spec, pi);
  hattn__tune_opts opt;
  hattn__db *db = NULL;
  char err[2048];
  memset(&opt, 0, sizeof opt);
  opt.progress = 0;
  opt.budget_s = 20;
  opt.reps = 7;
  CHECK(hattn__tune_run(HATTN__BACKEND_CPU, &p, &opt, r, err, sizeof err) == HATTN_OK, "tune: %s", err);
  CHECK(hattn__db_open(path, 0, &db, err, sizeof err) == HATTN_OK, "open: %s", err);
  CHECK(hattn__tune_store(db, &p, &opt, r, err, sizeof err) == HATTN_OK, "store: %s", err);
  hattn__db_close(db);
}

START_TEST(test_tune_store) {
  hattn__spec *spec = load_spec();
  hattn__tune_result r;
  hattn__db *db = NULL;
  hattn__db_tuning *t = NULL;
  hattn__db_kernel *k = NULL;
  char path[4200], err[2048];
  int i, timed = 0;
  db_path(path, sizeof path, "store");
  tune_into(path, spec, 0, &r);
  for (i = 0; i < r.ncands; i++) timed += r.cands[i].status == HATTN__CAND_TIMED;
  CHECK(hattn__db_open(path, 0, &db, err, sizeof err) == HATTN_OK, "open: %s", err);
  CHECK(hattn__db_tuning_get(db, r.model, r.kclass, r.compiler, 512, 4, &t, err, sizeof err) == HATTN_OK,
        "tuning get: %s", err);
  CHECK(t->ncandidates == timed && timed >= 5, "%d candidates stored, %d timed", t->ncandidates, timed);
  CHECK(!strcmp(t->winner, r.cands[r.winner].config), "winner %s, stored %s", r.cands[r.winner].config, t->winner);
  CHECK(hattn__db_kernel_get(db, r.winner_key, r.compiler, &k, NULL, err, sizeof err) == HATTN_OK,
        "the winner's binary: %s", err);
  CHECK(k->size > 100 && !strcmp(k->backend, "cpu"), "binary of %zu bytes", k->size);
  free(k);
  free(t);
  hattn__db_close(db);
  hattn__tune_result_clear(&r);
  hattn__spec_destroy(spec);
}
END_TEST

/* Run this program as a child looking the kernel of pattern PI up in the
** database PATH; returns its exit status, with its output line in LINE. */
static int child_lookup(const char *path, int pi, char *line, size_t len) {
  int fd[2], status = -1;
  pid_t pid;
  char arg[16];
  FILE *f;
  snprintf(arg, sizeof arg, "%d", pi);
  line[0] = '\0';
  if (pipe(fd) != 0) return -1;
  fflush(stdout), fflush(stderr);
  pid = fork();
  if (pid == 0) {
    dup2(fd[1], 1);
    close(fd[0]), close(fd[1]);
    execl(g_self, g_self, "--child-lookup", path, arg, (char *)NULL);
    _exit(127);
  }
  close(fd[1]);
  f = fdopen(fd[0], "r");
  if (f && fgets(line, (int)len, f) == NULL) line[0] = '\0';
  if (f) fclose(f);
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The child: open the cache, ask for the kernel, print "SOURCE TUNED MS
** ERROR"; exit 0 when the kernel is right. */
static int child_main(const char *path, int pi) {
  hattn__spec *spec;
  hattn__kcache *kc = NULL;
  hattn__kcache_opts o;
  hattn__kc_kernel *k = NULL;
  char err[2048];
  double t0, ms, e;
  t0 = now_ms();
  memset(&o, 0, sizeof o);
  o.backend = HATTN__BACKEND_CPU;
  o.db_path = path;
  spec = load_spec();
  if (spec == NULL || hattn__kcache_open(&o, &kc, err, sizeof err) != HATTN_OK ||
      hattn__kcache_get(kc, &spec->patterns[pi], HATTN_DTYPE_FP32, 64, 512, 512, 4, &k, err, sizeof err) != HATTN_OK) {
    printf("error %s\n", err);
    return 2;
  }
  ms = now_ms() - t0;
  e = run_kernel(k, &spec->patterns[pi]);
  printf("%s %d %.3f %.3g\n", hattn__kc_source_name(k->source), k->tuned, ms, e);
  fflush(stdout);
  hattn__kcache_close(kc);
  hattn__spec_destroy(spec);
  return e <= 1e-5 ? 0 : 1;
}

START_TEST(test_fresh_process_hit) {
  hattn__spec *spec = load_spec();
  hattn__tune_result r;
  char path[4200], line[512], src[32];
  int tuned = -1, st;
  double ms, e;
  db_path(path, sizeof path, "fresh");
  tune_into(path, spec, 1, &r);
  st = child_lookup(path, 1, line, sizeof line);
  CHECK(st == 0, "child exit %d: %s", st, line);
  CHECK(sscanf(line, "%31s %d %lf %lf", src, &tuned, &ms, &e) == 4, "child said: %s", line);
  CHECK(!strcmp(src, "db") && tuned == 1, "a fresh process should hit the db's tuned winner: %s", line);
  hattn__tune_result_clear(&r);
  hattn__spec_destroy(spec);
}
END_TEST

START_TEST(test_cold_warm_times) {
  char path[4200], line[512], src[32];
  double cold[3], warm[3], e;
  int i, tuned, st;
  for (i = 0; i < 3; i++) {
    db_path(path, sizeof path, "coldwarm");
    st = child_lookup(path, 0, line, sizeof line);
    CHECK(st == 0 && sscanf(line, "%31s %d %lf %lf", src, &tuned, &cold[i], &e) == 4, "cold child: %s", line);
    CHECK(!strcmp(src, "compiled") && tuned == 0, "cold: %s", line);
    st = child_lookup(path, 0, line, sizeof line);
    CHECK(st == 0 && sscanf(line, "%31s %d %lf %lf", src, &tuned, &warm[i], &e) == 4, "warm child: %s", line);
    CHECK(!strcmp(src, "db") && tuned == 0, "warm: the default kernel stored by the cold process: %s", line);
  }
  printf("kernel lookup, cpu, fresh process, open + get to a runnable kernel: cold (empty db) %.1f %.1f %.1f ms, "
         "warm (db hit) %.1f %.1f %.1f ms (targets: 300 ms and 10 ms)\n",
         cold[0], cold[1], cold[2], warm[0], warm[1], warm[2]);
  fflush(stdout);
  for (i = 0; i < 3; i++) CHECK(cold[i] > 0 && warm[i] > 0 && warm[i] < cold[i], "sanity");
}
END_TEST

START_TEST(test_memory_and_nearest) {
  hattn__spec *spec = load_spec();
  hattn__tune_result r;
  hattn__kcache *kc = NULL;
  hattn__kcache_opts o;
  hattn__kc_kernel *k = NULL, *k2 = NULL;
  char path[4200], err[2048];
  db_path(path, sizeof path, "nearest");
  tune_into(path, spec, 0, &r);
  memset(&o, 0, sizeof o);
  o.backend = HATTN__BACKEND_CPU;
  o.db_path = path;
  CHECK(hattn__kcache_open(&o, &kc, err, sizeof err) == HATTN_OK, "%s", err);
  /* Another bucket (4k keys, 64 x batch x heads): the nearest tuned one. */
  CHECK(hattn__kcache_get(kc, &spec->patterns[0], HATTN_DTYPE_FP32, 64, 4096, 4096, 64, &k, err, sizeof err) == HATTN_OK,
        "%s", err);
  CHECK(k->tuned && k->lk_log2 == 9 && k->source == HATTN__KC_DB, "nearest bucket: tuned %d lk 2^%d source %s",
        k->tuned, k->lk_log2, hattn__kc_source_name(k->source));
  CHECK(!strcmp(k->key, r.winner_key), "the winner's kernel %s, got %s", r.winner_key, k->key);
  CHECK(run_kernel(k, &spec->patterns[0]) <= 1e-5, "the kernel is right");
  CHECK(hattn__kcache_get(kc, &spec->patterns[0], HATTN_DTYPE_FP32, 64, 4096, 4096, 64, &k2, err, sizeof err) == HATTN_OK &&
            k2 == k && k2->source == HATTN__KC_MEMORY,
        "the second ask is a memory hit");
  hattn__kcache_close(kc);
  hattn__tune_result_clear(&r);
  hattn__spec_destroy(spec);
}
END_TEST

START_TEST(test_corrupt_db) {
  hattn__spec *spec = load_spec();
  hattn__kcache *kc = NULL;
  hattn__kcache_opts o;
  hattn__kc_kernel *k = NULL;
  char path[4200], err[2048];
  FILE *f;
  int i;
  db_path(path, sizeof path, "corrupt");
  f = fopen(path, "wb");
  CHECK(f != NULL, "cannot write %s", path);
  for (i = 0; i < 4096; i++) fputc((i * 7919) & 0xff, f);
  fclose(f);
  memset(&o, 0, sizeof o);
  o.backend = HATTN__BACKEND_CPU;
  o.db_path = path;
  o.quiet = 1;
  CHECK(hattn__kcache_open(&o, &kc, err, sizeof err) == HATTN_OK, "a corrupt db is not fatal: %s", err);
  CHECK(strstr(hattn__kcache_warning(kc), path) != NULL, "the warning names the file: '%s'",
        hattn__kcache_warning(kc));
  CHECK(hattn__kcache_db(kc) == NULL, "no database");
  CHECK(hattn__kcache_get(kc, &spec->patterns[1], HATTN_DTYPE_FP32, 64, 512, 512, 4, &k, err, sizeof err) == HATTN_OK,
        "%s", err);
  CHECK(k->source == HATTN__KC_COMPILED && !k->tuned, "compiled with the default");
  CHECK(run_kernel(k, &spec->patterns[1]) <= 1e-5, "the kernel is right");
  hattn__kcache_close(kc);
  hattn__spec_destroy(spec);
}
END_TEST

/* Issue 12: a stored binary replaced behind hattn's back, with a checksum
** recomputed to match, was loaded and run.  It is refused for want of the
** user's HMAC, compiled again, stored with one, and served from then on. */
START_TEST(test_tampered_binary_recompiled) {
  hattn__spec *spec = load_spec();
  hattn__kcache *kc = NULL;
  hattn__kcache_opts o;
  hattn__kc_kernel *k = NULL;
  char path[4200], err[2048], key[HATTN__KC_KEY_LEN], sum[65];
  unsigned char *bin;
  sqlite3 *sq;
  sqlite3_stmt *st;
  int n, round;
  db_path(path, sizeof path, "tamper");
  memset(&o, 0, sizeof o);
  o.backend = HATTN__BACKEND_CPU;
  o.db_path = path;
  o.quiet = 1;
  for (round = 0; round < 3; round++) {
    CHECK(hattn__kcache_open(&o, &kc, err, sizeof err) == HATTN_OK, "%s", err);
    CHECK(hattn__kcache_get(kc, &spec->patterns[1], HATTN_DTYPE_FP32, 64, 512, 512, 4, &k, err, sizeof err) == HATTN_OK,
          "%s", err);
    CHECK(run_kernel(k, &spec->patterns[1]) <= 1e-5, "the kernel is right");
    if (round == 0) {
      CHECK(k->source == HATTN__KC_COMPILED, "round 0: compiled, got %s", hattn__kc_source_name(k->source));
      memcpy(key, k->key, sizeof key);
    } else if (round == 1) {
      CHECK(k->source == HATTN__KC_COMPILED, "the tampered binary is not loaded: got it from %s",
            hattn__kc_source_name(k->source));
      CHECK(strstr(hattn__kcache_warning(kc), "has no valid HMAC of this user's key") != NULL &&
                strstr(hattn__kcache_warning(kc), path) != NULL && strstr(hattn__kcache_warning(kc), key) != NULL,
            "the warning says why: '%s'", hattn__kcache_warning(kc));
    } else {
      CHECK(k->source == HATTN__KC_DB && hattn__kcache_warning(kc)[0] == '\0',
            "round 2: the recompiled kernel, signed, from the db; got %s, warning '%s'",
            hattn__kc_source_name(k->source), hattn__kcache_warning(kc));
    }
    hattn__kcache_close(kc);
    if (round > 0) continue;
    /* Append a byte to the object (the loader ignores it) and store the
    ** SHA-256 of the new bytes, as anyone who can write the file could. */
    CHECK(sqlite3_open(path, &sq) == SQLITE_OK, "open %s", path);
    CHECK(sqlite3_prepare_v2(sq, "SELECT binary FROM kernels WHERE key = ?1", -1, &st, NULL) == SQLITE_OK, "select");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_ROW, "the kernel %s is stored", key);
    n = sqlite3_column_bytes(st, 0);
    bin = malloc((size_t)n + 1);
    CHECK(bin != NULL, "memory");
    memcpy(bin, sqlite3_column_blob(st, 0), (size_t)n);
    bin[n] = 0xcc;
    sqlite3_finalize(st);
    hattn__db_sha256_hex(bin, (size_t)n + 1, sum);
    CHECK(sqlite3_prepare_v2(sq, "UPDATE kernels SET binary = ?1, checksum = ?2 WHERE key = ?3", -1, &st, NULL) ==
              SQLITE_OK, "update");
    sqlite3_bind_blob(st, 1, bin, n + 1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sum, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(sq) == 1, "the binary is replaced");
    sqlite3_finalize(st);
    sqlite3_close(sq);
    free(bin);
  }
  hattn__spec_destroy(spec);
}
END_TEST

/* Decode problems (1 to 16 queries) have a kernel class of their own: their
** tuned winners and those of longer problems never replace each other. */
START_TEST(test_decode_class) {
  char a[HATTN__KC_KEY_LEN], b[HATTN__KC_KEY_LEN], c[HATTN__KC_KEY_LEN], d[HATTN__KC_KEY_LEN];
  hattn__kc_class("causal", HATTN_DTYPE_BF16, 128, HATTN_BACKEND_CUDA, "sm_90a", 1, a);
  hattn__kc_class("causal", HATTN_DTYPE_BF16, 128, HATTN_BACKEND_CUDA, "sm_90a", 16, b);
  hattn__kc_class("causal", HATTN_DTYPE_BF16, 128, HATTN_BACKEND_CUDA, "sm_90a", 17, c);
  hattn__kc_key("causal", HATTN_DTYPE_BF16, 128, HATTN_BACKEND_CUDA, "sm_90a", NULL, d);
  CHECK(!strcmp(a, b) && strcmp(a, c) != 0 && !strcmp(c, d) && a[0] == 'c', "%s %s %s %s", a, b, c, d);
  hattn__kc_class("causal", HATTN_DTYPE_BF16, 128, HATTN_BACKEND_CUDA, "sm_90a", 0, c);
  CHECK(!strcmp(c, d), "no queries: the ordinary class");
}
END_TEST

/* The decode kernels' configuration fields are checked, and named in the
** kernel's entry point where they are not the defaults. */
START_TEST(test_decode_config) {
  static const char text[] = "pattern p = causal\n";
  hattn__spec *spec = NULL;
  hattn__kernel_desc desc;
  hattn__cuda_config cfg;
  char err[256], name[128];
  CHECK(hattn__spec_parse(text, strlen(text), "decode", &spec, NULL) == HATTN_OK, "parse");
  desc.pattern = &spec->patterns[0], desc.dtype = HATTN_DTYPE_BF16, desc.head_dim = 128;
  hattn__cuda_config_default(&desc, 80, &cfg);
  hattn__cuda_kernel_name(&desc, &cfg, name, sizeof name);
  CHECK(strstr(name, "_dw") == NULL, "%s", name);
  CHECK(hattn__cuda_decode_warps(&cfg) == 4 && hattn__cuda_decode_block_n(&cfg, 128) == 32 &&
        hattn__cuda_decode_split(&cfg) == 1, "defaults");
  cfg.dwarps = 8, cfg.dblock_n = 16, cfg.dsplit = 2;
  CHECK(hattn__cuda_config_check(&desc, &cfg, err, sizeof err) == HATTN_OK, "%s", err);
  hattn__cuda_kernel_name(&desc, &cfg, name, sizeof name);
  CHECK(strstr(name, "_dw8_dn16") != NULL, "%s", name);
  cfg.dwarps = 3;
  CHECK(hattn__cuda_config_check(&desc, &cfg, err, sizeof err) == HATTN_EINVAL &&
        !strcmp(err, "the decode kernel takes 2, 4 or 8 warps, not 3"), "%s", err);
  cfg.dwarps = 4, cfg.dblock_n = 24;
  CHECK(hattn__cuda_config_check(&desc, &cfg, err, sizeof err) == HATTN_EINVAL &&
        !strcmp(err, "the decode kernel's blocks hold a multiple of 16 keys from 16 to 128, not 24"), "%s", err);
  cfg.dblock_n = 128, cfg.dwarps = 8, cfg.dsplit = 1;
  CHECK(hattn__cuda_config_check(&desc, &cfg, err, sizeof err) == HATTN_EINVAL && strstr(err, "shared memory"),
        "%s", err);
  cfg.dblock_n = 32, cfg.dsplit = 3;
  CHECK(hattn__cuda_config_check(&desc, &cfg, err, sizeof err) == HATTN_EINVAL &&
        !strcmp(err, "the decode split factor is 1, 2 or 4, not 3"), "%s", err);
  hattn__spec_destroy(spec);
}
END_TEST

START_TEST(test_config_text) {
  hattn__cpu_config c = {128, 64, 4, 8}, d;
  hattn__cuda_config g = {64, 32, 4, 2, 0, 0, 0, 0}, h;
  char buf[96];
  int t;
  hattn__kc_cpu_config_text(&c, 16, buf, sizeof buf);
  CHECK(hattn__kc_cpu_config_parse(buf, &d, &t) == HATTN_OK && !memcmp(&c, &d, sizeof c) && t == 16, "%s", buf);
  hattn__kc_cpu_config_text(&c, 0, buf, sizeof buf);
  CHECK(hattn__kc_cpu_config_parse(buf, &d, &t) == HATTN_OK && t == 0, "%s", buf);
  hattn__kc_cuda_config_text(&g, buf, sizeof buf);
  CHECK(hattn__kc_cuda_config_parse(buf, &h) == HATTN_OK && !memcmp(&g, &h, sizeof g), "%s", buf);
  g.block_m = 128, g.block_n = 128, g.warps = 8, g.wgmma = 1;
  hattn__kc_cuda_config_text(&g, buf, sizeof buf);
  CHECK(!strcmp(buf, "bm=128 bn=128 warps=8 stages=2 wgmma"), "%s", buf);
  CHECK(hattn__kc_cuda_config_parse(buf, &h) == HATTN_OK && !memcmp(&g, &h, sizeof g), "%s", buf);
  CHECK(hattn__kc_cuda_config_parse("bm=128 bn=128 warps=8 stages=2 wgmmax", &h) == HATTN_EINVAL,
        "junk after the stages refused");
  /* The decode kernels' fields, written where set, read back. */
  g.dwarps = 8, g.dblock_n = 16, g.dsplit = 2;
  hattn__kc_cuda_config_text(&g, buf, sizeof buf);
  CHECK(!strcmp(buf, "bm=128 bn=128 warps=8 stages=2 wgmma dwarps=8 dblock_n=16 dsplit=2"), "%s", buf);
  CHECK(hattn__kc_cuda_config_parse(buf, &h) == HATTN_OK && !memcmp(&g, &h, sizeof g), "%s", buf);
  g.wgmma = 0;
  hattn__kc_cuda_config_text(&g, buf, sizeof buf);
  CHECK(hattn__kc_cuda_config_parse(buf, &h) == HATTN_OK && !memcmp(&g, &h, sizeof g), "%s", buf);
  CHECK(hattn__kc_cuda_config_parse("bm=64 bn=64 warps=4 stages=2 dwarps=4 dblock_n=32", &h) == HATTN_EINVAL,
        "a partial decode suffix refused");
  CHECK(hattn__kc_cuda_config_parse("bm=64 bn=64 warps=4 stages=2 dwarps=4 dblock_n=32 dsplit=1 x", &h) ==
            HATTN_EINVAL, "junk after the decode fields refused");
  CHECK(hattn__kc_cpu_config_parse("bm=1 bn=2", &d, &t) == HATTN_EINVAL, "junk refused");
}
END_TEST

static Suite *tuner_suite(void) {
  Suite *s = suite_create("tuner");
  TCase *tc = tcase_create("select");
  tcase_add_test(tc, test_stats);
  tcase_add_test(tc, test_select);
  tcase_add_test(tc, test_agree);
  tcase_add_test(tc, test_config_text);
  tcase_add_test(tc, test_decode_class);
  tcase_add_test(tc, test_decode_config);
  suite_add_tcase(s, tc);
  tc = tcase_create("cpu");
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, test_fake_timer_run);
  tcase_add_test(tc, test_wrong_thrown_out);
  tcase_add_test(tc, test_tune_store);
  tcase_add_test(tc, test_fresh_process_hit);
  tcase_add_test(tc, test_cold_warm_times);
  tcase_add_test(tc, test_memory_and_nearest);
  tcase_add_test(tc, test_corrupt_db);
  tcase_add_test(tc, test_tampered_binary_recompiled);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) {
  const hattn__kc_host *host;
  SRunner *sr;
  char err[512], *tmp;
  ssize_t n;
  int failed;

  if (argc == 4 && !strcmp(argv[1], "--child-lookup")) return child_main(argv[2], atoi(argv[3]));
  if (hattn__kc_host_cpu(&host, err, sizeof err) != HATTN_OK) {
    printf("[SKIP] %s\n", err);
    return 77;
  }
  n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
  if (n <= 0) {
    printf("[SKIP] cannot find this program for the child processes\n");
    return 77;
  }
  g_self[n] = '\0';
  tmp = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/hattn-test-tuner-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(g_dir) == NULL) {
    printf("[SKIP] cannot create a temporary directory\n");
    return 77;
  }
  {
    /* The user's key, in the test's directory: never the real one. */
    char conf[4200];
    snprintf(conf, sizeof conf, "%s/config", g_dir);
    setenv("HATTN_CONFIG_DIR", conf, 1);
  }
  printf("host %s, %d cores, vectors of %d floats, %s; databases in %s\n", host->model, host->cores, host->vec,
         host->compiler, g_dir);
  fflush(stdout);
  sr = srunner_create(tuner_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (!failed) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
  }
  return failed ? 1 : 0;
}
