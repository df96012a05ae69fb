/*
** test_cpu.c: the CPU backend (gen/emit_llvm.c, runtime/cpu_jit.c,
** runtime/cpu_run.c) against the float64 reference (gen/reference.h).
**
** Every case JIT-compiles a kernel, runs it on fresh random inputs with the
** outputs poisoned by NaN, and compares O and LSE with hattn__reference
** given the same (dtype-rounded) inputs: relative Frobenius error below
** 1e-5 for fp32 and 1e-2 for fp16/bf16; rows that see no key must be exactly
** zero with LSE -inf.  The seed comes from the clock unless HATTN_TEST_SEED
** is set, and is printed on the first line.  Exits 77 (skip) when hattn was
** built without LLVM.  HATTN_TEST_VEC=8 forces 8-float vectors.
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "cpu.h"
#include "cpu_config.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

static uint64_t g_seed;
static int g_vec = 8;           /* the host's, set in main */

#include "testutil.h"

/* ---- one case ---------------------------------------------------------- */

typedef struct tcase {
  const char *mask;             /* "causal & window(8)", or with " with ..." */
  hattn_dtype dtype;
  int64_t b, h, hk, lq, lk, d;
  int bshd;                     /* [B, S, H, D] strides instead of [B, H, S, D] */
  int bm, bn, rows, vec;        /* 0: the default configuration's */
  int no_lse;
  int one_token_docs;           /* every document one token long */
} tcase;

/* Element (i0, i1, i2, i3) of a tensor of dims n1, n2, n3 in either layout. */
static void strides_of(int bshd, int64_t n1, int64_t n2, int64_t n3, int64_t st[4]) {
  if (bshd) {
    st[0] = n1 * n2 * n3;
    st[1] = n3;
    st[2] = n1 * n3;
  } else {
    st[0] = n1 * n2 * n3;
    st[1] = n2 * n3;
    st[2] = n3;
  }
  st[3] = 1;
}

static hattn__jit *g_jit;
static hattn__pool *g_pool;

/* Kernels compiled in this test, keyed by what they are specialised on. */
#define CACHE_MAX 64
static struct {
  char key[600];
  hattn_cpu_fn fn;
} g_cache[CACHE_MAX];
static int g_ncache;

static int compile_cached(const hattn_cpu_kernel_desc *desc, const hattn_cpu_config *cfg,
                          hattn_cpu_fn *fn, char *err, size_t errlen) {
  char key[600];
  int i, rc;
  snprintf(key, sizeof key, "%s/%d/%d/%d/%d/%d/%d", desc->pattern->canon, (int)desc->dtype,
           desc->head_dim, cfg->bm, cfg->bn, cfg->rows, cfg->vec);
  for (i = 0; i < g_ncache; i++)
    if (strcmp(g_cache[i].key, key) == 0) {
      *fn = g_cache[i].fn;
      return HATTN_OK;
    }
  rc = hattn__jit_compile(g_jit, desc, cfg, fn, err, errlen);
  if (rc == HATTN_OK && g_ncache < CACHE_MAX) {
    snprintf(g_cache[g_ncache].key, sizeof g_cache[g_ncache].key, "%s", key);
    g_cache[g_ncache++].fn = *fn;
  }
  return rc;
}

static void setup(void) {
  char err[512];
  int rc = hattn__jit_create(&g_jit, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "jit: %s", err);
  rc = hattn__pool_create(2, &g_pool);
  ck_assert_int_eq(rc, HATTN_OK);
}

static void teardown(void) {
  hattn__pool_destroy(g_pool);
  hattn__jit_destroy(g_jit);
  g_pool = NULL;
  g_jit = NULL;
  g_ncache = 0;
}

