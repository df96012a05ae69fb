/*
** dtype.h: element conversions of hattn's dtypes and the small generator
** that every part of hattn draws from.  Internal; not installed.
*/
#ifndef HATTN_GEN_DTYPE_H
#define HATTN_GEN_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "spec.h"

/* float32 to bfloat16 (the upper 16 bits), rounding to nearest even; a
** NaN stays a NaN. */
uint16_t hattn__f32_to_bf16(float f);
float hattn__bf16_to_f32(uint16_t h);

/* float32 to IEEE half, rounding to nearest even, with subnormals,
** overflow to infinity and NaN kept; and back, exactly. */
uint16_t hattn__f32_to_f16(float f);
float hattn__f16_to_f32(uint16_t h);

/* Element I of X, an array of DTYPE (fp16 and bf16 as 16-bit words). */
double hattn__elem_get(const void *x, hattn__dtype dtype, size_t i);

/* Store F, rounded to DTYPE, as element I of X. */
void hattn__elem_set(void *x, hattn__dtype dtype, size_t i, float f);

/* One step of splitmix64: a well-mixed 64-bit value from *STATE. */
uint64_t hattn__splitmix64(uint64_t *state);

#endif /* HATTN_GEN_DTYPE_H */
