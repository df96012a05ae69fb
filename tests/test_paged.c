/*
** test_paged.c: paged K and V (hattn_paged_kv, hattn_run_paged) on the CPU
** backend.  K and V are scattered into a shuffled pool of pages whose
** unused pages hold NaN, so that a kernel that reads a wrong page, or the
** slot of another page, fails; O and LSE are poisoned before each run and
** compared with the float64 reference on the logical, unpaged tensors.
** Page sizes 1, 16, 64 and 128 (above the kernels' key block), both
** layouts, fp32 / fp16 / bf16, dense, causal, window and document
** patterns, decode (lq = 1) and prefill (lq = lk), GQA.  Then every error
** path with its code and message.  Exits 77 (skip) without LLVM.
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

static const char *g_text = "pattern dense = full\n"
                            "pattern causal = causal\n"
                            "pattern window = causal & window(37)\n"
                            "pattern docs = causal & document\n";

static void setup(void) { api_open(g_text, "paged.hattn", &g_ctx, &g_spec); }

static void teardown(void) {
  hattn_specfile_destroy(g_spec);
  hattn_close(g_ctx);
  g_spec = NULL;
  g_ctx = NULL;
}

/* One problem with its logical tensors, its pools and block table. */
typedef struct paged_case {
  const char *pattern;
  hattn__dtype dtype;
  int64_t b, h, hk, lq, lk, d, page;
  int layout;
} paged_case;

typedef struct fixture {
  paged_case c;
  int64_t need, cols, pages;     /* pages a sequence spans, table columns, pool pages */
  int64_t sq[4], sk[4], sl[3], sp[4], sbt[2];
  void *q, *k, *v, *o, *kp, *vp;
  float *lse;
  int32_t *bt;
  int64_t offs[5];
  hattn_paged_kv paged;
  hattn_inputs in;               /* with paged */
  hattn_inputs in_logical;       /* without */
  DLTensor tq, tk, tv, to, tl, tkp, tvp, tbt;
} fixture;

static size_t nelem(const int64_t *s, int n) {
  size_t x = 1;
  int i;
  for (i = 0; i < n; i++) x *= (size_t)s[i];
  return x;
}

/* The element index in a pool of F's layout of slot SLOT of page PAGE,
** kv head KH, dim DD. */
static size_t pool_index(const fixture *f, int64_t page, int64_t slot, int64_t kh, int64_t dd) {
  const paged_case *c = &f->c;
  if (c->layout == HATTN_PAGED_NHD) return (size_t)(((page * c->page + slot) * c->hk + kh) * c->d + dd);
  return (size_t)(((page * c->hk + kh) * c->page + slot) * c->d + dd);
}

/* A fresh block table: the pages of all rows are a random permutation of
** the pool's, some pages left unused; columns past the span hold -1.
** Then the pools: NaN everywhere, and the logical K and V scattered into
** the listed pages. */
static void fixture_page(fixture *f, rng *r) {
  const paged_case *c = &f->c;
  int64_t *perm = malloc((size_t)f->pages * sizeof *perm), i, b, kh, t, dd;
  size_t np = nelem(f->sp, 4), es = api_esize(c->dtype);
  ck_assert_ptr_nonnull(perm);
  for (i = 0; i < f->pages; i++) perm[i] = i;
  for (i = f->pages - 1; i > 0; i--) {
    int64_t j = rng_range(r, 0, i), x = perm[i];
    perm[i] = perm[j], perm[j] = x;
  }
  for (b = 0; b < c->b; b++)
    for (i = 0; i < f->cols; i++) f->bt[b * f->cols + i] = i < f->need ? (int32_t)perm[b * f->need + i] : -1;
  free(perm);
  for (i = 0; i < (int64_t)np; i++) put(f->kp, (size_t)i, c->dtype, NAN), put(f->vp, (size_t)i, c->dtype, NAN);
  for (b = 0; b < c->b; b++)
    for (kh = 0; kh < c->hk; kh++)
      for (t = 0; t < c->lk; t++) {
        int64_t page = f->bt[b * f->cols + t / c->page], slot = t % c->page;
        size_t src = (size_t)(((b * c->hk + kh) * c->lk + t) * c->d);
        size_t dst = pool_index(f, page, slot, kh, 0);
        memcpy((char *)f->kp + dst * es, (char *)f->k + src * es, (size_t)c->d * es);
        memcpy((char *)f->vp + dst * es, (char *)f->v + src * es, (size_t)c->d * es);
        for (dd = 0; dd < c->d; dd++) ck_assert(!isnan(get(f->kp, dst + (size_t)dd, c->dtype)));
      }
}

