/*
** tuner.h: the autotuner, one loop over the backend table (backend.h).
** The backend gives a pruned candidate space (config_candidates; CPU:
** query tile, key tile, register rows, vector width, threads; GPU:
** BLOCK_M, BLOCK_N, warps, stages), device memory and timing; every candidate is first checked
** against the float64 reference on a small problem and thrown out when
** wrong, then timed (warm-up, many repetitions, the median and the
** interquartile range, inputs rotated so that a small problem does not
** measure the cache; a monotonic clock on the CPU, device events on the
** GPU) within a time budget.  The winner is the fastest, except that among
** the candidates whose medians lie within the measured spread of the
** fastest, the one earliest in the space (the default first) wins, so
** that a second run picks the same one.  Internal; not installed.
*/
#ifndef HATTN_TUNER_H
#define HATTN_TUNER_H

#include <stddef.h>
#include <stdint.h>

#include "kernel_cache.h"

/* The problem a tuning is for. */
typedef struct hattn__tune_problem {
  const hattn__pattern *pattern;  /* checked, canonical */
  int nlayouts;                   /* the spec's layouts (blocks() patterns are not tuned yet) */
  hattn__dtype dtype;
  int head_dim;
  int64_t batch, heads, kv_heads, lq, lk;
} hattn__tune_problem;

/* What became of a candidate. */
typedef enum hattn__cand_status {
  HATTN__CAND_PENDING = 0,
  HATTN__CAND_TIMED,     /* passed the gate and was timed */
  HATTN__CAND_WRONG,     /* failed the gate: thrown out */
  HATTN__CAND_FAILED,    /* did not compile or run */
  HATTN__CAND_SKIPPED    /* the budget ran out first */
} hattn__cand_status;

const char *hattn__cand_status_name(hattn__cand_status s);

typedef struct hattn__tune_cand {
  char config[96];        /* as stored: the backend's config_text, with the CPU's threads */
  hattn__config cfg;      /* cfg.threads: CPU threads */
  hattn__cand_status status;
  double gate_err;        /* relative error of O on the gate problem */
  double median_us, spread_us, min_us;  /* spread: interquartile range */
  int reps;
  char why[256];          /* for WRONG and FAILED */
} hattn__tune_cand;

/* The test hooks.  CORRUPT, when set, is called on the gate's output O
** (N elements of the problem's dtype) of every candidate before it is
** compared with the reference.  TIMER, when set, replaces measurement: it
** writes N samples in microseconds for candidate C and returns how many it
** wrote.  Both get CTX. */
typedef struct hattn__tune_hooks {
  void (*corrupt)(void *ctx, const hattn__tune_cand *c, void *o, size_t n, hattn__dtype dtype);
  int (*timer)(void *ctx, const hattn__tune_cand *c, double *samples_us, int n);
  void *ctx;
} hattn__tune_hooks;

typedef struct hattn__tune_opts {
  double budget_s;        /* wall-clock budget of the whole tuning; <= 0: none */
  int warmup;             /* runs before timing (0: 2) */
  int reps;               /* timed runs per candidate (0: 15); fewer when the budget is short, never below 5 */
  int progress;           /* -1: a bar when stderr is a terminal, lines otherwise; 0: lines; 1: bar; 2: quiet */
  int max_threads;        /* CPU: 0: every core */
  void *dev;              /* the backend's device, opened through its table (backend.h; for
                          ** cuda an open hattn__cuda); NULL: one of the tuner's own, ordinal 0 */
  uint64_t seed;          /* of the inputs (0: a fixed one) */
  hattn__tune_hooks hooks;
} hattn__tune_opts;

typedef struct hattn__tune_result {
  hattn__backend backend;
  hattn__tune_cand *cands;  /* in space order, default first */
  int ncands;
  int winner;               /* index, or -1 when none passed */
  int fastest;              /* index of the smallest median, or -1 */
  int budget_hit;           /* candidates were skipped for the budget */
  double elapsed_s;
  char kclass[HATTN__KC_KEY_LEN];
  char winner_key[HATTN__KC_KEY_LEN];
  char target[96], model[512], compiler[32];
  int lk_log2, bh_class;
} hattn__tune_result;

/* Free what a result holds (not R itself); NULL is fine. */
void hattn__tune_result_clear(hattn__tune_result *r);

/* The median and interquartile range of N samples (sorted in place). */
void hattn__tune_stats(double *samples, int n, double *median, double *iqr);

/* The winner among the TIMED candidates of C: the earliest whose median is
** within min(max(its spread, the fastest's spread), 3% of the fastest
** median) of the fastest median.
** *FASTEST (may be NULL) gets the fastest.  -1 when none was timed. */
int hattn__tune_select(const hattn__tune_cand *c, int n, int *fastest);

/* How a second tuning B agrees with a first A: SAME winner; WITHIN: B's
** winner was timed in A and its median there is within the measured spread
** of A's winner (max of their interquartile ranges), or the same holds for
** A's winner in B; else DIFFER. */
enum { HATTN__TUNE_SAME = 0, HATTN__TUNE_WITHIN, HATTN__TUNE_DIFFER };
int hattn__tune_agree(const hattn__tune_result *a, const hattn__tune_result *b);

/* Tune problem P on BACKEND: fills *R (clear it with
** hattn__tune_result_clear).  Returns HATTN_OK when a winner was found,
** else an error with a sentence in ERR (HATTN_ENOTSUP for patterns whose
** run-time data the tuner cannot make up: blocks() and topk()). */
int hattn__tune_run(hattn__backend backend, const hattn__tune_problem *p, const hattn__tune_opts *opt,
                    hattn__tune_result *r, char *err, size_t errlen);

/* Store R's winner: its binary (the CPU object, or the CUDA cubin) in
** the kernels table, and the tuning record with every candidate timed. */
int hattn__tune_store(hattn__db *db, const hattn__tune_problem *p, const hattn__tune_opts *opt,
                      const hattn__tune_result *r, char *err, size_t errlen);

#endif /* HATTN_TUNER_H */