static void run_case(const tcase *tc, uint64_t salt) {
  char text[512], err[1024];
  hattn_spec *spec = NULL;
  hattn__diags diags;
  hattn_cpu_kernel_desc desc;
  hattn_cpu_config cfg;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__tensor tq, tk, tv, to, tl;
  test_rundata rd;
  hattn_cpu_fn fn;
  rng r;
  int64_t B = tc->b, H = tc->h, HK = tc->hk, LQ = tc->lq, LK = tc->lk, D = tc->d;
  int64_t nq = B * H * LQ * D, nk = B * HK * LK * D, i0, i1, i2, i3, st[4];
  int esz, rc;
  void *q, *k, *v, *o;
  float *lse;
  double *rq, *rk, *rv, *ro, *rl, *xo, *xl, eo, el, tol;

  r.s = g_seed ^ (salt * UINT64_C(0x2545f4914f6cdd1d));
  rng_next(&r);
  snprintf(text, sizeof text, "pattern p = %s\n", tc->mask);
  memset(&diags, 0, sizeof diags);
  rc = hattn__spec_parse(text, strlen(text), "test", &spec, &diags);
  CHECK(rc == HATTN_OK, "spec '%s': %s", tc->mask, diags.text ? diags.text : "?");
  hattn__diags_clear(&diags);

  desc.pattern = &spec->patterns[0];
  desc.dtype = tc->dtype;
  desc.head_dim = (int)D;
  hattn__cpu_config_default((int)D, tc->vec ? tc->vec : g_vec, &cfg);
  if (tc->rows) cfg.rows = tc->rows;
  if (tc->bm) cfg.bm = tc->bm;
  if (tc->bn) cfg.bn = tc->bn;
  rc = compile_cached(&desc, &cfg, &fn, err, sizeof err);
  CHECK(rc == HATTN_OK, "compile '%s': %s", tc->mask, err);

  shape.batch = B;
  shape.heads = H;
  shape.kv_heads = HK;
  shape.lq = LQ;
  shape.lk = LK;
  shape.head_dim = D;
  memset(&env, 0, sizeof env);
  env.lq = LQ;
  env.lk = LK;
  env.batch = B;
  env.heads = H;

  esz = hattn__dtype_size(tc->dtype);
  q = malloc((size_t)nq * (size_t)esz + 1);
  o = malloc((size_t)nq * (size_t)esz + 1);
  k = malloc((size_t)nk * (size_t)esz + 1);
  v = malloc((size_t)nk * (size_t)esz + 1);
  lse = malloc((size_t)(B * H * LQ + 1) * sizeof *lse);
  rq = malloc((size_t)(nq + 1) * sizeof *rq);
  ro = malloc((size_t)(nq + 1) * sizeof *ro);
  xo = malloc((size_t)(nq + 1) * sizeof *xo);
  rk = malloc((size_t)(nk + 1) * sizeof *rk);
  rv = malloc((size_t)(nk + 1) * sizeof *rv);
  rl = malloc((size_t)(B * H * LQ + 1) * sizeof *rl);
  xl = malloc((size_t)(B * H * LQ + 1) * sizeof *xl);
  ck_assert(q && o && k && v && lse && rq && ro && xo && rk && rv && rl && xl);

  /* Inputs: the reference gets exactly the values the kernel reads. */
  strides_of(tc->bshd, H, LQ, D, tq.stride);
  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < H; i1++)
      for (i2 = 0; i2 < LQ; i2++)
        for (i3 = 0; i3 < D; i3++) {
          size_t at = (size_t)(i0 * tq.stride[0] + i1 * tq.stride[1] + i2 * tq.stride[2] + i3);
          rq[((i0 * H + i1) * LQ + i2) * D + i3] = put(q, at, tc->dtype, 2.0 * rng_unit(&r));
        }
  strides_of(tc->bshd, HK, LK, D, st);
  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < HK; i1++)
      for (i2 = 0; i2 < LK; i2++)
        for (i3 = 0; i3 < D; i3++) {
          size_t at = (size_t)(i0 * st[0] + i1 * st[1] + i2 * st[2] + i3);
          size_t ri = (size_t)(((i0 * HK + i1) * LK + i2) * D + i3);
          rk[ri] = put(k, at, tc->dtype, 2.0 * rng_unit(&r));
          rv[ri] = put(v, at, tc->dtype, rng_unit(&r));
        }
  tq.data = q;
  tk.data = k;
  tv.data = v;
  to.data = o;
  memcpy(tk.stride, st, sizeof st);
  memcpy(tv.stride, st, sizeof st);
  memcpy(to.stride, tq.stride, sizeof st);
  tl.data = tc->no_lse ? NULL : lse;
  tl.stride[0] = H * LQ;
  tl.stride[1] = LQ;
  tl.stride[2] = 1;
  tl.stride[3] = 0;

  test_rundata_make(&rd, &r, spec, desc.pattern, B, H, HK, LQ, LK, D, rq, rk, tc->one_token_docs, 60, &env);

  /* Poison, run, compare. */
  for (i0 = 0; i0 < nq; i0++) put(o, (size_t)i0, tc->dtype, NAN);
  for (i0 = 0; i0 < B * H * LQ; i0++) lse[i0] = NAN;
  rc = hattn__cpu_forward(fn, &desc, &cfg, &shape, &env, &tq, &tk, &tv, &to, &tl, g_pool, err, sizeof err);
  CHECK(rc == HATTN_OK, "forward '%s': %s", tc->mask, err);
  rc = hattn__reference(desc.pattern, &shape, &env, rd.nlay, rq, rk, rv, ro, rl, err, sizeof err);
  CHECK(rc == HATTN_OK, "reference '%s': %s", tc->mask, err);

  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < H; i1++)
      for (i2 = 0; i2 < LQ; i2++) {
        size_t row = (size_t)((i0 * H + i1) * LQ + i2);
        for (i3 = 0; i3 < D; i3++) {
          size_t at = (size_t)(i0 * to.stride[0] + i1 * to.stride[1] + i2 * to.stride[2] + i3);
          xo[row * (size_t)D + (size_t)i3] = get(o, at, tc->dtype);
        }
        xl[row] = lse[row];
        if (isinf(rl[row])) { /* a row that sees nothing */
          for (i3 = 0; i3 < D; i3++)
            CHECK(xo[row * (size_t)D + (size_t)i3] == 0.0,
                  "'%s' (%s, b %lld h %lld lq %lld lk %lld d %lld): empty row %lld has O[%lld] = %g",
                  tc->mask, hattn__dtype_name(tc->dtype), (long long)B, (long long)H, (long long)LQ,
                  (long long)LK, (long long)D, (long long)i2, (long long)i3, xo[row * (size_t)D + (size_t)i3]);
          if (!tc->no_lse)
            CHECK(xl[row] == -INFINITY, "'%s': empty row %lld has LSE %g", tc->mask, (long long)i2, xl[row]);
        }
      }
  tol = tc->dtype == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2;
  eo = hattn__rel_error(xo, ro, (size_t)nq);
  CHECK(eo < tol, "'%s' (%s, b %lld h %lld hk %lld lq %lld lk %lld d %lld, %s, bm %d bn %d rows %d vec %d): O error %g",
        tc->mask, hattn__dtype_name(tc->dtype), (long long)B, (long long)H, (long long)HK,
        (long long)LQ, (long long)LK, (long long)D, tc->bshd ? "bshd" : "bhsd", cfg.bm, cfg.bn,
        cfg.rows, cfg.vec, eo);
  if (!tc->no_lse) {
    el = hattn__rel_error(xl, rl, (size_t)(B * H * LQ));
    if (el >= tol && el < INFINITY) {
      /* A few LSE values near zero (one visible key whose score is a small
      ** difference of products) make the relative norm ill-conditioned:
      ** then every value must be within tol of the reference, relatively or
      ** absolutely. */
      el = 0;
      for (i0 = 0; i0 < B * H * LQ; i0++)
        if (isfinite(rl[i0])) {
          double dv = fabs(xl[i0] - rl[i0]) / fmax(1.0, fabs(rl[i0]));
          if (dv > el) el = dv;
        }
    }
    CHECK(el < tol, "'%s' (%s, lq %lld lk %lld d %lld): LSE error %g", tc->mask,
          hattn__dtype_name(tc->dtype), (long long)LQ, (long long)LK, (long long)D, el);
  } else {
    for (i0 = 0; i0 < B * H * LQ; i0++) CHECK(isnan(lse[i0]), "LSE written although NULL");
  }

  test_rundata_free(&rd);
  free(q);
  free(o);
  free(k);
  free(v);
  free(lse);
  free(rq);
  free(ro);
  free(xo);
  free(rk);
  free(rv);
  free(rl);
  free(xl);
  hattn__spec_destroy(spec);
}