/* Fresh Q, K, V; O and LSE poisoned with NaN. */
static void fixture_fresh(fixture *f, rng *r) {
  const paged_case *c = &f->c;
  size_t i, nq = nelem(f->sq, 4), nk = nelem(f->sk, 4);
  for (i = 0; i < nq; i++) put(f->q, i, c->dtype, 2 * rng_unit(r));
  for (i = 0; i < nk; i++) put(f->k, i, c->dtype, 2 * rng_unit(r)), put(f->v, i, c->dtype, rng_unit(r));
  for (i = 0; i < nq; i++) put(f->o, i, c->dtype, NAN);
  for (i = 0; i < nelem(f->sl, 3); i++) f->lse[i] = NAN;
  fixture_page(f, r);
}

static void fixture_make(fixture *f, const paged_case *c, rng *r) {
  DLDataType dt = api_dl_dtype(c->dtype), i32 = {kDLInt, 32, 1}, f32 = {kDLFloat, 32, 1};
  size_t es = api_esize(c->dtype);
  memset(f, 0, sizeof *f);
  f->c = *c;
  f->need = (c->lk + c->page - 1) / c->page;
  f->cols = f->need + 1;
  f->pages = c->b * f->need + 3;
  f->sq[0] = c->b, f->sq[1] = c->h, f->sq[2] = c->lq, f->sq[3] = c->d;
  f->sk[0] = c->b, f->sk[1] = c->hk, f->sk[2] = c->lk, f->sk[3] = c->d;
  f->sl[0] = c->b, f->sl[1] = c->h, f->sl[2] = c->lq;
  f->sp[0] = f->pages, f->sp[3] = c->d;
  f->sp[1] = c->layout == HATTN_PAGED_NHD ? c->page : c->hk;
  f->sp[2] = c->layout == HATTN_PAGED_NHD ? c->hk : c->page;
  f->sbt[0] = c->b, f->sbt[1] = f->cols;
  f->q = malloc(nelem(f->sq, 4) * es), f->o = malloc(nelem(f->sq, 4) * es);
  f->k = malloc(nelem(f->sk, 4) * es), f->v = malloc(nelem(f->sk, 4) * es);
  f->kp = malloc(nelem(f->sp, 4) * es), f->vp = malloc(nelem(f->sp, 4) * es);
  f->lse = malloc(nelem(f->sl, 3) * sizeof *f->lse);
  f->bt = malloc((size_t)(c->b * f->cols) * sizeof *f->bt);
  ck_assert(f->q && f->o && f->k && f->v && f->kp && f->vp && f->lse && f->bt);
  api_host_tensor(&f->tq, f->q, dt, 4, f->sq), api_host_tensor(&f->to, f->o, dt, 4, f->sq);
  api_host_tensor(&f->tk, f->k, dt, 4, f->sk), api_host_tensor(&f->tv, f->v, dt, 4, f->sk);
  api_host_tensor(&f->tkp, f->kp, dt, 4, f->sp), api_host_tensor(&f->tvp, f->vp, dt, 4, f->sp);
  api_host_tensor(&f->tl, f->lse, f32, 3, f->sl), api_host_tensor(&f->tbt, f->bt, i32, 2, f->sbt);
  /* Three documents (the middle one may be empty), shared by the batch. */
  f->offs[0] = 0, f->offs[1] = rng_range(r, 0, c->lk), f->offs[2] = rng_range(r, f->offs[1], c->lk);
  f->offs[3] = c->lk;
  f->paged.page_size = c->page, f->paged.layout = c->layout, f->paged.block_table = &f->tbt;
  if (strcmp(c->pattern, "docs") == 0) f->in_logical.doc_offsets = f->offs, f->in_logical.ndocs = 3;
  f->in = f->in_logical;
  f->in.paged = &f->paged;
  fixture_fresh(f, r);
}

static void fixture_free(fixture *f) {
  free(f->q), free(f->o), free(f->k), free(f->v), free(f->kp), free(f->vp), free(f->lse), free(f->bt);
}

static double tol_of(hattn__dtype dt) { return dt == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2; }

