/*
** cuda_config.h: what a CUDA kernel is specialised on (pattern, dtype, head
** dim) and its tile configuration, which the tuner chooses: defaults, the
** checks, and the dynamic shared memory of a launch.  Shared by the
** emitter, the driver and the runtime-only library.  Internal; not
** installed.
*/
#ifndef HATTN_GEN_CUDA_CONFIG_H
#define HATTN_GEN_CUDA_CONFIG_H

#include <stddef.h>

#include "kernel_desc.h"
#include "spec.h"

typedef struct hattn__cuda_config {
  int block_m;   /* query rows per CTA (the plan's bm): 64 or 128 */
  int block_n;   /* keys per block (the plan's bn): 32, 64 or 128 */
  int warps;     /* 4 or 8; each warp owns block_m / warps query rows (16 or more) */
  int stages;    /* shared-memory pipeline stages of K and V: 1 .. 3 */
  int wgmma;     /* 0: the mma.sync kernel (templates/attn_fwd.cuh, sm_80 and
                 ** later); 1: the warpgroup kernel (templates/attn_fwd_sm90.cuh,
                 ** sm_90a only): warps = block_m / 16, stages 2; 2: the
                 ** warp-specialised warpgroup kernel (the same file,
                 ** hattn_attn_fwd_sm90_ws: TMA loads by a producer
                 ** warpgroup, mbarriers, ping-pong of two consumer
                 ** warpgroups): warps = block_m / 16 + 4, stages 2 or 3 */
  /* The decode kernels' (1 to HATTN_CUDA_DECODE_MAX_LQ queries): 0 is the
  ** default of each (the accessors below). */
  int dwarps;    /* warps a CTA, each streaming its own key blocks: 2, 4 or 8 */
  int dblock_n;  /* keys a block: a multiple of 16, 16 .. 128 */
  int dsplit;    /* the key splits fill the SMs this many times over: 1, 2 or 4
                 ** (the launch's, not the kernel's: no code depends on it) */
} hattn__cuda_config;

/* The kernel families that the CUDA emitter writes (hattn__emit_cuda_kernel):
** each selects a kernel body of templates/, per configuration. */
typedef enum hattn__cuda_kernel_kind {
  HATTN_CUDA_KERNEL_FWD = 0   /* forward attention: O and LSE from Q, K, V */
} hattn__cuda_kernel_kind;

/* What a kernel is specialised on: hattn__kernel_desc is hattn__kernel_desc
** (kernel_desc.h). */

/* A good configuration for DESC (its head dim, and whether its pattern is
** dense) on compute capability SM (80, 90, ...). */
void hattn__cuda_config_default(const hattn__kernel_desc *desc, int sm, hattn__cuda_config *out);

/* Whether CFG suits DESC: HATTN_OK, or HATTN_EINVAL/HATTN_ENOTSUP with a
** sentence in ERR. */
int hattn__cuda_config_check(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                             char *err, size_t errlen);

/* Whether a kernel of CFG runs on a device of compute capability SM (named
** DEVICE in the message): HATTN_OK, or HATTN_ENOTSUP with a sentence in ERR
** (the warpgroup kernel needs sm_90). */
int hattn__cuda_config_runs_on(const hattn__cuda_config *cfg, int sm, const char *device, char *err,
                               size_t errlen);

/* The entry point's name of a kernel of DESC and CFG into BUF:
** hattn_fwd_KEY_DTYPE_dHEADDIM_BMxBN_wWARPS_sSTAGES, then "_wg" for the
** warpgroup kernel or "_ws" for the warp-specialised one.  It names everything the kernel is specialised on. */
void hattn__cuda_kernel_name(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                             char *buf, size_t len);

/* Dynamic shared memory in bytes that a kernel of DESC and CFG launches with. */
size_t hattn__cuda_smem_bytes(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg);

/*
** The decode kernels (templates/attn_decode.cuh), for problems of 1 to
** HATTN_CUDA_DECODE_MAX_LQ queries: 16 packed query rows a CTA, each of its
** hattn__cuda_decode_warps warps streaming its own key blocks of
** hattn__cuda_decode_block_n keys through 2 buffers of K and V.  Their
** plan has blocks of 16 x block_n.  The defaults: 4 warps, 4096 / head dim
** keys a block (16 KiB a buffer pair at any head dim), splits that fill
** the SMs once.
*/
#define HATTN_CUDA_DECODE_MAX_LQ 16
#define HATTN_CUDA_DECODE_ROWS 16
#define HATTN_CUDA_DECODE_WARPS 4
#define HATTN_CUDA_DECODE_STAGES 2

/* The decode warps, keys a block at HEAD_DIM, and split factor of CFG. */
int hattn__cuda_decode_warps(const hattn__cuda_config *cfg);
int hattn__cuda_decode_block_n(const hattn__cuda_config *cfg, int head_dim);
int hattn__cuda_decode_split(const hattn__cuda_config *cfg);

/* Dynamic shared memory of a decode launch of CFG at HEAD_DIM. */
size_t hattn__cuda_decode_smem_bytes(const hattn__cuda_config *cfg, int head_dim);

#endif /* HATTN_GEN_CUDA_CONFIG_H */