/* A case with the common defaults: fp32, batch 1, 2 heads sharing one KV
** head, head dim 64, [B, H, S, D]. */
static tcase basic(const char *mask, int64_t lq, int64_t lk) {
  tcase t;
  memset(&t, 0, sizeof t);
  t.mask = mask;
  t.dtype = HATTN_DTYPE_FP32;
  t.b = 1;
  t.h = 2;
  t.hk = 1;
  t.lq = lq;
  t.lk = lk;
  t.d = 64;
  return t;
}

/* ---- tests ------------------------------------------------------------- */

static const char *const g_atoms[] = {
    "full", "causal", "window(16)", "window(5, 7)", "window(0, 9)", "dilated(4, 3)", "stride(5)",
    "sink(4)", "global(3)", "chunk(32)", "document", "blocks(L)", "random(2, 7)",
    "topk(2)", "!causal", "!stride(3)",
};
#define NATOMS ((int)(sizeof g_atoms / sizeof g_atoms[0]))

START_TEST(test_atoms) {
  /* Lq = Lk, Lq < Lk (queries at the end) and Lq > Lk (negative qpos). */
  static const int64_t lens[3][2] = {{150, 150}, {70, 200}, {200, 70}};
  int j;
  for (j = 0; j < 3; j++) {
    tcase t = basic(g_atoms[_i], lens[j][0], lens[j][1]);
    run_case(&t, (uint64_t)(_i * 10 + j));
  }
}
END_TEST

