/*
** mask.c: the element predicate of a mask, run-time data checks, random
** blocks and top-k routing.  See mask.h.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "dtype.h"
#include "mask.h"

/* Floor division for a possibly negative numerator and a positive divisor. */
static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

static int check_env_op(const hattn__op *op, const hattn__mask_env *env, char *err, size_t errlen) {
  int64_t i, n;
  switch (op->kind) {
  case HATTN_OP_DOC:
    if (env->doc_offsets == NULL || env->ndocs < 0) {
      snprintf(err, errlen, "the pattern uses document, but no document offsets were given");
      return HATTN_EINPUT;
    }
    if (env->doc_offsets[0] != 0) {
      snprintf(err, errlen, "document offsets must start at 0, got %lld",
               (long long)env->doc_offsets[0]);
      return HATTN_EINPUT;
    }
    for (i = 0; i < env->ndocs; i++) {
      if (env->doc_offsets[i + 1] < env->doc_offsets[i]) {
        snprintf(err, errlen, "document offsets must not decrease: offset %lld is %lld, offset %lld is %lld",
                 (long long)i, (long long)env->doc_offsets[i], (long long)(i + 1),
                 (long long)env->doc_offsets[i + 1]);
        return HATTN_EINPUT;
      }
    }
    if (env->doc_offsets[env->ndocs] != env->lk) {
      snprintf(err, errlen, "document offsets must end at the key length %lld, got %lld",
               (long long)env->lk, (long long)env->doc_offsets[env->ndocs]);
      return HATTN_EINPUT;
    }
    return HATTN_OK;
  case HATTN_OP_LAYOUT: {
    const hattn__layout *l;
    if (env->layouts == NULL || op->a >= env->nlayouts) {
      snprintf(err, errlen, "the pattern uses block layout number %lld, but only %d layouts were given",
               (long long)op->a, env->layouts ? env->nlayouts : 0);
      return HATTN_EINPUT;
    }
    l = &env->layouts[op->a];
    if (l->bm <= 0 || l->bn <= 0 || l->nqb < 0 || l->nkb < 0 ||
        (l->bits == NULL && l->nqb > 0 && l->nkb > 0)) {
      snprintf(err, errlen, "block layout number %lld is malformed (block %lldx%lld, %lldx%lld blocks)",
               (long long)op->a, (long long)l->bm, (long long)l->bn, (long long)l->nqb,
               (long long)l->nkb);
      return HATTN_EINPUT;
    }
    return HATTN_OK;
  }
  case HATTN_OP_TOPK:
    if (env->topk_blocks == NULL) {
      snprintf(err, errlen, "the pattern uses topk(%lld), but no routed blocks were given",
               (long long)op->a);
      return HATTN_EINPUT;
    }
    if (env->topk_k != op->a && env->topk_k != hattn__topk_width(op->a, env->lk)) {
      snprintf(err, errlen, "the pattern uses topk(%lld), but the routed blocks hold %lld per query block "
               "(expected %lld or, at most the key blocks that exist, %lld)", (long long)op->a,
               (long long)env->topk_k, (long long)op->a, (long long)hattn__topk_width(op->a, env->lk));
      return HATTN_EINPUT;
    }
    if (env->batch < 1 || env->heads < 1) {
      snprintf(err, errlen, "routed blocks need batch and heads of at least 1");
      return HATTN_EINPUT;
    }
    n = env->batch * env->heads * hattn__nblocks64(env->lk) * env->topk_k;
    for (i = 0; i < n; i++) {
      int32_t b = env->topk_blocks[i];
      if (b < -1 || b >= hattn__nblocks64(env->lk)) {
        snprintf(err, errlen, "routed block %lld is %d, outside [0, %lld)", (long long)i, (int)b,
                 (long long)hattn__nblocks64(env->lk));
        return HATTN_EINPUT;
      }
    }
    return HATTN_OK;
  default:
    return HATTN_OK;
  }
}

