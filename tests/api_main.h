/*
** api_main.h: the main function of the suites that test through the public
** API on the CPU backend (test_api, test_offsets, test_paged, test_varlen):
** the seed, the skip where this build has no CPU backend, and the run.
*/
#ifndef HATTN_TESTS_API_MAIN_H
#define HATTN_TESTS_API_MAIN_H

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

#endif /* HATTN_TESTS_API_MAIN_H */
