/*
** test_nvrtc_missing.c: libhattn on a machine where NVRTC cannot be loaded
** (runtime/cuda_nvrtc.c reaches it through dlopen).  main() points
** HATTN_NVRTC_LIBRARY at a file that does not exist before anything loads
** NVRTC; then every way into the CUDA compile path must return
** HATTN_ENOTSUP with a sentence that names the library and why it did not
** load, instead of crashing, and the CPU backend must work as before.  In a
** build without NVRTC the same calls say that instead.
*/
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "backend.h"
#include "cuda.h"

#define MISSING "/nonexistent/libnvrtc.so.13"

#ifdef HATTN_HAVE_CUDA
#define EXPECT "NVRTC (" MISSING ", named by HATTN_NVRTC_LIBRARY) could not be loaded: " MISSING ": "
#else
#define EXPECT "hattn was built without NVRTC"
#endif

START_TEST(test_load) {
  char err[2048];
  ck_assert_int_eq(hattn__nvrtc_load(err, sizeof err), HATTN_ENOTSUP);
  ck_assert_msg(strncmp(err, EXPECT, strlen(EXPECT)) == 0, "message: %s", err);
#ifdef HATTN_HAVE_CUDA
  ck_assert_msg(strstr(err, "the CPU backend works without it") != NULL, "message: %s", err);
#endif
  ck_assert_ptr_null(hattn__nvrtc_version());
}
END_TEST

START_TEST(test_compile) {
  char err[2048];
  void *cubin = (void *)err;
  size_t size = 1;
  int rc = hattn__nvrtc_compile("extern \"C\" __global__ void k() {}", "k.cu", "sm_80", &cubin, &size, err,
                                sizeof err);
  ck_assert_int_eq(rc, HATTN_ENOTSUP);
  ck_assert_ptr_null(cubin);
  ck_assert_uint_eq(size, 0);
  ck_assert_msg(strncmp(err, EXPECT, strlen(EXPECT)) == 0, "message: %s", err);
#ifdef HATTN_HAVE_CUDA
  /* A bad architecture is still the caller's mistake. */
  rc = hattn__nvrtc_compile("", "k.cu", "compute_80", &cubin, &size, err, sizeof err);
  ck_assert_int_eq(rc, HATTN_EINVAL);
#endif
}
END_TEST

/* hattn_open with the CUDA backend says why, before it asks for a GPU. */
START_TEST(test_open_cuda) {
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_options_init(&opt);
  opt.backend = HATTN_BACKEND_CUDA;
  opt.db = "";
  ck_assert_int_eq(hattn_open(&opt, &ctx), HATTN_ENOTSUP);
  ck_assert_ptr_nonnull(ctx);
  ck_assert_msg(strstr(hattn_errmsg(ctx), EXPECT) != NULL, "message: %s", hattn_errmsg(ctx));
  hattn_close(ctx);
}
END_TEST

/* So does the backend table, through which the tuner and the kernel cache
** open their own device. */
START_TEST(test_backend_table) {
  const hattn__backend_i *be = hattn__backend_get(HATTN_BACKEND_CUDA);
  void *dev = (void *)&be;
  char err[2048];
  ck_assert_int_eq(be->dev_open(0, -1, &dev, err, sizeof err), HATTN_ENOTSUP);
  ck_assert_ptr_null(dev);
  ck_assert_msg(strncmp(err, EXPECT, strlen(EXPECT)) == 0, "message: %s", err);
  ck_assert_ptr_null(be->compiler_version());
}
END_TEST

/* The CPU backend compiles and runs a kernel as before: with q = 0 each
** row of causal attention is the mean of the values it sees. */
START_TEST(test_cpu_works) {
#ifdef HATTN_HAVE_LLVM
  enum { L = 5, D = 4 };
  static const char text[] = "pattern p = causal\n";
  float q[L * D] = {0}, k[L * D], v[L * D], o[L * D];
  int64_t shape[4] = {1, 1, L, D};
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_specfile *spec = NULL;
  hattn_kernel *kern = NULL;
  hattn_problem prob = {1, 1, 1, L, L, D, HATTN_FP32};
  DLTensor t[4];
  float *data[4] = {q, k, v, o};
  int i, j, c;

  for (i = 0; i < L * D; i++) k[i] = (float)(i % 7), v[i] = (float)((i * 5) % 13) - 6.0f, o[i] = NAN;
  for (i = 0; i < 4; i++) {
    memset(&t[i], 0, sizeof t[i]);
    t[i].data = data[i];
    t[i].device.device_type = kDLCPU;
    t[i].ndim = 4;
    t[i].dtype.code = kDLFloat;
    t[i].dtype.bits = 32;
    t[i].dtype.lanes = 1;
    t[i].shape = shape;
  }
  hattn_options_init(&opt);
  opt.db = "";
  ck_assert_int_eq(hattn_open(&opt, &ctx), HATTN_OK);
  ck_assert_int_eq(hattn_specfile_parse(ctx, text, strlen(text), "test", &spec), HATTN_OK);
  ck_assert_msg(hattn_kernel_get(ctx, spec, "p", &prob, &kern) == HATTN_OK, "%s", hattn_errmsg(ctx));
  ck_assert_msg(hattn_forward(kern, &t[0], &t[1], &t[2], &t[3], NULL, NULL, NULL) == HATTN_OK, "%s",
                hattn_errmsg(ctx));
  for (i = 0; i < L; i++)
    for (c = 0; c < D; c++) {
      double mean = 0;
      for (j = 0; j <= i; j++) mean += v[j * D + c] / (i + 1);
      ck_assert_msg(fabs(o[i * D + c] - mean) < 1e-5, "row %d col %d: %g, expected %g", i, c, o[i * D + c], mean);
    }
  hattn_kernel_destroy(kern);
  hattn_specfile_destroy(spec);
  hattn_close(ctx);
#endif
}
END_TEST

int main(void) {
  Suite *s = suite_create("nvrtc_missing");
  TCase *tc = tcase_create("missing");
  SRunner *sr;
  int failed;
  /* Before anything loads NVRTC; every forked test inherits it. */
  setenv("HATTN_NVRTC_LIBRARY", MISSING, 1);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_load);
  tcase_add_test(tc, test_compile);
  tcase_add_test(tc, test_open_cuda);
  tcase_add_test(tc, test_backend_table);
  tcase_add_test(tc, test_cpu_works);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
