/*
** test_api.c: the public API of hattn.h: parse errors, lookups, forward
** against the float64 reference (gen/reference.h, and hattn_reference) on
** fresh random inputs with poisoned outputs, in both [B, H, S, D] and
** [B, S, H, D] memory, GQA, document offsets; kernels registered as
** prebuilt (and which one is chosen), malformed registrations; the checks
** of DLTensors; NULL-accepting destroys; status codes; hattn_merge against
** a float64 merge and end to end over key slices.  Where a GPU answers,
** the same through the CUDA backend, compiled and prebuilt (cubins made
** here as hattn gen makes them); without one those cases say so and pass.
** Internal functions serve only to make kernels and device memory.  The
** seed comes from the clock unless HATTN_TEST_SEED is set.  Runs with no
** kernel database (db "").
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "cpu.h"
#include "cpu_config.h"
#include "cuda.h"
#include "emit_cuda.h"
#include "kernel_cache.h"
#include "reference.h"
#include "spec.h"

static uint64_t g_seed;

#include "testutil.h"
#include "api_main.h"

static hattn_ctx *g_ctx;

static void setup(void) {
  hattn_options opt;
  int rc;
  hattn_options_init(&opt);
  opt.db = "";
  opt.threads = 2;
  opt.quiet = 1;
  rc = hattn_open(&opt, &g_ctx);
  ck_assert_msg(rc == HATTN_OK, "hattn_open: %s", hattn_errmsg(g_ctx));
}

static void teardown(void) {
  hattn_close(g_ctx);
  g_ctx = NULL;
}

static hattn_specfile *parse(const char *text) {
  hattn_specfile *s = NULL;
  int rc = hattn_specfile_parse(g_ctx, text, strlen(text), "test.hattn", &s);
  ck_assert_msg(rc == HATTN_OK, "parse: %s", hattn_errmsg(g_ctx));
  return s;
}

/* A DLTensor of logical shape [n0, n1, n2, n3] over memory laid out as
** [n0, n2, n1, n3] when SWAP, else row-major. */
typedef struct tens {
  DLTensor t;
  int64_t shape[4], strides[4];
} tens;

static void tens_init(tens *x, void *data, hattn__dtype dt, int ndim, const int64_t *shape, int swap) {
  int i;
  memset(x, 0, sizeof *x);
  x->t.data = data;
  x->t.device.device_type = kDLCPU;
  x->t.ndim = ndim;
  x->t.dtype.code = dt == HATTN_DTYPE_BF16 ? kDLBfloat : kDLFloat;
  x->t.dtype.bits = dt == HATTN_DTYPE_FP32 ? 32 : 16;
  x->t.dtype.lanes = 1;
  for (i = 0; i < ndim; i++) x->shape[i] = shape[i];
  x->t.shape = x->shape;
  if (ndim == 4 && swap) {
    x->strides[3] = 1;
    x->strides[1] = shape[3];
    x->strides[2] = shape[1] * shape[3];
    x->strides[0] = shape[1] * shape[2] * shape[3];
    x->t.strides = x->strides;
  } else if (ndim == 4 && (rng_next(&(rng){g_seed}) & 1)) {
    /* explicit compact strides half the time, NULL otherwise */
    x->strides[3] = 1;
    for (i = 2; i >= 0; i--) x->strides[i] = x->strides[i + 1] * shape[i + 1];
    x->t.strides = x->strides;
  }
}

static size_t at4(const tens *x, int64_t a, int64_t b, int64_t c, int64_t d) {
  if (x->t.strides)
    return (size_t)(a * x->strides[0] + b * x->strides[1] + c * x->strides[2] + d * x->strides[3]);
  return (size_t)(((a * x->shape[1] + b) * x->shape[2] + c) * x->shape[3] + d);
}

typedef struct acase {
  const char *mask;
  hattn__dtype dtype;
  int64_t b, h, hk, lq, lk, d;
  int bshd;
  int docs;
  int extra;   /* run-time overrides: 1 alibi slopes, 2 sink logits, 4 seed */
} acase;

static void run_case(const acase *tc, uint64_t salt) {
  char text[512], err[512];
  hattn_specfile *spec;
  hattn__spec *ispec = NULL;
  hattn_kernel *kern = NULL;
  hattn_problem pr;
  hattn_inputs in;
  hattn__shape shape;
  hattn__mask_env env;
  tens tq, tk, tv, to, tl;
  rng r;
  int64_t B = tc->b, H = tc->h, HK = tc->hk, LQ = tc->lq, LK = tc->lk, D = tc->d;
  int64_t nq = B * H * LQ * D, nk = B * HK * LK * D, nl = B * H * LQ, i0, i1, i2, i3;
  int64_t sq[4] = {B, H, LQ, D}, sk[4] = {B, HK, LK, D}, offs[8];
  size_t esz;
  int rc, ndocs = 0;
  void *q, *k, *v, *o;
  float *lse, slopes[16], sinks[16];
  double *rq, *rk, *rv, *ro, *rl, *xo, *xl, eo, el, tol;

  r.s = g_seed ^ (salt * UINT64_C(0x2545f4914f6cdd1d));
  rng_next(&r);
  snprintf(text, sizeof text, "pattern p = %s\n", tc->mask);
  spec = parse(text);
  rc = hattn__spec_parse(text, strlen(text), "t", &ispec, NULL);
  ck_assert_int_eq(rc, HATTN_OK);

  pr.batch = B, pr.heads = H, pr.kv_heads = HK, pr.lq = LQ, pr.lk = LK, pr.head_dim = D;
  pr.dtype = tc->dtype == HATTN_DTYPE_BF16 ? HATTN_BF16 : tc->dtype == HATTN_DTYPE_FP16 ? HATTN_FP16 : HATTN_FP32;
  rc = hattn_kernel_get(g_ctx, spec, "p", &pr, &kern);
  ck_assert_msg(rc == HATTN_OK, "kernel '%s': %s", tc->mask, hattn_errmsg(g_ctx));
  /* The spec may go before the kernel. */
  hattn_specfile_destroy(spec);

  esz = tc->dtype == HATTN_DTYPE_FP32 ? 4 : 2;
  q = malloc((size_t)nq * esz), o = malloc((size_t)nq * esz);
  k = malloc((size_t)nk * esz), v = malloc((size_t)nk * esz);
  lse = malloc((size_t)nl * sizeof *lse);
  rq = malloc((size_t)nq * sizeof *rq), ro = malloc((size_t)nq * sizeof *ro), xo = malloc((size_t)nq * sizeof *xo);
  rk = malloc((size_t)nk * sizeof *rk), rv = malloc((size_t)nk * sizeof *rv);
  rl = malloc((size_t)nl * sizeof *rl), xl = malloc((size_t)nl * sizeof *xl);
  ck_assert(q && o && k && v && lse && rq && ro && xo && rk && rv && rl && xl);

  tens_init(&tq, q, tc->dtype, 4, sq, tc->bshd);
  tens_init(&to, o, tc->dtype, 4, sq, tc->bshd);
  tens_init(&tk, k, tc->dtype, 4, sk, tc->bshd);
  tens_init(&tv, v, tc->dtype, 4, sk, tc->bshd);
  {
    int64_t sl[3] = {B, H, LQ};
    tens_init(&tl, lse, HATTN_DTYPE_FP32, 3, sl, 0);
  }
  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < H; i1++)
      for (i2 = 0; i2 < LQ; i2++)
        for (i3 = 0; i3 < D; i3++)
          rq[((i0 * H + i1) * LQ + i2) * D + i3] = put(q, at4(&tq, i0, i1, i2, i3), tc->dtype, 2.0 * rng_unit(&r));
  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < HK; i1++)
      for (i2 = 0; i2 < LK; i2++)
        for (i3 = 0; i3 < D; i3++) {
          size_t ri = (size_t)(((i0 * HK + i1) * LK + i2) * D + i3);
          rk[ri] = put(k, at4(&tk, i0, i1, i2, i3), tc->dtype, 2.0 * rng_unit(&r));
          rv[ri] = put(v, at4(&tv, i0, i1, i2, i3), tc->dtype, rng_unit(&r));
        }
  memset(o, 0xff, (size_t)nq * esz); /* NaN */
  memset(lse, 0xff, (size_t)nl * sizeof *lse);

  memset(&in, 0, sizeof in);
  memset(&env, 0, sizeof env);
  env.lq = LQ, env.lk = LK, env.batch = B, env.heads = H;
  if (tc->docs) {
    int64_t at = 0;
    offs[ndocs++] = 0;
    while (at < LK && ndocs < 7) {
      at += rng_range(&r, 1, LK / 2 + 1);
      if (at > LK || ndocs == 6) at = LK;
      offs[ndocs++] = at;
    }
    if (offs[ndocs - 1] != LK) offs[ndocs++] = LK;
    in.doc_offsets = offs, in.ndocs = ndocs - 1;
    env.doc_offsets = offs, env.ndocs = ndocs - 1;
  }
  for (i0 = 0; i0 < H && i0 < 16; i0++) {
    slopes[i0] = (float)(0.05 + 0.2 * rng_unit(&r));
    /* Head 1 has no sink; the others a logit near the scores' range. */
    sinks[i0] = i0 == 1 ? -INFINITY : (float)(3.0 + 2.0 * rng_unit(&r));
  }
  if (tc->extra & 1) in.alibi_slopes = slopes, env.alibi_slopes = slopes;
  if (tc->extra & 2) in.sink_logits = sinks, env.sink_logits = sinks;
  if (tc->extra & 4) in.seed = env.seed = rng_next(&r) | 1;
  ck_assert((hattn_kernel_needs(kern) & HATTN_NEED_DOCUMENTS) == (tc->docs ? HATTN_NEED_DOCUMENTS : 0u));
  rc = hattn_forward(kern, &tq.t, &tk.t, &tv.t, &to.t, &tl.t, &in, NULL);
  ck_assert_msg(rc == HATTN_OK, "forward '%s': %s", tc->mask, hattn_errmsg(g_ctx));

  shape.batch = B, shape.heads = H, shape.kv_heads = HK, shape.lq = LQ, shape.lk = LK, shape.head_dim = D;
  rc = hattn__reference(&ispec->patterns[0], &shape, &env, ispec->nlayouts, rq, rk, rv, ro, rl, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "reference: %s", err);
  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < H; i1++)
      for (i2 = 0; i2 < LQ; i2++) {
        for (i3 = 0; i3 < D; i3++)
          xo[((i0 * H + i1) * LQ + i2) * D + i3] = get(o, at4(&to, i0, i1, i2, i3), tc->dtype);
        xl[(i0 * H + i1) * LQ + i2] = lse[(i0 * H + i1) * LQ + i2];
      }
  eo = hattn__rel_error(xo, ro, (size_t)nq);
  el = hattn__rel_error(xl, rl, (size_t)nl);
  tol = tc->dtype == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2;
  ck_assert_msg(eo < tol && el < tol, "'%s' %s %s extra %d: error O %g LSE %g (tolerance %g)", tc->mask,
                hattn__dtype_name(tc->dtype), tc->bshd ? "bshd" : "bhsd", tc->extra, eo, el, tol);
  if (tc->extra) {
    /* The overrides change the answer: against the reference without them
    ** the kernel's output would fail. */
    env.alibi_slopes = NULL, env.sink_logits = NULL, env.seed = 0;
    rc = hattn__reference(&ispec->patterns[0], &shape, &env, ispec->nlayouts, rq, rk, rv, ro, rl, err, sizeof err);
    ck_assert_int_eq(rc, HATTN_OK);
    ck_assert_msg(hattn__rel_error(xo, ro, (size_t)nq) > tol || hattn__rel_error(xl, rl, (size_t)nl) > tol,
                  "'%s' extra %d: the overrides made no difference", tc->mask, tc->extra);
  }

  hattn_kernel_destroy(kern);
  hattn__spec_destroy(ispec);
  free(q), free(o), free(k), free(v), free(lse);
  free(rq), free(ro), free(xo), free(rk), free(rv), free(rl), free(xl);
}