/* O and LSE of F against the float64 reference on the logical tensors;
** the reference on the pools must give the same numbers. */
static void check_against_reference(hattn_kernel *kern, fixture *f, const char *what) {
  const paged_case *c = &f->c;
  size_t nq = nelem(f->sq, 4), nl = nelem(f->sl, 3), i;
  double *ro = malloc(nq * sizeof *ro), *rl = malloc(nl * sizeof *rl), *po = malloc(nq * sizeof *po),
         *pl = malloc(nl * sizeof *pl), *xo = malloc(nq * sizeof *xo), *xl = malloc(nl * sizeof *xl), eo, el;
  DLDataType f64 = {kDLFloat, 64, 1};
  DLTensor to, tl;
  int rc;
  ck_assert(ro && rl && po && pl && xo && xl);
  api_host_tensor(&to, ro, f64, 4, f->sq), api_host_tensor(&tl, rl, f64, 3, f->sl);
  rc = hattn_reference(kern, &f->tq, &f->tk, &f->tv, &to, &tl, &f->in_logical);
  ck_assert_msg(rc == HATTN_OK, "reference: %s", hattn_errmsg(g_ctx));
  to.data = po, tl.data = pl;
  rc = hattn_reference(kern, &f->tq, &f->tkp, &f->tvp, &to, &tl, &f->in);
  ck_assert_msg(rc == HATTN_OK, "paged reference: %s", hattn_errmsg(g_ctx));
  ck_assert_msg(memcmp(ro, po, nq * sizeof *ro) == 0 && memcmp(rl, pl, nl * sizeof *rl) == 0,
                "%s: the reference on the pools differs from the reference on the logical tensors", what);
  for (i = 0; i < nq; i++) xo[i] = get(f->o, i, c->dtype);
  for (i = 0; i < nl; i++) xl[i] = f->lse[i];
  eo = hattn__rel_error(xo, ro, nq);
  el = hattn__rel_error(xl, rl, nl);
  ck_assert_msg(eo < tol_of(c->dtype) && el < tol_of(c->dtype),
                "%s: '%s' %s b %lld h %lld hk %lld lq %lld lk %lld d %lld page %lld %s: error O %g LSE %g "
                "(tolerance %g)",
                what, c->pattern, hattn__dtype_name(c->dtype), (long long)c->b, (long long)c->h, (long long)c->hk,
                (long long)c->lq, (long long)c->lk, (long long)c->d, (long long)c->page,
                c->layout == HATTN_PAGED_NHD ? "NHD" : "HND", eo, el, tol_of(c->dtype));
  free(ro), free(rl), free(po), free(pl), free(xo), free(xl);
}

static hattn_kernel *kernel_of(const paged_case *c) {
  hattn_problem pr;
  hattn_kernel *kern = NULL;
  int rc;
  pr.batch = c->b, pr.heads = c->h, pr.kv_heads = c->hk, pr.lq = c->lq, pr.lk = c->lk, pr.head_dim = c->d;
  pr.dtype = (int)c->dtype;
  rc = hattn_kernel_get(g_ctx, g_spec, c->pattern, &pr, &kern);
  ck_assert_msg(rc == HATTN_OK, "kernel '%s': %s", c->pattern, hattn_errmsg(g_ctx));
  return kern;
}

static const char *const g_patterns[] = {"dense", "causal", "window", "docs"};
static const hattn__dtype g_dtypes[] = {HATTN_DTYPE_FP32, HATTN_DTYPE_FP16, HATTN_DTYPE_BF16};
static const int64_t g_pages[] = {1, 16, 64, 128};

/* hattn_forward on paged K and V: every pattern, dtype, page size and
** layout, decode and prefill, GQA (8 heads over 2 kv heads). */
START_TEST(forward_paged) {
  rng r = {g_seed ^ (uint64_t)_i * 0x9e37};
  paged_case c;
  fixture f;
  hattn_kernel *kern;
  int lay, pi, decode;
  c.pattern = g_patterns[_i % 4];
  c.dtype = g_dtypes[_i / 4];
  c.b = 2, c.h = 8, c.hk = 2, c.d = 32;
  for (decode = 0; decode < 2; decode++)
    for (pi = 0; pi < 4; pi++)
      for (lay = 0; lay < 2; lay++) {
        c.page = g_pages[pi];
        c.layout = lay ? HATTN_PAGED_HND : HATTN_PAGED_NHD;
        c.lk = rng_range(&r, 1, 200) + (c.page > 64 ? 150 : 0);
        c.lq = decode ? 1 : c.lk;
        kern = kernel_of(&c);
        fixture_make(&f, &c, &r);
        ck_assert_msg(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &f.in, NULL) == HATTN_OK, "%s",
                      hattn_errmsg(g_ctx));
        check_against_reference(kern, &f, decode ? "decode" : "prefill");
        fixture_free(&f);
        hattn_kernel_destroy(kern);
      }
}
END_TEST

