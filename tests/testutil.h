/*
** testutil.h: what the kernel test suites share: a seeded generator
** (splitmix64), stores and loads in every dtype with conversions of the
** tests' own (independent of the library's), and CHECK.
*/
#ifndef HATTN_TESTS_TESTUTIL_H
#define HATTN_TESTS_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <string.h>

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
static inline double put(void *buf, size_t i, hattn_dtype t, double x) {
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

static inline double get(const void *buf, size_t i, hattn_dtype t) {
  switch (t) {
  case HATTN_DTYPE_FP16: return from_fp16(((const uint16_t *)buf)[i]);
  case HATTN_DTYPE_BF16: return from_bf16(((const uint16_t *)buf)[i]);
  default: return ((const float *)buf)[i];
  }
}

#endif /* HATTN_TESTS_TESTUTIL_H */
