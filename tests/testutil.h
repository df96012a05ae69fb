/*
** testutil.h: what the kernel test suites share: a seeded generator
** (splitmix64), stores and loads in every dtype with conversions of the
** tests' own (independent of the library's), random run-time data, and
** CHECK.
*/
#ifndef HATTN_TESTS_TESTUTIL_H
#define HATTN_TESTS_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mask.h"
#include "spec.h"

#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) ck_abort_msg(__VA_ARGS__);                                  \
  } while (0)

/* ---- random numbers (splitmix64) --------------------------------------- */

typedef struct rng {
  uint64_t s;
} rng;

static inline uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static inline int64_t rng_range(rng *r, int64_t lo, int64_t hi) {
  return lo + (int64_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static inline double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0) * 2 - 1; }

/* ---- dtypes ------------------------------------------------------------ */

static inline uint16_t to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  x = x + 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

static inline float from_bf16(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static inline uint16_t to_fp16(float f) {
  _Float16 h = (_Float16)f;
  uint16_t u;
  memcpy(&u, &h, 2);
  return u;
}

static inline float from_fp16(uint16_t u) {
  _Float16 h;
  memcpy(&h, &u, 2);
  return (float)h;
}

/* Store X as element I of BUF in dtype T; return the value stored. */
/* The element strides of a tensor of dims [n0, n1, n2, n3] (n0 unused) in
** either layout: BSHD 0 is [n0, n1, n2, n3] contiguous, BSHD 1 stores it as
** [n0, n2, n1, n3]; stride[3] is 1. */
static inline void strides_of(int bshd, int64_t n1, int64_t n2, int64_t n3, int64_t st[4]) {
  st[0] = n1 * n2 * n3;
  st[1] = bshd ? n3 : n2 * n3;
  st[2] = bshd ? n1 * n3 : n3;
  st[3] = 1;
}

static inline double put(void *buf, size_t i, hattn__dtype t, double x) {
  switch (t) {
  case HATTN_DTYPE_FP16:
    ((uint16_t *)buf)[i] = to_fp16((float)x);
    return from_fp16(((uint16_t *)buf)[i]);
  case HATTN_DTYPE_BF16:
    ((uint16_t *)buf)[i] = to_bf16((float)x);
    return from_bf16(((uint16_t *)buf)[i]);
  default:
    ((float *)buf)[i] = (float)x;
    return ((float *)buf)[i];
  }
}

static inline double get(const void *buf, size_t i, hattn__dtype t) {
  switch (t) {
  case HATTN_DTYPE_FP16: return from_fp16(((const uint16_t *)buf)[i]);
  case HATTN_DTYPE_BF16: return from_bf16(((const uint16_t *)buf)[i]);
  default: return ((const float *)buf)[i];
  }
}

/* ---- random run-time data ----------------------------------------------- */

/* What a pattern reads at run time, drawn at random, and owned here. */
typedef struct test_rundata {
  int64_t *offs;             /* document offsets */
  hattn__layout *layouts;    /* one per layout of the spec */
  uint8_t **bits;
  int nlay;
  int32_t *topk;             /* routed blocks */
} test_rundata;

/*
** Fill ENV with random run-time data for pattern P of SPEC on a problem of
** B x H query heads (HK kv heads), LQ queries, LK keys, head dim D: documents
** (one token each when ONE_TOKEN_DOCS, else empty, one-token and longer
** ones up to MAX_DOC tokens, sometimes an empty last one), layouts of
** random block sizes that may fall short of the problem, and top-k routes
** from the float64 inputs RQ and RK.  D_ owns the memory (test_rundata_free).
*/
static inline void test_rundata_make(test_rundata *d_, rng *r, const hattn__spec *spec, const hattn__pattern *p,
                                     int64_t B, int64_t H, int64_t HK, int64_t LQ, int64_t LK, int64_t D,
                                     const double *rq, const double *rk, int one_token_docs, int64_t max_doc,
                                     hattn__mask_env *env) {
  int i;
  memset(d_, 0, sizeof *d_);
  if (p->needs & HATTN_NEEDS_DOCUMENT) {
    int64_t pos = 0, n = 0;
    d_->offs = malloc((size_t)(2 * LK + 4) * sizeof *d_->offs);
    ck_assert_ptr_nonnull(d_->offs);
    d_->offs[n++] = 0;
    while (pos < LK) {
      int64_t len = one_token_docs ? 1 : rng_range(r, 0, 5) == 0 ? 0 : rng_range(r, 0, 3) == 0 ? 1 : rng_range(r, 1, max_doc);
      pos = pos + len < LK ? pos + len : LK;
      d_->offs[n++] = pos;
    }
    if (rng_range(r, 0, 1)) d_->offs[n++] = LK; /* an empty last document */
    env->doc_offsets = d_->offs;
    env->ndocs = n - 1;
  }
  if (p->needs & HATTN_NEEDS_BLOCKS) {
    static const int64_t sizes[] = {16, 32, 48, 64, 100};
    d_->nlay = spec->nlayouts;
    d_->layouts = calloc((size_t)d_->nlay, sizeof *d_->layouts);
    d_->bits = calloc((size_t)d_->nlay, sizeof *d_->bits);
    ck_assert(d_->layouts && d_->bits);
    for (i = 0; i < d_->nlay; i++) {
      hattn__layout *l = &d_->layouts[i];
      int64_t j;
      l->bm = sizes[rng_range(r, 0, 4)];
      l->bn = sizes[rng_range(r, 0, 4)];
      l->nqb = (LQ + l->bm - 1) / l->bm - rng_range(r, 0, 1);
      l->nkb = (LK + l->bn - 1) / l->bn - rng_range(r, 0, 1);
      if (l->nqb < 0) l->nqb = 0;
      if (l->nkb < 0) l->nkb = 0;
      d_->bits[i] = malloc((size_t)(l->nqb * l->nkb + 1));
      ck_assert_ptr_nonnull(d_->bits[i]);
      for (j = 0; j < l->nqb * l->nkb; j++) d_->bits[i][j] = (uint8_t)(rng_range(r, 0, 2) != 0);
      l->bits = d_->bits[i];
    }
    env->layouts = d_->layouts;
    env->nlayouts = d_->nlay;
  }
  if (p->needs & HATTN_NEEDS_TOPK) {
    /* Rows of K entries up to 64, else of min(K, the key blocks): the
    ** narrower rows a caller may pass (gen/lower.h). */
    const hattn__expr *a = hattn__expr_find(p->mask, HATTN_NODE_TOPK);
    int64_t nb = hattn__nblocks64(LK), b, w = a->a <= 64 ? a->a : hattn__topk_width(a->a, LK);
    d_->topk = malloc((size_t)(B * H * nb * w + 1) * sizeof *d_->topk);
    ck_assert_ptr_nonnull(d_->topk);
    for (b = 0; b < B; b++)
      ck_assert_int_eq(hattn__topk_route(rq + b * H * LQ * D, rk + b * HK * LK * D, H, HK, LQ, LK, D, w,
                                         d_->topk + b * H * nb * w),
                       HATTN_OK);
    env->topk_blocks = d_->topk;
    env->topk_k = w;
  }
}

static inline void test_rundata_free(test_rundata *d_) {
  int i;
  for (i = 0; i < d_->nlay; i++) free(d_->bits[i]);
  free(d_->bits);
  free(d_->layouts);
  free(d_->offs);
  free(d_->topk);
}

#endif /* HATTN_TESTS_TESTUTIL_H */
