/*
** tables.c: the run-time tables of a problem, built once into one staging
** buffer (tables.h), from the facts of the pattern's lowered mask
** (gen/lower.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "lower.h"
#include "tables.h"

/* Spare zeroed bytes kept beyond a buffer's SIZE. */
#define SPARE 64

/* Reserve BYTES (zeroed) in T, 256-byte aligned; returns the segment's
** offset or HATTN__TABLE_NONE when memory runs out. */
static size_t stage_add(hattn__tables *t, size_t bytes) {
  size_t at = (t->size + 255) / 256 * 256, need = at + (bytes ? bytes : 1);
  if (need + SPARE > t->cap) {
    size_t cap = t->cap ? t->cap : 4096;
    unsigned char *b;
    while (cap < need + SPARE) cap *= 2;
    b = realloc(t->buf, cap);
    if (b == NULL) return HATTN__TABLE_NONE;
    memset(b + t->cap, 0, cap - t->cap);
    t->buf = b;
    t->cap = cap;
  }
  t->size = need;
  return at;
}

/* Stage PLAN's lists as int32 with offsets relative to each table. */
static int stage_plan(hattn__tables *t, const hattn__plan *plan, char *err, size_t errlen) {
  int64_t full_max = 1, part_max = 1, k, i, j;
  size_t noff;

  for (k = 0; k < plan->ntables; k++) {
    int64_t nf = plan->full_off[k][plan->nqb] - plan->full_off[k][0];
    int64_t np = plan->partial_off[k][plan->nqb] - plan->partial_off[k][0];
    if (nf > full_max) full_max = nf;
    if (np > part_max) part_max = np;
  }
  if (full_max * plan->ntables >= INT32_MAX || part_max * plan->ntables >= INT32_MAX) {
    snprintf(err, errlen, "the plan has too many blocks for 32-bit tables (%lld tables of up to %lld blocks)",
             (long long)plan->ntables, (long long)(full_max > part_max ? full_max : part_max));
    return HATTN_ENOTSUP;
  }
  noff = (size_t)(plan->ntables * (plan->nqb + 1)) * sizeof(int32_t);
  if ((t->full_off = stage_add(t, noff)) == HATTN__TABLE_NONE ||
      (t->partial_off = stage_add(t, noff)) == HATTN__TABLE_NONE ||
      (t->full_idx = stage_add(t, (size_t)(plan->ntables * full_max) * sizeof(int32_t))) == HATTN__TABLE_NONE ||
      (t->partial_idx = stage_add(t, (size_t)(plan->ntables * part_max) * sizeof(int32_t))) == HATTN__TABLE_NONE)
    return HATTN_ENOMEM;
  for (k = 0; k < plan->ntables; k++) {
    int32_t *fo = (int32_t *)hattn__tables_at(t, t->full_off) + k * (plan->nqb + 1);
    int32_t *po = (int32_t *)hattn__tables_at(t, t->partial_off) + k * (plan->nqb + 1);
    int32_t *fi = (int32_t *)hattn__tables_at(t, t->full_idx) + k * full_max;
    int32_t *pi = (int32_t *)hattn__tables_at(t, t->partial_idx) + k * part_max;
    int64_t f0 = plan->full_off[k][0], p0 = plan->partial_off[k][0];
    for (i = 0; i <= plan->nqb; i++) {
      fo[i] = (int32_t)(plan->full_off[k][i] - f0);
      po[i] = (int32_t)(plan->partial_off[k][i] - p0);
    }
    for (j = 0; j < plan->full_off[k][plan->nqb] - f0; j++) fi[j] = plan->full_idx[k][f0 + j];
    for (j = 0; j < plan->partial_off[k][plan->nqb] - p0; j++) pi[j] = plan->partial_idx[k][p0 + j];
  }
  t->off_stride = plan->nqb + 1;
  t->full_idx_stride = full_max;
  t->partial_idx_stride = part_max;
  t->per_head = plan->ntables > 1;
  return HATTN_OK;
}

/* ROWS rows of ENV's routed blocks into OUT, W entries a row
** (hattn__topk_staged_width): each row's distinct blocks, in its order,
** padded with -1.  A row of the caller's holds at most W distinct blocks:
** W is K, or at least every key block that exists.  Returns HATTN_OK or
** HATTN_ENOMEM. */
static int stage_topk(int32_t *out, int64_t w, const hattn__mask_env *env, int64_t rows) {
  int64_t nb = hattn__nblocks64(env->lk), cw = env->topk_k, r, i, n;
  uint8_t *seen = calloc((size_t)nb + 1, 1);
  if (seen == NULL) return HATTN_ENOMEM;
  for (r = 0; r < rows; r++) {
    const int32_t *row = env->topk_blocks + r * cw;
    int32_t *o = out + r * w;
    for (i = 0, n = 0; i < cw && n < w; i++)
      if (row[i] >= 0 && !seen[row[i]]) {
        seen[row[i]] = 1;
        o[n++] = row[i];
      }
    for (i = 0; i < n; i++) seen[o[i]] = 0;
    for (; n < w; n++) o[n] = -1;
  }
  free(seen);
  return HATTN_OK;
}

