/*
** test_varlen.c: variable-length batches (hattn_inputs.q_lens, k_lens) on
** the CPU backend.  Batches of 3 or 4 sequences with lengths 0, 1, the
** maximum and odd values, decode-like (q_len 1..4) and prefill (q_len =
** k_len), fp32 and bf16, GQA 8/2, position patterns with alibi and
** softcap.  Q rows past q_len and K, V rows past k_len hold NaN (never to
** be read); O and LSE are poisoned before each run.  Each run is compared
** with the float64 reference, and each batch entry with a run of that
** sequence alone (the defining property); rows past q_len must be O 0 and
** LSE -inf.  A plan runs twice; paged K and V with k_lens; then every
** error path with its code and message.  Exits 77 (skip) without LLVM.
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "backend.h"
#include "reference.h"
#include "spec.h"

static uint64_t g_seed;

#include "testutil.h"
#include "api_main.h"

static hattn_ctx *g_ctx;
static hattn_specfile *g_spec;

static const char *g_patterns[] = {"full", "causal", "window", "sinkwin", "chunk", "dilated", "alibi", "softcap"};
#define NPATTERNS 8
static const char *g_text = "pattern full = full\n"
                            "pattern causal = causal\n"
                            "pattern window = causal & window(37)\n"
                            "pattern sinkwin = sink(4) | window(20)\n"
                            "pattern chunk = chunk(32) & causal\n"
                            "pattern dilated = dilated(4, 3)\n"
                            "pattern alibi = causal with alibi\n"
                            "pattern softcap = causal & window(37) with softcap(30)\n"
                            "pattern docs = causal & document\n";

static void setup(void) { api_open(g_text, "varlen.hattn", &g_ctx, &g_spec); }

static void teardown(void) {
  hattn_specfile_destroy(g_spec);
  hattn_close(g_ctx);
  g_spec = NULL;
  g_ctx = NULL;
}

/* A padded batch: tensors [B, H, LQ, D] and [B, HK, LK, D] with the
** lengths of each entry; Q rows past q_len and K, V rows past k_len NaN. */
typedef struct batch {
  hattn__dtype dt;
  int64_t b, h, hk, lq, lk, d;
  int32_t ql[4], kl[4];
  int64_t sq[4], sk[4], sl[3];
  void *q, *k, *v, *o;
  float *lse;
  double *ro, *rl;
  DLTensor tq, tk, tv, to, tl, tro, trl;
  hattn_inputs in;
} batch;

static void batch_fill(batch *x, rng *r) {
  int64_t b, h, t, i;
  for (b = 0; b < x->b; b++) {
    for (h = 0; h < x->h; h++)
      for (t = 0; t < x->lq; t++)
        for (i = 0; i < x->d; i++)
          put(x->q, (size_t)(((b * x->h + h) * x->lq + t) * x->d + i), x->dt, t < x->ql[b] ? rng_unit(r) : NAN);
    for (h = 0; h < x->hk; h++)
      for (t = 0; t < x->lk; t++)
        for (i = 0; i < x->d; i++) {
          size_t at = (size_t)(((b * x->hk + h) * x->lk + t) * x->d + i);
          put(x->k, at, x->dt, t < x->kl[b] ? rng_unit(r) : NAN);
          put(x->v, at, x->dt, t < x->kl[b] ? rng_unit(r) : NAN);
        }
  }
}

static void batch_poison(batch *x) {
  size_t i, n = (size_t)(x->b * x->h * x->lq);
  for (i = 0; i < n * (size_t)x->d; i++) put(x->o, i, x->dt, NAN);
  for (i = 0; i < n; i++) x->lse[i] = NAN;
}