static const char *const g_combos[] = {
    "causal & (window(16) | sink(4))", "document & causal", "window(8, 8) | global(3)",
    "causal & stride(5)", "dilated(4, 3) | sink(2)", "chunk(32) & causal", "!causal & window(0, 9)",
    "blocks(L) | causal & window(4)", "random(2, 7) | causal", "topk(2) & causal",
    "causal & !document", "(random(1, 3) | random(2, 9)) & !sink(10)", "blocks(A) & !blocks(B) | sink(1)",
};
#define NCOMBOS ((int)(sizeof g_combos / sizeof g_combos[0]))

START_TEST(test_combos) {
  tcase t = basic(g_combos[_i], 190, 190);
  run_case(&t, 1000 + (uint64_t)_i);
  t = basic(g_combos[_i], 100, 260);
  t.b = 2;
  run_case(&t, 1100 + (uint64_t)_i);
}
END_TEST

static const char *const g_mods[] = {
    "causal with scale(0.3)", "causal with softcap(5)", "window(40) with alibi",
    "full with alibi(0.25)", "causal & window(20) with softcap(20), alibi",
    "document with softcap(2), alibi(0.5), scale(0.05)",
};
#define NMODS ((int)(sizeof g_mods / sizeof g_mods[0]))

START_TEST(test_modifiers) {
  tcase t = basic(g_mods[_i], 140, 140);
  t.h = 4;
  run_case(&t, 2000 + (uint64_t)_i);
  t = basic(g_mods[_i], 33, 140);
  t.dtype = HATTN_DTYPE_BF16;
  run_case(&t, 2100 + (uint64_t)_i);
}
END_TEST

