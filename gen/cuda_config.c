/*
** cuda_config.c: the CUDA kernels' tile configurations: defaults per head
** dim, the checks, and the shared memory a launch needs.  See
** cuda_config.h.  Apart from the emitter so that the runtime-only library,
** which launches kernels and emits none, carries no template.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "cuda_config.h"
#include "lower.h"

/* Shared memory a CTA may use on the largest supported device (sm_90). */
#define SMEM_LIMIT (227 * 1024)

void hattn__cuda_config_default(const hattn__kernel_desc *desc, int sm, hattn__cuda_config *out) {
  const int head_dim = desc->head_dim;
  const int dense = desc->pattern != NULL && desc->pattern->lowered != NULL &&
                    desc->pattern->lowered->dense;
  out->wgmma = 0;
  out->dwarps = out->dblock_n = out->dsplit = 0;   /* the decode kernels' defaults */
  if (sm == 90) {
    /* Hopper: the warpgroup kernels.  The warp-specialised one (wgmma 2)
    ** with two consumer warpgroups of 64 query rows and 128-key blocks
    ** where the mask is dense or a band (causal, window: closed-form key
    ** blocks), else one consumer warpgroup and 64-key blocks, two CTAs an
    ** SM; head dim 256 two consumer warpgroups and 64-key blocks for every
    ** mask (O alone takes 128 registers a thread: 128 x 64 tiles).
    ** Head dim 256 at 8k, B x H 32, TFLOP/s, ws 128 x 64 against ws 64 x 64
    ** (H200, one call, 2026-12-04): dense 673 / 462, causal 653 / 479,
    ** causal & window(1k) 493 / 367, causal & (window(1k) | sink(64)) 446 /
    ** 335, document & causal (1k docs) 336 / 249.
    ** Measured on an H200 (hattn bench, bf16, 4k and 16k, TFLOP/s),
    ** against the warpgroup kernel that loads with every thread (wgmma 1,
    ** the former default: 128 x 128 dense, 64 x 64 masks):
    **   d128 dense 629 / 660 against 447 / 469; causal at 128 x 128 561 /
    **   644, at 64 x 64 481 / 535, against 423 / 457; causal & window(1k)
    **   420 / 432 and 391 / 411 against 358 / 370; document & causal (1k
    **   docs) at 64 x 64 267 / 270 (128 x 128: 247 / 251) against 244 / 244;
    **   d256 (8k) 468 dense, 475 causal against 389 and 387;
    **   d64 (8k) dense 439 against 327, but at 64 x 64 causal 342 against
    **   370 and document 170 against 215: there masks that are no band keep
    **   the former kernel; at 128 x 128 causal 412 against 368 but causal &
    **   window(1k) 280 against 300: a band of bounded width (a window) keeps
    **   it too.
    ** HATTN_CUDA_WS=0 picks the former kernel and tiles everywhere, =1 the
    ** warp-specialised kernel everywhere (comparisons, tests). */
    const char *ws = getenv("HATTN_CUDA_WS");
    const int band = desc->pattern != NULL && desc->pattern->lowered != NULL && desc->pattern->lowered->band;
    /* A band whose width is bounded on both sides: a window. */
    const int window = band && desc->pattern->lowered->band_lo > -HATTN_MASK_INF &&
                       desc->pattern->lowered->band_hi < HATTN_MASK_INF;
    const int wide = head_dim <= 128 && (dense || band);
    if (ws != NULL && strcmp(ws, "0") == 0) {
      out->wgmma = 1;
      out->block_m = out->block_n = dense && head_dim <= 128 ? 128 : 64;
    } else {
      out->wgmma = ws != NULL && strcmp(ws, "1") == 0 ? 2 : head_dim == 64 && (!wide || window) ? 1 : 2;
      out->block_m = out->block_n = wide && out->wgmma == 2 ? 128 : 64;
      if (head_dim == 256) out->block_m = 128;
    }
    out->warps = out->block_m / 16 + (out->wgmma == 2 ? 4 : 0);
    out->stages = 2;
  } else if (head_dim <= 64) {
    out->block_m = 128;
    out->block_n = 64;
    out->warps = 8;
    out->stages = 2;
  } else if (head_dim <= 128) {
    /* FA2's tiling: 128 x 64 tiles of 4 warps, 32 query rows a warp, so
    ** that each K and V fragment read from shared memory feeds two 16-row
    ** slabs.  Measured on an H200 (bf16, B x H = 64 at 4k, one run,
    ** docs/gpu-notes.md), against the former 64 x 64 x 4 kernel: dense 333
    ** against 269 TFLOP/s, causal 297 against 237, causal & window(1k) 227
    ** against 208; document & causal (1k docs) gains least (171 against
    ** 167; at 16k 162 against 165), since its diagonal blocks waste more of
    ** a 128-row tile. */
    out->block_m = 128;
    out->block_n = 64;
    out->warps = 4;
    out->stages = 2;
  } else {
    out->block_m = 64;
    out->block_n = 32;
    out->warps = 4;
    out->stages = 2;
  }
}

