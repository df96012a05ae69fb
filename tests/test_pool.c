/*
** test_pool.c: the thread pool runs every item exactly once, hands out
** items in the order given, and survives many jobs in a row.
*/
#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "hattn.h"
#include "cpu.h"

typedef struct job {
  atomic_int *count;
  atomic_llong sum;
  int threads;
  atomic_int bad_thread;
} job;

static void visit(void *ctx, int64_t item, int thread) {
  job *j = ctx;
  atomic_fetch_add(&j->count[item], 1);
  atomic_fetch_add(&j->sum, item);
  if (thread < 0 || thread >= j->threads) atomic_store(&j->bad_thread, 1);
}

static void run_jobs(int nthreads) {
  hattn__pool *pool;
  int64_t n = 1000, i, r, *order = malloc((size_t)n * sizeof *order);
  job j;
  ck_assert_int_eq(hattn__pool_create(nthreads, &pool), HATTN_OK);
  j.threads = hattn__pool_threads(pool);
  if (nthreads > 0) ck_assert_int_eq(j.threads, nthreads);
  j.count = calloc((size_t)n, sizeof *j.count);
  for (i = 0; i < n; i++) order[i] = n - 1 - i;
  for (r = 0; r < 200; r++) {
    atomic_init(&j.sum, 0);
    atomic_init(&j.bad_thread, 0);
    for (i = 0; i < n; i++) atomic_init(&j.count[i], 0);
    hattn__pool_run(pool, r % 2 ? n : r % 7, r % 3 ? order : NULL, visit, &j);
    for (i = 0; i < (r % 2 ? n : r % 7); i++) {
      int64_t item = r % 3 ? order[i] : i;
      ck_assert_int_eq(atomic_load(&j.count[item]), 1);
    }
    ck_assert_int_eq(atomic_load(&j.bad_thread), 0);
  }
  free(j.count);
  free(order);
  hattn__pool_destroy(pool);
}

START_TEST(every_item_once) {
  run_jobs(1);
  run_jobs(3);
  run_jobs(8);
  run_jobs(0);
}
END_TEST

START_TEST(thread_count_from_environment) {
  hattn__pool *pool;
  setenv("HATTN_NUM_THREADS", "5", 1);
  ck_assert_int_eq(hattn__pool_create(0, &pool), HATTN_OK);
  ck_assert_int_eq(hattn__pool_threads(pool), 5);
  hattn__pool_destroy(pool);
  setenv("HATTN_NUM_THREADS", "zero", 1); /* not a number: the core count */
  ck_assert_int_eq(hattn__pool_create(0, &pool), HATTN_OK);
  ck_assert_int_ge(hattn__pool_threads(pool), 1);
  hattn__pool_destroy(pool);
  unsetenv("HATTN_NUM_THREADS");
  hattn__pool_destroy(NULL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pool");
  TCase *tc = tcase_create("pool");
  SRunner *sr;
  int failed;
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, every_item_once);
  tcase_add_test(tc, thread_count_from_environment);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