/* One plan, hattn_run_paged twice with two different block tables (and
** pools scattered anew), each run on fresh inputs into poisoned outputs;
** page size 1, 16, 64 and 128, both layouts. */
START_TEST(plan_two_tables) {
  rng r = {g_seed ^ 0x7ab1e ^ (uint64_t)_i};
  paged_case c;
  fixture f;
  hattn_kernel *kern;
  hattn_plan *plan = NULL;
  int run;
  c.pattern = g_patterns[_i % 4];
  c.dtype = g_dtypes[_i % 3];
  c.b = 3, c.h = 8, c.hk = 2, c.d = 64;
  c.page = g_pages[_i % 4];
  c.layout = _i % 2 ? HATTN_PAGED_HND : HATTN_PAGED_NHD;
  c.lk = rng_range(&r, 60, 300);
  c.lq = _i % 3 == 0 ? 1 : c.lk;
  kern = kernel_of(&c);
  fixture_make(&f, &c, &r);
  {
    hattn_inputs pin = f.in;
    hattn_paged_kv pk = f.paged;
    pk.block_table = NULL; /* a plan does not read it */
    pin.paged = &pk;
    ck_assert_msg(hattn_plan_create(kern, &pin, &plan) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  }
  for (run = 0; run < 2; run++) {
    int32_t before;
    if (run) fixture_fresh(&f, &r);
    before = f.bt[0];
    ck_assert_msg(hattn_run_paged(plan, &f.tq, &f.tkp, &f.tvp, &f.tbt, &f.to, &f.tl, NULL) == HATTN_OK, "%s",
                  hattn_plan_errmsg(plan));
    ck_assert_int_eq(f.bt[0], before);
    check_against_reference(kern, &f, run ? "second table" : "first table");
  }
  hattn_plan_destroy(plan);
  fixture_free(&f);
  hattn_kernel_destroy(kern);
}
END_TEST

/* The error paths, each with its code and message; outputs stay poisoned. */
static void expect(int rc, int want, const char *needle) {
  ck_assert_msg(rc == want, "returned %s (%d), expected %s; message: %s", hattn_err_name(rc), rc,
                hattn_err_name(want), hattn_errmsg(g_ctx));
  ck_assert_msg(strstr(hattn_errmsg(g_ctx), needle) != NULL, "message '%s' lacks '%s'", hattn_errmsg(g_ctx),
                needle);
}

START_TEST(errors) {
  rng r = {g_seed ^ 0xe7707};
  paged_case c = {"causal", HATTN_DTYPE_FP32, 2, 4, 2, 10, 40, 16, 16, HATTN_PAGED_NHD};
  fixture f;
  hattn_kernel *kern = kernel_of(&c);
  hattn_plan *plan = NULL, *plain = NULL;
  hattn_paged_kv bad;
  hattn_inputs in;
  DLTensor t;
  int64_t s3[3] = {5, 16, 2}, sbad[4], sbt[2];
  DLDataType i64 = {kDLInt, 64, 1};
  char msg[160];
  size_t i;

  fixture_make(&f, &c, &r);
  /* Page size and layout. */
  in = f.in, bad = f.paged, in.paged = &bad;
  bad.page_size = 3;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in, NULL), HATTN_EINPUT,
         "inputs.paged: page_size 3 is not a power of two in 1..256");
  bad.page_size = 512;
  expect(hattn_plan_create(kern, &in, &plan), HATTN_EINPUT, "page_size 512 is not a power of two in 1..256");
  ck_assert_ptr_null(plan);
  bad.page_size = 0;
  expect(hattn_reference(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in), HATTN_EINPUT,
         "page_size 0 is not a power of two");
  bad.page_size = 16, bad.layout = 2;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in, NULL), HATTN_EINPUT,
         "layout 2 is neither HATTN_PAGED_NHD (0) nor HATTN_PAGED_HND (1)");
  /* The layout must match the pools' shape: HND reads [pages, 16, 2, 16] as wrong. */
  bad.layout = HATTN_PAGED_HND;
  snprintf(msg, sizeof msg, "k: shape [%lld, 16, 2, 16], expected [%lld, 2, 16, 16]", (long long)f.pages,
           (long long)f.pages);
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in, NULL), HATTN_ESHAPE, msg);
  /* Pools: dimensions, dtype, device, pages. */
  t = f.tkp, t.ndim = 3, t.shape = s3;
  expect(hattn_forward(kern, &f.tq, &t, &f.tvp, &f.to, &f.tl, &f.in, NULL), HATTN_ESHAPE,
         "k: a paged pool is 4-d, [pages, page_size, kv_heads, head_dim] (HATTN_PAGED_NHD); got 3 dimensions");
  t = f.tvp, t.dtype.bits = 16;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &t, &f.to, &f.tl, &f.in, NULL), HATTN_ESHAPE,
         "v: dtype float16, expected float32");
  t = f.tkp, t.device.device_type = kDLCUDA;
  expect(hattn_forward(kern, &f.tq, &t, &f.tvp, &f.to, &f.tl, &f.in, NULL), HATTN_ESHAPE,
         "k: on device type 2 id 0; this kernel runs on kDLCPU");
  memcpy(sbad, f.sp, sizeof sbad), sbad[0] = f.pages - 1, t = f.tvp, t.shape = sbad;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &t, &f.to, &f.tl, &f.in, NULL), HATTN_ESHAPE,
         "v: shape [");
  expect(hattn_forward(kern, &f.tq, &f.tkp, &t, &f.to, &f.tl, &f.in, NULL), HATTN_ESHAPE, "(dimension 0 differs)");
  memcpy(sbad, f.sp, sizeof sbad), sbad[0] = 0, t = f.tkp, t.shape = sbad;
  expect(hattn_forward(kern, &f.tq, &t, &f.tvp, &f.to, &f.tl, &f.in, NULL), HATTN_ESHAPE,
         "k: a pool of 0 pages; between 1 and 2^31 - 1");
  memcpy(sbad, f.sp, sizeof sbad), sbad[0] = INT64_C(1) << 31, t = f.tkp, t.shape = sbad;
  expect(hattn_forward(kern, &f.tq, &t, &f.tvp, &f.to, &f.tl, &f.in, NULL), HATTN_ESHAPE,
         "k: a pool of 2147483648 pages; between 1 and 2^31 - 1 (int32 block-table entries)");
  memcpy(sbad, f.sp, sizeof sbad), sbad[2] = 4, t = f.tkp, t.shape = sbad;
  expect(hattn_forward(kern, &f.tq, &t, &f.tvp, &f.to, &f.tl, &f.in, NULL), HATTN_ESHAPE, "(dimension 2 differs)");
  /* The block table: missing, its shape and dtype, its entries. */
  bad = f.paged, in = f.in, in.paged = &bad, bad.block_table = NULL;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in, NULL), HATTN_EINPUT,
         "block_table: missing (NULL); paged K and V need one");
  t = f.tbt, t.dtype = i64, bad.block_table = &t;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in, NULL), HATTN_ESHAPE,
         "block_table: dtype int64, expected int32");
  sbt[0] = 2, sbt[1] = 2, t = f.tbt, t.shape = sbt;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in, NULL), HATTN_ESHAPE,
         "block_table: 2 columns, fewer than the ceil(lk / page_size) = ceil(40 / 16) = 3 pages a sequence spans");
  sbt[0] = 3, sbt[1] = f.cols, t = f.tbt, t.shape = sbt;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in, NULL), HATTN_ESHAPE,
         "block_table: shape [3, 4], expected [2, 4] (dimension 0 differs)");
  t = f.tbt, t.ndim = 1;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &in, NULL), HATTN_ESHAPE,
         "block_table: 1 dimensions, expected 2");
  f.bt[1 * f.cols + 2] = -1;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &f.in, NULL), HATTN_EINPUT,
         "block_table[1][2] is -1, outside the pool's pages [0, 9)");
  expect(hattn_reference(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &f.in), HATTN_EINPUT,
         "block_table[1][2] is -1, outside the pool's pages [0, 9)");
  f.bt[1 * f.cols + 2] = (int32_t)f.pages;
  expect(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &f.in, NULL), HATTN_EINPUT,
         "block_table[1][2] is 9, outside the pool's pages [0, 9)");
  /* Plans: the paged one refuses hattn_run and a bad table; the plain one
  ** refuses hattn_run_paged. */
  ck_assert_int_eq(hattn_plan_create(kern, &f.in, &plan), HATTN_OK);
  expect(hattn_run_paged(plan, &f.tq, &f.tkp, &f.tvp, &f.tbt, &f.to, &f.tl, NULL), HATTN_EINPUT,
         "block_table[1][2] is 9, outside the pool's pages [0, 9)");
  f.bt[1 * f.cols + 2] = 0;
  expect(hattn_run(plan, &f.tq, &f.tk, &f.tv, &f.to, &f.tl, NULL), HATTN_EINPUT,
         "hattn_run: the plan was made for paged K and V (inputs.paged): run it with hattn_run_paged");
  expect(hattn_run_paged(plan, &f.tq, &f.tkp, &f.tvp, NULL, &f.to, &f.tl, NULL), HATTN_EINPUT,
         "block_table: missing (NULL)");
  ck_assert_int_eq(hattn_plan_create(kern, NULL, &plain), HATTN_OK);
  expect(hattn_run_paged(plain, &f.tq, &f.tkp, &f.tvp, &f.tbt, &f.to, &f.tl, NULL), HATTN_EINPUT,
         "hattn_run_paged: the plan was made for contiguous K and V (inputs.paged was NULL): run it with hattn_run");
  ck_assert_int_eq(hattn_run_paged(NULL, &f.tq, &f.tkp, &f.tvp, &f.tbt, &f.to, &f.tl, NULL), HATTN_EINVAL);
  /* Nothing was written by the failures. */
  for (i = 0; i < nelem(f.sq, 4); i++) ck_assert(isnan(get(f.o, i, c.dtype)));
  hattn_plan_destroy(plan);
  hattn_plan_destroy(plain);
  fixture_free(&f);
  hattn_kernel_destroy(kern);
}
END_TEST

