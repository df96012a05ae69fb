/*
** api_main.h: what the suites that test through the public API on the CPU
** backend share (test_api, test_offsets, test_paged, test_varlen): the main
** function (the seed, the skip where this build has no CPU backend, the
** run), a CPU context with a parsed spec, and host DLTensors.
*/
#ifndef HATTN_TESTS_API_MAIN_H
#define HATTN_TESTS_API_MAIN_H

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "hattn.h"

/* Set *SEED from HATTN_TEST_SEED, else the clock, and print it; exit status
** 77 (skipped) where a CPU context cannot open for want of a backend (no
** LLVM); else run SUITE's tests: 0 when all passed, 1 otherwise. */
static int api_main(Suite *(*suite)(void), uint64_t *seed) {
  const char *env = getenv("HATTN_TEST_SEED");
  hattn_ctx *ctx = NULL;
  hattn_options opt;
  SRunner *sr;
  int failed, rc;

  *seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
  printf("seed: %" PRIu64 " (set HATTN_TEST_SEED to replay)\n", *seed);
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
  sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

/* Open a CPU context (no database, 2 threads, quiet) in *CTX and parse
** TEXT, named FILENAME, into *SPEC; a failure fails the test. */
static inline void api_open(const char *text, const char *filename, hattn_ctx **ctx, hattn_specfile **spec) {
  hattn_options opt;
  int rc;
  hattn_options_init(&opt);
  opt.db = "";
  opt.threads = 2;
  opt.quiet = 1;
  rc = hattn_open(&opt, ctx);
  ck_assert_msg(rc == HATTN_OK, "hattn_open: %s", hattn_errmsg(*ctx));
  rc = hattn_specfile_parse(*ctx, text, strlen(text), filename, spec);
  ck_assert_msg(rc == HATTN_OK, "parse: %s", hattn_errmsg(*ctx));
}

/* The DLPack dtype of DT. */
static inline DLDataType api_dl_dtype(hattn__dtype dt) {
  DLDataType t;
  t.code = dt == HATTN_DTYPE_BF16 ? kDLBfloat : kDLFloat;
  t.bits = dt == HATTN_DTYPE_FP32 ? 32 : 16;
  t.lanes = 1;
  return t;
}

/* A compact host tensor of DT over DATA with NDIM dimensions SHAPE. */
static inline void api_host_tensor(DLTensor *t, void *data, DLDataType dt, int ndim, int64_t *shape) {
  memset(t, 0, sizeof *t);
  t->data = data;
  t->device.device_type = kDLCPU;
  t->ndim = ndim;
  t->shape = shape;
  t->dtype = dt;
}

/* Bytes an element of DT takes. */
static inline size_t api_esize(hattn__dtype dt) { return dt == HATTN_DTYPE_FP32 ? 4 : 2; }

#endif /* HATTN_TESTS_API_MAIN_H */
