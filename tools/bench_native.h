/*
** bench_native.h: the baselines that hattn bench times its CPU kernels
** against: what a user would write without hattn.  Internal.
*/
#ifndef HATTN_TOOLS_BENCH_NATIVE_H
#define HATTN_TOOLS_BENCH_NATIVE_H

#include <stdint.h>

#include "cpu.h"

/* The patterns of the benchmark, hard-coded as a user would write them. */
typedef enum bench_mask {
  BENCH_DENSE = 0,        /* full */
  BENCH_CAUSAL,           /* causal */
  BENCH_WINDOW,           /* causal & window(w) */
  BENCH_WINDOW_SINK,      /* causal & (window(w) | sink(g)) */
  BENCH_DOCUMENT          /* document & causal, documents of doc tokens */
} bench_mask;

typedef struct bench_problem {
  bench_mask mask;
  int64_t heads, seqlen, head_dim;   /* batch 1, lq = lk = seqlen */
  int64_t window, sink, doc;
  const float *q, *k, *v;            /* [heads, seqlen, head_dim], contiguous */
  float *o;                          /* [heads, seqlen, head_dim] */
} bench_problem;

/*
** (a) The plain loop nest: per query row, the scores of the visible keys,
** a softmax, then the weighted sum of values; rows spread over POOL.
** Compiled with -O3 -march=native (no fast-math).
*/
void bench_loop_nest(const bench_problem *p, hattn__pool *pool);

/*
** (b) The BLAS path: per head S = Q K^T (cblas_sgemm), mask and softmax by
** rows, O = P V (cblas_sgemm); OpenBLAS uses its own threads.  Returns -1
** when hattn was built without a BLAS, or memory for S ran out.
*/
int bench_blas(const bench_problem *p);

/* Whether the BLAS baseline was built in. */
int bench_have_blas(void);

#endif /* HATTN_TOOLS_BENCH_NATIVE_H */
