/*
** test_cuda.c: the CUDA backend (gen/emit_cuda.c, runtime/cuda_nvrtc.c,
** runtime/cuda_driver.c) on the GPU against the float64 reference
** (gen/reference.h).
**
** Every case emits, compiles (NVRTC) and loads a kernel, runs it on fresh
** random inputs in device memory with O and LSE poisoned (every byte 0xFF,
** a NaN in bf16, fp16 and fp32), and compares O and LSE with
** hattn__reference given the same dtype-rounded inputs: relative Frobenius
** error below 1e-2; rows that see no key must be exactly zero with LSE
** -inf.  The seed comes from the clock unless HATTN_TEST_SEED is set, and is
** printed on the first line.  Exits 77 (skip) when there is no driver or
** device, or when hattn was built without NVRTC.
**
** The tests run in one process (CK_NOFORK): a CUDA context does not survive
** fork(), and the module cache of the one device handle is shared by all
** cases.
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "cuda.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

static uint64_t g_seed;
static hattn__cuda *g_cu;

#include "testutil.h"

/* ---- one case ---------------------------------------------------------- */

typedef struct tcase {
  const char *mask;             /* "causal & window(8)", or with " with ..." */
  hattn_dtype dtype;
  int64_t b, h, hk, lq, lk, d;
  int bshd;                     /* [B, S, H, D] strides instead of [B, H, S, D] */
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

/* A device buffer of BYTES, or the test fails. */
static void *dev_alloc(size_t bytes) {
  char err[512];
  void *p = NULL;
  int rc = hattn__cuda_alloc(g_cu, bytes, &p, err, sizeof err);
  CHECK(rc == HATTN_OK, "alloc: %s", err);
  return p;
}

static void dev_upload(void *dst, const void *src, size_t bytes) {
  char err[512];
  int rc = hattn__cuda_upload(g_cu, dst, src, bytes, err, sizeof err);
  CHECK(rc == HATTN_OK, "upload: %s", err);
}

static void dev_download(void *dst, const void *src, size_t bytes) {
  char err[512];
  int rc = hattn__cuda_download(g_cu, dst, src, bytes, err, sizeof err);
  CHECK(rc == HATTN_OK, "download: %s", err);
}

static void dev_poison(void *dst, size_t bytes) {
  char err[512];
  int rc = hattn__cuda_memset(g_cu, dst, 0xff, bytes, err, sizeof err);
  CHECK(rc == HATTN_OK, "memset: %s", err);
}

static hattn_spec *parse(const char *mask) {
  char text[512];
  hattn_spec *spec = NULL;
  hattn__diags diags;
  int rc;
  snprintf(text, sizeof text, "pattern p = %s\n", mask);
  memset(&diags, 0, sizeof diags);
  rc = hattn__spec_parse(text, strlen(text), "test", &spec, &diags);
  CHECK(rc == HATTN_OK, "spec '%s': %s", mask, diags.text ? diags.text : "?");
  hattn__diags_clear(&diags);
  return spec;
}

static void run_case(const tcase *tc, uint64_t salt) {
  char err[16384];
  hattn_spec *spec;
  hattn_cuda_kernel_desc desc;
  hattn_cuda_config cfg;
  hattn__cuda_kernel *kern = NULL;
  hattn__cuda_plan *plan = NULL;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__tensor tq, tk, tv, to, tl;
  test_rundata rd;
  rng r;
  int64_t B = tc->b, H = tc->h, HK = tc->hk, LQ = tc->lq, LK = tc->lk, D = tc->d;
  int64_t nq = B * H * LQ * D, nk = B * HK * LK * D, nl = B * H * LQ, i0, i1, i2, i3, st[4];
  int esz, rc;
  void *q, *k, *v, *o, *dq, *dk, *dv, *dout, *dl;
  float *lse;
  double *rq, *rk, *rv, *ro, *rl, *xo, *xl, eo, el, tol = 1e-2;

  r.s = g_seed ^ (salt * UINT64_C(0x2545f4914f6cdd1d));
  rng_next(&r);
  spec = parse(tc->mask);
  desc.pattern = &spec->patterns[0];
  desc.dtype = tc->dtype;
  desc.head_dim = (int)D;
  hattn__cuda_config_default(&desc, hattn__cuda_sm(g_cu), &cfg);
  rc = hattn__cuda_kernel_get(g_cu, &desc, &cfg, &kern, err, sizeof err);
  CHECK(rc == HATTN_OK, "kernel '%s' (%s, d %lld, block %dx%d warps %d stages %d): %s", tc->mask,
        hattn__dtype_name(tc->dtype), (long long)D, cfg.block_m, cfg.block_n, cfg.warps, cfg.stages, err);

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
  lse = malloc((size_t)(nl + 1) * sizeof *lse);
  rq = malloc((size_t)(nq + 1) * sizeof *rq);
  ro = malloc((size_t)(nq + 1) * sizeof *ro);
  xo = malloc((size_t)(nq + 1) * sizeof *xo);
  rk = malloc((size_t)(nk + 1) * sizeof *rk);
  rv = malloc((size_t)(nk + 1) * sizeof *rv);
  rl = malloc((size_t)(nl + 1) * sizeof *rl);
  xl = malloc((size_t)(nl + 1) * sizeof *xl);
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
  dq = dev_alloc((size_t)nq * (size_t)esz);
  dout = dev_alloc((size_t)nq * (size_t)esz);
  dk = dev_alloc((size_t)nk * (size_t)esz);
  dv = dev_alloc((size_t)nk * (size_t)esz);
  dl = dev_alloc((size_t)nl * sizeof(float));
  dev_upload(dq, q, (size_t)nq * (size_t)esz);
  dev_upload(dk, k, (size_t)nk * (size_t)esz);
  dev_upload(dv, v, (size_t)nk * (size_t)esz);
  tq.data = dq;
  tk.data = dk;
  tv.data = dv;
  to.data = dout;
  memcpy(tk.stride, st, sizeof st);
  memcpy(tv.stride, st, sizeof st);
  memcpy(to.stride, tq.stride, sizeof st);
  tl.data = tc->no_lse ? NULL : dl;
  tl.stride[0] = H * LQ;
  tl.stride[1] = LQ;
  tl.stride[2] = 1;
  tl.stride[3] = 0;

  test_rundata_make(&rd, &r, spec, desc.pattern, B, H, HK, LQ, LK, D, rq, rk, tc->one_token_docs, 150, &env);

  /* Poison, run, compare. */
  rc = hattn__cuda_plan_create(g_cu, &desc, &cfg, &shape, &env, &plan, err, sizeof err);
  CHECK(rc == HATTN_OK, "plan '%s': %s", tc->mask, err);
  dev_poison(dout, (size_t)nq * (size_t)esz);
  dev_poison(dl, (size_t)nl * sizeof(float));
  rc = hattn__cuda_launch(kern, plan, &shape, &tq, &tk, &tv, &to, &tl, NULL, err, sizeof err);
  CHECK(rc == HATTN_OK, "launch '%s': %s", tc->mask, err);
  rc = hattn__cuda_sync(g_cu, err, sizeof err);
  CHECK(rc == HATTN_OK, "'%s' (%s, b %lld h %lld hk %lld lq %lld lk %lld d %lld): the kernel failed: %s", tc->mask,
        hattn__dtype_name(tc->dtype), (long long)B, (long long)H, (long long)HK, (long long)LQ, (long long)LK,
        (long long)D, err);
  dev_download(o, dout, (size_t)nq * (size_t)esz);
  dev_download(lse, dl, (size_t)nl * sizeof(float));
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
  eo = hattn__rel_error(xo, ro, (size_t)nq);
  CHECK(eo < tol, "'%s' (%s, b %lld h %lld hk %lld lq %lld lk %lld d %lld, %s, block %dx%d warps %d stages %d): O error %g",
        tc->mask, hattn__dtype_name(tc->dtype), (long long)B, (long long)H, (long long)HK,
        (long long)LQ, (long long)LK, (long long)D, tc->bshd ? "bshd" : "bhsd", cfg.block_m, cfg.block_n,
        cfg.warps, cfg.stages, eo);
  if (!tc->no_lse) {
    el = hattn__rel_error(xl, rl, (size_t)nl);
    if (el >= tol && el < INFINITY) {
      /* A few LSE values near zero make the relative norm ill-conditioned:
      ** then every value must be within tol of the reference, relatively or
      ** absolutely (as in test_cpu.c). */
      el = 0;
      for (i0 = 0; i0 < nl; i0++)
        if (isfinite(rl[i0])) {
          double dif = fabs(xl[i0] - rl[i0]) / fmax(1.0, fabs(rl[i0]));
          if (dif > el) el = dif;
        }
    }
    CHECK(el < tol, "'%s' (%s, lq %lld lk %lld d %lld): LSE error %g", tc->mask,
          hattn__dtype_name(tc->dtype), (long long)LQ, (long long)LK, (long long)D, el);
  } else {
    for (i0 = 0; i0 < nl; i0++) CHECK(isnan(lse[i0]), "LSE written although NULL");
  }

  hattn__cuda_plan_destroy(plan);
  hattn__cuda_free(g_cu, dq);
  hattn__cuda_free(g_cu, dk);
  hattn__cuda_free(g_cu, dv);
  hattn__cuda_free(g_cu, dout);
  hattn__cuda_free(g_cu, dl);
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

/* A case with the common defaults: bf16, batch 1, 2 heads sharing one KV
** head, head dim 64, [B, H, S, D]. */
static tcase basic(const char *mask, int64_t lq, int64_t lk) {
  tcase t;
  memset(&t, 0, sizeof t);
  t.mask = mask;
  t.dtype = HATTN_DTYPE_BF16;
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
    "full", "causal", "window(64)", "window(5, 7)", "window(0, 9)", "dilated(8, 3)", "stride(7)",
    "sink(16)", "global(5)", "chunk(96)", "document", "blocks(L)", "random(2, 3)",
    "topk(2)", "!causal", "!stride(3)",
};
#define NATOMS ((int)(sizeof g_atoms / sizeof g_atoms[0]))

START_TEST(test_atoms) {
  /* Lq = Lk, Lq < Lk (queries at the end) and Lq > Lk (negative qpos). */
  static const int64_t lens[3][2] = {{300, 300}, {150, 400}, {400, 150}};
  int j;
  for (j = 0; j < 3; j++) {
    tcase t = basic(g_atoms[_i], lens[j][0], lens[j][1]);
    run_case(&t, (uint64_t)(_i * 10 + j));
  }
}
END_TEST

static const char *const g_combos[] = {
    "causal", "window(64)", "causal & (window(100) | sink(16))", "document & causal",
    "window(30, 30) | global(5)", "causal & stride(7)", "dilated(8, 3)", "chunk(96) & causal",
    "!causal & window(0, 40)", "blocks(L)", "random(2, 3) | causal", "topk(2) & causal",
    "blocks(A) & !blocks(B) | sink(1)", "(random(1, 3) | random(2, 9)) & !sink(10)",
};
#define NCOMBOS ((int)(sizeof g_combos / sizeof g_combos[0]))

START_TEST(test_combos) {
  /* bf16 at head dim 128, 1000 x 1000; fp16 with two batch entries and
  ** Lq < Lk. */
  tcase t = basic(g_combos[_i], 1000, 1000);
  t.h = 1;
  t.d = 128;
  run_case(&t, 1000 + (uint64_t)_i);
  t = basic(g_combos[_i], 77, 300);
  t.b = 2;
  t.d = 128;
  t.dtype = HATTN_DTYPE_FP16;
  run_case(&t, 1100 + (uint64_t)_i);
}
END_TEST

static const char *const g_mods[] = {
    "causal with scale(0.3)", "causal with softcap(5)", "window(64) with alibi",
    "full with alibi(0.3)", "causal & window(20) with softcap(20), alibi",
    "document & causal with softcap(2), alibi(0.5), scale(0.05)",
};
#define NMODS ((int)(sizeof g_mods / sizeof g_mods[0]))

START_TEST(test_modifiers) {
  tcase t = basic(g_mods[_i], 200, 200);
  t.h = 4;
  t.hk = 2;
  run_case(&t, 2000 + (uint64_t)_i);
  t = basic(g_mods[_i], 33, 300);
  t.dtype = HATTN_DTYPE_FP16;
  run_case(&t, 2100 + (uint64_t)_i);
}
END_TEST

START_TEST(test_gqa) {
  /* heads / kv_heads = 1, 2, 4, 8. */
  static const int64_t hk[] = {8, 4, 2, 1};
  tcase t = basic("causal & window(50)", 300, 300);
  t.h = 8;
  t.hk = hk[_i];
  run_case(&t, 3000 + (uint64_t)_i);
  t.mask = "topk(1) & causal";
  t.lq = 129;
  t.lk = 200;
  run_case(&t, 3100 + (uint64_t)_i);
}
END_TEST

START_TEST(test_head_dims) {
  static const int64_t dims[] = {64, 128, 256};
  tcase t = basic("causal", 300, 300);
  t.d = dims[_i];
  run_case(&t, 4000 + (uint64_t)_i);
  t.mask = "sink(3) | window(30)";
  t.dtype = HATTN_DTYPE_FP16;
  t.lq = 77;
  run_case(&t, 4100 + (uint64_t)_i);
  t.mask = "full";
  t.lq = 300;
  t.lk = 77;
  t.bshd = 1;
  run_case(&t, 4200 + (uint64_t)_i);
}
END_TEST

START_TEST(test_lengths) {
  static const int64_t lens[] = {1, 7, 77, 300, 1000};
  static const char *const masks[] = {"causal", "full", "document & causal", "chunk(16) | sink(1)"};
  int m;
  for (m = 0; m < 4; m++) {
    tcase t = basic(masks[m], lens[_i], lens[_i]);
    t.h = 1;
    run_case(&t, 5000 + (uint64_t)(_i * 10 + m));
    t.lk = 65;
    run_case(&t, 5100 + (uint64_t)(_i * 10 + m));
    t.lq = 65;
    t.lk = lens[_i];
    run_case(&t, 5200 + (uint64_t)(_i * 10 + m));
  }
}
END_TEST

START_TEST(test_empty_lengths) {
  tcase t = basic("full", 5, 0);
  run_case(&t, 5300);
  t = basic("causal", 0, 9);
  run_case(&t, 5301);
  t = basic("causal", 3, 0);
  t.dtype = HATTN_DTYPE_FP16;
  run_case(&t, 5302);
}
END_TEST

START_TEST(test_documents) {
  tcase t = basic("document", 200, 200);
  t.one_token_docs = 1;
  run_case(&t, 6000);
  t.mask = "document & causal";
  run_case(&t, 6001);
  t = basic("document & window(10)", 300, 300);
  t.b = 2;
  run_case(&t, 6002);
  t = basic("document & causal", 80, 1000);
  t.d = 128;
  run_case(&t, 6003);
  t = basic("document & causal", 1000, 1000);
  t.h = 1;
  t.d = 128;
  t.dtype = HATTN_DTYPE_FP16;
  run_case(&t, 6004);
}
END_TEST

START_TEST(test_layouts_dtypes) {
  static const hattn_dtype dt[] = {HATTN_DTYPE_BF16, HATTN_DTYPE_FP16};
  int bshd;
  for (bshd = 0; bshd < 2; bshd++) {
    tcase t = basic(bshd ? "causal & window(33)" : "full", 77, 131);
    t.dtype = dt[_i];
    t.bshd = bshd;
    t.b = 2;
    t.h = 4;
    t.hk = 2;
    t.d = 128;
    run_case(&t, 7000 + (uint64_t)(_i * 2 + bshd));
    t.lq = 300;
    t.lk = 300;
    t.mask = "causal";
    run_case(&t, 7100 + (uint64_t)(_i * 2 + bshd));
  }
}
END_TEST

START_TEST(test_no_lse) {
  tcase t = basic("random(1, 4) | document", 150, 150);
  t.no_lse = 1;
  run_case(&t, 8000);
}
END_TEST

/* ---- failure paths ----------------------------------------------------- */

typedef struct fail_fixture {
  hattn_spec *spec;
  hattn_cuda_kernel_desc desc;
  hattn_cuda_config cfg;
  hattn__cuda_kernel *kern;
  hattn__cuda_plan *plan;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__tensor q, k, v, o, l;
  void *buf, *lbuf;
} fail_fixture;

/* Batch 1, 2 heads sharing one KV head, 128 x 128, head dim 64, bf16. */
static void fail_setup(fail_fixture *f, const char *mask) {
  char err[16384];
  int rc;
  memset(f, 0, sizeof *f);
  f->spec = parse(mask);
  f->desc.pattern = &f->spec->patterns[0];
  f->desc.dtype = HATTN_DTYPE_BF16;
  f->desc.head_dim = 64;
  hattn__cuda_config_default(&f->desc, hattn__cuda_sm(g_cu), &f->cfg);
  rc = hattn__cuda_kernel_get(g_cu, &f->desc, &f->cfg, &f->kern, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s", err);
  f->shape.batch = 1;
  f->shape.heads = 2;
  f->shape.kv_heads = 1;
  f->shape.lq = 128;
  f->shape.lk = 128;
  f->shape.head_dim = 64;
  f->env.lq = 128;
  f->env.lk = 128;
  f->env.batch = 1;
  f->env.heads = 2;
  f->buf = dev_alloc(2 * 128 * 64 * 2 + 64);
  f->lbuf = dev_alloc(2 * 128 * 4 + 64);
  f->q.data = f->k.data = f->v.data = f->o.data = f->buf;
  strides_of(0, 2, 128, 64, f->q.stride);
  strides_of(0, 1, 128, 64, f->k.stride);
  memcpy(f->v.stride, f->k.stride, sizeof f->k.stride);
  memcpy(f->o.stride, f->q.stride, sizeof f->q.stride);
  f->l.data = f->lbuf;
  f->l.stride[0] = 256;
  f->l.stride[1] = 128;
  f->l.stride[2] = 1;
}

static void fail_teardown(fail_fixture *f) {
  hattn__cuda_plan_destroy(f->plan);
  hattn__cuda_free(g_cu, f->buf);
  hattn__cuda_free(g_cu, f->lbuf);
  hattn__spec_destroy(f->spec);
}

static int fail_run(fail_fixture *f, char *err, size_t errlen) {
  return hattn__cuda_launch(f->kern, f->plan, &f->shape, &f->q, &f->k, &f->v, &f->o, &f->l, NULL, err, errlen);
}

START_TEST(test_fail_launch) {
  fail_fixture f;
  char err[1024];
  int rc;
  fail_setup(&f, "causal");
  rc = hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s", err);
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_sync(g_cu, err, sizeof err), HATTN_OK);

  f.k.stride[3] = 2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "tensor K must be contiguous in the head dimension (stride 3 is 1), got 2");
  f.k.stride[3] = 1;

  f.q.stride[2] = 60;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "tensor Q: stride 2 is 60 elements (120 bytes); rows must start on 16-byte boundaries, "
                        "so strides 0-2 must be multiples of 8 elements");
  f.q.stride[2] = 64;

  f.v.data = (char *)f.buf + 2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_msg(strncmp(err, "tensor V must start on a 16-byte boundary in device memory", 58) == 0, "%s", err);
  f.v.data = f.buf;

  f.o.data = NULL;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "tensor O has no data");
  f.o.data = f.buf;

  f.l.data = (char *)f.lbuf + 2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_msg(strncmp(err, "tensor LSE must start on a 4-byte boundary", 42) == 0, "%s", err);
  f.l.data = f.lbuf;

  f.shape.lq = 64;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: the plan was made for batch 1, heads 2, kv_heads 1, lq 128, lk 128, head_dim 64");
  f.shape.lq = 128;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_sync(g_cu, err, sizeof err), HATTN_OK);
  fail_teardown(&f);
}
END_TEST