int hattn__cuda_config_runs_on(const hattn__cuda_config *cfg, int sm, const char *device, char *err,
                               size_t errlen) {
  if (cfg->wgmma && sm != 90) {
    snprintf(err, errlen, "the wgmma kernel needs an sm_90 device (compiled for sm_90a), but %s is sm_%d",
             device, sm);
    return HATTN_ENOTSUP;
  }
  return HATTN_OK;
}

void hattn__cuda_kernel_name(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                             char *buf, size_t len) {
  int dw = hattn__cuda_decode_warps(cfg), dn = hattn__cuda_decode_block_n(cfg, desc->head_dim);
  char decode[32] = "";
  /* The decode kernels' tiles where they are not the defaults (so that the
  ** names of default kernels stay as they were). */
  if (dw != HATTN_CUDA_DECODE_WARPS || dn != 4096 / desc->head_dim) snprintf(decode, sizeof decode, "_dw%d_dn%d", dw, dn);
  snprintf(buf, len, "hattn_fwd_%016llx_%s_d%d_%dx%d_w%d_s%d%s%s", (unsigned long long)desc->pattern->key,
           hattn__dtype_name(desc->dtype), desc->head_dim, cfg->block_m, cfg->block_n, cfg->warps,
           cfg->stages, cfg->wgmma == 2 ? "_ws" : cfg->wgmma ? "_wg" : "", decode);
}

size_t hattn__cuda_smem_bytes(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg) {
  size_t d = (size_t)desc->head_dim, elem = 2;
  /* The warp-specialised kernel's mbarriers after the tiles: Q, and full
  ** and empty of K and V per stage. */
  size_t bars = cfg->wgmma == 2 ? 8 * (1 + 4 * (size_t)cfg->stages) : 0;
  return (size_t)cfg->block_m * d * elem + 2 * (size_t)cfg->stages * (size_t)cfg->block_n * d * elem + bars;
}

/* The tiles of the warpgroup kernels: 64 query rows a warpgroup, S and O
** each one wgmma wide (64 to 256 columns); 2 buffers of K and V, or 2 or 3
** for the warp-specialised kernel, whose CTA has a producer warpgroup
** more. */
static int check_wgmma(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg, char *err,
                       size_t errlen) {
  if (desc->head_dim == 256 && (cfg->block_n != 64 || (cfg->block_m != 64 && !(cfg->wgmma == 2 && cfg->block_m == 128)))) {
    snprintf(err, errlen,
             "the wgmma kernel at head dim 256 needs 64 x 64 tiles, or 128 x 64 when warp-specialised (registers), "
             "not %d x %d",
             cfg->block_m, cfg->block_n);
    return HATTN_EINVAL;
  }
  if (cfg->wgmma == 2) {
    if ((cfg->block_m != 64 && cfg->block_m != 128) || (cfg->block_n != 64 && cfg->block_n != 128) ||
        cfg->warps != cfg->block_m / 16 + 4 || (cfg->stages != 2 && cfg->stages != 3)) {
      snprintf(err, errlen,
               "the warp-specialised kernel needs block_m 64 or 128, block_n 64 or 128, warps = block_m / 16 + 4 "
               "and 2 or 3 stages, not %d, %d, %d and %d",
               cfg->block_m, cfg->block_n, cfg->warps, cfg->stages);
      return HATTN_EINVAL;
    }
    return HATTN_OK;
  }
  if ((cfg->block_m != 64 && cfg->block_m != 128) || (cfg->block_n != 64 && cfg->block_n != 128) ||
      cfg->warps != cfg->block_m / 16 || cfg->stages != 2) {
    snprintf(err, errlen,
             "the wgmma kernel needs block_m 64 or 128, block_n 64 or 128, warps = block_m / 16 and 2 stages, "
             "not %d, %d, %d and %d",
             cfg->block_m, cfg->block_n, cfg->warps, cfg->stages);
    return HATTN_EINVAL;
  }
  return HATTN_OK;
}