/* A zeroed hattn_inputs (paged NULL) keeps contiguous K and V: the same
** kernel runs both ways and agrees with itself exactly. */
START_TEST(contiguous_unchanged) {
  rng r = {g_seed ^ 0xc0417};
  paged_case c = {"window", HATTN_DTYPE_BF16, 2, 8, 2, 33, 150, 32, 16, HATTN_PAGED_HND};
  fixture f;
  hattn_kernel *kern = kernel_of(&c);
  size_t nq, i;
  void *o2;
  fixture_make(&f, &c, &r);
  nq = nelem(f.sq, 4);
  ck_assert_int_eq(hattn_forward(kern, &f.tq, &f.tk, &f.tv, &f.to, &f.tl, NULL, NULL), HATTN_OK);
  check_against_reference(kern, &f, "contiguous");
  o2 = malloc(nq * 2);
  ck_assert_ptr_nonnull(o2);
  memcpy(o2, f.o, nq * 2);
  for (i = 0; i < nq; i++) put(f.o, i, c.dtype, NAN);
  ck_assert_int_eq(hattn_forward(kern, &f.tq, &f.tkp, &f.tvp, &f.to, &f.tl, &f.in, NULL), HATTN_OK);
  ck_assert(memcmp(o2, f.o, nq * 2) == 0);
  free(o2);
  fixture_free(&f);
  hattn_kernel_destroy(kern);
}
END_TEST

