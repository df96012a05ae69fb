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
  /* The CPU runs a problem per pair of lengths; CUDA's kernels read them. */
  ck_assert_int_eq(hattn__backend_get(HATTN_BACKEND_CUDA)->varlen, 0);
  ck_assert_ptr_nonnull(hattn__backend_get(HATTN_BACKEND_CUDA)->launch_varlen);
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

/* ---- lengths per run: hattn_run_varlen ------------------------------------ */

/* Where a run's tensors and lengths live: the host (the CPU backend), or a
** CUDA device through the backend's memory operations. */
typedef struct place {
  hattn_ctx *ctx;
  hattn_specfile *spec;
  const hattn__backend_i *be;
  void *dev;                    /* NULL: host memory */
} place;

/* A copy of BYTES at SRC where P keeps memory (SRC NULL: bytes 0xff). */
static void *place_copy(place *p, const void *src, size_t bytes) {
  char err[512];
  void *m = NULL;
  if (p->dev == NULL) {
    m = malloc(bytes + 1);
    ck_assert_ptr_nonnull(m);
    if (src) memcpy(m, src, bytes);
    else memset(m, 0xff, bytes);
    return m;
  }
  ck_assert_msg(p->be->mem_alloc(p->dev, bytes ? bytes : 1, &m, err, sizeof err) == HATTN_OK, "%s", err);
  if (src) ck_assert_msg(p->be->mem_upload(p->dev, m, src, bytes, err, sizeof err) == HATTN_OK, "%s", err);
  else ck_assert_msg(p->be->mem_set(p->dev, m, 0xff, bytes, err, sizeof err) == HATTN_OK, "%s", err);
  return m;
}

static void place_get(place *p, void *dst, const void *src, size_t bytes) {
  char err[512];
  if (p->dev == NULL) memcpy(dst, src, bytes);
  else ck_assert_msg(p->be->mem_download(p->dev, dst, src, bytes, err, sizeof err) == HATTN_OK, "%s", err);
}

static void place_free(place *p, void *m) {
  if (p->dev == NULL) free(m);
  else p->be->mem_free(p->dev, m);
}

/* A DLTensor over DATA in P's memory. */
static DLTensor place_tensor(place *p, void *data, DLDataType dt, int ndim, int64_t *shape) {
  DLTensor t;
  api_host_tensor(&t, data, dt, ndim, shape);
  if (p->dev != NULL) t.device.device_type = kDLCUDA, t.device.device_id = 0;
  return t;
}

