/*
** test_cpu.c: what is the CPU backend's own (runtime/cpu_jit.c,
** runtime/cpu_run.c): its error paths, each with its code and message, the
** object files it writes, and the in-memory JIT (which the tools and the
** tuner use) against the object-file kernel that the backend table makes.
** The kernels' numbers against the float64 reference, for every pattern,
** shape, dtype and tile configuration, are in test_backend.c, the
** conformance suite of every backend.  Exits 77 (skip) when hattn was built
** without LLVM.
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
#include "cpu.h"
#include "cpu_config.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"
#include "tables.h"

static uint64_t g_seed;
static int g_vec = 8;           /* the host's, set in main */

#include "testutil.h"

static hattn__jit *g_jit;
static hattn__pool *g_pool;

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
}

/* ---- the JIT against the backend table's kernel ----------------------- */

/* The same kernel made by the in-memory JIT (hattn__jit_compile, run by
** hattn__cpu_forward on the pool) and by the backend table (an object file
** through the ELF loader, launched on the calling thread) gives the same
** bits on the same fresh random inputs, in every dtype. */
START_TEST(test_jit_matches_table) {
  static const hattn__dtype dts[] = {HATTN_DTYPE_FP32, HATTN_DTYPE_FP16, HATTN_DTYPE_BF16};
  const char *text = "pattern p = causal & (window(16) | sink(4)) | document with softcap(5)";
  const hattn__backend_i *be = hattn__backend_get(HATTN__BACKEND_CPU);
  const int64_t B = 2, H = 4, HK = 2, LQ = 77, LK = 150, D = 64, nq = B * H * LQ * D, nk = B * HK * LK * D;
  hattn__spec *spec = NULL;
  hattn__kernel_desc desc;
  hattn__config cfg;
  hattn__shape shape = {B, H, HK, LQ, LK, D};
  hattn__mask_env env;
  hattn__tensor tq, tk, tv, to, tl;
  test_rundata rd;
  hattn__cpu_fn fn;
  void *dev = NULL, *kern = NULL, *prob = NULL;
  char err[1024];
  int t;
  rng r;

  ck_assert_int_eq(hattn__spec_parse(text, strlen(text), "test", &spec, NULL), HATTN_OK);
  ck_assert_int_eq(be->dev_open(0, -1, &dev, err, sizeof err), HATTN_OK);
  for (t = 0; t < 3; t++) {
    size_t esz = (size_t)hattn__dtype_size(dts[t]), i;
    unsigned char *q = malloc((size_t)nq * esz), *k = malloc((size_t)nk * esz), *v = malloc((size_t)nk * esz);
    unsigned char *o1 = malloc((size_t)nq * esz), *o2 = malloc((size_t)nq * esz);
    float l1[2 * 4 * 77], l2[2 * 4 * 77];
    double *rq = malloc((size_t)nq * sizeof *rq), *rk = malloc((size_t)nk * sizeof *rk);
    ck_assert(q && k && v && o1 && o2 && rq && rk);
    r.s = g_seed ^ (uint64_t)(t + 1);
    rng_next(&r);
    for (i = 0; i < (size_t)nq; i++) rq[i] = put(q, i, dts[t], 2.0 * rng_unit(&r));
    for (i = 0; i < (size_t)nk; i++) {
      rk[i] = put(k, i, dts[t], 2.0 * rng_unit(&r));
      put(v, i, dts[t], rng_unit(&r));
    }
    desc.pattern = &spec->patterns[0];
    desc.dtype = dts[t];
    desc.head_dim = (int)D;
    memset(&cfg, 0, sizeof cfg);
    hattn__cpu_config_default((int)D, g_vec, &cfg.cpu);
    memset(&env, 0, sizeof env);
    env.lq = LQ;
    env.lk = LK;
    env.batch = B;
    env.heads = H;
    test_rundata_make(&rd, &r, spec, desc.pattern, B, H, HK, LQ, LK, D, rq, rk, 0, 60, &env);
    hattn__tensor_strides(&shape, &tq, &tk, &tv, &to, &tl);
    tq.data = q;
    tk.data = k;
    tv.data = v;
    memset(o1, 0xff, (size_t)nq * esz);
    memset(o2, 0xff, (size_t)nq * esz);
    memset(l1, 0xff, sizeof l1);
    memset(l2, 0xff, sizeof l2);

    ck_assert_msg(hattn__jit_compile(g_jit, &desc, &cfg.cpu, &fn, err, sizeof err) == HATTN_OK, "%s", err);
    to.data = o1;
    tl.data = l1;
    ck_assert_msg(hattn__cpu_forward(fn, &desc, &cfg.cpu, &shape, &env, &tq, &tk, &tv, &to, &tl, g_pool, err,
                                     sizeof err) == HATTN_OK, "%s", err);
    ck_assert_msg(be->compile(dev, &desc, &cfg, "jit_vs_table", &kern, err, sizeof err) == HATTN_OK, "%s", err);
    ck_assert_msg(be->problem_create(dev, &desc, &cfg, &shape, &env, &prob, err, sizeof err) == HATTN_OK, "%s", err);
    to.data = o2;
    tl.data = l2;
    ck_assert_msg(be->launch(dev, kern, prob, &tq, &tk, &tv, &to, &tl, NULL, err, sizeof err) == HATTN_OK, "%s",
                  err);
    be->problem_destroy(prob);
    for (i = 0; i < (size_t)nq; i++) ck_assert_msg(!isnan(get(o1, i, dts[t])), "O[%zu] not written", i);
    ck_assert_msg(memcmp(o1, o2, (size_t)nq * esz) == 0, "%s: the JIT's O differs from the table's",
                  hattn__dtype_name(dts[t]));
    ck_assert_msg(memcmp(l1, l2, sizeof l1) == 0, "%s: the JIT's LSE differs from the table's",
                  hattn__dtype_name(dts[t]));
    test_rundata_free(&rd);
    free(q);
    free(k);
    free(v);
    free(o1);
    free(o2);
    free(rq);
    free(rk);
  }
  be->dev_close(dev);
  hattn__spec_destroy(spec);
}
END_TEST
/* ---- failure paths ----------------------------------------------------- */

