/*
** test_offsets.c: per-call query and key positions (hattn_inputs.q_offset,
** k_offset, offsets_set) through the public API on the CPU backend.
**   - the kernel against the float64 reference under offsets, for causal,
**     window, sink | window, chunk, document, dilated and alibi;
**   - the properties that serving relies on: the keys of a problem split
**     into slices, each run at its key offset and merged with hattn_merge,
**     give the unsplit result; a chunk of queries run at its query offset
**     gives those rows of the whole problem (both against the float64
**     reference of the whole problem);
**   - bad offsets and unsupported combinations, each with its code and
**     message.
** Fresh random inputs on every run (HATTN_TEST_SEED replays), outputs
** poisoned before each kernel runs, per-dtype tolerances.  Exits 77 (skip)
** when hattn was built without LLVM.
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "dtype.h"
#include "reference.h"

static uint64_t g_seed;
static hattn_ctx *g_ctx;

#include "testutil.h"
#include "api_main.h"

static void setup(void) {
  hattn_options opt;
  hattn_options_init(&opt);
  opt.db = "";
  opt.quiet = 1;
  opt.threads = 2;
  ck_assert_int_eq(hattn_open(&opt, &g_ctx), HATTN_OK);
}

static void teardown(void) {
  hattn_close(g_ctx);
  g_ctx = NULL;
}

/* A 3-d or 4-d view of compact memory of shape FULL: the rows [row0, row0 +
** n) of dimension 2. */
typedef struct view {
  DLTensor t;
  int64_t shape[4], strides[4];
} view;

static void view_init(view *x, void *data, hattn__dtype dt, int ndim, const int64_t *full, int64_t row0, int64_t n) {
  int i;
  size_t esz = (size_t)hattn__dtype_size(dt);
  memset(x, 0, sizeof *x);
  x->t.data = data;
  x->t.device.device_type = kDLCPU;
  x->t.ndim = ndim;
  x->t.dtype.code = dt == HATTN_DTYPE_BF16 ? kDLBfloat : kDLFloat;
  x->t.dtype.bits = (uint8_t)(8 * esz);
  x->t.dtype.lanes = 1;
  for (i = 0; i < ndim; i++) x->shape[i] = full[i];
  x->shape[2] = n;
  x->strides[ndim - 1] = 1;
  for (i = ndim - 2; i >= 0; i--) x->strides[i] = x->strides[i + 1] * full[i + 1];
  x->t.shape = x->shape;
  x->t.strides = x->strides;
  x->t.byte_offset = (uint64_t)(row0 * x->strides[2]) * esz;
}

static hattn_eltype eltype(hattn__dtype dt) {
  return dt == HATTN_DTYPE_BF16 ? HATTN_BF16 : dt == HATTN_DTYPE_FP16 ? HATTN_FP16 : HATTN_FP32;
}

static double tolerance(hattn__dtype dt) { return dt == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2; }