int hattn__mask_env_check(const hattn__mask *mask, const hattn__mask_env *env,
                          int nlayouts_in_spec, char *err, size_t errlen) {
  int i, rc = HATTN_OK;
  (void)nlayouts_in_spec;
  if (env->lq < 0 || env->lk < 0) {
    snprintf(err, errlen, "sequence lengths must not be negative, got %lld and %lld",
             (long long)env->lq, (long long)env->lk);
    return HATTN_EINPUT;
  }
  if (env->offsets_set) {
    if (env->q_offset < -HATTN_MAX_SEQLEN || env->q_offset > HATTN_MAX_SEQLEN) {
      snprintf(err, errlen, "q_offset is %lld; it must lie in [-%lld, %lld] (HATTN_MAX_SEQLEN)",
               (long long)env->q_offset, (long long)HATTN_MAX_SEQLEN, (long long)HATTN_MAX_SEQLEN);
      return HATTN_EINPUT;
    }
    if (env->k_offset < 0 || env->k_offset > HATTN_MAX_SEQLEN) {
      snprintf(err, errlen, "k_offset is %lld; key positions are never negative, so it must lie in [0, %lld] "
               "(HATTN_MAX_SEQLEN)", (long long)env->k_offset, (long long)HATTN_MAX_SEQLEN);
      return HATTN_EINPUT;
    }
    if (env->q_offset + env->lq > HATTN_MAX_SEQLEN) {
      snprintf(err, errlen, "q_offset + lq is %lld; query positions must stay below HATTN_MAX_SEQLEN (%lld)",
               (long long)(env->q_offset + env->lq), (long long)HATTN_MAX_SEQLEN);
      return HATTN_EINPUT;
    }
    if (env->k_offset + env->lk > HATTN_MAX_SEQLEN) {
      snprintf(err, errlen, "k_offset + lk is %lld; key positions must stay below HATTN_MAX_SEQLEN (%lld)",
               (long long)(env->k_offset + env->lk), (long long)HATTN_MAX_SEQLEN);
      return HATTN_EINPUT;
    }
  }
  for (i = 0; i < mask->nops && rc == HATTN_OK; i++) rc = check_env_op(&mask->ops[i], env, err, errlen);
  if (rc != HATTN_OK) return rc;
  for (i = 0; i < mask->nops; i++) {
    const hattn__op *op = &mask->ops[i];
    if (op->kind == HATTN_OP_DOC && hattn__env_kpos0(env) != 0) {
      snprintf(err, errlen, "document() with k_offset %lld is not supported: the document offsets cover the key "
               "rows, so k_offset must be 0",
               (long long)hattn__env_kpos0(env));
      return HATTN_ENOTSUP;
    }
    if ((op->kind == HATTN_OP_RANDOM || op->kind == HATTN_OP_TOPK) && !hattn__env_default_positions(env)) {
      snprintf(err, errlen, "%s with offsets is not supported: it picks blocks of the default positions, so "
               "q_offset must be lk - lq (%lld) and k_offset 0, got %lld and %lld",
               op->kind == HATTN_OP_RANDOM ? "random()" : "topk()", (long long)(env->lk - env->lq),
               (long long)hattn__env_qpos0(env), (long long)hattn__env_kpos0(env));
      return HATTN_ENOTSUP;
    }
  }
  return HATTN_OK;
}

int64_t hattn__doc_of(const hattn__mask_env *env, int64_t pos) {
  int64_t lo = 0, hi = env->ndocs; /* answer in [lo, hi) */
  if (pos < 0 || pos >= env->lk || env->ndocs <= 0) return -1;
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    if (env->doc_offsets[mid] <= pos) lo = mid;
    else hi = mid;
  }
  return lo;
}

/* The generator state for the random blocks of query 64-block QB. */
static uint64_t random_state(int64_t seed, int64_t qb) {
  return (uint64_t)seed * UINT64_C(0xd1b54a32d192ed03) ^ (uint64_t)qb * UINT64_C(0x8cb92ba72f3d8dd7);
}

/* Selection sampling (Knuth's algorithm S): key block j is taken with
** probability (still needed) / (still left), so exactly r blocks come out, in
** increasing order, with no memory beyond the generator's state. */
int64_t hattn__random_blocks(int64_t seed, int64_t r, int64_t nkb, int64_t qb, int64_t *out) {
  uint64_t state = random_state(seed, qb);
  int64_t n = 0, j;
  if (nkb <= 0 || r <= 0) return 0;
  for (j = 0; j < nkb && n < r; j++) {
    if (r >= nkb || (int64_t)(hattn__splitmix64(&state) % (uint64_t)(nkb - j)) < r - n) out[n++] = j;
  }
  return n;
}

int hattn__random_bitset(const hattn__op *a, const hattn__mask_env *env, uint64_t *out) {
  int64_t nb = hattn__nblocks64(env->lk), words = hattn__random_words(env->lk), i, j, m;
  int64_t *picked = malloc(((size_t)nb + 1) * sizeof *picked);
  if (picked == NULL) return HATTN_ENOMEM;
  for (i = 0; i < nb; i++) {
    m = hattn__random_blocks(hattn__random_seed(a, env), a->b, nb, i, picked);
    for (j = 0; j < m; j++) out[i * words + picked[j] / 64] |= UINT64_C(1) << (picked[j] % 64);
  }
  free(picked);
  return HATTN_OK;
}