START_TEST(test_gqa) {
  static const int64_t hk[] = {8, 4, 2, 1};
  tcase t = basic("causal & window(50)", 90, 90);
  t.h = 8;
  t.hk = hk[_i];
  run_case(&t, 3000 + (uint64_t)_i);
  t.mask = "topk(1) & causal";
  t.lq = 129;
  t.lk = 129;
  run_case(&t, 3100 + (uint64_t)_i);
}
END_TEST

START_TEST(test_head_dims) {
  static const int64_t dims[] = {32, 64, 80, 128, 256, 3, 20};
  tcase t = basic("causal", 100, 100);
  t.d = dims[_i];
  run_case(&t, 4000 + (uint64_t)_i);
  t.mask = "sink(3) | window(30)";
  t.dtype = HATTN_DTYPE_FP16;
  t.lq = 40;
  run_case(&t, 4100 + (uint64_t)_i);
}
END_TEST

START_TEST(test_lengths) {
  static const int64_t lens[] = {1, 7, 63, 64, 65, 1000};
  static const char *const masks[] = {"causal", "full", "document & causal", "chunk(16) | sink(1)"};
  int m;
  for (m = 0; m < 4; m++) {
    tcase t = basic(masks[m], lens[_i], lens[_i]);
    t.h = 1;
    run_case(&t, 5000 + (uint64_t)(_i * 10 + m));
    if (lens[_i] < 1000) {
      t.lk = 65;
      run_case(&t, 5100 + (uint64_t)(_i * 10 + m));
      t.lq = 65;
      t.lk = lens[_i];
      run_case(&t, 5200 + (uint64_t)(_i * 10 + m));
    }
  }
}
END_TEST

START_TEST(test_empty_lengths) {
  tcase t = basic("full", 5, 0);
  run_case(&t, 5300);
  t = basic("causal", 0, 9);
  run_case(&t, 5301);
  t = basic("causal", 3, 0);
  t.dtype = HATTN_DTYPE_BF16;
  run_case(&t, 5302);
}
END_TEST

START_TEST(test_documents) {
  tcase t = basic("document", 120, 120);
  t.one_token_docs = 1;
  run_case(&t, 6000);
  t.mask = "document & causal";
  run_case(&t, 6001);
  t = basic("document & window(10)", 300, 300);
  t.b = 2;
  run_case(&t, 6002);
  t = basic("document & causal", 80, 300);
  run_case(&t, 6003);
}
END_TEST

START_TEST(test_layouts_dtypes) {
  static const hattn_dtype dt[] = {HATTN_DTYPE_FP32, HATTN_DTYPE_FP16, HATTN_DTYPE_BF16};
  int bshd;
  for (bshd = 0; bshd < 2; bshd++) {
    tcase t = basic(bshd ? "causal & window(33)" : "full", 77, 131);
    t.dtype = dt[_i];
    t.bshd = bshd;
    t.b = 2;
    t.h = 4;
    t.hk = 2;
    t.d = 80;
    run_case(&t, 7000 + (uint64_t)(_i * 2 + bshd));
  }
}
END_TEST

START_TEST(test_configs) {
  /* rows 1, bn = vec, vec 8 on any host, odd bm, large bn, no LSE. */
  tcase t = basic("causal & (window(16) | sink(4))", 150, 150);
  switch (_i) {
  case 0: t.rows = 1; t.bm = 16; break;
  case 1: t.bn = g_vec; break;
  case 2: t.vec = 8; t.bn = 8; t.rows = 3; t.bm = 9; break;
  case 3: t.vec = 8; t.bn = 128; t.bm = 128; t.d = 72; break;
  case 4: t.no_lse = 1; t.rows = 2; t.bm = 6; t.bn = 2 * g_vec; t.mask = "random(1, 4) | document"; break;
  default: t.vec = 16; t.bn = 16; t.rows = 8; t.bm = 32; t.mask = "causal with softcap(3)"; break;
  }
  run_case(&t, 8000 + (uint64_t)_i);
}
END_TEST

