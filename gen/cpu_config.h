/*
** cpu_config.h: what a CPU kernel is specialised on (pattern, dtype, head
** dim) and its tile configuration, and the layout of its per-thread
** scratch.  Plain C, shared by the emitter and the runtime.
** Internal; not installed.
*/
#ifndef HATTN_GEN_CPU_CONFIG_H
#define HATTN_GEN_CPU_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_abi.h"
#include "kernel_desc.h"
#include "spec.h"

/* A tile configuration of the CPU kernel. */
typedef struct hattn__cpu_config {
  int bm;        /* query rows per block (the plan's bm), a multiple of rows */
  int bn;        /* keys per block (the plan's bn), a multiple of vec */
  int rows;      /* query rows held in registers at once */
  int vec;       /* floats per vector: 8 (AVX2) or 16 (AVX-512) */
} hattn__cpu_config;

/* What a kernel is specialised on: hattn__kernel_desc is hattn__kernel_desc. */

/* A good configuration for HEAD_DIM with vectors of VEC floats. */
void hattn__cpu_config_default(int head_dim, int vec, hattn__cpu_config *out);

/* Whether CFG is usable for HEAD_DIM: returns HATTN_OK or HATTN_EINVAL
** with a sentence in ERR. */
int hattn__cpu_config_check(const hattn__cpu_config *cfg, int head_dim, char *err, size_t errlen);

/* Bytes of per-thread scratch a kernel of CFG and HEAD_DIM needs. */
size_t hattn__cpu_scratch_bytes(const hattn__cpu_config *cfg, int head_dim);

/* Offsets of the scratch regions of one kernel, in floats from the start
** of its 64-byte aligned scratch: the Q rows, the accumulators, row maxima
** and sums, the transposed K block, the V block, the scores of one row
** group; TOTAL is the size. */
typedef struct hattn__scratch_map {
  size_t q, acc, m, l, kt, vf, s, total;
} hattn__scratch_map;

/* HEAD_DIM rounded up to a multiple of VEC: the row length of Q, the
** accumulators and V in scratch. */
static inline int hattn__cpu_padded_dim(int head_dim, int vec) { return (head_dim + vec - 1) / vec * vec; }

/* The scratch layout of a kernel of CFG and HEAD_DIM. */
void hattn__cpu_scratch_plan(const hattn__cpu_config *cfg, int head_dim, hattn__scratch_map *m);

#endif /* HATTN_GEN_CPU_CONFIG_H */