void hattn__doc_ids(const hattn__mask_env *env, int32_t *out) {
  int64_t d, pos;
  for (d = 0; d < env->ndocs; d++)
    for (pos = env->doc_offsets[d]; pos < env->doc_offsets[d + 1]; pos++) out[pos] = (int32_t)d;
}

int hattn__random_has(int64_t seed, int64_t r, int64_t nkb, int64_t qb, int64_t kb) {
  uint64_t state = random_state(seed, qb);
  int64_t n = 0, j;
  if (kb < 0 || kb >= nkb || r <= 0) return 0;
  if (r >= nkb) return 1;
  for (j = 0; j <= kb && n < r; j++) {
    int take = (int64_t)(hattn__splitmix64(&state) % (uint64_t)(nkb - j)) < r - n;
    if (take && j == kb) return 1;
    n += take;
  }
  return 0;
}

/* Register R of M at (q, k); operands are evaluated left to right and
** stop as soon as the result is known. */
static int visible(const hattn__mask *m, int r, int64_t q, int64_t k, int64_t head,
                   const hattn__mask_env *env) {
  const hattn__op *op = &m->ops[r];
  int64_t qpos = q + hattn__env_qpos0(env), kpos = k + hattn__env_kpos0(env), d = qpos - kpos, i;
  switch (op->kind) {
  case HATTN_OP_DIST: return op->lo <= d && d <= op->hi && d % op->m == 0;
  case HATTN_OP_KPOS_LT: return kpos < op->a;
  case HATTN_OP_QPOS_LT: return qpos < op->a;
  case HATTN_OP_CHUNK: return floordiv(qpos, op->a) == floordiv(kpos, op->a);
  case HATTN_OP_DOC: {
    int64_t dq = hattn__doc_of(env, qpos);
    return dq >= 0 && dq == hattn__doc_of(env, kpos);
  }
  case HATTN_OP_LAYOUT: {
    const hattn__layout *l = &env->layouts[op->a];
    int64_t bq = q / l->bm, bk = k / l->bn;
    return bq < l->nqb && bk < l->nkb && l->bits[bq * l->nkb + bk] != 0;
  }
  case HATTN_OP_RANDOM:
    if (qpos < 0) return 0;
    return hattn__random_has(hattn__random_seed(op, env), op->b, hattn__nblocks64(env->lk),
                             qpos / HATTN_SPEC_BLOCK, kpos / HATTN_SPEC_BLOCK);
  case HATTN_OP_TOPK: {
    const int32_t *row;
    if (qpos < 0) return 0;
    row = env->topk_blocks +
          (head * hattn__nblocks64(env->lk) + qpos / HATTN_SPEC_BLOCK) * env->topk_k;
    for (i = 0; i < env->topk_k; i++)
      if (row[i] == kpos / HATTN_SPEC_BLOCK) return 1;
    return 0;
  }
  case HATTN_OP_NOT: return !visible(m, op->args[0], q, k, head, env);
  case HATTN_OP_AND:
    for (i = 0; i < op->nargs; i++)
      if (!visible(m, op->args[i], q, k, head, env)) return 0;
    return 1;
  case HATTN_OP_OR:
    for (i = 0; i < op->nargs; i++)
      if (visible(m, op->args[i], q, k, head, env)) return 1;
    return 0;
  default: return 0;
  }
}

int hattn__mask_visible(const hattn__mask *m, int64_t q, int64_t k, int64_t head,
                        const hattn__mask_env *env) {
  return visible(m, m->nops - 1, q, k, head, env);
}

/* Register R of M in three-valued logic. */
static int eval3(const hattn__mask *m, int r, int64_t qpos, int64_t kpos) {
  const hattn__op *op = &m->ops[r];
  int i, v, acc;
  switch (op->kind) {
  case HATTN_OP_DIST:
  case HATTN_OP_KPOS_LT:
  case HATTN_OP_QPOS_LT:
  case HATTN_OP_CHUNK: {
    hattn__mask_env env;
    memset(&env, 0, sizeof env);
    env.lq = 1;
    env.lk = qpos + 1;  /* query row 0 at position qpos */
    return visible(m, r, 0, kpos, 0, &env) ? HATTN_TRI_TRUE : HATTN_TRI_FALSE;
  }
  case HATTN_OP_DOC: return qpos == kpos ? HATTN_TRI_TRUE : HATTN_TRI_UNKNOWN;
  case HATTN_OP_NOT: return HATTN_TRI_TRUE - eval3(m, op->args[0], qpos, kpos);
  case HATTN_OP_AND:
    acc = HATTN_TRI_TRUE;
    for (i = 0; i < op->nargs && acc != HATTN_TRI_FALSE; i++) {
      v = eval3(m, op->args[i], qpos, kpos);
      acc = v < acc ? v : acc;
    }
    return acc;
  case HATTN_OP_OR:
    acc = HATTN_TRI_FALSE;
    for (i = 0; i < op->nargs && acc != HATTN_TRI_TRUE; i++) {
      v = eval3(m, op->args[i], qpos, kpos);
      acc = v > acc ? v : acc;
    }
    return acc;
  default: return HATTN_TRI_UNKNOWN;  /* layouts, random and routed blocks */
  }
}

