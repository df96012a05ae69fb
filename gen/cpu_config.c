/*
** cpu_config.c: tile configurations of the CPU kernels and the layout of
** their per-thread scratch.  Plain C: the runtime uses it without LLVM.
*/
#include <stddef.h>
#include <stdio.h>

#include "hattn.h"
#include "cpu_config.h"

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

void hattn__cpu_scratch_plan(const hattn__cpu_config *cfg, int head_dim, hattn__scratch_map *m) {
  size_t dp = (size_t)hattn__cpu_padded_dim(head_dim, cfg->vec), bm = (size_t)cfg->bm, bn = (size_t)cfg->bn;
  size_t off = 0;
  m->q = off;
  off += round16(bm * dp);
  m->acc = off;
  off += round16(bm * dp);
  m->m = off;
  off += round16(bm);
  m->l = off;
  off += round16(bm * (size_t)cfg->vec);
  m->kt = off;
  off += round16((size_t)head_dim * bn);
  m->vf = off;
  off += round16(bn * dp);
  m->s = off;
  off += round16((size_t)cfg->rows * bn);
  m->total = off;
}

void hattn__cpu_config_default(int head_dim, int vec, hattn__cpu_config *out) {
  out->vec = vec == 16 ? 16 : 8;
  /* Measured on Zen 5 (AVX-512 and AVX2 code), causal fp32 at 4k, d 128:
  ** 128 x 64 tiles of 4-row groups beat 64 x 64 by 5-10%; larger head dims
  ** keep Q and acc in L2 with fewer rows. */
  out->rows = 4;
  out->bm = head_dim > 256 ? 64 : 128;
  out->bn = head_dim > 256 ? 32 : 64;
  if (out->bn < out->vec) out->bn = out->vec;
}

int hattn__cpu_config_check(const hattn__cpu_config *cfg, int head_dim, char *err, size_t errlen) {
  if (cfg->vec != 8 && cfg->vec != 16) {
    snprintf(err, errlen, "the CPU vector width must be 8 or 16 floats, got %d", cfg->vec);
    return HATTN_EINVAL;
  }
  if (cfg->rows < 1 || cfg->rows > 16) {
    snprintf(err, errlen, "rows must be in [1, 16], got %d", cfg->rows);
    return HATTN_EINVAL;
  }
  if (cfg->bm < 1 || cfg->bm > 4096 || cfg->bm % cfg->rows != 0) {
    snprintf(err, errlen, "bm must be a multiple of rows (%d) in [1, 4096], got %d", cfg->rows,
             cfg->bm);
    return HATTN_EINVAL;
  }
  if (cfg->bn < cfg->vec || cfg->bn > 1024 || cfg->bn % cfg->vec != 0) {
    snprintf(err, errlen, "bn must be a multiple of the vector width (%d) in [%d, 1024], got %d",
             cfg->vec, cfg->vec, cfg->bn);
    return HATTN_EINVAL;
  }
  if (head_dim < 1 || head_dim > 1024) {
    snprintf(err, errlen, "head_dim must be in [1, 1024], got %d", head_dim);
    return HATTN_EINVAL;
  }
  return HATTN_OK;
}

size_t hattn__cpu_scratch_bytes(const hattn__cpu_config *cfg, int head_dim) {
  hattn__scratch_map m;
  hattn__cpu_scratch_plan(cfg, head_dim, &m);
  return m.total * sizeof(float);
}