static const acase g_cases[] = {
  {"causal", HATTN_DTYPE_FP32, 2, 4, 4, 70, 70, 32, 0, 0, 0},
  {"causal", HATTN_DTYPE_FP32, 2, 4, 4, 70, 70, 32, 1, 0, 0},
  {"causal & window(16)", HATTN_DTYPE_BF16, 1, 4, 2, 90, 90, 64, 0, 0, 0},
  {"causal & window(16)", HATTN_DTYPE_BF16, 1, 4, 2, 90, 90, 64, 1, 0, 0},
  {"sink(4) | causal & window(8)", HATTN_DTYPE_FP32, 1, 6, 2, 33, 100, 16, 1, 0, 0},
  {"causal & document", HATTN_DTYPE_FP32, 2, 2, 1, 80, 80, 32, 1, 1, 0},
  {"causal & document", HATTN_DTYPE_BF16, 1, 4, 4, 80, 80, 32, 0, 1, 0},
  /* Run-time overrides; LQ > LK leaves the first rows without keys. */
  {"causal with alibi", HATTN_DTYPE_FP32, 1, 4, 2, 70, 70, 32, 0, 0, 1},
  {"causal & window(16)", HATTN_DTYPE_FP32, 2, 4, 2, 90, 60, 32, 1, 0, 2},
  {"sink(4) | causal & window(8) with softcap(20)", HATTN_DTYPE_BF16, 1, 4, 4, 100, 100, 64, 0, 0, 2},
  {"causal with alibi", HATTN_DTYPE_BF16, 1, 4, 4, 64, 64, 32, 1, 0, 3},
  {"random(2, 9) | causal & window(40)", HATTN_DTYPE_FP32, 1, 2, 2, 300, 300, 16, 0, 0, 4},
  {"causal & document", HATTN_DTYPE_FP32, 1, 4, 2, 80, 80, 32, 0, 1, 2},
};

START_TEST(forward_vs_reference) { run_case(&g_cases[_i], (uint64_t)_i + 1); }
END_TEST

/* ---- the caller's thread pool --------------------------------------------- */

/* A caller's pool as a program would have one: NTHREADS threads a job (the
** caller's and threads it starts), each task index on its own thread; it
** counts the jobs and tasks it ran and the largest index it was given. */
typedef struct user_pool {
  int nthreads;
  atomic_int jobs, tasks;
} user_pool;

typedef struct user_task {
  void (*task)(void *arg, int i);
  void *arg;
  int i;
  user_pool *up;
} user_task;

static int up_threads(void *user) { return ((user_pool *)user)->nthreads; }

static void *up_run(void *a) {
  user_task *t = a;
  t->task(t->arg, t->i);
  atomic_fetch_add(&t->up->tasks, 1);
  return NULL;
}

static void up_parallel_for(void *user, int n, void (*task)(void *arg, int i), void *arg) {
  user_pool *up = user;
  pthread_t th[8];
  user_task t[8];
  int i;
  ck_assert_int_le(n, 8);
  atomic_fetch_add(&up->jobs, 1);
  for (i = 0; i < n; i++) t[i].task = task, t[i].arg = arg, t[i].i = i, t[i].up = up;
  for (i = 1; i < n; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, up_run, &t[i]), 0);
  up_run(&t[0]);
  for (i = 1; i < n; i++) pthread_join(th[i], NULL);
}

static int up_zero(void *user) { (void)user; return 0; }

/* The CPU kernels on the caller's pool: the same cases as forward_vs_reference
** (fresh inputs, float64 reference, outputs poisoned), with every job run
** by the pool's tasks; then the refusals. */
START_TEST(caller_threadpool) {
  user_pool up;
  hattn_threadpool tp = {up_threads, up_parallel_for, &up};
  hattn_options opt;
  hattn_ctx *mine = NULL, *saved = g_ctx, *bad = NULL;
  int rc, i;
  up.nthreads = 3;
  atomic_init(&up.jobs, 0);
  atomic_init(&up.tasks, 0);
  hattn_options_init(&opt);
  opt.db = "";
  opt.quiet = 1;
  opt.threadpool = &tp;
  rc = hattn_open(&opt, &mine);
  ck_assert_msg(rc == HATTN_OK, "hattn_open with a threadpool: %s", hattn_errmsg(mine));
  g_ctx = mine;
  for (i = 0; i < 6; i++) run_case(&g_cases[i], (uint64_t)i + 101);
  g_ctx = saved;
  hattn_close(mine);
  ck_assert_int_ge(atomic_load(&up.jobs), 6);
  ck_assert_int_eq(atomic_load(&up.tasks), 3 * atomic_load(&up.jobs));

  /* Refusals, each with its sentence. */
  tp.parallel_for = NULL;
  ck_assert_int_eq(hattn_open(&opt, &bad), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(bad), "threadpool: num_threads and parallel_for must both be set") != NULL,
                "%s", hattn_errmsg(bad));
  hattn_close(bad);
  tp.parallel_for = up_parallel_for, tp.num_threads = up_zero;
  ck_assert_int_eq(hattn_open(&opt, &bad), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(bad), "threadpool: num_threads must return 1 or more") != NULL, "%s",
                hattn_errmsg(bad));
  hattn_close(bad);
  tp.num_threads = up_threads;
  opt.threads = 2;
  ck_assert_int_eq(hattn_open(&opt, &bad), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(bad), "threadpool and threads (2): set one of them, not both") != NULL, "%s",
                hattn_errmsg(bad));
  hattn_close(bad);
  opt.threads = 0, opt.backend = HATTN_BACKEND_CUDA;
  ck_assert_int_eq(hattn_open(&opt, &bad), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(bad), "threadpool: the cuda backend runs no host threads") != NULL, "%s",
                hattn_errmsg(bad));
  hattn_close(bad);
}
END_TEST

START_TEST(spec_errors) {
  hattn_specfile *s = (hattn_specfile *)1;
  const char *bad = "pattern p = causal & window(0)\npattern q = nosuch(3)\n";
  int rc = hattn_specfile_parse(g_ctx, bad, strlen(bad), "bad.hattn", &s);
  ck_assert_int_eq(rc, HATTN_ESPEC);
  ck_assert_ptr_null(s);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "error:") != NULL, "errmsg: %s", hattn_errmsg(g_ctx));
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "bad.hattn:1:") != NULL, "errmsg: %s", hattn_errmsg(g_ctx));
}
END_TEST

START_TEST(unknown_pattern) {
  hattn_specfile *s = parse("pattern a = causal\npattern b = causal & window(4)\n");
  hattn_kernel *kern = (hattn_kernel *)1;
  hattn_problem pr = {1, 1, 1, 8, 8, 16, HATTN_FP32};
  int rc;
  ck_assert_int_eq(hattn_specfile_npatterns(s), 2);
  ck_assert_str_eq(hattn_specfile_pattern_name(s, 1), "b");
  ck_assert_ptr_null(hattn_specfile_pattern_name(s, 2));
  rc = hattn_kernel_get(g_ctx, s, "nosuch", &pr, &kern);
  ck_assert_int_eq(rc, HATTN_ENOENT);
  ck_assert_ptr_null(kern);
  ck_assert(strstr(hattn_errmsg(g_ctx), "nosuch") != NULL);
  pr.kv_heads = 3, pr.heads = 4;
  rc = hattn_kernel_get(g_ctx, s, "a", &pr, &kern);
  ck_assert_int_eq(rc, HATTN_ESHAPE);
  hattn_specfile_destroy(s);
}
END_TEST