static void batch_make(batch *x, hattn__dtype dt, int64_t b, int64_t lq, int64_t lk, rng *r) {
  size_t nq, nk;
  memset(x, 0, sizeof *x);
  x->dt = dt, x->b = b, x->h = 8, x->hk = 2, x->lq = lq, x->lk = lk, x->d = 64;
  x->sq[0] = b, x->sq[1] = x->h, x->sq[2] = lq, x->sq[3] = x->d;
  x->sk[0] = b, x->sk[1] = x->hk, x->sk[2] = lk, x->sk[3] = x->d;
  x->sl[0] = b, x->sl[1] = x->h, x->sl[2] = lq;
  nq = (size_t)(b * x->h * lq * x->d), nk = (size_t)(b * x->hk * lk * x->d);
  x->q = malloc(nq * api_esize(dt) + 1), x->o = malloc(nq * api_esize(dt) + 1);
  x->k = malloc(nk * api_esize(dt) + 1), x->v = malloc(nk * api_esize(dt) + 1);
  x->lse = malloc((size_t)(b * x->h * lq) * sizeof(float) + 1);
  x->ro = malloc(nq * sizeof(double) + 1), x->rl = malloc((size_t)(b * x->h * lq) * sizeof(double) + 1);
  ck_assert(x->q && x->o && x->k && x->v && x->lse && x->ro && x->rl);
  api_host_tensor(&x->tq, x->q, api_dl_dtype(dt), 4, x->sq);
  api_host_tensor(&x->tk, x->k, api_dl_dtype(dt), 4, x->sk);
  api_host_tensor(&x->tv, x->v, api_dl_dtype(dt), 4, x->sk);
  api_host_tensor(&x->to, x->o, api_dl_dtype(dt), 4, x->sq);
  api_host_tensor(&x->tl, x->lse, (DLDataType){kDLFloat, 32, 1}, 3, x->sl);
  api_host_tensor(&x->tro, x->ro, (DLDataType){kDLFloat, 64, 1}, 4, x->sq);
  api_host_tensor(&x->trl, x->rl, (DLDataType){kDLFloat, 64, 1}, 3, x->sl);
  x->in.q_lens = x->ql;
  x->in.k_lens = x->kl;
  (void)r;
}

static void batch_free(batch *x) {
  free(x->q), free(x->k), free(x->v), free(x->o), free(x->lse), free(x->ro), free(x->rl);
}

/* Compare the batch's O and LSE with the float64 reference of KERN, and
** check rows past each q_len: O exactly 0, LSE -inf. */
static void check_reference(hattn_kernel *kern, batch *x, const char *what) {
  size_t nq = (size_t)(x->b * x->h * x->lq * x->d), nl = (size_t)(x->b * x->h * x->lq), i;
  double *o = malloc(nq * sizeof *o + 1), *l = malloc(nl * sizeof *l + 1), eo, el;
  double tol = x->dt == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2;
  int64_t b, h, t, j;
  ck_assert(o && l);
  ck_assert_msg(hattn_reference(kern, &x->tq, &x->tk, &x->tv, &x->tro, &x->trl, &x->in) == HATTN_OK, "%s",
                hattn_kernel_errmsg(kern));
  for (i = 0; i < nq; i++) o[i] = get(x->o, i, x->dt);
  for (i = 0; i < nl; i++) l[i] = x->lse[i];
  eo = hattn__rel_error(o, x->ro, nq);
  el = hattn__rel_error(l, x->rl, nl);
  ck_assert_msg(eo <= tol && el <= tol, "%s: relative error O %g, LSE %g above %g (seed %" PRIu64 ")", what, eo, el,
                tol, g_seed);
  for (b = 0; b < x->b; b++)
    for (h = 0; h < x->h; h++)
      for (t = x->ql[b]; t < x->lq; t++) {
        size_t row = (size_t)((b * x->h + h) * x->lq + t);
        ck_assert_msg(x->lse[row] == -INFINITY, "%s: LSE of b %lld h %lld row %lld past q_len %d is %g", what,
                      (long long)b, (long long)h, (long long)t, (int)x->ql[b], (double)x->lse[row]);
        for (j = 0; j < x->d; j++) {
          double v = get(x->o, row * (size_t)x->d + (size_t)j, x->dt);
          ck_assert_msg(v == 0 && !signbit(v), "%s: O of b %lld row %lld past q_len is %g", what, (long long)b,
                        (long long)t, v);
        }
      }
  free(o);
  free(l);
}