START_TEST(test_fail_plan) {
  fail_fixture f;
  char err[1024];
  fail_setup(&f, "document & causal");
  ck_assert_int_eq(hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err),
                   HATTN_EINPUT);
  ck_assert_str_eq(err, "the pattern uses document, but no document offsets were given");
  ck_assert_ptr_null(f.plan);
  f.shape.heads = 3;
  f.shape.kv_heads = 2;
  ck_assert_int_eq(hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err),
                   HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: batch 1, heads 3, kv_heads 2 (all positive, heads a multiple of kv_heads)");
  f.shape.heads = 2;
  f.shape.kv_heads = 1;
  f.shape.head_dim = 128;
  ck_assert_int_eq(hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err),
                   HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: head_dim 128, but the kernel is for 64");
  f.shape.head_dim = 64;
  f.env.lk = 127;
  ck_assert_int_eq(hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err),
                   HATTN_EINPUT);
  ck_assert_str_eq(err, "the run-time data was made for another shape (lq 128, lk 127, batch 1, heads 2)");
  fail_teardown(&f);
}
END_TEST

START_TEST(test_fail_mismatch) {
  /* A plan for one configuration, a kernel of another dtype. */
  fail_fixture f;
  hattn_cuda_kernel_desc d2;
  hattn__cuda_kernel *k2 = NULL;
  char err[16384];
  int rc;
  fail_setup(&f, "causal");
  rc = hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s", err);
  d2 = f.desc;
  d2.dtype = HATTN_DTYPE_FP16;
  rc = hattn__cuda_kernel_get(g_cu, &d2, &f.cfg, &k2, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s", err);
  f.kern = k2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_EINPUT);
  ck_assert_msg(strstr(err, "the plan was made for") != NULL, "%s", err);
  fail_teardown(&f);
}
END_TEST