START_TEST(bad_tensors) {
  hattn_specfile *s = parse("pattern a = causal\npattern d = causal & document\n"
                            "pattern f = causal with alibi(0.5)\npattern sl = causal with alibi\n");
  hattn_kernel *kern = NULL, *kd = NULL, *kf = NULL, *ks = NULL;
  hattn_problem pr = {1, 2, 1, 8, 8, 16, HATTN_FP32};
  float q[2 * 8 * 16], k[8 * 16], v[8 * 16], o[2 * 8 * 16];
  int64_t sq[4] = {1, 2, 8, 16}, sk[4] = {1, 1, 8, 16}, bad[4] = {1, 2, 8, 15};
  tens tq, tk, tv, to, tx;
  hattn_inputs in;
  float slopes[2] = {0.5f, 0.25f};
  int rc;

  memset(q, 0, sizeof q), memset(k, 0, sizeof k), memset(v, 0, sizeof v);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_OK);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "d", &pr, &kd), HATTN_OK);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "f", &pr, &kf), HATTN_OK);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "sl", &pr, &ks), HATTN_OK);
  ck_assert(hattn_kernel_config(kern)[0] != 0);
  tens_init(&tq, q, HATTN_DTYPE_FP32, 4, sq, 0);
  tens_init(&tk, k, HATTN_DTYPE_FP32, 4, sk, 0);
  tens_init(&tv, v, HATTN_DTYPE_FP32, 4, sk, 0);
  tens_init(&to, o, HATTN_DTYPE_FP32, 4, sq, 0);
  ck_assert_int_eq(hattn_forward(kern, &tq.t, &tk.t, &tv.t, &to.t, NULL, NULL, NULL), HATTN_OK);

  tens_init(&tx, q, HATTN_DTYPE_BF16, 4, sq, 0); /* wrong dtype */
  rc = hattn_forward(kern, &tx.t, &tk.t, &tv.t, &to.t, NULL, NULL, NULL);
  ck_assert_int_eq(rc, HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "q: dtype") != NULL, "%s", hattn_errmsg(g_ctx));

  tens_init(&tx, o, HATTN_DTYPE_FP32, 4, bad, 0); /* wrong shape */
  rc = hattn_forward(kern, &tq.t, &tk.t, &tv.t, &tx.t, NULL, NULL, NULL);
  ck_assert_int_eq(rc, HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "o: shape") != NULL, "%s", hattn_errmsg(g_ctx));

  tens_init(&tx, v, HATTN_DTYPE_FP32, 4, sk, 0); /* device CUDA on a CPU kernel */
  tx.t.device.device_type = kDLCUDA;
  rc = hattn_forward(kern, &tq.t, &tk.t, &tx.t, &to.t, NULL, NULL, NULL);
  ck_assert_int_eq(rc, HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "v: on device") != NULL, "%s", hattn_errmsg(g_ctx));

  tens_init(&tx, k, HATTN_DTYPE_FP32, 4, sk, 0); /* non-contiguous last dim */
  tx.strides[0] = 256, tx.strides[1] = 256, tx.strides[2] = 1, tx.strides[3] = 8;
  tx.t.strides = tx.strides;
  rc = hattn_forward(kern, &tq.t, &tx.t, &tv.t, &to.t, NULL, NULL, NULL);
  ck_assert_int_eq(rc, HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "contiguous") != NULL, "%s", hattn_errmsg(g_ctx));

  /* Missing and misplaced run-time inputs. */
  rc = hattn_forward(kd, &tq.t, &tk.t, &tv.t, &to.t, NULL, NULL, NULL);
  ck_assert_int_eq(rc, HATTN_EINPUT);
  memset(&in, 0, sizeof in);
  in.alibi_slopes = slopes;
  ck_assert_int_eq(hattn_forward(kern, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_EINPUT);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "pattern 'a' has no alibi") != NULL, "%s", hattn_errmsg(g_ctx));
  in.alibi_slopes = NULL;
  slopes[1] = NAN;
  in.sink_logits = slopes;
  ck_assert_int_eq(hattn_forward(kern, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_EINPUT);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "sink_logits[1] is NaN") != NULL, "%s", hattn_errmsg(g_ctx));
  in.sink_logits = NULL;
  in.seed = 42;
  ck_assert_int_eq(hattn_forward(kern, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_EINPUT);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "no random() atom") != NULL, "%s", hattn_errmsg(g_ctx));
  in.seed = 0;
  /* Slopes for a fixed alibi(M), and slopes that are not finite. */
  in.alibi_slopes = slopes;
  ck_assert_int_eq(hattn_forward(kf, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_EINPUT);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "has a fixed slope compiled in") != NULL, "%s", hattn_errmsg(g_ctx));
  slopes[0] = INFINITY;
  ck_assert_int_eq(hattn_forward(ks, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_EINPUT);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "alibi_slopes[0] is not finite") != NULL, "%s", hattn_errmsg(g_ctx));
  in.alibi_slopes = NULL;
  /* A layout given twice under one name (bug: the first one was used). */
  {
    hattn_specfile *sb = parse("pattern b = causal & blocks(L)\n");
    hattn_kernel *kb = NULL;
    const uint8_t bits[1] = {1};
    hattn_layout two[2] = {{"L", 8, 8, 1, 1, bits}, {"L", 8, 8, 1, 1, bits}};
    ck_assert_int_eq(hattn_kernel_get(g_ctx, sb, "b", &pr, &kb), HATTN_OK);
    in.layouts = two;
    in.nlayouts = 1;
    ck_assert_int_eq(hattn_forward(kb, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_OK);
    in.nlayouts = 2;
    ck_assert_int_eq(hattn_forward(kb, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_EINPUT);
    ck_assert_str_eq(hattn_errmsg(g_ctx), "inputs: layout 'L' is given twice (layouts[0] and layouts[1])");
    in.layouts = NULL;
    in.nlayouts = 0;
    hattn_kernel_destroy(kb);
    hattn_specfile_destroy(sb);
  }

  hattn_kernel_destroy(kern);
  hattn_kernel_destroy(kd);
  hattn_kernel_destroy(kf);
  hattn_kernel_destroy(ks);
  hattn_specfile_destroy(s);
}
END_TEST

START_TEST(destroys_and_codes) {
  int c, seen = 0;
  hattn_ctx *ctx = NULL;
  hattn_options opt;
  hattn_close(NULL);
  hattn_specfile_destroy(NULL);
  hattn_kernel_destroy(NULL);
  ck_assert_str_eq(hattn_strerror(HATTN_OK), "success");
#define XX(name, val, msg)                                                   \
  ck_assert_str_eq(hattn_strerror(HATTN_##name), msg);                       \
  ck_assert_str_eq(hattn_err_name(HATTN_##name), "HATTN_" #name);            \
  seen++;
  HATTN_ERR_MAP(XX)
#undef XX
  ck_assert_int_eq(seen, 12);
  ck_assert_str_eq(hattn_err_name(HATTN_ECLOSED), "HATTN_ECLOSED");
  for (c = -20; c <= 0; c++) ck_assert_ptr_nonnull(hattn_strerror(c));
  ck_assert_str_eq(hattn_strerror(12345), "unknown status code");
  /* A failed open still gives a context with the reason. */
  hattn_options_init(&opt);
  opt.backend = 7;
  ck_assert_int_eq(hattn_open(&opt, &ctx), HATTN_EINVAL);
  ck_assert_ptr_nonnull(ctx);
  ck_assert(strstr(hattn_errmsg(ctx), "backend") != NULL);
  hattn_close(ctx);
  ck_assert_str_eq(hattn_errmsg(NULL), "out of memory");
}
END_TEST


/* The version macros of hattn.h agree with hattn_version() and with
** configure's version (PACKAGE_VERSION, from config.h). */
START_TEST(version_macros) {
  char text[64];
  snprintf(text, sizeof text, "%d.%d.%d", HATTN_VERSION_MAJOR, HATTN_VERSION_MINOR, HATTN_VERSION_PATCH);
  ck_assert_str_eq(hattn_version(), text);
  ck_assert_str_eq(PACKAGE_VERSION, text);
  ck_assert_int_eq(HATTN_VERSION_NUMBER,
                   HATTN_VERSION_MAJOR * 1000000 + HATTN_VERSION_MINOR * 1000 + HATTN_VERSION_PATCH);
  ck_assert(HATTN_VERSION_MINOR < 1000 && HATTN_VERSION_PATCH < 1000);
}
END_TEST

/* Every public function given a NULL handle or out parameter returns an
** error (or the documented empty answer) and does not assert. */
START_TEST(null_handles) {
  hattn_specfile *s = parse("pattern a = causal\n"), *sp = (hattn_specfile *)1;
  hattn_kernel *kern = (hattn_kernel *)1;
  hattn_problem pr = {1, 1, 1, 8, 8, 16, HATTN_FP32};
  hattn_prebuilt pb;
  hattn_ctx *ctx = NULL;
  DLTensor t;
  int n = 7;

  hattn_options_init(NULL);
  ck_assert_int_eq(hattn_open(NULL, NULL), HATTN_EINVAL);
  ck_assert_int_eq(hattn_specfile_parse(NULL, "pattern a = causal\n", 19, NULL, &sp), HATTN_EINVAL);
  ck_assert_ptr_null(sp);
  ck_assert_int_eq(hattn_specfile_parse(g_ctx, "pattern a = causal\n", 19, NULL, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "hattn_specfile_parse: out is NULL") != NULL, "%s", hattn_errmsg(g_ctx));
  ck_assert_int_eq(hattn_specfile_parse(g_ctx, NULL, 5, NULL, &sp), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "text is NULL") != NULL, "%s", hattn_errmsg(g_ctx));
  ck_assert_int_eq(hattn_specfile_npatterns(NULL), HATTN_EINVAL);
  ck_assert_ptr_null(hattn_specfile_pattern_name(NULL, 0));

  ck_assert_int_eq(hattn_kernel_get(NULL, s, "a", &pr, &kern), HATTN_EINVAL);
  ck_assert_ptr_null(kern);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, NULL, "a", &pr, &kern), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "hattn_kernel_get: spec is NULL") != NULL, "%s", hattn_errmsg(g_ctx));
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, NULL, &pr, &kern), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "hattn_kernel_get: pattern is NULL") != NULL, "%s",
                hattn_errmsg(g_ctx));
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", NULL, &kern), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "hattn_kernel_get: prob is NULL") != NULL, "%s", hattn_errmsg(g_ctx));
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "hattn_kernel_get: out is NULL") != NULL, "%s", hattn_errmsg(g_ctx));

  ck_assert_uint_eq(hattn_kernel_needs(NULL), 0);
  ck_assert_str_eq(hattn_kernel_config(NULL), "");
  ck_assert_str_eq(hattn_kernel_origin(NULL), "");
  ck_assert_str_eq(hattn_kernel_errmsg(NULL), "");
  memset(&t, 0, sizeof t);
  ck_assert_int_eq(hattn_forward(NULL, &t, &t, &t, &t, NULL, NULL, NULL), HATTN_EINVAL);
  ck_assert_int_eq(hattn_reference(NULL, &t, &t, &t, &t, NULL, NULL), HATTN_EINVAL);

  /* NULL tensors given to a real kernel name the tensor. */
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_OK);
  ck_assert_int_eq(hattn_forward(kern, NULL, &t, &t, &t, NULL, NULL, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_kernel_errmsg(kern), "q: missing (NULL)") != NULL, "%s", hattn_kernel_errmsg(kern));
  ck_assert_int_eq(hattn_reference(kern, NULL, NULL, NULL, NULL, NULL, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "q: missing (NULL)") != NULL, "%s", hattn_errmsg(g_ctx));
  hattn_kernel_destroy(kern);

  ck_assert_int_eq(hattn_add_prebuilt(NULL, NULL, 0, &n), HATTN_EINVAL);
  ck_assert_int_eq(n, 0);
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, NULL, 1, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "hattn_add_prebuilt: table is NULL") != NULL, "%s",
                hattn_errmsg(g_ctx));
  memset(&pb, 0, sizeof pb);
  pb.abi = HATTN_PREBUILT_ABI;
  pb.head_dim = 16;
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, 1, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "canonical pattern") != NULL, "%s", hattn_errmsg(g_ctx));

  /* A context that failed to open answers every call with its failure. */
  {
    hattn_options opt;
    hattn_options_init(&opt);
    opt.threads = -1;
    ck_assert_int_eq(hattn_open(&opt, &ctx), HATTN_EINVAL);
    ck_assert_int_eq(hattn_kernel_get(ctx, s, "a", &pr, &kern), HATTN_EINVAL);
    ck_assert_msg(strstr(hattn_errmsg(ctx), "the context failed to open: threads must be >= 0") != NULL, "%s",
                  hattn_errmsg(ctx));
    ck_assert_int_eq(hattn_specfile_parse(ctx, "pattern a = causal\n", 19, NULL, &sp), HATTN_EINVAL);
    ck_assert_msg(strstr(hattn_errmsg(ctx), "the context failed to open: threads must be >= 0") != NULL, "%s",
                  hattn_errmsg(ctx));
    ck_assert_int_eq(hattn_add_prebuilt(ctx, NULL, 0, NULL), HATTN_EINVAL);
    hattn_close(ctx);
  }
  hattn_specfile_destroy(s);
}
END_TEST

/* A kernel keeps its context alive: after hattn_close it still runs (its
** errors read through hattn_kernel_errmsg), the context refuses new work
** with HATTN_ECLOSED, and the last kernel destroyed frees the context (the
** sanitizer build checks that nothing leaks or is used after free). */
START_TEST(kernel_outlives_context) {
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_specfile *s = NULL, *s2 = (hattn_specfile *)1;
  hattn_kernel *k1 = NULL, *k2 = NULL, *k3 = (hattn_kernel *)1;
  hattn_problem pr = {1, 2, 1, 8, 8, 16, HATTN_FP32};
  float q[2 * 8 * 16], k[8 * 16], v[8 * 16], o[2 * 8 * 16], o2[2 * 8 * 16];
  int64_t sq[4] = {1, 2, 8, 16}, sk[4] = {1, 1, 8, 16};
  tens tq, tk, tv, to;
  rng r = {g_seed ^ 0x5eed};
  size_t i;
  const char *text = "pattern a = causal\n";

  for (i = 0; i < sizeof q / sizeof q[0]; i++) q[i] = (float)rng_unit(&r);
  for (i = 0; i < sizeof k / sizeof k[0]; i++) k[i] = (float)rng_unit(&r), v[i] = (float)rng_unit(&r);
  hattn_options_init(&opt);
  opt.db = "";
  opt.threads = 2;
  opt.quiet = 1;
  ck_assert_int_eq(hattn_open(&opt, &ctx), HATTN_OK);
  ck_assert_int_eq(hattn_specfile_parse(ctx, text, strlen(text), NULL, &s), HATTN_OK);
  ck_assert_int_eq(hattn_kernel_get(ctx, s, "a", &pr, &k1), HATTN_OK);
  ck_assert_int_eq(hattn_kernel_get(ctx, s, "a", &pr, &k2), HATTN_OK);
  tens_init(&tq, q, HATTN_DTYPE_FP32, 4, sq, 0);
  tens_init(&tk, k, HATTN_DTYPE_FP32, 4, sk, 0);
  tens_init(&tv, v, HATTN_DTYPE_FP32, 4, sk, 0);
  tens_init(&to, o, HATTN_DTYPE_FP32, 4, sq, 0);
  ck_assert_int_eq(hattn_forward(k1, &tq.t, &tk.t, &tv.t, &to.t, NULL, NULL, NULL), HATTN_OK);
  hattn_specfile_destroy(s);
  hattn_close(ctx);
  /* Closed: new work is refused while the kernels keep it alive. */
  ck_assert_int_eq(hattn_specfile_parse(ctx, text, strlen(text), NULL, &s2), HATTN_ECLOSED);
  ck_assert_ptr_null(s2);
  ck_assert_str_eq(hattn_kernel_errmsg(k1), "hattn_specfile_parse: the context is closed");
  hattn_kernel_destroy(k1);
  /* The other kernel still runs, with the same result. */
  memset(o2, 0xff, sizeof o2);
  tens_init(&to, o2, HATTN_DTYPE_FP32, 4, sq, 0);
  ck_assert_int_eq(hattn_forward(k2, &tq.t, &tk.t, &tv.t, &to.t, NULL, NULL, NULL), HATTN_OK);
  ck_assert_int_eq(memcmp(o, o2, sizeof o), 0);
  ck_assert_str_eq(hattn_kernel_errmsg(k2), "");
  ck_assert_int_eq(hattn_forward(k2, &tk.t, &tk.t, &tv.t, &to.t, NULL, NULL, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_kernel_errmsg(k2), "q: shape [1, 1, 8, 16], expected [1, 2, 8, 16]") != NULL, "%s",
                hattn_kernel_errmsg(k2));
  ck_assert_int_eq(hattn_kernel_get(ctx, s, "a", &pr, &k3), HATTN_ECLOSED);
  ck_assert_ptr_null(k3);
  ck_assert_int_eq(hattn_add_prebuilt(ctx, NULL, 0, NULL), HATTN_ECLOSED);
  hattn_close(ctx); /* a second close while kernels live changes nothing */
  ck_assert_int_eq(hattn_forward(k2, &tq.t, &tk.t, &tv.t, &to.t, NULL, NULL, NULL), HATTN_OK);
  hattn_kernel_destroy(k2);
}
END_TEST

