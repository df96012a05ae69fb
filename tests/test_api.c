/*
** test_api.c: the public API of hattn.h on the CPU backend: parse errors,
** lookups, forward against the float64 reference (gen/reference.h, the only
** internal part used, to judge) on fresh random inputs with poisoned
** outputs, in both [B, H, S, D] and [B, S, H, D] memory, GQA, document
** offsets; the checks of DLTensors; NULL-accepting destroys; status codes.
** The seed comes from the clock unless HATTN_TEST_SEED is set.  Runs with no
** kernel database (db ""); exits 77 when hattn was built without LLVM.
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "reference.h"
#include "spec.h"

static uint64_t g_seed;

#include "testutil.h"

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

static void tens_init(tens *x, void *data, hattn_dtype dt, int ndim, const int64_t *shape, int swap) {
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
  hattn_dtype dtype;
  int64_t b, h, hk, lq, lk, d;
  int bshd;
  int docs;
} acase;

static void run_case(const acase *tc, uint64_t salt) {
  char text[512], err[512];
  hattn_specfile *spec;
  hattn_spec *ispec = NULL;
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
  float *lse;
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
  ck_assert_msg(eo < tol && el < tol, "'%s' %s %s: error O %g LSE %g (tolerance %g)", tc->mask,
                hattn__dtype_name(tc->dtype), tc->bshd ? "bshd" : "bhsd", eo, el, tol);

  hattn_kernel_destroy(kern);
  hattn__spec_destroy(ispec);
  free(q), free(o), free(k), free(v), free(lse);
  free(rq), free(ro), free(xo), free(rk), free(rv), free(rl), free(xl);
}

static const acase g_cases[] = {
  {"causal", HATTN_DTYPE_FP32, 2, 4, 4, 70, 70, 32, 0, 0},
  {"causal", HATTN_DTYPE_FP32, 2, 4, 4, 70, 70, 32, 1, 0},
  {"causal & window(16)", HATTN_DTYPE_BF16, 1, 4, 2, 90, 90, 64, 0, 0},
  {"causal & window(16)", HATTN_DTYPE_BF16, 1, 4, 2, 90, 90, 64, 1, 0},
  {"sink(4) | causal & window(8)", HATTN_DTYPE_FP32, 1, 6, 2, 33, 100, 16, 1, 0},
  {"causal & document", HATTN_DTYPE_FP32, 2, 2, 1, 80, 80, 32, 1, 1},
  {"causal & document", HATTN_DTYPE_BF16, 1, 4, 4, 80, 80, 32, 0, 1},
};

START_TEST(forward_vs_reference) { run_case(&g_cases[_i], (uint64_t)_i + 1); }
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
  hattn_specfile *s = parse("pattern a = causal\npattern d = causal & document\n");
  hattn_kernel *kern = NULL, *kd = NULL;
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

  /* Missing and reserved run-time inputs. */
  rc = hattn_forward(kd, &tq.t, &tk.t, &tv.t, &to.t, NULL, NULL, NULL);
  ck_assert_int_eq(rc, HATTN_EINPUT);
  memset(&in, 0, sizeof in);
  in.alibi_slopes = slopes;
  ck_assert_int_eq(hattn_forward(kern, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_ENOTSUP);
  in.alibi_slopes = NULL;
  in.sink_logits = slopes;
  ck_assert_int_eq(hattn_forward(kern, &tq.t, &tk.t, &tv.t, &to.t, NULL, &in, NULL), HATTN_ENOTSUP);

  hattn_kernel_destroy(kern);
  hattn_kernel_destroy(kd);
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
  ck_assert_int_eq(seen, 11);
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

static Suite *api_suite(void) {
  Suite *s = suite_create("api");
  TCase *tc = tcase_create("api");
  tcase_set_timeout(tc, 300);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, spec_errors);
  tcase_add_test(tc, unknown_pattern);
  tcase_add_test(tc, bad_tensors);
  tcase_add_test(tc, destroys_and_codes);
  tcase_add_loop_test(tc, forward_vs_reference, 0, (int)(sizeof g_cases / sizeof g_cases[0]));
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  const char *env = getenv("HATTN_TEST_SEED");
  hattn_ctx *ctx = NULL;
  hattn_options opt;
  SRunner *sr;
  int failed, rc;

  g_seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
  printf("seed: %" PRIu64 " (set HATTN_TEST_SEED to replay)\n", g_seed);
  fflush(stdout);
  hattn_options_init(&opt);
  opt.db = "";
  opt.quiet = 1;
  rc = hattn_open(&opt, &ctx);
  if (rc == HATTN_ENOTSUP) {
    printf("SKIP: %s\n", hattn_errmsg(ctx));
    hattn_close(ctx);
    return 77;
  }
  hattn_close(ctx);
  sr = srunner_create(api_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