START_TEST(test_fail_open) {
  hattn__cuda *cu = NULL;
  char err[1024];
  ck_assert_int_eq(hattn__cuda_open(1000, &cu, err, sizeof err), HATTN_ENODEV);
  ck_assert_ptr_null(cu);
  ck_assert_msg(strncmp(err, "no CUDA device: device 1000 was asked for", 41) == 0, "%s", err);
}
END_TEST

static Suite *cuda_suite(void) {
  Suite *s = suite_create("cuda");
  TCase *tc = tcase_create("kernels");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, test_atoms, 0, NATOMS);
  tcase_add_loop_test(tc, test_combos, 0, NCOMBOS);
  tcase_add_loop_test(tc, test_modifiers, 0, NMODS);
  tcase_add_loop_test(tc, test_gqa, 0, 4);
  tcase_add_loop_test(tc, test_head_dims, 0, 3);
  tcase_add_loop_test(tc, test_lengths, 0, 5);
  tcase_add_test(tc, test_empty_lengths);
  tcase_add_test(tc, test_documents);
  tcase_add_loop_test(tc, test_layouts_dtypes, 0, 2);
  tcase_add_test(tc, test_no_lse);
  tcase_add_test(tc, test_fail_launch);
  tcase_add_test(tc, test_fail_plan);
  tcase_add_test(tc, test_fail_mismatch);
  tcase_add_test(tc, test_fail_open);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  const char *env = getenv("HATTN_TEST_SEED");
  char err[1024];
  SRunner *sr;
  int failed, rc;

  g_seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
  printf("seed: %" PRIu64 " (set HATTN_TEST_SEED to replay)\n", g_seed);
  fflush(stdout);
  rc = hattn__cuda_open(0, &g_cu, err, sizeof err);
  if (rc == HATTN_ENODEV || rc == HATTN_ENOTSUP) {
    printf("SKIP: %s\n", err);
    return 77;
  }
  if (rc != HATTN_OK) {
    printf("FAIL: hattn__cuda_open: %s\n", err);
    return 1;
  }
  printf("device %s (%s, %d SMs), NVRTC %s\n", hattn__cuda_name(g_cu), hattn__cuda_arch(g_cu),
         hattn__cuda_sm_count(g_cu), hattn__nvrtc_version() ? hattn__nvrtc_version() : "?");
  fflush(stdout);

  sr = srunner_create(cuda_suite());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  hattn__cuda_close(g_cu);
  return failed == 0 ? 0 : 1;
}