/* Every dimension and every product of a problem is bounded before use
** (hattn.h's HATTN_MAX_*), with a message naming the limit. */
START_TEST(problem_limits) {
  hattn_specfile *s = parse("pattern a = causal\n");
  hattn_kernel *kern = (hattn_kernel *)1;
  hattn_problem ok = {1, 1, 1, 8, 8, 16, HATTN_FP32}, pr;
  rng r = {g_seed ^ 0x11a1};
  int64_t big = HATTN_MAX_SEQLEN + 1 + (int64_t)(rng_next(&r) % 1000);

  pr = ok, pr.batch = pr.heads = pr.kv_heads = INT64_MAX;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_ESHAPE);
  ck_assert_ptr_null(kern);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "HATTN_MAX_BATCH_HEADS") != NULL, "%s", hattn_errmsg(g_ctx));
  pr = ok, pr.batch = 65536, pr.heads = pr.kv_heads = 65536;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "batch x heads is 4294967296, above HATTN_MAX_BATCH_HEADS") != NULL,
                "%s", hattn_errmsg(g_ctx));
  pr = ok, pr.lq = pr.lk = INT64_MAX;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "above HATTN_MAX_SEQLEN") != NULL, "%s", hattn_errmsg(g_ctx));
  pr = ok, pr.lk = big;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "lk is") != NULL, "%s", hattn_errmsg(g_ctx));
  pr = ok, pr.head_dim = 1025;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "HATTN_MAX_HEAD_DIM") != NULL, "%s", hattn_errmsg(g_ctx));
  /* Each dimension in range, the tensor too large. */
  pr = ok, pr.batch = 1 << 20, pr.heads = 1 << 10, pr.kv_heads = 1, pr.lq = HATTN_MAX_SEQLEN, pr.head_dim = 1024;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "Q and O have") != NULL &&
                    strstr(hattn_errmsg(g_ctx), "above HATTN_MAX_ELEMENTS") != NULL,
                "%s", hattn_errmsg(g_ctx));
  pr = ok, pr.batch = 1 << 20, pr.heads = pr.kv_heads = 1 << 10, pr.lq = 1, pr.lk = HATTN_MAX_SEQLEN;
  pr.head_dim = 1024;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "K and V have") != NULL, "%s", hattn_errmsg(g_ctx));
  hattn_specfile_destroy(s);
}
END_TEST

/* Fill the [B, H, S, D] DLTensors Q, K, V (host, DTYPE) with random values,
** and return the relative errors of O (DTYPE, host) and LSE against
** hattn_reference through *EO and *EL. */
static void compare_with_reference(hattn_ctx *ctx, hattn_kernel *kern, const DLTensor *q, const DLTensor *k,
                                   const DLTensor *v, const void *o, const float *lse, hattn__dtype dt,
                                   const hattn_inputs *in, double *eo, double *el) {
  int64_t *sq = q->shape, sl[3] = {q->shape[0], q->shape[1], q->shape[2]};
  size_t nq = (size_t)(sq[0] * sq[1] * sq[2] * sq[3]), nl = (size_t)(sl[0] * sl[1] * sl[2]), i;
  double *ro = malloc(nq * sizeof *ro), *rl = malloc(nl * sizeof *rl), *xo = malloc(nq * sizeof *xo),
         *xl = malloc(nl * sizeof *xl);
  DLTensor to, tl;
  int rc;
  ck_assert(ro && rl && xo && xl);
  memset(&to, 0, sizeof to), memset(&tl, 0, sizeof tl);
  to.data = ro, to.device.device_type = kDLCPU, to.ndim = 4, to.shape = sq;
  to.dtype.code = kDLFloat, to.dtype.bits = 64, to.dtype.lanes = 1;
  tl = to, tl.data = rl, tl.ndim = 3, tl.shape = sl;
  rc = hattn_reference(kern, q, k, v, &to, &tl, in);
  ck_assert_msg(rc == HATTN_OK, "reference: %s", hattn_errmsg(ctx));
  for (i = 0; i < nq; i++) xo[i] = get(o, i, dt);
  for (i = 0; i < nl; i++) xl[i] = lse[i];
  *eo = hattn__rel_error(xo, ro, nq);
  *el = hattn__rel_error(xl, rl, nl);
  free(ro), free(rl), free(xo), free(xl);
}

static void host_tensor(DLTensor *t, void *data, hattn__dtype dt, int ndim, int64_t *shape) {
  memset(t, 0, sizeof *t);
  t->data = data;
  t->device.device_type = kDLCPU;
  t->ndim = ndim;
  t->shape = shape;
  t->dtype.code = dt == HATTN_DTYPE_BF16 ? kDLBfloat : kDLFloat;
  t->dtype.bits = dt == HATTN_DTYPE_FP32 ? 32 : 16;
  t->dtype.lanes = 1;
}

/* Fresh random [B, H, S, D] float32 Q, K, V in Q, K, V (NQ and NK
** elements), and O and LSE (NQ and NL) poisoned with NaN. */
static void fresh_inputs(rng *r, float *q, float *k, float *v, float *o, float *lse, size_t nq, size_t nk,
                         size_t nl) {
  size_t i;
  for (i = 0; i < nq; i++) q[i] = (float)(2 * rng_unit(r));
  for (i = 0; i < nk; i++) k[i] = (float)(2 * rng_unit(r)), v[i] = (float)rng_unit(r);
  memset(o, 0xff, nq * sizeof *o);
  memset(lse, 0xff, nl * sizeof *lse);
}

/* Plan once, run many: one plan (document offsets and sink logits in its
** tables) serves several runs, each on fresh inputs into poisoned outputs
** and each against the float64 reference.  The inputs the plan was made
** from are overwritten after hattn_plan_create: the plan copied them. */
START_TEST(plan_run_many) {
  hattn_specfile *s = parse("pattern p = causal & document\n");
  hattn_kernel *kern = NULL;
  hattn_plan *plan = NULL;
  hattn_problem pr = {2, 4, 2, 70, 70, 32, HATTN_FP32};
  int64_t sq[4] = {2, 4, 70, 32}, sk[4] = {2, 2, 70, 32}, sl[3] = {2, 4, 70};
  int64_t offs[4], offs_copy[4];
  size_t nq = 2 * 4 * 70 * 32, nk = 2 * 2 * 70 * 32, nl = 2 * 4 * 70;
  float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4), *lse = malloc(nl * 4);
  float sinks[4];
  hattn_inputs in, in_copy;
  DLTensor tq, tk, tv, to, tl;
  rng r = {g_seed ^ 0x9a11};
  double eo, el;
  int i, run;

  ck_assert(q && k && v && o && lse);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "p", &pr, &kern), HATTN_OK);
  offs[0] = 0, offs[1] = rng_range(&r, 1, 30), offs[2] = rng_range(&r, 31, 60), offs[3] = 70;
  for (i = 0; i < 4; i++) sinks[i] = i == 1 ? -INFINITY : (float)(3.0 + 2.0 * rng_unit(&r));
  memset(&in, 0, sizeof in);
  in.doc_offsets = offs, in.ndocs = 3, in.sink_logits = sinks;
  ck_assert_int_eq(hattn_plan_create(kern, &in, &plan), HATTN_OK);
  ck_assert_ptr_nonnull(plan);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "");
  /* The reference reads a copy; the caller's arrays are scribbled over. */
  memcpy(offs_copy, offs, sizeof offs);
  in_copy = in, in_copy.doc_offsets = offs_copy;
  in_copy.sink_logits = memcpy(malloc(sizeof sinks), sinks, sizeof sinks);
  offs[1] = offs[2] = 35;
  for (i = 0; i < 4; i++) sinks[i] = NAN;

  host_tensor(&tq, q, HATTN_DTYPE_FP32, 4, sq), host_tensor(&tk, k, HATTN_DTYPE_FP32, 4, sk);
  host_tensor(&tv, v, HATTN_DTYPE_FP32, 4, sk), host_tensor(&to, o, HATTN_DTYPE_FP32, 4, sq);
  host_tensor(&tl, lse, HATTN_DTYPE_FP32, 3, sl);
  for (run = 0; run < 5; run++) {
    fresh_inputs(&r, q, k, v, o, lse, nq, nk, nl);
    ck_assert_int_eq(hattn_run(plan, &tq, &tk, &tv, &to, run % 2 ? &tl : NULL, NULL), HATTN_OK);
    ck_assert_str_eq(hattn_plan_errmsg(plan), "");
    if (run % 2 == 0) {
      /* No LSE asked for: none written. */
      for (i = 0; i < (int)nl; i++) ck_assert(isnan(lse[i]));
      ck_assert_int_eq(hattn_run(plan, &tq, &tk, &tv, &to, &tl, NULL), HATTN_OK);
    }
    compare_with_reference(g_ctx, kern, &tq, &tk, &tv, o, lse, HATTN_DTYPE_FP32, &in_copy, &eo, &el);
    ck_assert_msg(eo < 1e-5 && el < 1e-5, "run %d: error O %g LSE %g", run, eo, el);
  }
  hattn_plan_destroy(plan);
  hattn_kernel_destroy(kern);
  hattn_specfile_destroy(s);
  free((void *)in_copy.sink_logits);
  free(q), free(k), free(v), free(o), free(lse);
}
END_TEST