/* ---- CUDA -------------------------------------------------------------------- */

/* The CUDA backend's device (for copies) and a context of the public API on
** it, or NULL where no GPU opens (the CUDA tests then skip). */
typedef struct cuda_env {
  const hattn__backend_i *be;
  void *dev;
  hattn_ctx *ctx;
  hattn_specfile *spec;
} cuda_env;

static int cuda_env_open(cuda_env *e, const char *test) {
  hattn_options opt;
  char err[512];
  memset(e, 0, sizeof *e);
  e->be = hattn__backend_get(HATTN_BACKEND_CUDA);
  hattn_options_init(&opt);
  opt.backend = HATTN_BACKEND_CUDA, opt.db = "", opt.quiet = 1;
  if (hattn_open(&opt, &e->ctx) != HATTN_OK || e->be->dev_open(0, 0, &e->dev, err, sizeof err) != HATTN_OK) {
    printf("[SKIP] %s: %s\n", test, hattn_errmsg(e->ctx));
    hattn_close(e->ctx);
    return 0;
  }
  ck_assert_int_eq(hattn_specfile_parse(e->ctx, g_text, strlen(g_text), NULL, &e->spec), HATTN_OK);
  return 1;
}

static void cuda_env_close(cuda_env *e) {
  hattn_specfile_destroy(e->spec);
  hattn_close(e->ctx);
  e->be->dev_close(e->dev);
}

