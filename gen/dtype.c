/*
** dtype.c: element conversions and splitmix64.  See dtype.h.
*/
#include <string.h>

#include "dtype.h"

static uint32_t f32_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  return x;
}

static float f32_from_bits(uint32_t x) {
  float f;
  memcpy(&f, &x, 4);
  return f;
}

uint16_t hattn__f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

float hattn__bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t hattn__f32_to_f16(float f) {
  uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu, r, rem, half;
  int e, shift;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* 65520 and up round to inf */
  if (ax < 0x38800000u) {                                    /* below 2^-14: subnormal */
    e = (int)(ax >> 23);
    if (e < 102) return (uint16_t)sign; /* below 2^-25 */
    shift = 126 - e;
    r = ((ax & 0x7fffffu) | 0x800000u) >> shift;
    rem = ((ax & 0x7fffffu) | 0x800000u) & ((1u << shift) - 1);
    half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  r = (ax >> 13) - (112u << 10);
  rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
  return (uint16_t)(sign | r);
}

float hattn__f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
  if (e == 0x1f) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  if (e == 0) return (sign ? -1.0f : 1.0f) * (float)m * 0x1p-24f;
  return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

double hattn__elem_get(const void *x, hattn__dtype t, size_t i) {
  switch (t) {
  case HATTN_DTYPE_FP16: return hattn__f16_to_f32(((const uint16_t *)x)[i]);
  case HATTN_DTYPE_BF16: return hattn__bf16_to_f32(((const uint16_t *)x)[i]);
  default: return ((const float *)x)[i];
  }
}

void hattn__elem_set(void *x, hattn__dtype t, size_t i, float f) {
  switch (t) {
  case HATTN_DTYPE_FP16: ((uint16_t *)x)[i] = hattn__f32_to_f16(f); break;
  case HATTN_DTYPE_BF16: ((uint16_t *)x)[i] = hattn__f32_to_bf16(f); break;
  default: ((float *)x)[i] = f; break;
  }
}

uint64_t hattn__splitmix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}