/* A plan keeps its context alive: it runs after its kernel is destroyed
** and its context closed, with the result it had before, and destroying
** it frees the context (the sanitizer build checks for leaks). */
START_TEST(plan_outlives_context) {
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_specfile *s = NULL;
  hattn_kernel *kern = NULL;
  hattn_plan *plan = NULL;
  hattn_problem pr = {1, 2, 1, 40, 40, 16, HATTN_FP32};
  int64_t sq[4] = {1, 2, 40, 16}, sk[4] = {1, 1, 40, 16}, sl[3] = {1, 2, 40};
  float q[2 * 40 * 16], k[40 * 16], v[40 * 16], o[2 * 40 * 16], o2[2 * 40 * 16], lse[80], lse2[80];
  DLTensor tq, tk, tv, to, tl;
  rng r = {g_seed ^ 0x9a12};
  double eo, el;
  const char *text = "pattern a = causal & window(9)\n";

  hattn_options_init(&opt);
  opt.db = "";
  opt.threads = 2;
  opt.quiet = 1;
  ck_assert_int_eq(hattn_open(&opt, &ctx), HATTN_OK);
  ck_assert_int_eq(hattn_specfile_parse(ctx, text, strlen(text), NULL, &s), HATTN_OK);
  ck_assert_int_eq(hattn_kernel_get(ctx, s, "a", &pr, &kern), HATTN_OK);
  ck_assert_int_eq(hattn_plan_create(kern, NULL, &plan), HATTN_OK);
  fresh_inputs(&r, q, k, v, o, lse, sizeof q / 4, sizeof k / 4, sizeof lse / 4);
  host_tensor(&tq, q, HATTN_DTYPE_FP32, 4, sq), host_tensor(&tk, k, HATTN_DTYPE_FP32, 4, sk);
  host_tensor(&tv, v, HATTN_DTYPE_FP32, 4, sk), host_tensor(&to, o, HATTN_DTYPE_FP32, 4, sq);
  host_tensor(&tl, lse, HATTN_DTYPE_FP32, 3, sl);
  ck_assert_int_eq(hattn_run(plan, &tq, &tk, &tv, &to, &tl, NULL), HATTN_OK);
  compare_with_reference(ctx, kern, &tq, &tk, &tv, o, lse, HATTN_DTYPE_FP32, NULL, &eo, &el);
  ck_assert_msg(eo < 1e-5 && el < 1e-5, "error O %g LSE %g", eo, el);
  hattn_kernel_destroy(kern);
  hattn_specfile_destroy(s);
  hattn_close(ctx);
  memset(o2, 0xff, sizeof o2), memset(lse2, 0xff, sizeof lse2);
  to.data = o2, tl.data = lse2;
  ck_assert_int_eq(hattn_run(plan, &tq, &tk, &tv, &to, &tl, NULL), HATTN_OK);
  ck_assert_int_eq(memcmp(o, o2, sizeof o), 0);
  ck_assert_int_eq(memcmp(lse, lse2, sizeof lse), 0);
  /* Errors still read through the plan. */
  ck_assert_int_eq(hattn_run(plan, &tk, &tk, &tv, &to, &tl, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_plan_errmsg(plan), "q: shape [1, 1, 40, 16], expected [1, 2, 40, 16]") != NULL, "%s",
                hattn_plan_errmsg(plan));
  hattn_plan_destroy(plan);
}
END_TEST

/* Calls that must fail: each code, and the message where there is a
** context to hold it. */
START_TEST(plan_errors) {
  hattn_specfile *s = parse("pattern d = causal & document\npattern c = causal\n");
  hattn_kernel *kd = NULL, *kc = NULL;
  hattn_plan *plan = (hattn_plan *)1;
  hattn_problem pr = {1, 2, 1, 16, 16, 8, HATTN_FP32};
  int64_t sq[4] = {1, 2, 16, 8}, sk[4] = {1, 1, 16, 8}, sl[3] = {1, 2, 16}, bad[4] = {1, 2, 17, 8};
  int64_t badl[3] = {1, 2, 15};
  float q[2 * 16 * 8], k[16 * 8], v[16 * 8], o[2 * 16 * 8], lse[32];
  uint16_t oh[2 * 16 * 8];
  DLTensor tq, tk, tv, to, tl, tbad;
  rng r = {g_seed ^ 0x9a13};

  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "d", &pr, &kd), HATTN_OK);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "c", &pr, &kc), HATTN_OK);
  ck_assert_int_eq(hattn_plan_create(NULL, NULL, &plan), HATTN_EINVAL);
  ck_assert_ptr_null(plan);
  ck_assert_int_eq(hattn_plan_create(kc, NULL, NULL), HATTN_EINVAL);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_plan_create: out is NULL");
  plan = (hattn_plan *)1;
  ck_assert_int_eq(hattn_plan_create(kd, NULL, &plan), HATTN_EINPUT);
  ck_assert_ptr_null(plan);
  ck_assert_msg(strstr(hattn_kernel_errmsg(kd), "doc_offsets are required") != NULL, "%s", hattn_kernel_errmsg(kd));

  fresh_inputs(&r, q, k, v, o, lse, sizeof q / 4, sizeof k / 4, sizeof lse / 4);
  host_tensor(&tq, q, HATTN_DTYPE_FP32, 4, sq), host_tensor(&tk, k, HATTN_DTYPE_FP32, 4, sk);
  host_tensor(&tv, v, HATTN_DTYPE_FP32, 4, sk), host_tensor(&to, o, HATTN_DTYPE_FP32, 4, sq);
  host_tensor(&tl, lse, HATTN_DTYPE_FP32, 3, sl);
  ck_assert_int_eq(hattn_run(NULL, &tq, &tk, &tv, &to, &tl, NULL), HATTN_EINVAL);
  ck_assert_int_eq(hattn_plan_create(kc, NULL, &plan), HATTN_OK);
  ck_assert_int_eq(hattn_run(plan, NULL, &tk, &tv, &to, &tl, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "q: missing (NULL)");
  host_tensor(&tbad, q, HATTN_DTYPE_FP32, 4, bad);
  ck_assert_int_eq(hattn_run(plan, &tq, &tk, &tv, &tbad, &tl, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "o: shape [1, 2, 17, 8], expected [1, 2, 16, 8] (dimension 2 differs)");
  host_tensor(&tbad, oh, HATTN_DTYPE_FP16, 4, sq);
  ck_assert_int_eq(hattn_run(plan, &tq, &tk, &tv, &tbad, &tl, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "o: dtype float16, expected float32");
  host_tensor(&tbad, lse, HATTN_DTYPE_FP32, 3, badl);
  ck_assert_int_eq(hattn_run(plan, &tq, &tk, &tv, &to, &tbad, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_plan_errmsg(plan), "lse: shape [1, 2, 15], expected [1, 2, 16]") != NULL, "%s",
                hattn_plan_errmsg(plan));
  tbad = tk, tbad.device.device_type = kDLCUDA;
  ck_assert_int_eq(hattn_run(plan, &tq, &tbad, &tv, &to, &tl, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_plan_errmsg(plan), "k: on device type 2") != NULL, "%s", hattn_plan_errmsg(plan));
  /* The failures wrote nothing; a good run after them succeeds. */
  ck_assert(isnan(o[0]) && isnan(lse[0]));
  ck_assert_int_eq(hattn_run(plan, &tq, &tk, &tv, &to, &tl, NULL), HATTN_OK);
  ck_assert(!isnan(o[0]) && !isnan(lse[0]));
  ck_assert_str_eq(hattn_plan_errmsg(plan), "");
  hattn_plan_destroy(plan);
  hattn_plan_destroy(NULL);
  ck_assert_str_eq(hattn_plan_errmsg(NULL), "");
  hattn_kernel_destroy(kd);
  hattn_kernel_destroy(kc);
  hattn_specfile_destroy(s);
}
END_TEST

/* A kernel compiled here (LLVM JIT) and registered as prebuilt is what
** hattn_kernel_get returns, before any database or compile; one whose
** needs the host does not meet is passed over. */
START_TEST(prebuilt_cpu) {
  const char *text = "pattern w = causal & window(20)\n";
  hattn_specfile *s = parse(text);
  hattn__spec *ispec = NULL;
  hattn__jit *jit = NULL;
  hattn__cpu_fn fn = NULL;
  hattn__cpu_config cfg;
  hattn__kernel_desc desc;
  hattn_prebuilt pb[2];
  hattn_kernel *kern = NULL, *again = NULL;
  hattn_problem pr = {1, 4, 2, 77, 77, 32, HATTN_FP32};
  int64_t sq[4] = {1, 4, 77, 32}, sk[4] = {1, 2, 77, 32}, sl[3] = {1, 4, 77};
  float q[4 * 77 * 32], k[2 * 77 * 32], v[2 * 77 * 32], o[4 * 77 * 32], lse[4 * 77];
  DLTensor tq, tk, tv, to, tl;
  char cfgtext[96], err[2048];
  double eo, el;
  rng r = {g_seed ^ 77};
  int nused = -1, rc;
  size_t i;

  ck_assert_int_eq(hattn__spec_parse(text, strlen(text), "t", &ispec, NULL), HATTN_OK);
  rc = hattn__jit_create(&jit, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "jit: %s", err);
  hattn__cpu_config_default(32, hattn__jit_vec(jit), &cfg);
  cfg.bm = 32, cfg.bn = 16;    /* not the default: the registered one must be the one run */
  desc.pattern = &ispec->patterns[0], desc.dtype = HATTN_DTYPE_FP32, desc.head_dim = 32;
  rc = hattn__jit_compile(jit, &desc, &cfg, &fn, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "compile: %s", err);
  hattn__kc_cpu_config_text(&cfg, 0, cfgtext, sizeof cfgtext);

  memset(pb, 0, sizeof pb);
  pb[0].abi = HATTN_PREBUILT_ABI, pb[0].backend = HATTN_BACKEND_CPU, pb[0].canon = ispec->patterns[0].canon;
  pb[0].dtype = HATTN_FP32, pb[0].head_dim = 32, pb[0].config = "bm=64 bn=64 rows=4 vec=8";
  pb[0].target = "imaginary", pb[0].needs = "avx2,no-such-extension";
  pb[0].cpu_fn = (hattn_cpu_kernel_fn)fn;  /* never chosen: the host lacks the extension */
  pb[1] = pb[0];
  pb[1].config = cfgtext, pb[1].target = "host", pb[1].needs = "";
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, pb, 2, &nused), HATTN_OK);
  ck_assert_int_eq(nused, 2);

  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "w", &pr, &kern), HATTN_OK);
  ck_assert_str_eq(hattn_kernel_origin(kern), "prebuilt");
  ck_assert_str_eq(hattn_kernel_config(kern), cfgtext);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "w", &pr, &again), HATTN_OK);
  ck_assert_str_eq(hattn_kernel_origin(again), "memory");

  host_tensor(&tq, q, HATTN_DTYPE_FP32, 4, sq), host_tensor(&tk, k, HATTN_DTYPE_FP32, 4, sk);
  host_tensor(&tv, v, HATTN_DTYPE_FP32, 4, sk), host_tensor(&to, o, HATTN_DTYPE_FP32, 4, sq);
  host_tensor(&tl, lse, HATTN_DTYPE_FP32, 3, sl);
  for (i = 0; i < sizeof q / sizeof q[0]; i++) q[i] = (float)rng_unit(&r);
  for (i = 0; i < sizeof k / sizeof k[0]; i++) k[i] = (float)rng_unit(&r), v[i] = (float)rng_unit(&r);
  memset(o, 0xff, sizeof o), memset(lse, 0xff, sizeof lse);
  rc = hattn_forward(kern, &tq, &tk, &tv, &to, &tl, NULL, NULL);
  ck_assert_msg(rc == HATTN_OK, "forward: %s", hattn_errmsg(g_ctx));
  compare_with_reference(g_ctx, kern, &tq, &tk, &tv, o, lse, HATTN_DTYPE_FP32, NULL, &eo, &el);
  ck_assert_msg(eo < 1e-5 && el < 1e-5, "prebuilt: error O %g LSE %g", eo, el);

  /* A kernel for another pattern is compiled as before. */
  hattn_kernel_destroy(again);
  again = NULL;
  pr.head_dim = 16;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "w", &pr, &again), HATTN_OK);
  ck_assert_str_eq(hattn_kernel_origin(again), "compiled");

  hattn_kernel_destroy(kern);
  hattn_kernel_destroy(again);
  hattn_specfile_destroy(s);
  hattn_close(g_ctx);          /* before the JIT that holds the function */
  g_ctx = NULL;
  hattn__jit_destroy(jit);
  hattn__spec_destroy(ispec);
}
END_TEST