typedef struct fail_fixture {
  hattn__spec *spec;
  hattn__kernel_desc desc;
  hattn__cpu_config cfg;
  hattn__cpu_fn fn;
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
  hattn__cpu_config c;
  hattn__cpu_fn fn;
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

/* NaN in Q or K reaches, in O and LSE, exactly the rows that see it (bug:
** the kernel's exp2 and its maximum took a NaN score for a masked one, so a
** NaN query row came out 0 with LSE -inf and a NaN key vanished).  Row 5 of
** Q is NaN in head 0; row 9 of K, shared by both heads, from the second
** run on: rows 9 to 15 see it under causal, rows 0 to 8 do not. */
START_TEST(test_nan_reaches_rows) {
  static const char *const masks[] = {"causal", "causal with softcap(4)"};
  static float q[2 * 16 * 8], k[16 * 8], v[16 * 8], o[2 * 16 * 8];
  fail_fixture f;
  char err[512];
  int m, run, h, i, c;
  for (m = 0; m < 2; m++) {
    for (run = 0; run < 2; run++) {
      fail_setup(&f, masks[m]);
      for (i = 0; i < 2 * 16 * 8; i++) q[i] = (float)((i * 37 % 17) - 8) / 8.0f;
      for (i = 0; i < 16 * 8; i++) k[i] = (float)((i * 11 % 13) - 6) / 6.0f, v[i] = (float)(i % 7);
      q[5 * 8 + 2] = NAN;
      if (run) k[9 * 8 + 4] = NAN;
      f.q.data = q, f.k.data = k, f.v.data = v, f.o.data = o;
      memset(o, 0, sizeof o);
      ck_assert_msg(fail_run(&f, err, sizeof err) == HATTN_OK, "%s", err);
      for (h = 0; h < 2; h++)
        for (i = 0; i < 16; i++) {
          int want = (h == 0 && i == 5) || (run && i >= 9);
          ck_assert_msg(isnan(f.lbuf[h * 16 + i]) == want, "%s, run %d: head %d row %d LSE %g", masks[m], run, h, i,
                        f.lbuf[h * 16 + i]);
          for (c = 0; c < 8; c++)
            ck_assert_msg(isnan(o[(h * 16 + i) * 8 + c]) == want, "%s, run %d: head %d row %d O[%d] %g", masks[m],
                          run, h, i, c, o[(h * 16 + i) * 8 + c]);
        }
      hattn__spec_destroy(f.spec);
    }
  }
}
END_TEST

/* The random() bit sets grow with lk squared: past HATTN_RANDOM_MAX_BYTES
** they are refused before they are made (at 4m keys: 512 MiB). */
START_TEST(test_random_tables_limit) {
  const char *text = "pattern p = random(1, 1) | causal";
  hattn__spec *spec = NULL;
  hattn__shape shape = {1, 1, 1, 1, (int64_t)4 << 20, 8};
  hattn__mask_env env;
  hattn__tables t;
  char err[512];
  ck_assert_int_eq(hattn__spec_parse(text, strlen(text), "test", &spec, NULL), HATTN_OK);
  memset(&env, 0, sizeof env);
  env.lq = 1, env.lk = shape.lk, env.batch = env.heads = 1;
  ck_assert_int_eq(hattn__tables_build(&spec->patterns[0], &shape, &env, NULL, &t, err, sizeof err), HATTN_ENOTSUP);
  ck_assert_str_eq(err, "the bit sets of 1 random() atom at 4194304 keys would take more than 67108864 bytes "
                        "(64 MiB), the limit");
  shape.lk = env.lk = 64 << 10;
  ck_assert_int_eq(hattn__tables_build(&spec->patterns[0], &shape, &env, NULL, &t, err, sizeof err), HATTN_OK);
  hattn__tables_clear(&t);
  hattn__spec_destroy(spec);
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
  tcase_add_test(tc, test_jit_matches_table);
  tcase_add_test(tc, test_fail_shape);
  tcase_add_test(tc, test_fail_documents);
  tcase_add_test(tc, test_fail_config);
  tcase_add_test(tc, test_object_file);
  tcase_add_test(tc, test_nan_reaches_rows);
  tcase_add_test(tc, test_random_tables_limit);
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
  printf("host CPU %s, %d floats per vector\n", hattn__jit_cpu_name(jit), g_vec);
  hattn__jit_destroy(jit);

  sr = srunner_create(cpu_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