int hattn__mask_eval3(const hattn__mask *m, int64_t qpos, int64_t kpos) {
  return eval3(m, m->nops - 1, qpos, kpos);
}

static int64_t gcd64(int64_t a, int64_t b) { return b ? gcd64(b, a % b) : a; }

int64_t hattn__mask_period(const hattn__mask *m, int64_t cap) {
  int64_t p = 1;
  int i;
  for (i = 0; i < m->nops; i++) {
    int64_t s = m->ops[i].kind == HATTN_OP_DIST ? m->ops[i].m : 1;
    p = p / gcd64(p, s) * s;
    if (p > cap) return cap;
  }
  return p;
}

int hattn__topk_route(const double *q, const double *k, int64_t heads, int64_t kv_heads,
                      int64_t lq, int64_t lk, int64_t d, int64_t topk_k, int32_t *out) {
  int64_t nb = hattn__nblocks64(lk), group = heads / kv_heads, h, i, j, t, c;
  double *qm = calloc((size_t)d, sizeof *qm), *km = calloc((size_t)(nb * d + 1), sizeof *km);
  double *score = calloc((size_t)nb + 1, sizeof *score);
  char *taken = calloc((size_t)nb + 1, 1);
  int rc = HATTN_ENOMEM;
  if (!qm || !km || !score || !taken) goto done;
  for (h = 0; h < heads; h++) {
    const double *kh = k + (h / group) * lk * d, *qh = q + h * lq * d;
    /* Pooled keys: the mean of each key 64-block. */
    for (j = 0; j < nb; j++) {
      int64_t k0 = j * HATTN_SPEC_BLOCK, k1 = k0 + HATTN_SPEC_BLOCK < lk ? k0 + HATTN_SPEC_BLOCK : lk;
      for (c = 0; c < d; c++) {
        double s = 0;
        for (t = k0; t < k1; t++) s += kh[t * d + c];
        km[j * d + c] = s / (double)(k1 - k0);
      }
    }
    for (i = 0; i < nb; i++) {
      int32_t *row = out + (h * nb + i) * topk_k;
      int64_t p0 = i * HATTN_SPEC_BLOCK, p1 = p0 + HATTN_SPEC_BLOCK, r0, r1, n;
      /* The query rows of this block: qpos in [p0, p1), q = qpos - (lk - lq). */
      r0 = p0 - (lk - lq);
      r1 = p1 - (lk - lq);
      if (r0 < 0) r0 = 0;
      if (r1 > lq) r1 = lq;
      for (t = 0; t < topk_k; t++) row[t] = -1;
      if (r0 >= r1) continue;
      for (c = 0; c < d; c++) {
        double s = 0;
        for (t = r0; t < r1; t++) s += qh[t * d + c];
        qm[c] = s / (double)(r1 - r0);
      }
      for (j = 0; j <= i; j++) {
        double s = 0;
        for (c = 0; c < d; c++) s += qm[c] * km[j * d + c];
        score[j] = s;
        taken[j] = 0;
      }
      /* Pick the K best, ties to the lower block, then list them in order. */
      for (n = 0; n < topk_k && n <= i; n++) {
        int64_t best = -1;
        for (j = 0; j <= i; j++)
          if (!taken[j] && (best < 0 || score[j] > score[best])) best = j;
        taken[best] = 1;
      }
      for (j = 0, n = 0; j <= i; j++)
        if (taken[j]) row[n++] = (int32_t)j;
    }
  }
  rc = HATTN_OK;
done:
  free(qm);
  free(km);
  free(score);
  free(taken);
  return rc;
}

double hattn__alibi_slope(const hattn__pattern *p, int64_t h, int64_t heads) {
  switch (p->alibi) {
  case HATTN_ALIBI_STANDARD: return exp2(-8.0 * (double)(h + 1) / (double)heads);
  case HATTN_ALIBI_FIXED: return p->alibi_slope;
  default: return 0.0;
  }
}

double hattn__env_slope(const hattn__pattern *p, const hattn__mask_env *env, int64_t h, int64_t heads) {
  if (env && env->alibi_slopes && p->alibi == HATTN_ALIBI_STANDARD) return env->alibi_slopes[h];
  return hattn__alibi_slope(p, h, heads);
}