/* Malformed registrations fail with a sentence; good entries before them stay. */
START_TEST(prebuilt_errors) {
  hattn_prebuilt pb;
  int nused = -1;
  static const char cubin[4] = {1, 2, 3, 4};

  memset(&pb, 0, sizeof pb);
  pb.abi = HATTN_PREBUILT_ABI + 1, pb.backend = HATTN_BACKEND_CPU, pb.canon = "causal";
  pb.dtype = HATTN_FP32, pb.head_dim = 64, pb.config = "bm=64 bn=64 rows=4 vec=8", pb.target = "x86-64-v3";
  pb.cpu_fn = (hattn_cpu_kernel_fn)(uintptr_t)1;
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, 1, &nused), HATTN_ENOTSUP);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "ABI") != NULL, "%s", hattn_errmsg(g_ctx));
  ck_assert_int_eq(nused, 0);

  pb.abi = HATTN_PREBUILT_ABI;
  pb.config = "bm=64 bn=sixty";
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, 1, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "is not a cpu configuration") != NULL, "%s", hattn_errmsg(g_ctx));

  pb.config = "bm=64 bn=64 rows=4 vec=8";
  pb.cpu_fn = NULL;
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, 1, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "no function") != NULL, "%s", hattn_errmsg(g_ctx));

  pb.cpu_fn = (hattn_cpu_kernel_fn)(uintptr_t)1;
  pb.canon = NULL;
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, 1, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "canonical pattern") != NULL, "%s", hattn_errmsg(g_ctx));

  pb.canon = "causal";
  pb.dtype = 9;
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, 1, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "dtype 9") != NULL, "%s", hattn_errmsg(g_ctx));

  pb.dtype = HATTN_BF16, pb.backend = HATTN_BACKEND_CUDA, pb.cpu_fn = NULL;
  pb.config = "bm=64 bn=64 warps=4 stages=2", pb.target = "sm_9x", pb.cubin = cubin, pb.cubin_size = sizeof cubin;
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, 1, NULL), HATTN_EINVAL);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "not a CUDA arch") != NULL, "%s", hattn_errmsg(g_ctx));

  /* A CUDA kernel in a CPU context: valid, and skipped. */
  pb.target = "sm_90a";
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, 1, &nused), HATTN_OK);
  ck_assert_int_eq(nused, 0);
  ck_assert_int_eq(hattn_add_prebuilt(g_ctx, &pb, -1, NULL), HATTN_EINVAL);
}
END_TEST

START_TEST(arch_rules) {
  ck_assert_int_eq(hattn__kc_arch_runs("sm_90a", 90), 2);
  ck_assert_int_eq(hattn__kc_arch_runs("sm_90a", 100), 0);
  ck_assert_int_eq(hattn__kc_arch_runs("sm_80", 86), 1);
  ck_assert_int_eq(hattn__kc_arch_runs("sm_86", 80), 0);
  ck_assert_int_eq(hattn__kc_arch_runs("sm_80", 90), 0);
  ck_assert_int_eq(hattn__kc_arch_runs("sm_8", 80), 0);
  ck_assert_int_eq(hattn__kc_arch_runs("sm_80x", 80), 0);
  ck_assert(hattn__kc_features_cover("avx,avx2,fma", "avx2,fma"));
  ck_assert(hattn__kc_features_cover("avx,avx2,fma", ""));
  ck_assert(!hattn__kc_features_cover("avx,avx2,fma", "avx2,avx512f"));
  ck_assert(!hattn__kc_features_cover("avx,avx2", "avx2,av"));
}
END_TEST

/* The host as CPUID reads it agrees with the kernel's view in /proc/cpuinfo. */
START_TEST(host_cpu_probe) {
  hattn__host_cpu h;
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[8192];
  int found = 0;
  hattn__host_cpu_probe(&h);
  ck_assert(h.name[0] != 0 && h.target[0] != 0 && h.cores >= 1);
  ck_assert(h.vec == 8 || h.vec == 16);
  if (f == NULL) return;
  while (!found && fgets(line, sizeof line, f))
    if (!strncmp(line, "flags", 5)) {
      found = 1;
      ck_assert_msg(!!strstr(line, " avx2") == hattn__kc_features_cover(h.all, "avx2"), "avx2: %s", h.all);
      ck_assert_msg(!!strstr(line, " fma") == hattn__kc_features_cover(h.all, "fma"), "fma: %s", h.all);
      ck_assert_msg(!!strstr(line, " avx512f") == (h.vec == 16), "avx512f: %s", h.all);
    }
  fclose(f);
}
END_TEST

START_TEST(reference_errors) {
  hattn_specfile *s = parse("pattern a = causal\n");
  hattn_kernel *kern = NULL;
  hattn_problem pr = {1, 1, 1, 8, 8, 16, HATTN_FP32};
  float q[8 * 16] = {0};
  double o[8 * 16];
  int64_t sq[4] = {1, 1, 8, 16};
  DLTensor tq, to;
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "a", &pr, &kern), HATTN_OK);
  host_tensor(&tq, q, HATTN_DTYPE_FP32, 4, sq);
  host_tensor(&to, o, HATTN_DTYPE_FP32, 4, sq);   /* float32, not float64 */
  ck_assert_int_eq(hattn_reference(kern, &tq, &tq, &tq, &to, NULL, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "o: dtype float32, expected float64") != NULL, "%s",
                hattn_errmsg(g_ctx));
  to.dtype.bits = 64;
  ck_assert_int_eq(hattn_reference(kern, &tq, &tq, &tq, &to, NULL, NULL), HATTN_OK);
  tq.device.device_type = kDLCUDA;
  ck_assert_int_eq(hattn_reference(kern, &tq, &tq, &tq, &to, NULL, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), "q: on device") != NULL, "%s", hattn_errmsg(g_ctx));
  hattn_kernel_destroy(kern);
  hattn_specfile_destroy(s);
}
END_TEST

/* ---- CUDA through the public API (skipped without a GPU) ------------------ */

typedef struct gcase {
  const char *mask;
  int64_t b, h, hk, lq, lk, d;
  int docs, prebuilt;
  int extra;   /* run-time overrides: 1 alibi slopes, 2 sink logits, 4 seed */
} gcase;

static const gcase g_gpu_cases[] = {
  {"causal", 2, 4, 2, 300, 300, 128, 0, 0, 0},
  {"causal & window(100)", 1, 4, 4, 257, 400, 64, 0, 0, 0},
  {"causal & document", 2, 2, 1, 333, 333, 128, 1, 0, 0},
  {"sink(4) | causal & window(64)", 1, 8, 2, 200, 200, 128, 0, 1, 0},
  {"causal & document", 1, 4, 2, 190, 190, 64, 1, 1, 0},
  {"causal with alibi", 1, 4, 2, 300, 300, 128, 0, 0, 3},
  {"causal & window(100)", 1, 4, 4, 400, 257, 128, 0, 0, 2},
  {"random(2, 5) | causal & window(64) with softcap(30)", 1, 4, 4, 500, 500, 64, 0, 1, 6},
};