/* Run X's batch with KERN through hattn_run_varlen in FORM (0: padded
** q_lens and k_lens; 1: packed Q, K and V; 2: packed Q, padded keys) on P,
** and leave O and LSE in X's padded host buffers (rows past a packed
** entry's queries set to O 0, LSE -inf, as the padded form writes them). */
static void run_form(place *p, hattn_kernel *kern, batch *x, int form, const char *what) {
  size_t es = api_esize(x->dt), D = (size_t)x->d;
  int32_t cq[5] = {0}, ck[5] = {0};
  int64_t b, h, t, tq = 0, tk = 0, s1[1] = {x->b}, s2[1] = {x->b + 1};
  int64_t sq[3], sk[3], sl[2];
  char *hq, *hk, *hv, *ho;
  float *hl;
  void *q, *k, *v, *o, *l, *lq, *lk;
  DLTensor tq_, tk_, tv_, to_, tl_, tlq, tlk;
  hattn_varlen lens;
  hattn_plan *plan = NULL;
  DLDataType i32 = {kDLInt, 32, 1}, f32 = {kDLFloat, 32, 1};

  for (b = 0; b < x->b; b++) cq[b + 1] = cq[b] + x->ql[b], ck[b + 1] = ck[b] + x->kl[b];
  tq = cq[x->b], tk = ck[x->b];
  sq[0] = tq, sq[1] = x->h, sq[2] = x->d;
  sk[0] = tk, sk[1] = x->hk, sk[2] = x->d;
  sl[0] = x->h, sl[1] = tq;
  hq = malloc((size_t)tq * (size_t)x->h * D * es + 1), ho = malloc((size_t)tq * (size_t)x->h * D * es + 1);
  hk = malloc((size_t)tk * (size_t)x->hk * D * es + 1), hv = malloc((size_t)tk * (size_t)x->hk * D * es + 1);
  hl = malloc((size_t)(tq * x->h) * sizeof *hl + 1);
  ck_assert(hq && ho && hk && hv && hl);
  for (b = 0; b < x->b; b++) {
    for (h = 0; h < x->h; h++)
      for (t = 0; t < x->ql[b]; t++)
        memcpy(hq + ((size_t)(cq[b] + t) * (size_t)x->h + (size_t)h) * D * es,
               (char *)x->q + (size_t)(((b * x->h + h) * x->lq + t)) * D * es, D * es);
    for (h = 0; h < x->hk; h++)
      for (t = 0; t < x->kl[b]; t++) {
        size_t dst = ((size_t)(ck[b] + t) * (size_t)x->hk + (size_t)h) * D * es;
        size_t src = (size_t)((b * x->hk + h) * x->lk + t) * D * es;
        memcpy(hk + dst, (char *)x->k + src, D * es);
        memcpy(hv + dst, (char *)x->v + src, D * es);
      }
  }
  memset(&lens, 0, sizeof lens);
  if (form == 0) {
    q = place_copy(p, x->q, (size_t)(x->b * x->h * x->lq) * D * es);
    k = place_copy(p, x->k, (size_t)(x->b * x->hk * x->lk) * D * es);
    v = place_copy(p, x->v, (size_t)(x->b * x->hk * x->lk) * D * es);
    o = place_copy(p, NULL, (size_t)(x->b * x->h * x->lq) * D * es);
    l = place_copy(p, NULL, (size_t)(x->b * x->h * x->lq) * sizeof(float));
    tq_ = place_tensor(p, q, x->tq.dtype, 4, x->sq), to_ = place_tensor(p, o, x->tq.dtype, 4, x->sq);
    tk_ = place_tensor(p, k, x->tq.dtype, 4, x->sk), tv_ = place_tensor(p, v, x->tq.dtype, 4, x->sk);
    tl_ = place_tensor(p, l, f32, 3, x->sl);
    lq = place_copy(p, x->ql, (size_t)x->b * sizeof(int32_t));
    lk = place_copy(p, x->kl, (size_t)x->b * sizeof(int32_t));
    tlq = place_tensor(p, lq, i32, 1, s1), tlk = place_tensor(p, lk, i32, 1, s1);
    lens.q_lens = &tlq, lens.k_lens = &tlk;
  } else {
    q = place_copy(p, hq, (size_t)tq * (size_t)x->h * D * es);
    o = place_copy(p, NULL, (size_t)tq * (size_t)x->h * D * es);
    l = place_copy(p, NULL, (size_t)(tq * x->h) * sizeof(float));
    tq_ = place_tensor(p, q, x->tq.dtype, 3, sq), to_ = place_tensor(p, o, x->tq.dtype, 3, sq);
    tl_ = place_tensor(p, l, f32, 2, sl);
    lq = place_copy(p, cq, (size_t)(x->b + 1) * sizeof(int32_t));
    tlq = place_tensor(p, lq, i32, 1, s2);
    lens.cu_seqlens_q = &tlq;
    if (form == 1) {
      k = place_copy(p, hk, (size_t)tk * (size_t)x->hk * D * es);
      v = place_copy(p, hv, (size_t)tk * (size_t)x->hk * D * es);
      tk_ = place_tensor(p, k, x->tq.dtype, 3, sk), tv_ = place_tensor(p, v, x->tq.dtype, 3, sk);
      lk = place_copy(p, ck, (size_t)(x->b + 1) * sizeof(int32_t));
      tlk = place_tensor(p, lk, i32, 1, s2);
      lens.cu_seqlens_k = &tlk;
    } else {
      k = place_copy(p, x->k, (size_t)(x->b * x->hk * x->lk) * D * es);
      v = place_copy(p, x->v, (size_t)(x->b * x->hk * x->lk) * D * es);
      tk_ = place_tensor(p, k, x->tq.dtype, 4, x->sk), tv_ = place_tensor(p, v, x->tq.dtype, 4, x->sk);
      lk = place_copy(p, x->kl, (size_t)x->b * sizeof(int32_t));
      tlk = place_tensor(p, lk, i32, 1, s1);
      lens.k_lens = &tlk;
    }
  }
  ck_assert_msg(hattn_plan_create(kern, NULL, &plan) == HATTN_OK, "%s", hattn_kernel_errmsg(kern));
  ck_assert_msg(hattn_run_check(plan, &tq_, &tk_, &tv_, NULL, &lens, &to_, &tl_) == HATTN_OK, "%s: %s", what,
                hattn_plan_errmsg(plan));
  ck_assert_msg(hattn_run_varlen(plan, &tq_, &tk_, &tv_, NULL, &lens, &to_, &tl_, NULL) == HATTN_OK, "%s: %s",
                what, hattn_plan_errmsg(plan));
  if (form == 0) {
    place_get(p, x->o, o, (size_t)(x->b * x->h * x->lq) * D * es);
    place_get(p, x->lse, l, (size_t)(x->b * x->h * x->lq) * sizeof(float));
    if (p->dev != NULL) {
      /* Host lengths with the plan (hattn_forward): the plan uploads them,
      ** and the run gives the same bits as the lengths given per run. */
      char *o1 = malloc((size_t)(x->b * x->h * x->lq) * D * es + 1);
      float *l1 = malloc((size_t)(x->b * x->h * x->lq) * sizeof(float) + 1);
      ck_assert(o1 && l1);
      memcpy(o1, x->o, (size_t)(x->b * x->h * x->lq) * D * es);
      memcpy(l1, x->lse, (size_t)(x->b * x->h * x->lq) * sizeof(float));
      place_free(p, o), place_free(p, l);
      o = place_copy(p, NULL, (size_t)(x->b * x->h * x->lq) * D * es);
      l = place_copy(p, NULL, (size_t)(x->b * x->h * x->lq) * sizeof(float));
      to_ = place_tensor(p, o, x->tq.dtype, 4, x->sq), tl_ = place_tensor(p, l, f32, 3, x->sl);
      ck_assert_msg(hattn_forward(kern, &tq_, &tk_, &tv_, &to_, &tl_, &x->in, NULL) == HATTN_OK, "%s: %s", what,
                    hattn_kernel_errmsg(kern));
      place_get(p, x->o, o, (size_t)(x->b * x->h * x->lq) * D * es);
      place_get(p, x->lse, l, (size_t)(x->b * x->h * x->lq) * sizeof(float));
      ck_assert_msg(memcmp(o1, x->o, (size_t)(x->b * x->h * x->lq) * D * es) == 0 &&
                        memcmp(l1, x->lse, (size_t)(x->b * x->h * x->lq) * sizeof(float)) == 0,
                    "%s: hattn_forward with host lengths differs from hattn_run_varlen", what);
      free(o1), free(l1);
    }
  } else {
    place_get(p, ho, o, (size_t)tq * (size_t)x->h * D * es);
    place_get(p, hl, l, (size_t)(tq * x->h) * sizeof(float));
    for (b = 0; b < x->b; b++)
      for (h = 0; h < x->h; h++)
        for (t = 0; t < x->lq; t++) {
          size_t row = (size_t)((b * x->h + h) * x->lq + t);
          if (t < x->ql[b]) {
            memcpy((char *)x->o + row * D * es, ho + ((size_t)(cq[b] + t) * (size_t)x->h + (size_t)h) * D * es, D * es);
            x->lse[row] = hl[h * tq + cq[b] + t];
          } else {
            memset((char *)x->o + row * D * es, 0, D * es);
            x->lse[row] = -INFINITY;
          }
        }
  }
  hattn_plan_destroy(plan);
  place_free(p, q), place_free(p, k), place_free(p, v), place_free(p, o), place_free(p, l);
  place_free(p, lq), place_free(p, lk);
  free(hq), free(hk), free(hv), free(ho), free(hl);
  check_reference(kern, x, what);
}