int hattn__tables_build(const hattn__pattern *p, const hattn__shape *shape, const hattn__mask_env *env,
                        const hattn__plan *plan, hattn__tables *t, char *err, size_t errlen) {
  const hattn__mask *m = p->lowered;
  int64_t H = shape->heads, B = shape->batch, LK = shape->lk, i, nqb64, ntopk;
  int rc = HATTN_ENOMEM, l;

  memset(t, 0, sizeof *t);
  t->full_off = t->partial_off = t->full_idx = t->partial_idx = HATTN__TABLE_NONE;
  t->sink = t->slopes = t->doc_id = t->topk = HATTN__TABLE_NONE;
  if (plan != NULL && (rc = stage_plan(t, plan, err, errlen)) != HATTN_OK) goto fail;
  rc = HATTN_ENOMEM;

  if (env->sink_logits) {
    if ((t->sink = stage_add(t, (size_t)H * sizeof(float))) == HATTN__TABLE_NONE) goto fail;
    memcpy(hattn__tables_at(t, t->sink), env->sink_logits, (size_t)H * sizeof(float));
  }
  if (p->alibi != HATTN_ALIBI_NONE) {
    float *s;
    if ((t->slopes = stage_add(t, (size_t)H * sizeof(float))) == HATTN__TABLE_NONE) goto fail;
    s = hattn__tables_at(t, t->slopes);
    for (i = 0; i < H; i++) s[i] = (float)hattn__env_slope(p, env, i, H);
  }
  if (m->needs & HATTN_NEEDS_DOCUMENT) {
    if ((t->doc_id = stage_add(t, ((size_t)LK + 1) * sizeof(int32_t))) == HATTN__TABLE_NONE) goto fail;
    hattn__doc_ids(env, hattn__tables_at(t, t->doc_id));
  }
  if ((m->needs & HATTN_NEEDS_BLOCKS) && env->nlayouts > 0) {
    if ((t->layout = calloc((size_t)env->nlayouts, sizeof *t->layout)) == NULL) goto fail;
    t->nlayouts = env->nlayouts;
    for (l = 0; l < env->nlayouts; l++) {
      size_t n = (size_t)(env->layouts[l].nqb * env->layouts[l].nkb);
      if ((t->layout[l] = stage_add(t, n)) == HATTN__TABLE_NONE) goto fail;
      if (n > 0) memcpy(hattn__tables_at(t, t->layout[l]), env->layouts[l].bits, n);
    }
  }
  nqb64 = hattn__nblocks64(LK);
  /* A random bit set grows with the square of lk, in memory and in the time
  ** selection sampling takes: bounded before it is made. */
  if (m->nrandom > 0 &&
      nqb64 * hattn__random_words(LK) > HATTN_RANDOM_MAX_BYTES / 8 / m->nrandom) {
    snprintf(err, errlen, "the bit sets of %d random() atom%s at %lld keys would take more than %lld bytes "
             "(64 MiB), the limit", m->nrandom, m->nrandom > 1 ? "s" : "", (long long)LK,
             (long long)HATTN_RANDOM_MAX_BYTES);
    rc = HATTN_ENOTSUP;
    goto fail;
  }
  if (m->nrandom > 0) {
    if ((t->random = calloc((size_t)m->nrandom, sizeof *t->random)) == NULL) goto fail;
    t->nrandom = m->nrandom;
    t->random_words = hattn__random_words(LK);
    for (l = 0; l < m->nrandom; l++) {
      if ((t->random[l] = stage_add(t, (size_t)(nqb64 * t->random_words) * sizeof(uint64_t))) == HATTN__TABLE_NONE)
        goto fail;
      if (hattn__random_bitset(hattn__mask_random_op(m, l), env, hattn__tables_at(t, t->random[l])) != HATTN_OK) goto fail;
    }
  }
  if (m->needs & HATTN_NEEDS_TOPK) {
    int64_t w = hattn__topk_staged_width(m->topk_k, LK);
    ntopk = B * H * nqb64 * w;
    if ((t->topk = stage_add(t, (size_t)ntopk * sizeof(int32_t))) == HATTN__TABLE_NONE) goto fail;
    if (ntopk > 0 && stage_topk(hattn__tables_at(t, t->topk), w, env, B * H * nqb64) != HATTN_OK) goto fail;
    t->topk_k = w;
  }
  if (t->buf == NULL && stage_add(t, 0) == HATTN__TABLE_NONE) goto fail; /* never a NULL buffer */
  return HATTN_OK;

fail:
  if (rc == HATTN_ENOMEM) snprintf(err, errlen, "out of memory for the run-time tables");
  hattn__tables_clear(t);
  return rc;
}

void hattn__tables_clear(hattn__tables *t) {
  if (t == NULL) return;
  free(t->buf);
  free(t->layout);
  free(t->random);
  memset(t, 0, sizeof *t);
  t->full_off = t->partial_off = t->full_idx = t->partial_idx = HATTN__TABLE_NONE;
  t->sink = t->slopes = t->doc_id = t->topk = HATTN__TABLE_NONE;
}

int hattn__env_check(const hattn__mask_env *env, const hattn__shape *shape, const hattn__mask *mask,
                     char *err, size_t errlen) {
  if (env->lq != shape->lq || env->lk != shape->lk || env->heads != shape->heads || env->batch != shape->batch) {
    snprintf(err, errlen, "the run-time data was made for another shape (lq %lld, lk %lld, batch %lld, heads %lld)",
             (long long)env->lq, (long long)env->lk, (long long)env->batch, (long long)env->heads);
    return HATTN_EINPUT;
  }
  return hattn__mask_env_check(mask, env, env->nlayouts, err, errlen);
}