/* The kernel of MASK (with modifiers after "with", may be "") for the shape. */
static hattn_kernel *kernel(const char *mask, hattn__dtype dt, int64_t b, int64_t h, int64_t hk, int64_t lq,
                            int64_t lk, int64_t d) {
  char text[512];
  hattn_specfile *spec = NULL;
  hattn_kernel *kern = NULL;
  hattn_problem pr;
  int rc;
  snprintf(text, sizeof text, "pattern p = %s\n", mask);
  rc = hattn_specfile_parse(g_ctx, text, strlen(text), "t", &spec);
  ck_assert_msg(rc == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  pr.batch = b, pr.heads = h, pr.kv_heads = hk, pr.lq = lq, pr.lk = lk, pr.head_dim = d;
  pr.dtype = eltype(dt);
  rc = hattn_kernel_get(g_ctx, spec, "p", &pr, &kern);
  ck_assert_msg(rc == HATTN_OK, "kernel '%s': %s", mask, hattn_errmsg(g_ctx));
  hattn_specfile_destroy(spec);
  return kern;
}

/* The problem of one test: Q [B, H, L, D], K and V [B, HK, L, D] in DT,
** fresh random values. */
typedef struct prob {
  hattn__dtype dt;
  int64_t b, h, hk, lq, lk, d;
  void *q, *k, *v;
} prob;

static void prob_make(prob *p, rng *r, hattn__dtype dt, int64_t b, int64_t h, int64_t hk, int64_t lq, int64_t lk,
                      int64_t d) {
  size_t esz = (size_t)hattn__dtype_size(dt), nq = (size_t)(b * h * lq * d), nk = (size_t)(b * hk * lk * d), i;
  p->dt = dt, p->b = b, p->h = h, p->hk = hk, p->lq = lq, p->lk = lk, p->d = d;
  p->q = malloc(nq * esz), p->k = malloc(nk * esz), p->v = malloc(nk * esz);
  ck_assert(p->q && p->k && p->v);
  for (i = 0; i < nq; i++) put(p->q, i, dt, 2.0 * rng_unit(r));
  for (i = 0; i < nk; i++) {
    put(p->k, i, dt, 2.0 * rng_unit(r));
    put(p->v, i, dt, rng_unit(r));
  }
}

static void prob_free(prob *p) {
  free(p->q), free(p->k), free(p->v);
}

/* Run KERN on query rows [q0, q0 + nq) and key rows [k0, k0 + nk) of P
** with INPUTS into O (the kernel's dtype) and LSE (float32), compact [B, H,
** nq, D] and [B, H, nq], poisoned first. */
static int run_slice(hattn_kernel *kern, const prob *p, int64_t q0, int64_t nq, int64_t k0, int64_t nk,
                     const hattn_inputs *in, void *o, float *lse) {
  int64_t fq[4] = {p->b, p->h, p->lq, p->d}, fk[4] = {p->b, p->hk, p->lk, p->d};
  int64_t fo[4] = {p->b, p->h, nq, p->d}, fl[3] = {p->b, p->h, nq};
  view tq, tk, tv, to, tl;
  view_init(&tq, p->q, p->dt, 4, fq, q0, nq);
  view_init(&tk, p->k, p->dt, 4, fk, k0, nk);
  view_init(&tv, p->v, p->dt, 4, fk, k0, nk);
  view_init(&to, o, p->dt, 4, fo, 0, nq);
  view_init(&tl, lse, HATTN_DTYPE_FP32, 3, fl, 0, nq);
  memset(o, 0xff, (size_t)(p->b * p->h * nq * p->d) * (size_t)hattn__dtype_size(p->dt)); /* NaN */
  memset(lse, 0xff, (size_t)(p->b * p->h * nq) * sizeof *lse);
  return hattn_forward(kern, &tq.t, &tk.t, &tv.t, &to.t, &tl.t, in, NULL);
}

/* The float64 reference of KERN on the same slice into RO, RL. */
static void ref_slice(hattn_kernel *kern, const prob *p, int64_t q0, int64_t nq, int64_t k0, int64_t nk,
                      const hattn_inputs *in, double *ro, double *rl) {
  int64_t fq[4] = {p->b, p->h, p->lq, p->d}, fk[4] = {p->b, p->hk, p->lk, p->d};
  int64_t fo[4] = {p->b, p->h, nq, p->d}, fl[3] = {p->b, p->h, nq};
  view tq, tk, tv, to, tl;
  int rc;
  view_init(&tq, p->q, p->dt, 4, fq, q0, nq);
  view_init(&tk, p->k, p->dt, 4, fk, k0, nk);
  view_init(&tv, p->v, p->dt, 4, fk, k0, nk);
  view_init(&to, ro, HATTN_DTYPE_FP32, 4, fo, 0, nq);
  view_init(&tl, rl, HATTN_DTYPE_FP32, 3, fl, 0, nq);
  to.t.dtype.bits = tl.t.dtype.bits = 64;
  rc = hattn_reference(kern, &tq.t, &tk.t, &tv.t, &to.t, &tl.t, in);
  ck_assert_msg(rc == HATTN_OK, "reference: %s", hattn_errmsg(g_ctx));
}

/* O (dtype DT, N elements) as doubles. */
static double *as_f64(const void *o, hattn__dtype dt, size_t n) {
  double *x = malloc(n * sizeof *x + 1);
  size_t i;
  ck_assert(x != NULL);
  for (i = 0; i < n; i++) x[i] = get(o, i, dt);
  return x;
}

static double *lse_f64(const float *l, size_t n) {
  double *x = malloc(n * sizeof *x + 1);
  size_t i;
  ck_assert(x != NULL);
  for (i = 0; i < n; i++) x[i] = l[i];
  return x;
}

/* Rows [r0, r0 + n) of X [B*H, L, W] into a new [B*H, n, W]. */
static double *rows_of(const double *x, int64_t bh, int64_t l, int64_t w, int64_t r0, int64_t n) {
  double *y = malloc((size_t)(bh * n * w) * sizeof *y + 1);
  int64_t i;
  ck_assert(y != NULL);
  for (i = 0; i < bh; i++) memcpy(y + i * n * w, x + (i * l + r0) * w, (size_t)(n * w) * sizeof *y);
  return y;
}

/* ---- the kernel against the reference under offsets ------------------- */

typedef struct ocase {
  const char *mask;
  int64_t lq, lk, q_offset, k_offset;
  int docs;
} ocase;

static const ocase g_ocases[] = {
  {"causal", 40, 90, 30, 0, 0},              /* a chunk of queries in the middle */
  {"causal", 70, 50, 10, 40, 0},             /* a slice of keys, queries before and after it */
  {"causal", 33, 70, -20, 5, 0},             /* negative query positions see nothing */
  {"window(16)", 50, 64, 100, 70, 0},
  {"window(7, 5)", 45, 80, 3, 11, 0},
  {"sink(4) | window(16)", 60, 70, 200, 150, 0},
  {"sink(20) | window(8)", 40, 50, 60, 10, 0}, /* keys 10..19 are sinks */
  {"chunk(24)", 50, 60, 30, 17, 0},
  {"causal & chunk(16)", 37, 90, 61, 5, 0},
  {"causal & document", 30, 90, 40, 0, 1},  /* chunked prefill over documents */
  {"document", 50, 70, -5, 0, 1},
  {"document", 40, 60, 45, 0, 1},           /* queries past the keys are in no document */
  {"dilated(4, 3)", 40, 60, 70, 33, 0},
  {"causal with alibi", 30, 70, 90, 45, 0},
  {"causal with softcap(5)", 35, 64, 64, 64, 0},
  {"global(8) | window(4)", 40, 50, 5, 3, 0},
};

START_TEST(test_kernel_vs_reference) {
  static const hattn__dtype dts[] = {HATTN_DTYPE_FP32, HATTN_DTYPE_BF16};
  const ocase *tc = &g_ocases[_i / 2];
  hattn__dtype dt = dts[_i % 2];
  const int64_t B = 2, H = 4, HK = 2, D = 32;
  int64_t offs[8], n = 0, at = 0, nq = B * H * tc->lq * D, nl = B * H * tc->lq;
  hattn_kernel *kern = kernel(tc->mask, dt, B, H, HK, tc->lq, tc->lk, D);
  hattn_inputs in;
  prob p;
  rng r;
  void *o;
  float *lse;
  double *ro, *rl, *xo, *xl, eo, el;
  int rc;

  r.s = g_seed ^ (uint64_t)(_i + 1) * UINT64_C(0x9e3779b97f4a7c15);
  rng_next(&r);
  prob_make(&p, &r, dt, B, H, HK, tc->lq, tc->lk, D);
  memset(&in, 0, sizeof in);
  in.offsets_set = 1;
  in.q_offset = tc->q_offset;
  in.k_offset = tc->k_offset;
  if (tc->docs) {
    offs[n++] = 0;
    while (at < tc->lk && n < 7) {
      at += rng_range(&r, 1, tc->lk / 2 + 1);
      if (at > tc->lk || n == 6) at = tc->lk;
      offs[n++] = at;
    }
    in.doc_offsets = offs, in.ndocs = n - 1;
  }
  o = malloc((size_t)nq * (size_t)hattn__dtype_size(dt));
  lse = malloc((size_t)nl * sizeof *lse);
  ro = malloc((size_t)nq * sizeof *ro), rl = malloc((size_t)nl * sizeof *rl);
  ck_assert(o && lse && ro && rl);
  rc = run_slice(kern, &p, 0, tc->lq, 0, tc->lk, &in, o, lse);
  ck_assert_msg(rc == HATTN_OK, "'%s': %s", tc->mask, hattn_errmsg(g_ctx));
  ref_slice(kern, &p, 0, tc->lq, 0, tc->lk, &in, ro, rl);
  xo = as_f64(o, dt, (size_t)nq), xl = lse_f64(lse, (size_t)nl);
  eo = hattn__rel_error(xo, ro, (size_t)nq), el = hattn__rel_error(xl, rl, (size_t)nl);
  ck_assert_msg(eo < tolerance(dt) && el < tolerance(dt),
                "'%s' %s q_offset %lld k_offset %lld: error O %g LSE %g (tolerance %g)", tc->mask,
                hattn__dtype_name(dt), (long long)tc->q_offset, (long long)tc->k_offset, eo, el, tolerance(dt));
  /* The offsets matter: the reference at the default positions differs
  ** (every case moves the queries or the keys relative to each other). */
  in.offsets_set = 0;
  if (!tc->docs || tc->q_offset != tc->lk - tc->lq) {
    ref_slice(kern, &p, 0, tc->lq, 0, tc->lk, &in, ro, rl);
    ck_assert_msg(hattn__rel_error(xo, ro, (size_t)nq) > tolerance(dt) ||
                      hattn__rel_error(xl, rl, (size_t)nl) > tolerance(dt),
                  "'%s': the offsets made no difference", tc->mask);
  }
  free(xo), free(xl), free(o), free(lse), free(ro), free(rl);
  prob_free(&p);
  hattn_kernel_destroy(kern);
}
END_TEST

/* ---- split keys, merged ------------------------------------------------ */

/* MASK over L x L (prefill) with the keys cut into NP slices at random
** places: each slice runs at its key offset (queries at their own
** positions, q_offset 0), hattn_merge joins them, and the result is the
** float64 reference of the whole problem. */
static void split_keys(const char *mask, hattn__dtype dt, int64_t L, int np, uint64_t salt) {
  const int64_t B = 1, H = 4, HK = 2, D = 32, nq = B * H * L * D, nl = B * H * L;
  int64_t cut[5];
  size_t esz = (size_t)hattn__dtype_size(dt);
  void *parts[4], *o;
  float *lparts[4], *lse;
  view vo[4], vl[4], mo, ml;
  const DLTensor *po[4], *pl[4];
  int64_t fo[4] = {B, H, L, D}, fl[3] = {B, H, L};
  hattn_kernel *full = kernel(mask, dt, B, H, HK, L, L, D);
  hattn_inputs in;
  prob p;
  rng r;
  double *ro, *rl, *xo, *xl, eo, el;
  int i, rc;

  r.s = g_seed ^ salt * UINT64_C(0x2545f4914f6cdd1d);
  rng_next(&r);
  prob_make(&p, &r, dt, B, H, HK, L, L, D);
  cut[0] = 0, cut[np] = L;
  for (i = 1; i < np; i++) cut[i] = cut[i - 1] + 1 + rng_range(&r, 0, (L - cut[i - 1]) / (np - i + 1));
  for (i = 0; i < np; i++) {
    hattn_kernel *kern = kernel(mask, dt, B, H, HK, L, cut[i + 1] - cut[i], D);
    parts[i] = malloc((size_t)nq * esz), lparts[i] = malloc((size_t)nl * sizeof(float));
    ck_assert(parts[i] && lparts[i]);
    memset(&in, 0, sizeof in);
    in.offsets_set = 1, in.q_offset = 0, in.k_offset = cut[i];
    rc = run_slice(kern, &p, 0, L, cut[i], cut[i + 1] - cut[i], &in, parts[i], lparts[i]);
    ck_assert_msg(rc == HATTN_OK, "'%s' slice %d: %s", mask, i, hattn_errmsg(g_ctx));
    view_init(&vo[i], parts[i], dt, 4, fo, 0, L);
    view_init(&vl[i], lparts[i], HATTN_DTYPE_FP32, 3, fl, 0, L);
    po[i] = &vo[i].t, pl[i] = &vl[i].t;
    hattn_kernel_destroy(kern);
  }
  o = malloc((size_t)nq * esz), lse = malloc((size_t)nl * sizeof *lse);
  ro = malloc((size_t)nq * sizeof *ro), rl = malloc((size_t)nl * sizeof *rl);
  ck_assert(o && lse && ro && rl);
  memset(o, 0xff, (size_t)nq * esz);
  memset(lse, 0xff, (size_t)nl * sizeof *lse);
  view_init(&mo, o, dt, 4, fo, 0, L);
  view_init(&ml, lse, HATTN_DTYPE_FP32, 3, fl, 0, L);
  rc = hattn_merge(g_ctx, np, po, pl, &mo.t, &ml.t, NULL);
  ck_assert_msg(rc == HATTN_OK, "merge: %s", hattn_errmsg(g_ctx));
  ref_slice(full, &p, 0, L, 0, L, NULL, ro, rl);
  xo = as_f64(o, dt, (size_t)nq), xl = lse_f64(lse, (size_t)nl);
  eo = hattn__rel_error(xo, ro, (size_t)nq), el = hattn__rel_error(xl, rl, (size_t)nl);
  ck_assert_msg(eo < tolerance(dt) && el < tolerance(dt),
                "'%s' %s, keys cut at %lld %lld %lld: merged error O %g LSE %g (tolerance %g)", mask,
                hattn__dtype_name(dt), (long long)cut[1], (long long)cut[2], (long long)cut[3], eo, el,
                tolerance(dt));
  for (i = 0; i < np; i++) free(parts[i]), free(lparts[i]);
  free(o), free(lse), free(ro), free(rl), free(xo), free(xl);
  prob_free(&p);
  hattn_kernel_destroy(full);
}

START_TEST(test_split_keys_merge) {
  split_keys("causal", HATTN_DTYPE_FP32, 150, 2, 1);
  split_keys("causal", HATTN_DTYPE_BF16, 130, 3, 2);
  split_keys("window(40)", HATTN_DTYPE_FP32, 170, 2, 3);
  split_keys("window(33)", HATTN_DTYPE_FP16, 160, 4, 4);
  split_keys("sink(4) | window(16)", HATTN_DTYPE_FP32, 140, 3, 5);
  split_keys("causal & chunk(48) with softcap(8), alibi(0.25)", HATTN_DTYPE_FP32, 150, 2, 6);
}
END_TEST

/* ---- a chunk of queries ------------------------------------------------ */

/* MASK over L x L: query rows [s, s + n) run alone at q_offset s, against
** keys [0, KEND) (the chunk's past and, where KEND is L, its future) at
** k_offset 0, are those rows of the float64 reference of the whole
** problem (for masks that hide keys past KEND from the chunk). */
static void query_chunk(const char *mask, hattn__dtype dt, int64_t L, int64_t s, int64_t n, int64_t kend,
                        int docs, uint64_t salt) {
  const int64_t B = 2, H = 2, HK = 1, D = 32, nq = B * H * n * D, nl = B * H * n;
  int64_t offs[4] = {0, L / 3, L / 3 + 7, L};
  size_t esz = (size_t)hattn__dtype_size(dt);
  hattn_kernel *full = kernel(mask, dt, B, H, HK, L, L, D), *kern = kernel(mask, dt, B, H, HK, n, kend, D);
  hattn_inputs in;
  prob p;
  rng r;
  void *o;
  float *lse;
  double *ro, *rl, *xo, *xl, *wo, *wl, eo, el;
  int rc;

  r.s = g_seed ^ salt * UINT64_C(0x9e3779b97f4a7c15);
  rng_next(&r);
  prob_make(&p, &r, dt, B, H, HK, L, L, D);
  o = malloc((size_t)nq * esz), lse = malloc((size_t)nl * sizeof *lse);
  ro = malloc((size_t)(B * H * L * D) * sizeof *ro), rl = malloc((size_t)(B * H * L) * sizeof *rl);
  ck_assert(o && lse && ro && rl);
  memset(&in, 0, sizeof in);
  if (docs) in.doc_offsets = offs, in.ndocs = 3;
  ref_slice(full, &p, 0, L, 0, L, &in, ro, rl);
  if (docs) offs[3] = kend; /* the chunk's documents: the same, cut at its keys */
  in.offsets_set = 1, in.q_offset = s, in.k_offset = 0;
  rc = run_slice(kern, &p, s, n, 0, kend, &in, o, lse);
  ck_assert_msg(rc == HATTN_OK, "'%s' chunk: %s", mask, hattn_errmsg(g_ctx));
  xo = as_f64(o, dt, (size_t)nq), xl = lse_f64(lse, (size_t)nl);
  wo = rows_of(ro, B * H, L, D, s, n), wl = rows_of(rl, B * H, L, 1, s, n);
  eo = hattn__rel_error(xo, wo, (size_t)nq), el = hattn__rel_error(xl, wl, (size_t)nl);
  ck_assert_msg(eo < tolerance(dt) && el < tolerance(dt),
                "'%s' %s, rows %lld..%lld of %lld: error O %g LSE %g (tolerance %g)", mask, hattn__dtype_name(dt),
                (long long)s, (long long)(s + n), (long long)L, eo, el, tolerance(dt));
  free(o), free(lse), free(ro), free(rl), free(xo), free(xl), free(wo), free(wl);
  prob_free(&p);
  hattn_kernel_destroy(kern);
  hattn_kernel_destroy(full);
}

START_TEST(test_query_chunk) {
  /* Chunked prefill: the chunk sees its past and itself. */
  query_chunk("causal", HATTN_DTYPE_FP32, 160, 64, 50, 114, 0, 1);
  query_chunk("causal", HATTN_DTYPE_BF16, 150, 100, 50, 150, 0, 2);
  query_chunk("window(20)", HATTN_DTYPE_FP32, 140, 37, 41, 78, 0, 3);
  query_chunk("sink(4) | window(16)", HATTN_DTYPE_FP32, 140, 70, 30, 100, 0, 4);
  query_chunk("causal & document", HATTN_DTYPE_FP32, 150, 60, 40, 100, 1, 5);
  query_chunk("causal with alibi", HATTN_DTYPE_FP32, 130, 20, 45, 65, 0, 6);
  /* Bidirectional masks see every key: the chunk runs over all of them. */
  query_chunk("chunk(32)", HATTN_DTYPE_FP32, 128, 40, 50, 128, 0, 7);
  query_chunk("window(10, 10)", HATTN_DTYPE_FP16, 128, 13, 60, 128, 0, 8);
  query_chunk("full", HATTN_DTYPE_FP32, 100, 30, 30, 100, 0, 9);
}
END_TEST

/* ---- defaults ----------------------------------------------------------- */

/* offsets_set 0 ignores q_offset and k_offset; offsets equal to the
** default positions give the default answer. */
START_TEST(test_defaults) {
  const int64_t B = 1, H = 2, HK = 2, LQ = 30, LK = 70, D = 16, nq = B * H * LQ * D, nl = B * H * LQ;
  hattn_kernel *kern = kernel("causal & window(24)", HATTN_DTYPE_FP32, B, H, HK, LQ, LK, D);
  hattn_inputs in;
  prob p;
  rng r;
  float o1[2 * 30 * 16], o2[2 * 30 * 16], l1[60], l2[60];
  r.s = g_seed ^ 77;
  rng_next(&r);
  prob_make(&p, &r, HATTN_DTYPE_FP32, B, H, HK, LQ, LK, D);
  ck_assert_int_eq(run_slice(kern, &p, 0, LQ, 0, LK, NULL, o1, l1), HATTN_OK);
  memset(&in, 0, sizeof in);
  in.q_offset = 5, in.k_offset = 9; /* ignored */
  ck_assert_int_eq(run_slice(kern, &p, 0, LQ, 0, LK, &in, o2, l2), HATTN_OK);
  ck_assert(memcmp(o1, o2, (size_t)nq * sizeof *o1) == 0 && memcmp(l1, l2, (size_t)nl * sizeof *l1) == 0);
  in.offsets_set = 1, in.q_offset = LK - LQ, in.k_offset = 0;
  ck_assert_int_eq(run_slice(kern, &p, 0, LQ, 0, LK, &in, o2, l2), HATTN_OK);
  ck_assert(memcmp(o1, o2, (size_t)nq * sizeof *o1) == 0 && memcmp(l1, l2, (size_t)nl * sizeof *l1) == 0);
  /* Both shifted by the same amount: a band mask gives the same answer. */
  in.q_offset = LK - LQ + 1000, in.k_offset = 1000;
  ck_assert_int_eq(run_slice(kern, &p, 0, LQ, 0, LK, &in, o2, l2), HATTN_OK);
  {
    double *a = lse_f64(o1, (size_t)nq), *b = lse_f64(o2, (size_t)nq);
    double *la = lse_f64(l1, (size_t)nl), *lb = lse_f64(l2, (size_t)nl);
    ck_assert_msg(hattn__rel_error(b, a, (size_t)nq) < 1e-6 && hattn__rel_error(lb, la, (size_t)nl) < 1e-6,
                  "a shift of both offsets changed a band's result");
    free(a), free(b), free(la), free(lb);
  }
  prob_free(&p);
  hattn_kernel_destroy(kern);
}
END_TEST

/* ---- refusals ----------------------------------------------------------- */

static void expect_fail(const char *mask, int64_t lq, int64_t lk, int64_t qo, int64_t ko, int docs, int want,
                        const char *msg) {
  hattn_kernel *kern = kernel(mask, HATTN_DTYPE_FP32, 1, 1, 1, lq, lk, 8);
  int64_t offs[2] = {0, lk};
  int32_t routes[64];
  hattn_inputs in;
  hattn_plan *plan = NULL;
  int rc;
  memset(&in, 0, sizeof in);
  in.offsets_set = 1, in.q_offset = qo, in.k_offset = ko;
  if (docs == 1) in.doc_offsets = offs, in.ndocs = 1;
  if (docs == 2) {
    int i;
    for (i = 0; i < 64; i++) routes[i] = -1;
    in.topk_blocks = routes, in.topk_k = 2;
  }
  rc = hattn_plan_create(kern, &in, &plan);
  ck_assert_msg(rc == want, "'%s' q_offset %lld k_offset %lld: got %s, want %s (%s)", mask, (long long)qo,
                (long long)ko, hattn_err_name(rc), hattn_err_name(want), hattn_errmsg(g_ctx));
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), msg) != NULL, "message '%s' lacks '%s'", hattn_errmsg(g_ctx), msg);
  ck_assert(plan == NULL);
  hattn_kernel_destroy(kern);
}

