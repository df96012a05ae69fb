/*
** kernel_desc.h: what one kernel is specialised on besides its tile
** configuration, the same for every backend.  Plain C, shared by the
** emitters, the runtime and the tuner.  Internal; not installed.
*/
#ifndef HATTN_GEN_KERNEL_DESC_H
#define HATTN_GEN_KERNEL_DESC_H

#include "spec.h"

typedef struct hattn__kernel_desc {
  const hattn__pattern *pattern;  /* checked, canonical */
  hattn__dtype dtype;             /* of Q, K, V and O; accumulation is fp32 (CUDA: bf16 or fp16) */
  int head_dim;                   /* CPU: 1 .. 1024; CUDA: 64, 128 or 256 (others: HATTN_ENOTSUP) */
} hattn__kernel_desc;

#endif /* HATTN_GEN_KERNEL_DESC_H */