/* Each entry b of the batch equals a run of that sequence alone (batch 1,
** lq q_len, lk k_len, compact tensors), bit for bit: the same kernel on the
** same rows. */
static void check_alone(const char *pattern, batch *x) {
  int64_t b, h, t;
  for (b = 0; b < x->b; b++) {
    hattn_problem pr = {1, x->h, x->hk, x->ql[b], x->kl[b], x->d, (int)x->dt};
    hattn_kernel *kern = NULL;
    int64_t sq[4] = {1, x->h, x->ql[b], x->d}, sk[4] = {1, x->hk, x->kl[b], x->d}, sl[3] = {1, x->h, x->ql[b]};
    size_t es = api_esize(x->dt), nq = (size_t)(x->h * x->ql[b] * x->d), nk = (size_t)(x->hk * x->kl[b] * x->d);
    char *q = malloc(nq * es + 1), *k = malloc(nk * es + 1), *v = malloc(nk * es + 1), *o = malloc(nq * es + 1);
    float *l = malloc((size_t)(x->h * x->ql[b]) * sizeof *l + 1);
    DLTensor tq, tk, tv, to, tl;
    ck_assert(q && k && v && o && l);
    for (h = 0; h < x->h; h++)
      memcpy(q + (size_t)(h * x->ql[b] * x->d) * es, (char *)x->q + (size_t)((b * x->h + h) * x->lq * x->d) * es,
             (size_t)(x->ql[b] * x->d) * es);
    for (h = 0; h < x->hk; h++) {
      size_t src = (size_t)((b * x->hk + h) * x->lk * x->d) * es, dst = (size_t)(h * x->kl[b] * x->d) * es;
      memcpy(k + dst, (char *)x->k + src, (size_t)(x->kl[b] * x->d) * es);
      memcpy(v + dst, (char *)x->v + src, (size_t)(x->kl[b] * x->d) * es);
    }
    memset(o, 0xff, nq * es);
    api_host_tensor(&tq, q, api_dl_dtype(x->dt), 4, sq);
    api_host_tensor(&tk, k, api_dl_dtype(x->dt), 4, sk);
    api_host_tensor(&tv, v, api_dl_dtype(x->dt), 4, sk);
    api_host_tensor(&to, o, api_dl_dtype(x->dt), 4, sq);
    api_host_tensor(&tl, l, (DLDataType){kDLFloat, 32, 1}, 3, sl);
    ck_assert_msg(hattn_kernel_get(g_ctx, g_spec, pattern, &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
    ck_assert_msg(hattn_forward(kern, &tq, &tk, &tv, &to, &tl, NULL, NULL) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
    for (h = 0; h < x->h; h++)
      for (t = 0; t < x->ql[b]; t++) {
        size_t row = (size_t)((b * x->h + h) * x->lq + t), alone = (size_t)(h * x->ql[b] + t);
        ck_assert_msg(memcmp((char *)x->o + row * (size_t)x->d * es, o + alone * (size_t)x->d * es,
                             (size_t)x->d * es) == 0,
                      "%s: entry %lld (q_len %d, k_len %d) head %lld row %lld differs from the sequence alone "
                      "(seed %" PRIu64 ")", pattern, (long long)b, (int)x->ql[b], (int)x->kl[b], (long long)h,
                      (long long)t, g_seed);
        ck_assert_msg(memcmp(&x->lse[row], &l[alone], sizeof *l) == 0, "%s: LSE of entry %lld row %lld differs",
                      pattern, (long long)b, (long long)t);
      }
    hattn_kernel_destroy(kern);
    free(q), free(k), free(v), free(o), free(l);
  }
}

/* Lengths of a batch of N: 0, 1, MAX and odd values, shuffled. */
static void lengths(rng *r, int32_t *out, int n, int32_t max) {
  int32_t pick[4] = {0, 1, max, (int32_t)(rng_range(r, 1, (max - 1) / 2) * 2 + 1)};
  int i;
  if (pick[3] > max) pick[3] = max;
  for (i = 0; i < n; i++) out[i] = pick[i];
  for (i = n - 1; i > 0; i--) {
    int j = (int)rng_range(r, 0, i);
    int32_t t = out[i];
    out[i] = out[j], out[j] = t;
  }
}

/* Loop index: pattern x dtype x mode (decode-like, prefill). */
START_TEST(forward_varlen) {
  rng r = {g_seed ^ (uint64_t)(_i * 7919 + 1)};
  const char *pattern = g_patterns[_i % NPATTERNS];
  hattn__dtype dt = (_i / NPATTERNS) % 2 ? HATTN_DTYPE_BF16 : HATTN_DTYPE_FP32;
  int prefill = _i / (2 * NPATTERNS), n = (int)rng_range(&r, 3, 4), b;
  int64_t lk = rng_range(&r, 60, 200), lq = prefill ? lk : 4;
  hattn_problem pr;
  hattn_kernel *kern = NULL;
  hattn_plan *plan = NULL;
  batch x;
  int run;

  batch_make(&x, dt, n, lq, lk, &r);
  lengths(&r, x.kl, n, (int32_t)lk);
  if (prefill) {
    for (b = 0; b < n; b++) x.ql[b] = x.kl[b];
  } else {
    for (b = 0; b < n; b++) x.ql[b] = (int32_t)rng_range(&r, 1, 4);
    x.ql[rng_range(&r, 0, n - 1)] = 4;
    x.ql[rng_range(&r, 0, n - 1)] = 0;
  }
  pr.batch = n, pr.heads = x.h, pr.kv_heads = x.hk, pr.lq = lq, pr.lk = lk, pr.head_dim = x.d, pr.dtype = (int)dt;
  ck_assert_msg(hattn_kernel_get(g_ctx, g_spec, pattern, &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  batch_fill(&x, &r);
  batch_poison(&x);
  ck_assert_msg(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL) == HATTN_OK, "%s",
                hattn_errmsg(g_ctx));
  check_reference(kern, &x, pattern);
  check_alone(pattern, &x);

  ck_assert_msg(hattn_plan_create(kern, &x.in, &plan) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  for (run = 0; run < 2; run++) {
    int32_t saved[4];
    memcpy(saved, x.kl, sizeof saved);
    batch_fill(&x, &r);
    batch_poison(&x);
    /* The plan keeps its own copy of the lengths. */
    for (b = 0; b < n; b++) x.kl[b] = -7;
    ck_assert_msg(hattn_run(plan, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, NULL) == HATTN_OK, "%s",
                  hattn_plan_errmsg(plan));
    memcpy(x.kl, saved, sizeof saved);
    check_reference(kern, &x, run ? "hattn_run, second" : "hattn_run");
  }
  hattn_plan_destroy(plan);
  hattn_kernel_destroy(kern);
  batch_free(&x);
}
END_TEST

/* Paged K and V with k_lens: a row's table entries past ceil(k_len /
** page_size) hold -1 and are neither read nor refused. */
START_TEST(paged_varlen) {
  rng r = {g_seed ^ 0x9a9e};
  int64_t lk = 150, page = 16, need = (lk + page - 1) / page, n = 4, b, h, t, c;
  hattn_problem pr = {4, 8, 2, 150, 150, 64, HATTN_FP32};
  hattn_kernel *kern = NULL;
  hattn_plan *plan = NULL;
  hattn_paged_kv pg;
  int64_t sp[4] = {n * need, page, 2, 64}, sbt[2] = {n, need};
  int32_t *bt = malloc((size_t)(n * need) * sizeof *bt);
  float *kp = malloc((size_t)(n * need * page * 2 * 64) * sizeof *kp);
  float *vp = malloc((size_t)(n * need * page * 2 * 64) * sizeof *vp);
  DLTensor tkp, tvp, tbt;
  batch x;

  ck_assert(bt && kp && vp);
  batch_make(&x, HATTN_DTYPE_FP32, n, lk, lk, &r);
  lengths(&r, x.kl, (int)n, (int32_t)lk);
  for (b = 0; b < n; b++) x.ql[b] = x.kl[b];
  batch_fill(&x, &r);
  for (b = 0; b < n; b++)
    for (c = 0; c < need; c++)
      bt[b * need + c] = c < (x.kl[b] + page - 1) / page ? (int32_t)((n - 1 - b) * need + c) : -1;
  for (t = 0; t < n * need * page * 2 * 64; t++) kp[t] = vp[t] = NAN;
  for (b = 0; b < n; b++)
    for (h = 0; h < 2; h++)
      for (t = 0; t < x.kl[b]; t++) {
        int64_t dst = ((bt[b * need + t / page] * page + t % page) * 2 + h) * 64;
        memcpy(kp + dst, (float *)x.k + ((b * 2 + h) * lk + t) * 64, 64 * sizeof(float));
        memcpy(vp + dst, (float *)x.v + ((b * 2 + h) * lk + t) * 64, 64 * sizeof(float));
      }
  api_host_tensor(&tkp, kp, api_dl_dtype(HATTN_DTYPE_FP32), 4, sp);
  api_host_tensor(&tvp, vp, api_dl_dtype(HATTN_DTYPE_FP32), 4, sp);
  api_host_tensor(&tbt, bt, (DLDataType){kDLInt, 32, 1}, 2, sbt);
  memset(&pg, 0, sizeof pg);
  pg.page_size = page, pg.layout = HATTN_PAGED_NHD;
  ck_assert_msg(hattn_kernel_get(g_ctx, g_spec, "causal", &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  /* The logical tensors' reference first (the outputs are then checked
  ** against it after each paged run). */
  batch_poison(&x);
  ck_assert_msg(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL) == HATTN_OK, "%s",
                hattn_errmsg(g_ctx));
  check_reference(kern, &x, "contiguous");
  batch_poison(&x);
  x.in.paged = &pg;
  pg.block_table = &tbt;
  ck_assert_msg(hattn_forward(kern, &x.tq, &tkp, &tvp, &x.to, &x.tl, &x.in, NULL) == HATTN_OK, "%s",
                hattn_errmsg(g_ctx));
  x.in.paged = NULL;
  check_reference(kern, &x, "paged hattn_forward");
  x.in.paged = &pg;
  pg.block_table = NULL;
  ck_assert_msg(hattn_plan_create(kern, &x.in, &plan) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  batch_poison(&x);
  ck_assert_msg(hattn_run_paged(plan, &x.tq, &tkp, &tvp, &tbt, &x.to, &x.tl, NULL) == HATTN_OK, "%s",
                hattn_plan_errmsg(plan));
  x.in.paged = NULL;
  check_reference(kern, &x, "hattn_run_paged");
  /* The reference reads the pools through the table as well. */
  x.in.paged = &pg;
  pg.block_table = &tbt;
  ck_assert_msg(hattn_reference(kern, &x.tq, &tkp, &tvp, &x.tro, &x.trl, &x.in) == HATTN_OK, "%s",
                hattn_errmsg(g_ctx));
  for (t = 0; t < n * 8 * lk * 64; t++)
    ck_assert_msg(fabs(x.ro[t] - get(x.o, (size_t)t, HATTN_DTYPE_FP32)) < 1e-4,
                  "paged reference differs at %lld", (long long)t);
  hattn_plan_destroy(plan);
  hattn_kernel_destroy(kern);
  batch_free(&x);
  free(bt), free(kp), free(vp);
}
END_TEST

/* Every refusal, with its code and message, before anything is written. */
START_TEST(errors) {
  rng r = {g_seed ^ 0xe4};
  hattn_problem pr = {4, 8, 2, 8, 512, 64, HATTN_FP32};
  hattn_kernel *kern = NULL, *docs = NULL;
  hattn_plan *plan = NULL;
  int64_t offs[2] = {0, 512};
  batch x;
  size_t i;

  batch_make(&x, HATTN_DTYPE_FP32, 4, 8, 512, &r);
  x.ql[0] = x.ql[1] = x.ql[2] = x.ql[3] = 8;
  x.kl[0] = x.kl[1] = x.kl[2] = 512;
  x.kl[3] = 900;
  batch_fill(&x, &r);
  batch_poison(&x);
  ck_assert_msg(hattn_kernel_get(g_ctx, g_spec, "causal", &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  ck_assert_int_eq(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "k_lens[3] is 900, above lk 512");
  ck_assert_int_eq(hattn_plan_create(kern, &x.in, &plan), HATTN_EINPUT);
  ck_assert_ptr_null(plan);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "k_lens[3] is 900, above lk 512");
  ck_assert_int_eq(hattn_reference(kern, &x.tq, &x.tk, &x.tv, &x.tro, &x.trl, &x.in), HATTN_EINPUT);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "k_lens[3] is 900, above lk 512");
  x.kl[3] = 512;
  x.ql[1] = -1;
  ck_assert_int_eq(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "q_lens[1] is -1, below 0");
  x.ql[1] = 9;
  ck_assert_int_eq(hattn_plan_create(kern, &x.in, &plan), HATTN_EINPUT);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "q_lens[1] is 9, above lq 8");
  x.ql[1] = 8;
  x.in.k_lens = NULL;
  x.kl[2] = -3;
  ck_assert_int_eq(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL), HATTN_OK);
  x.in.k_lens = x.kl;
  batch_poison(&x);
  ck_assert_int_eq(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "k_lens[2] is -3, below 0");
  x.kl[2] = 100;
  x.in.offsets_set = 1;
  ck_assert_int_eq(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL), HATTN_ENOTSUP);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "inputs.q_lens/k_lens: not with offsets_set (the positions of a sequence "
                                        "of a variable-length batch follow from its lengths)");
  ck_assert_int_eq(hattn_plan_create(kern, &x.in, &plan), HATTN_ENOTSUP);
  x.in.offsets_set = 0;
  ck_assert_msg(hattn_kernel_get(g_ctx, g_spec, "docs", &pr, &docs) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  x.in.doc_offsets = offs;
  x.in.ndocs = 1;
  ck_assert_int_eq(hattn_forward(docs, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL), HATTN_ENOTSUP);
  ck_assert_str_eq(hattn_errmsg(g_ctx), "inputs.q_lens/k_lens: pattern 'docs' uses document(), blocks(), random() "
                                        "or topk(), whose run-time data covers the padded lk; variable-length "
                                        "batches are not supported with them");
  ck_assert_int_eq(hattn_reference(docs, &x.tq, &x.tk, &x.tv, &x.tro, &x.trl, &x.in), HATTN_ENOTSUP);
  /* Nothing was written by a refused call. */
  for (i = 0; i < (size_t)(4 * 8 * 8 * 64); i++) ck_assert(isnan(get(x.o, i, HATTN_DTYPE_FP32)));
  /* The CUDA backend says so (api.c asks the backend's table). */
  ck_assert_int_eq(hattn__backend_get(HATTN_BACKEND_CUDA)->varlen, 0);
  ck_assert_int_eq(hattn__backend_get(HATTN_BACKEND_CPU)->varlen, 1);
  hattn_kernel_destroy(docs);
  hattn_kernel_destroy(kern);
  batch_free(&x);
}
END_TEST

/* A zeroed hattn_inputs (q_lens and k_lens NULL) gives what it gave
** before, and lengths equal to the maxima give the same bits. */
START_TEST(full_lengths_unchanged) {
  rng r = {g_seed ^ 0xf011};
  hattn_problem pr = {3, 8, 2, 70, 130, 64, HATTN_BF16};
  hattn_kernel *kern = NULL;
  batch x;
  void *o0;
  size_t n = (size_t)(3 * 8 * 70 * 64) * 2;
  batch_make(&x, HATTN_DTYPE_BF16, 3, 70, 130, &r);
  x.ql[0] = x.ql[1] = x.ql[2] = 70;
  x.kl[0] = x.kl[1] = x.kl[2] = 130;
  batch_fill(&x, &r);
  ck_assert_msg(hattn_kernel_get(g_ctx, g_spec, "window", &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  batch_poison(&x);
  ck_assert_int_eq(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, NULL, NULL), HATTN_OK);
  o0 = malloc(n);
  ck_assert_ptr_nonnull(o0);
  memcpy(o0, x.o, n);
  batch_poison(&x);
  ck_assert_int_eq(hattn_forward(kern, &x.tq, &x.tk, &x.tv, &x.to, &x.tl, &x.in, NULL), HATTN_OK);
  ck_assert(memcmp(o0, x.o, n) == 0);
  check_reference(kern, &x, "full lengths");
  free(o0);
  hattn_kernel_destroy(kern);
  batch_free(&x);
}
END_TEST

static Suite *varlen_suite(void) {
  Suite *s = suite_create("varlen");
  TCase *tc = tcase_create("varlen");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, forward_varlen, 0, 4 * NPATTERNS);
  tcase_add_test(tc, paged_varlen);
  tcase_add_test(tc, errors);
  tcase_add_test(tc, full_lengths_unchanged);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return api_main(varlen_suite, &g_seed); }