/* ---- failure paths ----------------------------------------------------- */

typedef struct fail_fixture {
  hattn_spec *spec;
  hattn_cpu_kernel_desc desc;
  hattn_cpu_config cfg;
  hattn_cpu_fn fn;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__tensor q, k, v, o, l;
  float buf[4 * 64 * 8];
  float lbuf[64];
} fail_fixture;

static void fail_setup(fail_fixture *f, const char *mask) {
  char text[256], err[512];
  int rc;
  memset(f, 0, sizeof *f);
  snprintf(text, sizeof text, "pattern p = %s", mask);
  rc = hattn__spec_parse(text, strlen(text), "test", &f->spec, NULL);
  ck_assert_int_eq(rc, HATTN_OK);
  f->desc.pattern = &f->spec->patterns[0];
  f->desc.dtype = HATTN_DTYPE_FP32;
  f->desc.head_dim = 8;
  hattn__cpu_config_default(8, g_vec, &f->cfg);
  rc = hattn__jit_compile(g_jit, &f->desc, &f->cfg, &f->fn, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "%s", err);
  f->shape.batch = 1;
  f->shape.heads = 2;
  f->shape.kv_heads = 1;
  f->shape.lq = 16;
  f->shape.lk = 16;
  f->shape.head_dim = 8;
  f->env.lq = 16;
  f->env.lk = 16;
  f->env.batch = 1;
  f->env.heads = 2;
  f->q.data = f->k.data = f->v.data = f->o.data = f->buf;
  strides_of(0, 2, 16, 8, f->q.stride);
  strides_of(0, 1, 16, 8, f->k.stride);
  memcpy(f->v.stride, f->k.stride, sizeof f->k.stride);
  memcpy(f->o.stride, f->q.stride, sizeof f->q.stride);
  f->l.data = f->lbuf;
  f->l.stride[0] = 32;
  f->l.stride[1] = 16;
  f->l.stride[2] = 1;
}

static int fail_run(fail_fixture *f, char *err, size_t errlen) {
  return hattn__cpu_forward(f->fn, &f->desc, &f->cfg, &f->shape, &f->env, &f->q, &f->k, &f->v,
                            &f->o, &f->l, g_pool, err, errlen);
}

START_TEST(test_fail_shape) {
  fail_fixture f;
  char err[512];
  fail_setup(&f, "causal");
  f.shape.heads = 3;
  f.shape.kv_heads = 2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: batch 1, heads 3, kv_heads 2 (all positive, heads a multiple of kv_heads)");
  f.shape.heads = 2;
  f.shape.kv_heads = 1;
  f.shape.head_dim = 16;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: head_dim 16, but the kernel was compiled for 8");
  f.shape.head_dim = 8;
  f.k.stride[3] = 2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "tensor K must be contiguous in the head dimension (stride 3 is 1), got 2");
  f.k.stride[3] = 1;
  f.shape.lk = INT64_C(1) << 31;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: sequence lengths 16 and 2147483648 must be in [0, 2^30)");
  f.shape.lk = 16;
  f.env.lk = 17;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_EINPUT);
  ck_assert_str_eq(err, "the run-time data was made for another shape (lq 16, lk 17, batch 1, heads 2)");
  hattn__spec_destroy(f.spec);
}
END_TEST

START_TEST(test_fail_documents) {
  fail_fixture f;
  char err[512];
  fail_setup(&f, "document & causal");
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_EINPUT);
  ck_assert_str_eq(err, "the pattern uses document, but no document offsets were given");
  hattn__spec_destroy(f.spec);
}
END_TEST