START_TEST(test_refusals) {
  expect_fail("causal", 8, 8, HATTN_MAX_SEQLEN + 1, 0, 0, HATTN_EINPUT,
              "q_offset is 1073741824; it must lie in [-1073741823, 1073741823]");
  expect_fail("causal", 8, 8, -HATTN_MAX_SEQLEN - 1, 0, 0, HATTN_EINPUT, "q_offset is -1073741824");
  expect_fail("causal", 8, 8, 0, -1, 0, HATTN_EINPUT,
              "k_offset is -1; key positions are never negative, so it must lie in [0, 1073741823]");
  expect_fail("causal", 8, 8, 0, HATTN_MAX_SEQLEN + 1, 0, HATTN_EINPUT, "k_offset is 1073741824");
  expect_fail("causal", 8, 8, HATTN_MAX_SEQLEN - 4, 0, 0, HATTN_EINPUT,
              "q_offset + lq is 1073741827; query positions must stay below HATTN_MAX_SEQLEN");
  expect_fail("causal", 8, 8, 0, HATTN_MAX_SEQLEN - 7, 0, HATTN_EINPUT,
              "k_offset + lk is 1073741824; key positions must stay below HATTN_MAX_SEQLEN");
  expect_fail("causal & document", 8, 8, 0, 3, 1, HATTN_ENOTSUP,
              "document() with k_offset 3 is not supported");
  expect_fail("causal & random(2, 7)", 8, 200, 0, 0, 0, HATTN_ENOTSUP,
              "random() with offsets is not supported: it picks blocks of the default positions, so q_offset "
              "must be lk - lq (192) and k_offset 0, got 0 and 0");
  expect_fail("causal & topk(2)", 8, 200, 190, 0, 2, HATTN_ENOTSUP,
              "topk() with offsets is not supported: it picks blocks of the default positions, so q_offset "
              "must be lk - lq (192) and k_offset 0, got 190 and 0");
}
END_TEST

/* random() at the default positions, spelt out, runs. */
START_TEST(test_random_default_positions) {
  hattn_kernel *kern = kernel("causal & random(2, 7)", HATTN_DTYPE_FP32, 1, 1, 1, 8, 200, 8);
  hattn_inputs in;
  hattn_plan *plan = NULL;
  memset(&in, 0, sizeof in);
  in.offsets_set = 1, in.q_offset = 192, in.k_offset = 0;
  ck_assert_msg(hattn_plan_create(kern, &in, &plan) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  hattn_plan_destroy(plan);
  hattn_kernel_destroy(kern);
}
END_TEST

static Suite *offsets_suite(void) {
  Suite *s = suite_create("offsets");
  TCase *tc = tcase_create("offsets");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, test_kernel_vs_reference, 0, (int)(2 * sizeof g_ocases / sizeof g_ocases[0]));
  tcase_add_test(tc, test_split_keys_merge);
  tcase_add_test(tc, test_query_chunk);
  tcase_add_test(tc, test_defaults);
  tcase_add_test(tc, test_refusals);
  tcase_add_test(tc, test_random_default_positions);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return api_main(offsets_suite, &g_seed); }