START_TEST(cuda_forward) {
  const gcase *tc = &g_gpu_cases[_i];
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn__cuda *cu = NULL;
  hattn_specfile *s;
  hattn__spec *ispec = NULL;
  hattn_kernel *kern = NULL;
  hattn_problem pr = {tc->b, tc->h, tc->hk, tc->lq, tc->lk, tc->d, HATTN_BF16};
  hattn_inputs in;
  int64_t sq[4] = {tc->b, tc->h, tc->lq, tc->d}, sk[4] = {tc->b, tc->hk, tc->lk, tc->d};
  int64_t sl[3] = {tc->b, tc->h, tc->lq}, offs[4] = {0, tc->lk / 3, tc->lk / 3 + 50, tc->lk};
  size_t nq = (size_t)(tc->b * tc->h * tc->lq * tc->d), nk = (size_t)(tc->b * tc->hk * tc->lk * tc->d);
  size_t nl = (size_t)(tc->b * tc->h * tc->lq), i;
  uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *o = malloc(nq * 2);
  float *lse = malloc(nl * 4);
  void *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL, *dl = NULL, *cubin = NULL;
  DLTensor tq, tk, tv, to, tl, hq, hk, hv;
  char text[256], err[16384], name[160];
  float slopes[16], sinks[16];
  double eo, el;
  rng r = {g_seed ^ (uint64_t)(_i + 1000)};
  int rc;

  hattn_options_init(&opt);
  opt.backend = HATTN_BACKEND_CUDA;
  opt.db = "";
  opt.quiet = 1;
  rc = hattn_open(&opt, &ctx);
  if (rc == HATTN_ENODEV) {
    ck_assert(strstr(hattn_errmsg(ctx), "no CUDA") != NULL);
    printf("cuda_forward: skipped: %s\n", hattn_errmsg(ctx));
    hattn_close(ctx);
    free(q), free(k), free(v), free(o), free(lse);
    return;
  }
  ck_assert_msg(rc == HATTN_OK, "open: %s", hattn_errmsg(ctx));
  ck_assert_int_eq(hattn__cuda_open(0, &cu, err, sizeof err), HATTN_OK);
  snprintf(text, sizeof text, "pattern p = %s\n", tc->mask);
  ck_assert_int_eq(hattn_specfile_parse(ctx, text, strlen(text), "t", &s), HATTN_OK);
  ck_assert_int_eq(hattn__spec_parse(text, strlen(text), "t", &ispec, NULL), HATTN_OK);

  if (tc->prebuilt) {
    /* A cubin made here, as hattn gen makes it, registered for this arch. */
    hattn__kernel_desc desc = {&ispec->patterns[0], HATTN_DTYPE_BF16, (int)tc->d};
    hattn__cuda_config cfg;
    hattn_prebuilt pb;
    char *src = NULL, cfgtext[96];
    size_t size = 0;
    int nused = 0;
    hattn__cuda_config_default(&desc, hattn__cuda_sm(cu), &cfg);
    hattn__cuda_kernel_name(&desc, &cfg, name, sizeof name);
    ck_assert_int_eq(hattn__emit_cuda(&desc, &cfg, name, &src, err, sizeof err), HATTN_OK);
    rc = hattn__nvrtc_compile(src, name, hattn__cuda_arch(cu), &cubin, &size, err, sizeof err);
    free(src);
    ck_assert_msg(rc == HATTN_OK, "nvrtc: %s", err);
    hattn__kc_cuda_config_text(&cfg, cfgtext, sizeof cfgtext);
    memset(&pb, 0, sizeof pb);
    pb.abi = HATTN_PREBUILT_ABI, pb.backend = HATTN_BACKEND_CUDA, pb.canon = ispec->patterns[0].canon;
    pb.dtype = HATTN_BF16, pb.head_dim = (int)tc->d, pb.config = cfgtext, pb.target = hattn__cuda_arch(cu);
    pb.cubin = cubin, pb.cubin_size = size;
    ck_assert_int_eq(hattn_add_prebuilt(ctx, &pb, 1, &nused), HATTN_OK);
    ck_assert_int_eq(nused, 1);
  }
  rc = hattn_kernel_get(ctx, s, "p", &pr, &kern);
  ck_assert_msg(rc == HATTN_OK, "kernel: %s", hattn_errmsg(ctx));
  ck_assert_str_eq(hattn_kernel_origin(kern), tc->prebuilt ? "prebuilt" : "compiled");

  for (i = 0; i < nq; i++) put(q, i, HATTN_DTYPE_BF16, 2 * rng_unit(&r));
  for (i = 0; i < nk; i++) put(k, i, HATTN_DTYPE_BF16, 2 * rng_unit(&r)), put(v, i, HATTN_DTYPE_BF16, rng_unit(&r));
  ck_assert_int_eq(hattn__cuda_alloc(cu, nq * 2, &dq, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_alloc(cu, nk * 2, &dk, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_alloc(cu, nk * 2, &dv, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_alloc(cu, nq * 2, &dout, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_alloc(cu, nl * 4, &dl, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_upload(cu, dq, q, nq * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_upload(cu, dk, k, nk * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_upload(cu, dv, v, nk * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_memset(cu, dout, 0xff, nq * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_memset(cu, dl, 0xff, nl * 4, err, sizeof err), HATTN_OK);

  host_tensor(&tq, dq, HATTN_DTYPE_BF16, 4, sq), host_tensor(&tk, dk, HATTN_DTYPE_BF16, 4, sk);
  host_tensor(&tv, dv, HATTN_DTYPE_BF16, 4, sk), host_tensor(&to, dout, HATTN_DTYPE_BF16, 4, sq);
  host_tensor(&tl, dl, HATTN_DTYPE_FP32, 3, sl);
  tq.device.device_type = tk.device.device_type = tv.device.device_type = kDLCUDA;
  to.device.device_type = tl.device.device_type = kDLCUDA;
  memset(&in, 0, sizeof in);
  if (tc->docs) in.doc_offsets = offs, in.ndocs = 3;
  for (i = 0; i < 16; i++) {
    slopes[i] = (float)(0.05 + 0.2 * rng_unit(&r));
    sinks[i] = i == 1 ? -INFINITY : (float)(3.0 + 2.0 * rng_unit(&r));
  }
  if (tc->extra & 1) in.alibi_slopes = slopes;
  if (tc->extra & 2) in.sink_logits = sinks;
  if (tc->extra & 4) in.seed = rng_next(&r) | 1;
  rc = hattn_forward(kern, &tq, &tk, &tv, &to, &tl, &in, NULL);
  ck_assert_msg(rc == HATTN_OK, "forward: %s", hattn_errmsg(ctx));
  ck_assert_int_eq(hattn__cuda_download(cu, o, dout, nq * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_download(cu, lse, dl, nl * 4, err, sizeof err), HATTN_OK);

  /* Host tensors on a CUDA kernel are refused. */
  host_tensor(&hq, q, HATTN_DTYPE_BF16, 4, sq);
  ck_assert_int_eq(hattn_forward(kern, &hq, &tk, &tv, &to, &tl, &in, NULL), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(ctx), "q: on device") != NULL, "%s", hattn_errmsg(ctx));

  host_tensor(&hk, k, HATTN_DTYPE_BF16, 4, sk), host_tensor(&hv, v, HATTN_DTYPE_BF16, 4, sk);
  compare_with_reference(ctx, kern, &hq, &hk, &hv, o, lse, HATTN_DTYPE_BF16, &in, &eo, &el);
  ck_assert_msg(eo < 1e-2 && el < 1e-2, "'%s' cuda%s extra %d: error O %g LSE %g", tc->mask,
                tc->prebuilt ? " prebuilt" : "", tc->extra, eo, el);
  printf("cuda_forward '%s'%s extra %d: O %.2e LSE %.2e (%s)\n", tc->mask, tc->prebuilt ? " prebuilt" : "",
         tc->extra, eo, el, hattn_kernel_config(kern));
  if (tc->extra) {
    /* Without the overrides the reference must differ from the kernel. */
    hattn_inputs plain = in;
    plain.alibi_slopes = NULL, plain.sink_logits = NULL, plain.seed = 0;
    compare_with_reference(ctx, kern, &hq, &hk, &hv, o, lse, HATTN_DTYPE_BF16, &plain, &eo, &el);
    ck_assert_msg(eo > 1e-2 || el > 1e-2, "'%s' extra %d: the overrides made no difference", tc->mask, tc->extra);
  }

  hattn__cuda_free(cu, dq), hattn__cuda_free(cu, dk), hattn__cuda_free(cu, dv);
  hattn__cuda_free(cu, dout), hattn__cuda_free(cu, dl);
  hattn_kernel_destroy(kern);
  hattn_specfile_destroy(s);
  hattn_close(ctx);
  hattn__cuda_close(cu);
  hattn__spec_destroy(ispec);
  free(cubin);
  free(q), free(k), free(v), free(o), free(lse);
}
END_TEST

/* ---- hattn_merge ---------------------------------------------------------- */

/* Elements of a [B, H, L, D] tensor of DTYPE in memory laid out as
** [B, L, H, D] when BSHD, else row-major; LSE as [B, H, L] (any layout
** the strides say). */
static size_t merge_bytes(hattn__dtype dt) { return dt == HATTN_DTYPE_FP32 ? 4 : 2; }

/* The float64 merge of NP parts (O of DTYPE at offsets ST, LSE float32
** row-major [B*H*L]) into RO [B*H*L*D] and RL [B*H*L], row-major. */
static void merge_ref(int np, void *const *o, const int64_t (*st)[4], float *const *lse, hattn__dtype dt,
                      const int64_t dims[4], double *ro, double *rl) {
  int64_t b, h, l, d, row = 0;
  int i;
  for (b = 0; b < dims[0]; b++)
    for (h = 0; h < dims[1]; h++)
      for (l = 0; l < dims[2]; l++, row++) {
        double m = -INFINITY, s = 0, w[HATTN_MERGE_MAX_PARTS];
        for (i = 0; i < np; i++)
          if (lse[i][row] > m) m = lse[i][row];
        for (i = 0; i < np; i++) s += (w[i] = lse[i][row] == -INFINITY ? 0 : exp(lse[i][row] - m));
        rl[row] = m == -INFINITY ? -INFINITY : m + log(s);
        for (d = 0; d < dims[3]; d++) {
          double acc = 0;
          for (i = 0; i < np; i++)
            if (w[i] != 0)
              acc += w[i] * get(o[i], (size_t)(b * st[i][0] + h * st[i][1] + l * st[i][2] + d), dt);
          ro[row * dims[3] + d] = m == -INFINITY ? 0 : acc / s;
        }
      }
}

/* Fresh random parts: LSE in [-6, 6] with about one entry in six -inf (its
** O row then NaN, which must add nothing), every third row of the first
** (b, h) -inf in every part; each part's O in [B, H, L, D] or [B, L, H, D]
** memory at random. */
static void merge_parts_fill(rng *r, int np, void **o, int64_t (*st)[4], float **lse, hattn__dtype dt,
                             const int64_t dims[4]) {
  int64_t nl = dims[0] * dims[1] * dims[2], row, d, b, h, l;
  int i;
  for (i = 0; i < np; i++) {
    strides_of((int)(rng_next(r) & 1), dims[1], dims[2], dims[3], st[i]);
    for (row = 0; row < nl; row++) {
      int none = rng_range(r, 0, 5) == 0 || (row < dims[2] && row % 3 == 0);
      lse[i][row] = none ? -INFINITY : (float)(6 * rng_unit(r));
      b = row / (dims[1] * dims[2]), h = row / dims[2] % dims[1], l = row % dims[2];
      for (d = 0; d < dims[3]; d++)
        put(o[i], (size_t)(b * st[i][0] + h * st[i][1] + l * st[i][2] + d), dt, none ? NAN : rng_unit(r));
    }
  }
}

/* Random partial results, 1, 2, 3, 5 and 16 parts in each dtype, merged
** into poisoned outputs (O in [B, L, H, D] memory half the time, LSE
** strided) and compared with the float64 merge; rows no part saw are
** exactly O = 0, LSE = -inf; a NaN LSE makes its row NaN. */
START_TEST(merge_random) {
  static const int nps[] = {1, 2, 3, 5, 16};
  const hattn__dtype dt = (hattn__dtype)(_i / 5);
  const int np = nps[_i % 5];
  const double tol = dt == HATTN_DTYPE_FP32 ? 1e-5 : dt == HATTN_DTYPE_FP16 ? 2e-3 : 1.5e-2;
  rng r = {g_seed ^ (0x3e69 + (uint64_t)_i)};
  int64_t dims[4] = {2, 3, rng_range(&r, 5, 40), rng_range(&r, 1, 3) * 16 + rng_range(&r, 0, 1)};
  int64_t nl = dims[0] * dims[1] * dims[2], no = nl * dims[3], st[HATTN_MERGE_MAX_PARTS][4], sto[4];
  int64_t stl[3] = {1, dims[0], dims[0] * dims[1]};   /* LSE out as [L, H, B] memory */
  int64_t sl[3] = {dims[0], dims[1], dims[2]};
  void *o[HATTN_MERGE_MAX_PARTS], *out = malloc((size_t)no * merge_bytes(dt));
  float *lse[HATTN_MERGE_MAX_PARTS], *lout = malloc((size_t)nl * 4);
  double *ro = malloc((size_t)no * 8), *rl = malloc((size_t)nl * 8), *xo = malloc((size_t)no * 8),
         *xl = malloc((size_t)nl * 8);
  DLTensor to[HATTN_MERGE_MAX_PARTS], tl[HATTN_MERGE_MAX_PARTS], too, tlo;
  const DLTensor *po[HATTN_MERGE_MAX_PARTS], *pl[HATTN_MERGE_MAX_PARTS];
  int64_t row, d;
  int i, bshd = (int)(rng_next(&r) & 1), rep;

  ck_assert(out && lout && ro && rl && xo && xl);
  for (i = 0; i < np; i++) {
    o[i] = malloc((size_t)no * merge_bytes(dt)), lse[i] = malloc((size_t)nl * 4);
    ck_assert(o[i] && lse[i]);
  }
  for (rep = 0; rep < 2; rep++) {
    merge_parts_fill(&r, np, o, st, lse, dt, dims);
    for (i = 0; i < np; i++) {
      host_tensor(&to[i], o[i], dt, 4, dims), to[i].strides = st[i];
      host_tensor(&tl[i], lse[i], HATTN_DTYPE_FP32, 3, sl);
      po[i] = &to[i], pl[i] = &tl[i];
    }
    strides_of(bshd, dims[1], dims[2], dims[3], sto);
    host_tensor(&too, out, dt, 4, dims), too.strides = sto;
    host_tensor(&tlo, lout, HATTN_DTYPE_FP32, 3, sl), tlo.strides = stl;
    memset(out, 0xff, (size_t)no * merge_bytes(dt));
    memset(lout, 0xff, (size_t)nl * 4);
    ck_assert_msg(hattn_merge(g_ctx, np, po, pl, &too, &tlo, NULL) == HATTN_OK, "merge: %s", hattn_errmsg(g_ctx));
    ck_assert_str_eq(hattn_errmsg(g_ctx), "");
    merge_ref(np, o, (const int64_t(*)[4])st, lse, dt, dims, ro, rl);
    for (row = 0; row < nl; row++) {
      int64_t b = row / (dims[1] * dims[2]), h = row / dims[2] % dims[1], l = row % dims[2];
      xl[row] = lout[b * stl[0] + h * stl[1] + l * stl[2]];
      for (d = 0; d < dims[3]; d++) xo[row * dims[3] + d] = get(out, (size_t)(b * sto[0] + h * sto[1] + l * sto[2] + d), dt);
      if (rl[row] == -INFINITY) {
        ck_assert_msg(xl[row] == -INFINITY, "row %lld: LSE %g, expected -inf", (long long)row, xl[row]);
        for (d = 0; d < dims[3]; d++) ck_assert_msg(xo[row * dims[3] + d] == 0, "row %lld: O not 0", (long long)row);
        xl[row] = rl[row] = 0;   /* out of the error's sums */
      }
    }
    ck_assert_msg(hattn__rel_error(xo, ro, (size_t)no) < tol, "%d parts dtype %d: O error %g", np, (int)dt,
                  hattn__rel_error(xo, ro, (size_t)no));
    ck_assert_msg(hattn__rel_error(xl, rl, (size_t)nl) < 1e-5, "%d parts dtype %d: LSE error %g", np, (int)dt,
                  hattn__rel_error(xl, rl, (size_t)nl));
    /* A NaN LSE reaches its row; LSE NULL writes none. */
    lse[np - 1][nl - 1] = NAN;
    memset(lout, 0xff, (size_t)nl * 4);
    ck_assert_int_eq(hattn_merge(g_ctx, np, po, pl, &too, NULL, NULL), HATTN_OK);
    ck_assert(isnan(get(out, (size_t)((dims[0] - 1) * sto[0] + (dims[1] - 1) * sto[1] + (dims[2] - 1) * sto[2]), dt)));
    for (row = 0; row < nl; row++) ck_assert(isnan(lout[row]));
  }
  for (i = 0; i < np; i++) free(o[i]), free(lse[i]);
  free(out), free(lout), free(ro), free(rl), free(xo), free(xl);
}
END_TEST

/* End to end: attention of Q over K = [K_1; ...; K_n] with the full pattern
** is the merge of attention over each slice (views into K and V at a byte
** offset), against hattn_reference of the whole problem; 2 and 3 parts. */
START_TEST(merge_split_keys) {
  static const int64_t cuts[2][4] = {{0, 30, 80, -1}, {0, 20, 45, 80}};
  const int np = _i + 2;
  hattn_specfile *s = parse("pattern p = full\n");
  hattn_kernel *kfull = NULL, *kp[3] = {NULL, NULL, NULL};
  hattn_problem pr = {2, 4, 2, 40, 80, 32, HATTN_FP32};
  int64_t sq[4] = {2, 4, 40, 32}, sk[4] = {2, 2, 80, 32}, sl[3] = {2, 4, 40}, skp[3][4], stk[4];
  size_t nq = 2 * 4 * 40 * 32, nk = 2 * 2 * 80 * 32, nl = 2 * 4 * 40;
  float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4), *lse = malloc(nl * 4);
  float *op[3], *lp[3];
  DLTensor tq, tk, tv, to, tl, tkp[3], tvp[3], top[3], tlp[3];
  const DLTensor *po[3], *pl[3];
  rng r = {g_seed ^ 0x5e7};
  double eo, el;
  int i;

  ck_assert(q && k && v && o && lse);
  ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "p", &pr, &kfull), HATTN_OK);
  fresh_inputs(&r, q, k, v, o, lse, nq, nk, nl);
  host_tensor(&tq, q, HATTN_DTYPE_FP32, 4, sq), host_tensor(&tk, k, HATTN_DTYPE_FP32, 4, sk);
  host_tensor(&tv, v, HATTN_DTYPE_FP32, 4, sk), host_tensor(&to, o, HATTN_DTYPE_FP32, 4, sq);
  host_tensor(&tl, lse, HATTN_DTYPE_FP32, 3, sl);
  strides_of(0, 2, 80, 32, stk);
  for (i = 0; i < np; i++) {
    int64_t lk = cuts[_i][i + 1] - cuts[_i][i];
    hattn_problem pp = pr;
    pp.lk = lk;
    ck_assert_int_eq(hattn_kernel_get(g_ctx, s, "p", &pp, &kp[i]), HATTN_OK);
    skp[i][0] = 2, skp[i][1] = 2, skp[i][2] = lk, skp[i][3] = 32;
    host_tensor(&tkp[i], k, HATTN_DTYPE_FP32, 4, skp[i]), tkp[i].strides = stk;
    host_tensor(&tvp[i], v, HATTN_DTYPE_FP32, 4, skp[i]), tvp[i].strides = stk;
    tkp[i].byte_offset = tvp[i].byte_offset = (uint64_t)(cuts[_i][i] * 32 * 4);
    op[i] = malloc(nq * 4), lp[i] = malloc(nl * 4);
    ck_assert(op[i] && lp[i]);
    memset(op[i], 0xff, nq * 4), memset(lp[i], 0xff, nl * 4);
    host_tensor(&top[i], op[i], HATTN_DTYPE_FP32, 4, sq), host_tensor(&tlp[i], lp[i], HATTN_DTYPE_FP32, 3, sl);
    ck_assert_msg(hattn_forward(kp[i], &tq, &tkp[i], &tvp[i], &top[i], &tlp[i], NULL, NULL) == HATTN_OK,
                  "forward part %d: %s", i, hattn_errmsg(g_ctx));
    po[i] = &top[i], pl[i] = &tlp[i];
  }
  ck_assert_msg(hattn_merge(g_ctx, np, po, pl, &to, &tl, NULL) == HATTN_OK, "merge: %s", hattn_errmsg(g_ctx));
  compare_with_reference(g_ctx, kfull, &tq, &tk, &tv, o, lse, HATTN_DTYPE_FP32, NULL, &eo, &el);
  ck_assert_msg(eo < 1e-5 && el < 1e-5, "%d parts: error O %g LSE %g", np, eo, el);
  for (i = 0; i < np; i++) hattn_kernel_destroy(kp[i]), free(op[i]), free(lp[i]);
  hattn_kernel_destroy(kfull);
  hattn_specfile_destroy(s);
  free(q), free(k), free(v), free(o), free(lse);
}
END_TEST

/* What hattn_merge refuses, each with its code and a sentence naming the
** argument. */
START_TEST(merge_errors) {
  int64_t dims[4] = {1, 2, 3, 4}, dl[3] = {1, 2, 3}, bad[4] = {1, 2, 4, 4}, badl[3] = {1, 2, 2};
  float o1[24], o2[24], out[24], l1[6], l2[6], lout[6];
  uint16_t h[24];
  int32_t ints[24];
  int64_t big[4] = {INT64_C(1) << 20, INT64_C(1) << 20, INT64_C(1) << 10, 1};
  DLTensor to1, to2, tout, tl1, tl2, tlout, th, ti, tbad, tbadl, tgpu, huge;
  const DLTensor *po[HATTN_MERGE_MAX_PARTS + 1], *pl[HATTN_MERGE_MAX_PARTS + 1];
  int i;

  memset(o1, 0, sizeof o1), memset(o2, 0, sizeof o2), memset(l1, 0, sizeof l1), memset(l2, 0, sizeof l2);
  host_tensor(&to1, o1, HATTN_DTYPE_FP32, 4, dims), host_tensor(&to2, o2, HATTN_DTYPE_FP32, 4, dims);
  host_tensor(&tout, out, HATTN_DTYPE_FP32, 4, dims);
  host_tensor(&tl1, l1, HATTN_DTYPE_FP32, 3, dl), host_tensor(&tl2, l2, HATTN_DTYPE_FP32, 3, dl);
  host_tensor(&tlout, lout, HATTN_DTYPE_FP32, 3, dl);
  host_tensor(&th, h, HATTN_DTYPE_FP16, 4, dims);
  host_tensor(&ti, ints, HATTN_DTYPE_FP32, 4, dims), ti.dtype.code = kDLInt;
  host_tensor(&tbad, o2, HATTN_DTYPE_FP32, 4, bad), host_tensor(&tbadl, l2, HATTN_DTYPE_FP32, 3, badl);
  tgpu = to2, tgpu.device.device_type = kDLCUDA;
  for (i = 0; i <= HATTN_MERGE_MAX_PARTS; i++) po[i] = &to1, pl[i] = &tl1;

  ck_assert_int_eq(hattn_merge(NULL, 1, po, pl, &tout, &tlout, NULL), HATTN_EINVAL);
  ck_assert_int_eq(hattn_merge(g_ctx, 0, po, pl, &tout, &tlout, NULL), HATTN_EINVAL);
  ck_assert_ptr_nonnull(strstr(hattn_errmsg(g_ctx), "0 parts; between 1 and 16"));
  ck_assert_int_eq(hattn_merge(g_ctx, HATTN_MERGE_MAX_PARTS + 1, po, pl, &tout, &tlout, NULL), HATTN_EINVAL);
  ck_assert_ptr_nonnull(strstr(hattn_errmsg(g_ctx), "17 parts; between 1 and 16 (HATTN_MERGE_MAX_PARTS)"));
  ck_assert_int_eq(hattn_merge(g_ctx, HATTN_MERGE_MAX_PARTS, po, pl, &tout, &tlout, NULL), HATTN_OK);
  ck_assert_int_eq(hattn_merge(g_ctx, 2, NULL, pl, &tout, &tlout, NULL), HATTN_EINVAL);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: o_parts is NULL");
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, NULL, &tout, &tlout, NULL), HATTN_EINVAL);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: lse_parts is NULL");
  po[1] = NULL;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: o_parts[1]: missing (NULL)");
  po[1] = &th;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: o_parts[1]: dtype float16, expected float32");
  po[1] = &tbad;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: o_parts[1]: dimension 2 is 4, expected 3 (as o_parts[0])");
  po[1] = &tgpu;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_ptr_nonnull(strstr(hattn_errmsg(g_ctx), "o_parts[1]: on device type 2 id 0; this context runs on kDLCPU"));
  po[1] = &to2, pl[1] = &tbadl;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: lse_parts[1]: dimension 2 is 2, expected 3 (as o_parts[0])");
  pl[1] = &to2;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: lse_parts[1]: 4 dimensions, expected 3");
  pl[1] = &tl2;
  po[0] = &ti;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: o_parts[0]: dtype int32; float32, float16 or bfloat16 expected");
  huge = to1, huge.shape = big;
  po[0] = &huge;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: o_parts[0]: more than HATTN_MAX_ELEMENTS (2^48) elements");
  po[0] = &to1;
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &th, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: o: dtype float16, expected float32");
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, NULL, &tlout, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: o: missing (NULL)");
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &to1, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "hattn_merge: lse: 4 dimensions, expected 3");
  ck_assert_int_eq(hattn_merge(g_ctx, 2, po, pl, &tout, &tlout, NULL), HATTN_OK);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "");
}
END_TEST

static Suite *api_suite(void) {
  Suite *s = suite_create("api");
  TCase *tc = tcase_create("api");
  tcase_set_timeout(tc, 300);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, spec_errors);
  tcase_add_test(tc, unknown_pattern);
  tcase_add_test(tc, bad_tensors);
  tcase_add_test(tc, destroys_and_codes);
  tcase_add_test(tc, null_handles);
  tcase_add_test(tc, version_macros);
  tcase_add_test(tc, kernel_outlives_context);
  tcase_add_test(tc, problem_limits);
  tcase_add_loop_test(tc, forward_vs_reference, 0, (int)(sizeof g_cases / sizeof g_cases[0]));
  tcase_add_test(tc, prebuilt_cpu);
  tcase_add_test(tc, prebuilt_errors);
  tcase_add_test(tc, arch_rules);
  tcase_add_test(tc, host_cpu_probe);
  tcase_add_test(tc, reference_errors);
  tcase_add_test(tc, plan_run_many);
  tcase_add_test(tc, caller_threadpool);
  tcase_add_test(tc, plan_outlives_context);
  tcase_add_test(tc, plan_errors);
  tcase_add_loop_test(tc, merge_random, 0, 15);
  tcase_add_loop_test(tc, merge_split_keys, 0, 2);
  tcase_add_test(tc, merge_errors);
  tcase_add_loop_test(tc, cuda_forward, 0, (int)(sizeof g_gpu_cases / sizeof g_gpu_cases[0]));
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return api_main(api_suite, &g_seed); }