/* F's Q, pools, table, O and LSE in device memory, as DLTensors of the same
** shapes. */
typedef struct dev_io {
  void *q, *kp, *vp, *bt, *o, *l;
  DLTensor tq, tkp, tvp, tbt, to, tl;
} dev_io;

static void *dev_copy(cuda_env *e, const void *src, size_t bytes) {
  char err[512];
  void *p = NULL;
  ck_assert_msg(e->be->mem_alloc(e->dev, bytes ? bytes : 1, &p, err, sizeof err) == HATTN_OK, "%s", err);
  if (src) ck_assert_msg(e->be->mem_upload(e->dev, p, src, bytes, err, sizeof err) == HATTN_OK, "%s", err);
  else ck_assert_msg(e->be->mem_set(e->dev, p, 0xff, bytes, err, sizeof err) == HATTN_OK, "%s", err);
  return p;
}

static DLTensor on_device(DLTensor t, void *data) {
  t.data = data;
  t.device.device_type = kDLCUDA;
  t.device.device_id = 0;
  return t;
}

/* Upload F's inputs (Q, the pools and table as they are now) and poison
** the device's O and LSE (NaN). */
static void dev_io_make(cuda_env *e, dev_io *d, fixture *f) {
  size_t es = api_esize(f->c.dtype);
  memset(d, 0, sizeof *d);
  d->q = dev_copy(e, f->q, nelem(f->sq, 4) * es);
  d->kp = dev_copy(e, f->kp, nelem(f->sp, 4) * es);
  d->vp = dev_copy(e, f->vp, nelem(f->sp, 4) * es);
  d->bt = dev_copy(e, f->bt, nelem(f->sbt, 2) * sizeof(int32_t));
  d->o = dev_copy(e, NULL, nelem(f->sq, 4) * es);
  d->l = dev_copy(e, NULL, nelem(f->sl, 3) * sizeof(float));
  d->tq = on_device(f->tq, d->q), d->tkp = on_device(f->tkp, d->kp), d->tvp = on_device(f->tvp, d->vp);
  d->tbt = on_device(f->tbt, d->bt), d->to = on_device(f->to, d->o), d->tl = on_device(f->tl, d->l);
}

/* The device's O and LSE back into F's host buffers (after the launches
** queued on the default stream). */
static void dev_io_fetch(cuda_env *e, dev_io *d, fixture *f) {
  char err[512];
  size_t es = api_esize(f->c.dtype);
  ck_assert_msg(e->be->mem_download(e->dev, f->o, d->o, nelem(f->sq, 4) * es, err, sizeof err) == HATTN_OK, "%s",
                err);
  ck_assert_msg(e->be->mem_download(e->dev, f->lse, d->l, nelem(f->sl, 3) * sizeof(float), err, sizeof err) ==
                    HATTN_OK,
                "%s", err);
}

static void dev_io_free(cuda_env *e, dev_io *d) {
  void *p[6] = {d->q, d->kp, d->vp, d->bt, d->o, d->l};
  int i;
  for (i = 0; i < 6; i++) e->be->mem_free(e->dev, p[i]);
}

