/*
** bench_native.c: the baselines of hattn bench (bench_native.h).  This file
** is compiled with -O3 -march=native, as a user would build such code.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef HATTN_HAVE_BLAS
#include <cblas.h>
#endif

#include "bench_native.h"

static inline int visible(const bench_problem *p, int64_t q, int64_t k) {
  switch (p->mask) {
  case BENCH_DENSE: return 1;
  case BENCH_CAUSAL: return k <= q;
  case BENCH_WINDOW: return k <= q && q - k < p->window;
  case BENCH_WINDOW_SINK: return k <= q && (q - k < p->window || k < p->sink);
  case BENCH_DOCUMENT: return k <= q && q / p->doc == k / p->doc;
  }
  return 0;
}

/* The keys a user would loop over for row q: [lo, hi). */
static inline void key_range(const bench_problem *p, int64_t q, int64_t *lo, int64_t *hi) {
  *lo = 0;
  *hi = p->mask == BENCH_DENSE ? p->seqlen : q + 1;
  if (p->mask == BENCH_DOCUMENT) *lo = q / p->doc * p->doc;
}

typedef struct loop_ctx {
  const bench_problem *p;
  float *scores;                /* [threads][seqlen] */
} loop_ctx;

static void loop_row(void *arg, int64_t item, int thread) {
  const loop_ctx *c = arg;
  const bench_problem *p = c->p;
  int64_t h = item / p->seqlen, q = item % p->seqlen, D = p->head_dim, lo, hi, j, d;
  const float *Q = p->q + (h * p->seqlen + q) * D, *K = p->k + h * p->seqlen * D, *V = p->v + h * p->seqlen * D;
  float *O = p->o + (h * p->seqlen + q) * D, *s = c->scores + (int64_t)thread * p->seqlen;
  float scale = 1.0f / sqrtf((float)D), mx = -INFINITY, sum = 0;
  key_range(p, q, &lo, &hi);
  for (j = lo; j < hi; j++) {
    float dot = 0;
    if (!visible(p, q, j)) {
      s[j] = -INFINITY;
      continue;
    }
    for (d = 0; d < D; d++) dot += Q[d] * K[j * D + d];
    s[j] = dot * scale;
    if (s[j] > mx) mx = s[j];
  }
  for (d = 0; d < D; d++) O[d] = 0;
  for (j = lo; j < hi; j++) {
    float w = s[j] == -INFINITY ? 0 : expf(s[j] - mx);
    s[j] = w;
    sum += w;
  }
  for (j = lo; j < hi; j++) {
    float w = s[j] / sum;
    if (w == 0) continue;
    for (d = 0; d < D; d++) O[d] += w * V[j * D + d];
  }
}

void bench_loop_nest(const bench_problem *p, hattn__pool *pool) {
  loop_ctx c;
  c.p = p;
  c.scores = malloc((size_t)hattn__pool_threads(pool) * (size_t)p->seqlen * sizeof *c.scores);
  if (c.scores == NULL) return;
  hattn__pool_run(pool, p->heads * p->seqlen, NULL, loop_row, &c);
  free(c.scores);
}

int bench_have_blas(void) {
#ifdef HATTN_HAVE_BLAS
  return 1;
#else
  return 0;
#endif
}

int bench_blas(const bench_problem *p) {
#ifdef HATTN_HAVE_BLAS
  int64_t L = p->seqlen, D = p->head_dim, h, i, j;
  float *S = malloc((size_t)L * (size_t)L * sizeof *S), scale = 1.0f / sqrtf((float)D);
  if (S == NULL) return -1;
  for (h = 0; h < p->heads; h++) {
    const float *Q = p->q + h * L * D, *K = p->k + h * L * D, *V = p->v + h * L * D;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L, (int)L, (int)D, scale, Q, (int)D, K,
                (int)D, 0.0f, S, (int)L);
    for (i = 0; i < L; i++) {
      float *row = S + i * L, mx = -INFINITY, sum = 0;
      for (j = 0; j < L; j++) {
        if (!visible(p, i, j)) row[j] = -INFINITY;
        if (row[j] > mx) mx = row[j];
      }
      for (j = 0; j < L; j++) sum += row[j] = row[j] == -INFINITY ? 0 : expf(row[j] - mx);
      for (j = 0; j < L; j++) row[j] /= sum;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)L, (int)D, (int)L, 1.0f, S, (int)L, V,
                (int)D, 0.0f, p->o + h * L * D, (int)D);
  }
  free(S);
  return 0;
#else
  (void)p;
  return -1;
#endif
}