/* A batch with lengths for hattn_run_varlen: decode-like (LQ 1 or 4) or
** prefill (q_len = k_len). */
static void run_batch(place *p, const char *pattern, hattn__dtype dt, int64_t d, int64_t lq, int64_t lk, rng *r) {
  int n = (int)rng_range(r, 3, 4), b, form;
  hattn_problem pr;
  hattn_kernel *kern = NULL;
  char what[128];
  batch x;
  batch_make(&x, dt, n, lq, lk, r);
  x.d = d, x.sq[3] = x.sk[3] = d;
  batch_free(&x);
  {
    /* batch_make sized the buffers for head dim 64: remake at D. */
    size_t nq = (size_t)(n * x.h * lq * d), nk = (size_t)(n * x.hk * lk * d), es = api_esize(dt);
    x.q = malloc(nq * es + 1), x.o = malloc(nq * es + 1), x.k = malloc(nk * es + 1), x.v = malloc(nk * es + 1);
    x.lse = malloc((size_t)(n * x.h * lq) * sizeof(float) + 1);
    x.ro = malloc(nq * sizeof(double) + 1), x.rl = malloc((size_t)(n * x.h * lq) * sizeof(double) + 1);
    ck_assert(x.q && x.o && x.k && x.v && x.lse && x.ro && x.rl);
    x.tq.data = x.q, x.tk.data = x.k, x.tv.data = x.v, x.to.data = x.o, x.tl.data = x.lse;
    x.tro.data = x.ro, x.trl.data = x.rl;
  }
  lengths(r, x.kl, n, (int32_t)lk);
  for (b = 0; b < n; b++) x.ql[b] = lq == lk ? x.kl[b] : (int32_t)rng_range(r, 0, lq);
  if (lq != lk) x.ql[rng_range(r, 0, n - 1)] = (int32_t)lq;
  if (lq != lk) /* a decode entry's queries end with its keys: no more queries than keys */
    for (b = 0; b < n; b++) if (x.ql[b] > x.kl[b]) x.ql[b] = x.kl[b];
  pr.batch = n, pr.heads = x.h, pr.kv_heads = x.hk, pr.lq = lq, pr.lk = lk, pr.head_dim = d, pr.dtype = (int)dt;
  ck_assert_msg(hattn_kernel_get(p->ctx, p->spec, pattern, &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(p->ctx));
  for (form = 0; form < 3; form++) {
    batch_fill(&x, r);
    batch_poison(&x);
    snprintf(what, sizeof what, "%s %s lq %lld lk %lld d %lld, %s", pattern, hattn__dtype_name(dt), (long long)lq,
             (long long)lk, (long long)d, form == 0 ? "padded" : form == 1 ? "packed" : "packed Q, padded K");
    run_form(p, kern, &x, form, what);
  }
  hattn_kernel_destroy(kern);
  batch_free(&x);
}

/* Loop index: pattern x mode (decode of 1, of 4, prefill). */
START_TEST(run_varlen_cpu) {
  rng r = {g_seed ^ 0x7a11 ^ (uint64_t)_i * 0x9e3779b9};
  place p = {g_ctx, g_spec, NULL, NULL};
  int mode = _i / NPATTERNS;
  int64_t lk = rng_range(&r, 60, 200);
  run_batch(&p, g_patterns[_i % NPATTERNS], _i % 2 ? HATTN_DTYPE_BF16 : HATTN_DTYPE_FP32, 64,
            mode == 0 ? 1 : mode == 1 ? 4 : lk, lk, &r);
}
END_TEST

/* The same on a CUDA device (skipped without one): the kernels read the
** lengths; and a plan made with host lengths (hattn_forward's path), whose
** lengths go to the device. */
START_TEST(run_varlen_cuda) {
  rng r = {g_seed ^ 0xc7a11 ^ (uint64_t)_i * 0x9e3779b9};
  place p;
  hattn_options opt;
  char err[512];
  int mode = _i / NPATTERNS;
  int64_t lk = rng_range(&r, 100, 700) + (mode < 2 ? 3000 : 0), d = _i % 3 == 2 ? 128 : 64;
  memset(&p, 0, sizeof p);
  p.be = hattn__backend_get(HATTN_BACKEND_CUDA);
  hattn_options_init(&opt);
  opt.backend = HATTN_BACKEND_CUDA, opt.db = "", opt.quiet = 1;
  if (hattn_open(&opt, &p.ctx) != HATTN_OK || p.be->dev_open(0, 0, &p.dev, err, sizeof err) != HATTN_OK) {
    if (_i == 0) printf("[SKIP] run_varlen_cuda: %s\n", hattn_errmsg(p.ctx));
    hattn_close(p.ctx);
    return;
  }
  ck_assert_int_eq(hattn_specfile_parse(p.ctx, g_text, strlen(g_text), NULL, &p.spec), HATTN_OK);
  run_batch(&p, g_patterns[_i % NPATTERNS], _i % 2 ? HATTN_DTYPE_FP16 : HATTN_DTYPE_BF16, d,
            mode == 0 ? 1 : mode == 1 ? 4 : lk, lk, &r);
  hattn_specfile_destroy(p.spec);
  hattn_close(p.ctx);
  p.be->dev_close(p.dev);
}
END_TEST

/* hattn_run_varlen's and hattn_run_check's refusals, with code and
** message. */
START_TEST(run_varlen_errors) {
  rng r = {g_seed ^ 0xe5};
  hattn_problem pr = {3, 8, 2, 8, 64, 64, HATTN_FP32};
  hattn_kernel *kern = NULL, *docs = NULL;
  hattn_plan *plan = NULL, *lplan = NULL;
  int32_t ql[3] = {8, 2, 0}, kl[3] = {64, 9, 100}, cu[4] = {0, 8, 10, 10};
  int64_t s1[1] = {3}, s2[1] = {4}, s4[1] = {3};
  DLTensor tql, tkl, tcu, tcu4;
  hattn_varlen lens;
  batch x;

  batch_make(&x, HATTN_DTYPE_FP32, 3, 8, 64, &r);
  batch_fill(&x, &r);
  api_host_tensor(&tql, ql, (DLDataType){kDLInt, 32, 1}, 1, s1);
  api_host_tensor(&tkl, kl, (DLDataType){kDLInt, 32, 1}, 1, s1);
  api_host_tensor(&tcu, cu, (DLDataType){kDLInt, 32, 1}, 1, s2);
  api_host_tensor(&tcu4, cu, (DLDataType){kDLInt, 32, 1}, 1, s4);
  ck_assert_msg(hattn_kernel_get(g_ctx, g_spec, "causal", &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  ck_assert_int_eq(hattn_plan_create(kern, NULL, &plan), HATTN_OK);
  memset(&lens, 0, sizeof lens);
  ck_assert_int_eq(hattn_run_varlen(NULL, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_EINVAL);
  ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "hattn_run_varlen: no lengths (lens is NULL or empty): run the plan "
                                            "with hattn_run");
  /* hattn_run_check with no lengths checks a plain run. */
  ck_assert_int_eq(hattn_run_check(plan, &x.tq, &x.tk, &x.tv, NULL, NULL, &x.to, &x.tl), HATTN_OK);
  lens.q_lens = &tql, lens.k_lens = &tkl;
  batch_poison(&x);
  ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "sequence 2 has 100 keys, above the plan's lk 64");
  ck_assert_int_eq(hattn_run_check(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl), HATTN_EINPUT);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "sequence 2 has 100 keys, above the plan's lk 64");
  kl[2] = -1;
  ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "k_lens[2] is -1, below 0");
  kl[2] = 10;
  lens.cu_seqlens_q = &tcu;
  ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "hattn_run_varlen: lens gives both q_lens and cu_seqlens_q; one form "
                                            "per side");
  lens.q_lens = NULL;
  cu[2] = 7;
  ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "cu_seqlens_q[2] is 7, below cu_seqlens_q[1] = 8: offsets must not "
                                            "decrease");
  cu[2] = 10, cu[3] = 30;
  ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "sequence 2 has 20 queries, above the plan's lq 8");
  cu[3] = 10;
  /* A packed form needs 3-d Q. */
  ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "q: 4 dimensions, expected 3");
  lens.cu_seqlens_q = &tcu4;
  ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_ESHAPE);
  ck_assert_str_eq(hattn_plan_errmsg(plan), "lens.cu_seqlens_q: shape [3], expected [4] (dimension 0 differs)");
  lens.cu_seqlens_q = NULL;
  lens.q_lens = &tql;
  {
    DLTensor bad = tql;
    bad.dtype.bits = 64;
    lens.q_lens = &bad;
    ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_ESHAPE);
    ck_assert_str_eq(hattn_plan_errmsg(plan), "lens.q_lens: dtype int64, expected int32");
    lens.q_lens = &tql;
  }
  /* Nothing was written by a refused run. */
  {
    size_t i;
    for (i = 0; i < (size_t)(3 * 8 * 8 * 64); i++) ck_assert(isnan(get(x.o, i, HATTN_DTYPE_FP32)));
  }
  /* A plan made with lengths takes none per run. */
  x.ql[0] = 8, x.ql[1] = 2, x.ql[2] = 0, x.kl[0] = 64, x.kl[1] = 9, x.kl[2] = 10;
  ck_assert_int_eq(hattn_plan_create(kern, &x.in, &lplan), HATTN_OK);
  ck_assert_int_eq(hattn_run_varlen(lplan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_EINPUT);
  ck_assert_str_eq(hattn_plan_errmsg(lplan), "hattn_run_varlen: the plan was made with inputs.q_lens/k_lens; "
                                             "lengths per run need a plan made without them");
  hattn_plan_destroy(lplan);
  hattn_plan_destroy(plan);
  /* Patterns with run-time data over the padded lk, and plans with offsets. */
  {
    int64_t offs[2] = {0, 64};
    hattn_inputs in;
    memset(&in, 0, sizeof in);
    in.doc_offsets = offs, in.ndocs = 1;
    ck_assert_msg(hattn_kernel_get(g_ctx, g_spec, "docs", &pr, &docs) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
    ck_assert_int_eq(hattn_plan_create(docs, &in, &plan), HATTN_OK);
    ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_ENOTSUP);
    ck_assert_str_eq(hattn_plan_errmsg(plan), "inputs.q_lens/k_lens: pattern 'docs' uses document(), blocks(), "
                                              "random() or topk(), whose run-time data covers the padded lk; "
                                              "variable-length batches are not supported with them");
    hattn_plan_destroy(plan);
    memset(&in, 0, sizeof in);
    in.offsets_set = 1, in.q_offset = 56;
    ck_assert_int_eq(hattn_plan_create(kern, &in, &plan), HATTN_OK);
    ck_assert_int_eq(hattn_run_varlen(plan, &x.tq, &x.tk, &x.tv, NULL, &lens, &x.to, &x.tl, NULL), HATTN_ENOTSUP);
    hattn_plan_destroy(plan);
  }
  hattn_kernel_destroy(docs);
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
  tcase_add_loop_test(tc, run_varlen_cpu, 0, 3 * NPATTERNS);
  tcase_add_loop_test(tc, run_varlen_cuda, 0, 3 * NPATTERNS);
  tcase_add_test(tc, run_varlen_errors);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return api_main(varlen_suite, &g_seed); }