/* Paged K and V on the GPU: hattn_forward (the table checked on the
** device) and a plan run twice with fresh tables (hattn_run_paged), against
** the float64 reference on the logical tensors; page sizes 1, 16, 64 and
** 128, both layouts, bf16 and fp16, decode (1 and 5 queries: the decode
** kernels) and prefill (the forward kernel), GQA 8 over 2. */
START_TEST(cuda_paged) {
  static const char *const pats[] = {"dense", "causal", "window", "docs"};
  rng r = {g_seed ^ 0xc0da ^ (uint64_t)_i * 0x9e37};
  cuda_env e;
  paged_case c;
  fixture f;
  dev_io d;
  hattn_problem pr;
  hattn_kernel *kern = NULL;
  hattn_plan *plan = NULL;
  int lay, run, mode;
  if (!cuda_env_open(&e, "cuda_paged")) return;
  c.pattern = pats[_i % 4];
  c.dtype = _i % 2 ? HATTN_DTYPE_FP16 : HATTN_DTYPE_BF16;
  c.b = 2, c.h = 8, c.hk = 2, c.d = _i % 3 == 2 ? 64 : 128;
  c.page = g_pages[_i % 4];
  for (mode = 0; mode < 3; mode++)
    for (lay = 0; lay < 2; lay++) {
      c.layout = lay ? HATTN_PAGED_HND : HATTN_PAGED_NHD;
      c.lk = rng_range(&r, 100, 700) + (mode == 0 ? 3000 : 0);
      c.lq = mode == 0 ? 1 : mode == 1 ? 5 : c.lk;
      pr.batch = c.b, pr.heads = c.h, pr.kv_heads = c.hk, pr.lq = c.lq, pr.lk = c.lk, pr.head_dim = c.d;
      pr.dtype = (int)c.dtype;
      ck_assert_msg(hattn_kernel_get(e.ctx, e.spec, c.pattern, &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(e.ctx));
      fixture_make(&f, &c, &r);
      dev_io_make(&e, &d, &f);
      f.paged.block_table = &d.tbt;
      ck_assert_msg(hattn_forward(kern, &d.tq, &d.tkp, &d.tvp, &d.to, &d.tl, &f.in, NULL) == HATTN_OK, "%s",
                    hattn_errmsg(e.ctx));
      dev_io_fetch(&e, &d, &f);
      f.paged.block_table = &f.tbt;
      check_against_reference(kern, &f, "cuda hattn_forward");
      f.paged.block_table = NULL;
      ck_assert_msg(hattn_plan_create(kern, &f.in, &plan) == HATTN_OK, "%s", hattn_errmsg(e.ctx));
      for (run = 0; run < 2; run++) {
        fixture_fresh(&f, &r);
        dev_io_free(&e, &d);
        dev_io_make(&e, &d, &f);
        ck_assert_msg(hattn_run_paged(plan, &d.tq, &d.tkp, &d.tvp, &d.tbt, &d.to, &d.tl, NULL) == HATTN_OK, "%s",
                      hattn_plan_errmsg(plan));
        dev_io_fetch(&e, &d, &f);
        f.paged.block_table = &f.tbt;
        check_against_reference(kern, &f, run ? "cuda hattn_run_paged, second table" : "cuda hattn_run_paged");
        f.paged.block_table = NULL;
      }
      hattn_plan_destroy(plan);
      dev_io_free(&e, &d);
      fixture_free(&f);
      hattn_kernel_destroy(kern);
    }
  cuda_env_close(&e);
}
END_TEST

/* hattn_forward checks a device block table's entries (downloading them)
** and refuses one outside the pool, naming it; nothing is launched. */
START_TEST(cuda_bad_entry) {
  rng r = {g_seed ^ 0xbad};
  cuda_env e;
  paged_case c = {"causal", HATTN_DTYPE_BF16, 2, 4, 2, 1, 40, 64, 16, HATTN_PAGED_NHD};
  fixture f;
  dev_io d;
  hattn_problem pr = {2, 4, 2, 1, 40, 64, HATTN_BF16};
  hattn_kernel *kern = NULL;
  char want[128];
  size_t i;
  if (!cuda_env_open(&e, "cuda_bad_entry")) return;
  ck_assert_msg(hattn_kernel_get(e.ctx, e.spec, "causal", &pr, &kern) == HATTN_OK, "%s", hattn_errmsg(e.ctx));
  fixture_make(&f, &c, &r);
  f.bt[1 * f.cols + 2] = (int32_t)f.pages;
  dev_io_make(&e, &d, &f);
  f.paged.block_table = &d.tbt;
  ck_assert_int_eq(hattn_forward(kern, &d.tq, &d.tkp, &d.tvp, &d.to, &d.tl, &f.in, NULL), HATTN_EINPUT);
  snprintf(want, sizeof want, "block_table[1][2] is %lld, outside the pool's pages [0, %lld)", (long long)f.pages,
           (long long)f.pages);
  ck_assert_str_eq(hattn_errmsg(e.ctx), want);
  dev_io_fetch(&e, &d, &f);
  for (i = 0; i < nelem(f.sq, 4); i++) ck_assert(isnan(get(f.o, i, c.dtype)));
  dev_io_free(&e, &d);
  fixture_free(&f);
  hattn_kernel_destroy(kern);
  cuda_env_close(&e);
}
END_TEST

static Suite *paged_suite(void) {
  Suite *s = suite_create("paged");
  TCase *tc = tcase_create("paged");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, forward_paged, 0, 12);
  tcase_add_loop_test(tc, plan_two_tables, 0, 8);
  tcase_add_test(tc, errors);
  tcase_add_test(tc, contiguous_unchanged);
  tcase_add_loop_test(tc, cuda_paged, 0, 8);
  tcase_add_test(tc, cuda_bad_entry);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return api_main(paged_suite, &g_seed); }