START_TEST(test_fail_config) {
  fail_fixture f;
  hattn_cpu_config c;
  hattn_cpu_fn fn;
  char err[512];
  fail_setup(&f, "causal");
  c = f.cfg;
  c.vec = 8;
  c.bn = 12;
  ck_assert_int_eq(hattn__cpu_config_check(&c, 64, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "bn must be a multiple of the vector width (8) in [8, 1024], got 12");
  ck_assert_int_eq(hattn__jit_compile(g_jit, &f.desc, &c, &fn, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "bn must be a multiple of the vector width (8) in [8, 1024], got 12");
  ck_assert_ptr_null(fn);
  c = f.cfg;
  c.rows = 3;
  c.bm = 64;
  ck_assert_int_eq(hattn__cpu_config_check(&c, 64, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "bm must be a multiple of rows (3) in [1, 4096], got 64");
  c = f.cfg;
  c.vec = 4;
  ck_assert_int_eq(hattn__cpu_config_check(&c, 64, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "the CPU vector width must be 8 or 16 floats, got 4");
  ck_assert_int_eq(hattn__cpu_config_check(&f.cfg, 1025, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "head_dim must be in [1, 1024], got 1025");
  hattn__spec_destroy(f.spec);
}
END_TEST

START_TEST(test_object_file) {
  fail_fixture f;
  char err[512], path[] = "/tmp/hattn_test_cpu_XXXXXX";
  int fd, rc;
  FILE *fp;
  unsigned char magic[4] = {0};
  fail_setup(&f, "causal & window(8)");
  fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  fp = fdopen(fd, "rb");
  ck_assert_ptr_nonnull(fp);
  rc = hattn__llvm_write_object(&f.desc, &f.cfg, "my_kernel", "x86-64-v3", path, err, sizeof err);
  ck_assert_msg(rc == HATTN_OK, "%s", err);
  ck_assert_int_eq(fread(magic, 1, 4, fp), 4);
  ck_assert(magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F');
  fclose(fp);
  remove(path);
  ck_assert_ptr_nonnull(hattn__llvm_version());
  hattn__spec_destroy(f.spec);
}
END_TEST

static Suite *cpu_suite(void) {
  Suite *s = suite_create("cpu");
  TCase *tc = tcase_create("kernels");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, test_atoms, 0, NATOMS);
  tcase_add_loop_test(tc, test_combos, 0, NCOMBOS);
  tcase_add_loop_test(tc, test_modifiers, 0, NMODS);
  tcase_add_loop_test(tc, test_gqa, 0, 4);
  tcase_add_loop_test(tc, test_head_dims, 0, 7);
  tcase_add_loop_test(tc, test_lengths, 0, 6);
  tcase_add_test(tc, test_empty_lengths);
  tcase_add_test(tc, test_documents);
  tcase_add_loop_test(tc, test_layouts_dtypes, 0, 3);
  tcase_add_loop_test(tc, test_configs, 0, 6);
  tcase_add_test(tc, test_fail_shape);
  tcase_add_test(tc, test_fail_documents);
  tcase_add_test(tc, test_fail_config);
  tcase_add_test(tc, test_object_file);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  const char *env = getenv("HATTN_TEST_SEED");
  char err[512];
  hattn__jit *jit = NULL;
  SRunner *sr;
  int failed, rc;

  g_seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
  printf("seed: %" PRIu64 " (set HATTN_TEST_SEED to replay)\n", g_seed);
  fflush(stdout);
  rc = hattn__jit_create(&jit, err, sizeof err);
  if (rc == HATTN_ENOTSUP) {
    printf("SKIP: %s\n", err);
    return 77;
  }
  if (rc != HATTN_OK) {
    printf("FAIL: hattn__jit_create: %s\n", err);
    return 1;
  }
  g_vec = hattn__jit_vec(jit);
  /* HATTN_TEST_VEC=8 runs every case with 8-float vectors (AVX2 code) on an
  ** AVX-512 host. */
  if (getenv("HATTN_TEST_VEC") != NULL && atoi(getenv("HATTN_TEST_VEC")) == 8) g_vec = 8;
  printf("host CPU %s, %d floats per vector\n", hattn__jit_cpu_name(jit), g_vec);
  hattn__jit_destroy(jit);

  sr = srunner_create(cpu_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