/* The tiles of the mma.sync kernel. */
static int check_mma_sync(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg, char *err,
                          size_t errlen) {
  int rows;
  if (cfg->block_m != 64 && cfg->block_m != 128) {
    snprintf(err, errlen, "block_m must be 64 or 128, got %d", cfg->block_m);
    return HATTN_EINVAL;
  }
  if (cfg->block_n != 32 && cfg->block_n != 64 && cfg->block_n != 128) {
    snprintf(err, errlen, "block_n must be 32, 64 or 128, got %d", cfg->block_n);
    return HATTN_EINVAL;
  }
  if (cfg->warps != 4 && cfg->warps != 8) {
    snprintf(err, errlen, "warps must be 4 or 8, got %d", cfg->warps);
    return HATTN_EINVAL;
  }
  rows = cfg->block_m / cfg->warps;
  if (rows != 16 && rows != 32) {
    snprintf(err, errlen, "each warp must own 16 or 32 query rows, but block_m %d over %d warps gives %d",
             cfg->block_m, cfg->warps, rows);
    return HATTN_EINVAL;
  }
  if (cfg->stages < 1 || cfg->stages > 3) {
    snprintf(err, errlen, "stages must be 1, 2 or 3, got %d", cfg->stages);
    return HATTN_EINVAL;
  }
  /* Registers: a thread holds rows * head_dim / 32 accumulator floats and
  ** rows * block_n / 32 score floats; beyond 192 the kernel spills. */
  if (rows * desc->head_dim / 32 + rows * cfg->block_n / 32 > 192) {
    snprintf(err, errlen,
             "%d query rows a warp at head dim %d and block_n %d need more than 192 accumulator registers a thread",
             rows, desc->head_dim, cfg->block_n);
    return HATTN_EINVAL;
  }
  return HATTN_OK;
}

int hattn__cuda_config_check(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                             char *err, size_t errlen) {
  size_t smem;
  int rc;
  if (desc->dtype != HATTN_DTYPE_BF16 && desc->dtype != HATTN_DTYPE_FP16) {
    snprintf(err, errlen, "the CUDA backend supports bf16 and fp16, not %s",
             hattn__dtype_name(desc->dtype));
    return HATTN_ENOTSUP;
  }
  if (desc->head_dim != 64 && desc->head_dim != 128 && desc->head_dim != 256) {
    snprintf(err, errlen, "the CUDA backend supports head dims 64, 128 and 256, not %d",
             desc->head_dim);
    return HATTN_ENOTSUP;
  }
  if (cfg->wgmma < 0 || cfg->wgmma > 2) {
    snprintf(err, errlen, "wgmma must be 0, 1 or 2, got %d", cfg->wgmma);
    return HATTN_EINVAL;
  }
  rc = cfg->wgmma ? check_wgmma(desc, cfg, err, errlen) : check_mma_sync(desc, cfg, err, errlen);
  if (rc != HATTN_OK) return rc;
  smem = hattn__cuda_smem_bytes(desc, cfg);
  if (smem > SMEM_LIMIT) {
    snprintf(err, errlen, "the configuration needs %zu bytes of shared memory, more than %d",
             smem, SMEM_LIMIT);
    return HATTN_EINVAL;
  }
  if (cfg->dwarps != 0 && cfg->dwarps != 2 && cfg->dwarps != 4 && cfg->dwarps != 8) {
    snprintf(err, errlen, "the decode kernel takes 2, 4 or 8 warps, not %d", cfg->dwarps);
    return HATTN_EINVAL;
  }
  if (cfg->dblock_n != 0 && (cfg->dblock_n < 16 || cfg->dblock_n > 128 || cfg->dblock_n % 16 != 0)) {
    snprintf(err, errlen, "the decode kernel's blocks hold a multiple of 16 keys from 16 to 128, not %d",
             cfg->dblock_n);
    return HATTN_EINVAL;
  }
  if (cfg->dsplit != 0 && cfg->dsplit != 1 && cfg->dsplit != 2 && cfg->dsplit != 4) {
    snprintf(err, errlen, "the decode split factor is 1, 2 or 4, not %d", cfg->dsplit);
    return HATTN_EINVAL;
  }
  smem = hattn__cuda_decode_smem_bytes(cfg, desc->head_dim);
  if (smem > SMEM_LIMIT) {
    snprintf(err, errlen, "the decode kernel of %d warps and %d-key blocks needs %zu bytes of shared memory, "
             "more than %d", hattn__cuda_decode_warps(cfg), hattn__cuda_decode_block_n(cfg, desc->head_dim), smem,
             SMEM_LIMIT);
    return HATTN_EINVAL;
  }
  return HATTN_OK;
}

int hattn__cuda_decode_warps(const hattn__cuda_config *cfg) {
  return cfg->dwarps ? cfg->dwarps : HATTN_CUDA_DECODE_WARPS;
}

int hattn__cuda_decode_block_n(const hattn__cuda_config *cfg, int head_dim) {
  return cfg->dblock_n ? cfg->dblock_n : 4096 / head_dim;
}

int hattn__cuda_decode_split(const hattn__cuda_config *cfg) { return cfg->dsplit ? cfg->dsplit : 1; }

size_t hattn__cuda_decode_smem_bytes(const hattn__cuda_config *cfg, int head_dim) {
  size_t row = (size_t)head_dim * 2;
  return HATTN_CUDA_DECODE_ROWS * row + (size_t)hattn__cuda_decode_warps(cfg) * HATTN_CUDA_DECODE_STAGES * 2 *
                                            (size_t)hattn__cuda_decode_block_n(cfg, head_dim) * row;
}
