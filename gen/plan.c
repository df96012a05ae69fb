/*
** plan.c: block classification, closed-form key ranges and the compressed
** block tables of a pattern.  See plan.h.
**
** A block is rows [q0, q1) x keys [k0, k1).  Its query positions are
** [qp0, qp1) with qp = q + qpos0 and its key positions [kp0, kp1) with
** kp = k + kpos0 (qpos0 = lk - lq and kpos0 = 0 unless the environment sets
** offsets), and every distance d in [dmin, dmax], dmin = qp0 - (kp1 - 1),
** dmax = (qp1 - 1) - kp0, occurs in it, so position
** atoms are classified exactly from these few numbers.  Run-time atoms are
** classified exactly by counting what their data selects in the rectangle.
*/
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "plan.h"

#define BLOCK64 HATTN_SPEC_BLOCK

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Floor division for a possibly negative numerator and a positive divisor:
** the chunk index that mask.c uses. */
static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* ceil(a / b) for a >= 0, b > 0, without overflow. */
static int64_t ceildiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/* Whether some multiple of S (> 0) lies in [lo, hi]. */
static int has_multiple(int64_t lo, int64_t hi, int64_t s) {
  return lo <= hi && floordiv(hi, s) * s >= lo;
}

/* The geometry of one block. */
typedef struct rect {
  int64_t q0, q1, k0, k1;       /* rows and keys, half-open */
  int64_t qp0, qp1;             /* query positions, half-open */
  int64_t kp0, kp1;             /* key positions, half-open */
  int64_t dmin, dmax;           /* every distance in [dmin, dmax] occurs */
} rect;

/*
** What plan_build prepares for one operation of the mask, so that run-time
** operations classify in O(1) or O(log) per 64-block row: one per
** operation, x[i] for register i.
*/
typedef struct aux {
  /* blocks: prefix[(i * (nkb + 1)) + j] = set blocks in rows < i, cols < j. */
  int64_t *prefix;
  /* random: a direct-mapped cache of the chosen key 64-blocks per query
  ** 64-block: query 64-block rnd_tag[i] (or -1) has rnd_len[i] of them at
  ** rnd[i * rnd_r], with i = qb % rnd_cap; rnd_cap exceeds the 64-blocks
  ** that one query block spans, so walking a query block misses once per
  ** 64-block. */
  int64_t *rnd, *rnd_len, *rnd_tag;
  int64_t rnd_r, rnd_cap;
  /* topk: every row of the routed table sorted, without -1 and duplicates:
  ** topk_len[row] entries at topk[row * topk_k]. */
  int32_t *topk;
  int64_t *topk_len;
} aux;

/* ---------------------------------------------------------------- *
** Run-time atoms: counting selected cells.
** ---------------------------------------------------------------- */

/* The number of entries of the sorted array A[0..N) in [lo, hi]. */
static int64_t count_sorted64(const int64_t *a, int64_t n, int64_t lo, int64_t hi) {
  int64_t l = 0, r = n, first;
  while (l < r) {
    int64_t m = l + (r - l) / 2;
    if (a[m] < lo) l = m + 1;
    else r = m;
  }
  first = l;
  r = n;
  while (l < r) {
    int64_t m = l + (r - l) / 2;
    if (a[m] <= hi) l = m + 1;
    else r = m;
  }
  return l - first;
}

static int64_t count_sorted32(const int32_t *a, int64_t n, int64_t lo, int64_t hi) {
  int64_t l = 0, r = n, first;
  while (l < r) {
    int64_t m = l + (r - l) / 2;
    if (a[m] < lo) l = m + 1;
    else r = m;
  }
  first = l;
  r = n;
  while (l < r) {
    int64_t m = l + (r - l) / 2;
    if (a[m] <= hi) l = m + 1;
    else r = m;
  }
  return l - first;
}

/* The tri-state of a rectangle from its number of selected cells. */
static hattn__block from_count(int64_t count, int64_t area) {
  if (count == 0) return HATTN_BLOCK_EMPTY;
  return count == area ? HATTN_BLOCK_FULL : HATTN_BLOCK_PARTIAL;
}

static hattn__block classify_blocks(const hattn__op *op, const aux *x, const rect *r,
                                    const hattn__mask_env *env) {
  const hattn__layout *l = &env->layouts[op->a];
  int64_t bq0 = r->q0 / l->bm, bq1 = (r->q1 - 1) / l->bm;
  int64_t bk0 = r->k0 / l->bn, bk1 = (r->k1 - 1) / l->bn;
  int64_t area = (bq1 - bq0 + 1) * (bk1 - bk0 + 1), count = 0, i, j;
  int64_t cq1 = min64(bq1, l->nqb - 1), ck1 = min64(bk1, l->nkb - 1);
  if (bq0 > cq1 || bk0 > ck1) return HATTN_BLOCK_EMPTY;
  if (x != NULL && x->prefix != NULL) {
    const int64_t *p = x->prefix;
    int64_t w = l->nkb + 1;
    count = p[(cq1 + 1) * w + ck1 + 1] - p[bq0 * w + ck1 + 1] - p[(cq1 + 1) * w + bk0] +
            p[bq0 * w + bk0];
    return from_count(count, area);
  }
  /* Standalone: count, stopping as soon as the answer is PARTIAL. */
  for (i = bq0; i <= cq1; i++) {
    for (j = bk0; j <= ck1; j++) {
      count += l->bits[i * l->nkb + j] != 0;
      if (count > 0 && count < (i - bq0) * (ck1 - bk0 + 1) + (j - bk0 + 1))
        return HATTN_BLOCK_PARTIAL;
    }
  }
  return from_count(count, area);
}

/* The random blocks of query 64-block QB from X's cache (filled on a
** miss), or NULL when X has no cache. */
static const int64_t *random_cached(const hattn__op *op, aux *x, int64_t nkb64, int64_t qb,
                                    const hattn__mask_env *env, int64_t *len) {
  int64_t i;
  if (x == NULL || x->rnd == NULL) return NULL;
  i = qb % x->rnd_cap;
  if (x->rnd_tag[i] != qb) {
    x->rnd_len[i] = hattn__random_blocks(hattn__random_seed(op, env), op->b, nkb64, qb, x->rnd + i * x->rnd_r);
    x->rnd_tag[i] = qb;
  }
  *len = x->rnd_len[i];
  return x->rnd + i * x->rnd_r;
}

static hattn__block classify_random(const hattn__op *op, aux *x, const rect *r,
                                    const hattn__mask_env *env) {
  int64_t nkb64 = hattn__nblocks64(env->lk), nr = min64(op->b, nkb64);
  int64_t qb0, qb1, kb0 = r->kp0 / BLOCK64, kb1 = (r->kp1 - 1) / BLOCK64, w = kb1 - kb0 + 1, qb;
  int64_t *buf = NULL;
  int any = 0, all = r->qp0 >= 0; /* a negative query position sees nothing */
  if (r->qp1 <= 0 || nr <= 0) return HATTN_BLOCK_EMPTY;
  if (nr >= nkb64) return all ? HATTN_BLOCK_FULL : HATTN_BLOCK_PARTIAL;
  qb0 = max64(r->qp0, 0) / BLOCK64;
  qb1 = (r->qp1 - 1) / BLOCK64;
  for (qb = qb0; qb <= qb1 && !(any && !all); qb++) {
    int64_t len, c;
    const int64_t *row = random_cached(op, x, nkb64, qb, env, &len);
    if (row == NULL) {
      if (buf == NULL && (buf = malloc((size_t)nr * sizeof *buf)) == NULL)
        return HATTN_BLOCK_PARTIAL;
      len = hattn__random_blocks(hattn__random_seed(op, env), op->b, nkb64, qb, buf);
      row = buf;
    }
    c = count_sorted64(row, len, kb0, kb1);
    any |= c > 0;
    all &= c == w;
  }
  free(buf);
  if (!any) return HATTN_BLOCK_EMPTY;
  return all ? HATTN_BLOCK_FULL : HATTN_BLOCK_PARTIAL;
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* Sort the K entries of ROW into OUT, dropping -1 and duplicates; returns
** how many remain. */
static int64_t topk_normalise(const int32_t *row, int64_t k, int32_t *out) {
  int64_t i, n = 0, m = 0;
  for (i = 0; i < k; i++)
    if (row[i] >= 0) out[n++] = row[i];
  qsort(out, (size_t)n, sizeof *out, cmp_i32);
  for (i = 0; i < n; i++)
    if (m == 0 || out[m - 1] != out[i]) out[m++] = out[i];
  return m;
}

/* The number of distinct routed key 64-blocks in [kb0, kb1] of ROW (K
** entries), or -1 when memory ran out. */
static int64_t topk_count(const int32_t *row, int64_t k, int64_t kb0, int64_t kb1) {
  int64_t w = kb1 - kb0 + 1, i, c = 0;
  if (w <= 64) {
    uint64_t seen = 0;
    for (i = 0; i < k; i++)
      if (row[i] >= kb0 && row[i] <= kb1) seen |= UINT64_C(1) << (row[i] - kb0);
    while (seen) {
      seen &= seen - 1;
      c++;
    }
    return c;
  }
  if (w > k) {
    /* Never every block of the range; whether any is all that matters. */
    for (i = 0; i < k; i++)
      if (row[i] >= kb0 && row[i] <= kb1) return 1;
    return 0;
  } else {
    int32_t *tmp = malloc((size_t)k * sizeof *tmp);
    int64_t n;
    if (tmp == NULL) return -1;
    n = topk_normalise(row, k, tmp);
    c = count_sorted32(tmp, n, kb0, kb1);
    free(tmp);
    return c;
  }
}

static hattn__block classify_topk(const aux *x, const rect *r, int64_t head,
                                  const hattn__mask_env *env) {
  int64_t nkb64 = hattn__nblocks64(env->lk), k = env->topk_k;
  int64_t kb0 = r->kp0 / BLOCK64, kb1 = (r->kp1 - 1) / BLOCK64, w = kb1 - kb0 + 1, qb, qb1;
  int any = 0, all = r->qp0 >= 0;
  if (r->qp1 <= 0) return HATTN_BLOCK_EMPTY;
  qb1 = (r->qp1 - 1) / BLOCK64;
  for (qb = max64(r->qp0, 0) / BLOCK64; qb <= qb1 && !(any && !all); qb++) {
    int64_t rowi = head * nkb64 + qb, c;
    if (x != NULL && x->topk != NULL) {
      c = count_sorted32(x->topk + rowi * k, x->topk_len[rowi], kb0, kb1);
    } else {
      c = topk_count(env->topk_blocks + rowi * k, k, kb0, kb1);
      if (c < 0) return HATTN_BLOCK_PARTIAL;
    }
    any |= c > 0;
    all &= c == w;
  }
  if (!any) return HATTN_BLOCK_EMPTY;
  return all ? HATTN_BLOCK_FULL : HATTN_BLOCK_PARTIAL;
}

static hattn__block classify_document(const rect *r, const hattn__mask_env *env) {
  /* A query position outside [0, lk) (lq > lk, or offsets) is in no
  ** document: only the positions inside count, and the block is FULL only
  ** when every position is inside. */
  int64_t qa = max64(r->qp0, 0), qb = min64(r->qp1, env->lk), dq0, dq1, dk0, dk1;
  if (qa >= qb) return HATTN_BLOCK_EMPTY;
  dq0 = hattn__doc_of(env, qa), dq1 = hattn__doc_of(env, qb - 1);
  dk0 = hattn__doc_of(env, r->kp0), dk1 = hattn__doc_of(env, r->kp1 - 1);
  if (dq1 < 0 || dk1 < 0 || dq1 < dk0 || dk1 < dq0) return HATTN_BLOCK_EMPTY;
  if (qa == r->qp0 && qb == r->qp1 && dq0 >= 0 && dq0 == dq1 && dk0 == dk1 && dq0 == dk0)
    return HATTN_BLOCK_FULL;
  return HATTN_BLOCK_PARTIAL;
}

/* ---------------------------------------------------------------- *
** Classification.
** ---------------------------------------------------------------- */

/* The class of register REG of M over rectangle R; X (NULL: none) holds
** what plan_build prepared, one entry per register. */
static hattn__block classify(const hattn__mask *m, int reg, aux *x, const rect *r, int64_t head,
                             const hattn__mask_env *env) {
  const hattn__op *op = &m->ops[reg];
  int64_t a = op->a;
  int i;
  hattn__block c, acc;
  switch (op->kind) {
  case HATTN_OP_DIST:
    if (!has_multiple(max64(r->dmin, op->lo), min64(r->dmax, op->hi), op->m)) return HATTN_BLOCK_EMPTY;
    if (r->dmin >= op->lo && r->dmax <= op->hi &&
        (op->m == 1 || (r->dmin == r->dmax && r->dmin % op->m == 0)))
      return HATTN_BLOCK_FULL;
    return HATTN_BLOCK_PARTIAL;
  case HATTN_OP_KPOS_LT:
    if (r->kp1 - 1 < a) return HATTN_BLOCK_FULL;
    return r->kp0 >= a ? HATTN_BLOCK_EMPTY : HATTN_BLOCK_PARTIAL;
  case HATTN_OP_QPOS_LT:
    if (r->qp1 - 1 < a) return HATTN_BLOCK_FULL;
    return r->qp0 >= a ? HATTN_BLOCK_EMPTY : HATTN_BLOCK_PARTIAL;
  case HATTN_OP_CHUNK: {
    int64_t cq0 = floordiv(r->qp0, a), cq1 = floordiv(r->qp1 - 1, a);
    int64_t ck0 = r->kp0 / a, ck1 = (r->kp1 - 1) / a;
    if (cq1 < ck0 || ck1 < cq0) return HATTN_BLOCK_EMPTY;
    if (cq0 == cq1 && ck0 == ck1 && cq0 == ck0) return HATTN_BLOCK_FULL;
    return HATTN_BLOCK_PARTIAL;
  }
  case HATTN_OP_DOC: return classify_document(r, env);
  case HATTN_OP_LAYOUT: return classify_blocks(op, x ? &x[reg] : NULL, r, env);
  case HATTN_OP_RANDOM: return classify_random(op, x ? &x[reg] : NULL, r, env);
  case HATTN_OP_TOPK: return classify_topk(x ? &x[reg] : NULL, r, head, env);
  case HATTN_OP_NOT:
    c = classify(m, op->args[0], x, r, head, env);
    return c == HATTN_BLOCK_PARTIAL ? c : (c == HATTN_BLOCK_FULL ? HATTN_BLOCK_EMPTY : HATTN_BLOCK_FULL);
  case HATTN_OP_AND:
    acc = HATTN_BLOCK_FULL;
    for (i = 0; i < op->nargs; i++) {
      c = classify(m, op->args[i], x, r, head, env);
      if (c == HATTN_BLOCK_EMPTY) return c;
      if (c == HATTN_BLOCK_PARTIAL) acc = c;
    }
    return acc;
  case HATTN_OP_OR:
    acc = HATTN_BLOCK_EMPTY;
    for (i = 0; i < op->nargs; i++) {
      c = classify(m, op->args[i], x, r, head, env);
      if (c == HATTN_BLOCK_FULL) return c;
      if (c == HATTN_BLOCK_PARTIAL) acc = c;
    }
    return acc;
  default: return HATTN_BLOCK_PARTIAL;
  }
}

static void rect_set(rect *r, int64_t q0, int64_t q1, int64_t k0, int64_t k1,
                     const hattn__mask_env *env) {
  r->q0 = q0;
  r->q1 = q1;
  r->k0 = k0;
  r->k1 = k1;
  r->qp0 = q0 + hattn__env_qpos0(env);
  r->qp1 = q1 + hattn__env_qpos0(env);
  r->kp0 = k0 + hattn__env_kpos0(env);
  r->kp1 = k1 + hattn__env_kpos0(env);
  r->dmin = r->qp0 - (r->kp1 - 1);
  r->dmax = (r->qp1 - 1) - r->kp0;
}

hattn__block hattn__block_classify(const hattn__mask *m, int64_t q0, int64_t q1,
                                   int64_t k0, int64_t k1, int64_t head,
                                   const hattn__mask_env *env) {
  rect r;
  rect_set(&r, q0, q1, k0, k1, env);
  return classify(m, m->nops - 1, NULL, &r, head, env);
}

/* ---------------------------------------------------------------- *
** Key ranges.
** ---------------------------------------------------------------- */

/* Write [lo, hi) clipped to the key positions [KW.lo, KW.hi) to OUT;
** returns 1, or 0 when empty. */
static int one_range(int64_t lo, int64_t hi, hattn__krange kw, hattn__krange *out) {
  lo = max64(lo, kw.lo);
  hi = min64(hi, kw.hi);
  if (lo >= hi) return 0;
  out[0].lo = lo;
  out[0].hi = hi;
  return 1;
}

/* Keep at most HATTN_MAX_KRANGES pieces: more become their hull, and
** *HULL is set. */
static int cap_ranges(hattn__krange *v, int n, hattn__krange *out, int *hull) {
  int i;
  if (n > HATTN_MAX_KRANGES) {
    *hull = 1;
    out[0].lo = v[0].lo;
    out[0].hi = v[n - 1].hi;
    return 1;
  }
  for (i = 0; i < n; i++) out[i] = v[i];
  return n;
}

static int ranges_and(const hattn__krange *a, int na, const hattn__krange *b, int nb,
                      hattn__krange *out, int *hull) {
  hattn__krange tmp[2 * HATTN_MAX_KRANGES];
  int i = 0, j = 0, n = 0;
  while (i < na && j < nb) {
    int64_t lo = max64(a[i].lo, b[j].lo), hi = min64(a[i].hi, b[j].hi);
    if (lo < hi) {
      tmp[n].lo = lo;
      tmp[n].hi = hi;
      n++;
    }
    if (a[i].hi < b[j].hi) i++;
    else j++;
  }
  return cap_ranges(tmp, n, out, hull);
}

static int ranges_or(const hattn__krange *a, int na, const hattn__krange *b, int nb,
                     hattn__krange *out, int *hull) {
  hattn__krange tmp[2 * HATTN_MAX_KRANGES];
  int i = 0, j = 0, n = 0;
  while (i < na || j < nb) {
    hattn__krange next = (j >= nb || (i < na && a[i].lo <= b[j].lo)) ? a[i++] : b[j++];
    if (n > 0 && next.lo <= tmp[n - 1].hi) tmp[n - 1].hi = max64(tmp[n - 1].hi, next.hi);
    else tmp[n++] = next;
  }
  return cap_ranges(tmp, n, out, hull);
}

/* The smallest key that dilated(W, S) shows to some query position of
** [qp0, qp1) (qp1 > 0). */
static int64_t dilated_first_key(int64_t w, int64_t s, int64_t qp0, int64_t qp1) {
  int64_t a0 = max64(qp0, 0), reach = (w - 1) * s, e, m;
  if (a0 >= reach) return a0 - reach;
  /* Below W*S a query at position p reaches down to p mod S. */
  e = min64(qp1, w * s);
  m = a0 % s;
  if (e - a0 >= s || m + (e - a0) > s) return 0;
  return m;
}

/* As hattn__key_ranges for register REG of M, in key positions within
** LK, the positions of the keys; with ENV, document narrows the keys to
** the documents of the queries. */
static int ranges(const hattn__mask *m, int reg, int64_t qp0, int64_t qp1, hattn__krange lk,
                  const hattn__mask_env *env, hattn__krange *out) {
  const hattn__op *op = &m->ops[reg];
  hattn__krange acc[HATTN_MAX_KRANGES], kid[HATTN_MAX_KRANGES];
  int64_t a = op->a;
  int n, nk, i;
  switch (op->kind) {
  case HATTN_OP_DIST:
    /* A key sees the queries at distances [lo, hi] from it; with a modulus
    ** and lo == 0 (a dilated window of (hi + 1) / m positions) the first key
    ** is exact. */
    if (op->m > 1 && op->lo == 0 && (op->hi + 1) % op->m == 0) {
      if (qp1 <= 0) return 0;
      return one_range(dilated_first_key((op->hi + 1) / op->m, op->m, qp0, qp1), qp1, lk, out);
    }
    return one_range(qp0 - op->hi, qp1 - op->lo, lk, out);
  case HATTN_OP_KPOS_LT: return one_range(0, a, lk, out);
  case HATTN_OP_QPOS_LT: return qp0 < a ? one_range(lk.lo, lk.hi, lk, out) : 0;
  case HATTN_OP_CHUNK:
    return one_range(floordiv(qp0, a) * a, (floordiv(qp1 - 1, a) + 1) * a, lk, out);
  case HATTN_OP_DOC:
    if (env != NULL) {
      int64_t dq0, dq1;
      /* Only query positions in [0, lk) are in a document. */
      if (qp1 <= 0 || qp0 >= env->lk) return 0;
      dq0 = hattn__doc_of(env, max64(qp0, 0));
      dq1 = hattn__doc_of(env, min64(qp1, env->lk) - 1);
      if (dq0 < 0 || dq1 < 0) return 0;
      return one_range(env->doc_offsets[dq0], env->doc_offsets[dq1 + 1], lk, out);
    }
    return one_range(lk.lo, lk.hi, lk, out);
  case HATTN_OP_AND: {
    int hull = 0;
    n = ranges(m, op->args[0], qp0, qp1, lk, env, acc);
    for (i = 1; i < op->nargs && n > 0; i++) {
      nk = ranges(m, op->args[i], qp0, qp1, lk, env, kid);
      n = ranges_and(acc, n, kid, nk, acc, &hull);
    }
    memcpy(out, acc, (size_t)n * sizeof *out);
    return n;
  }
  case HATTN_OP_OR: {
    int hull = 0;
    n = ranges(m, op->args[0], qp0, qp1, lk, env, acc);
    for (i = 1; i < op->nargs; i++) {
      nk = ranges(m, op->args[i], qp0, qp1, lk, env, kid);
      n = ranges_or(acc, n, kid, nk, acc, &hull);
    }
    if (hull && n > 1) { /* too many pieces: the hull of them all */
      acc[0].hi = acc[n - 1].hi;
      n = 1;
    }
    memcpy(out, acc, (size_t)n * sizeof *out);
    return n;
  }
  default: /* everything without a closed form */
    return one_range(lk.lo, lk.hi, lk, out);
  }
}

int hattn__key_ranges(const hattn__mask *m, int64_t qp0, int64_t qp1, int64_t lk,
                      hattn__krange *out) {
  hattn__krange kw;
  if (qp0 >= qp1 || lk <= 0) return 0;
  kw.lo = 0;
  kw.hi = lk;
  return ranges(m, m->nops - 1, qp0, qp1, kw, NULL, out);
}

/* The key ranges of query rows [Q0, Q1) under ENV, in key rows of [0, lk). */
static int row_ranges(const hattn__mask *m, int64_t q0, int64_t q1, const hattn__mask_env *env,
                      hattn__krange *out) {
  int64_t qs = hattn__env_qpos0(env), ks = hattn__env_kpos0(env);
  hattn__krange kw;
  int n, i;
  if (q0 >= q1 || env->lk <= 0) return 0;
  kw.lo = ks;
  kw.hi = ks + env->lk;
  n = ranges(m, m->nops - 1, q0 + qs, q1 + qs, kw, env, out);
  for (i = 0; i < n; i++) {
    out[i].lo -= ks;
    out[i].hi -= ks;
  }
  return n;
}

/* ---------------------------------------------------------------- *
** The plan.
** ---------------------------------------------------------------- */

static void aux_free(const hattn__mask *m, aux *x) {
  int i;
  if (x == NULL) return;
  for (i = 0; i < m->nops; i++) {
    free(x[i].prefix);
    free(x[i].rnd);
    free(x[i].rnd_len);
    free(x[i].rnd_tag);
    free(x[i].topk);
    free(x[i].topk_len);
  }
  free(x);
}

/* Prepare what the run-time operations of M classify with: *OUT, one
** entry per register.  Returns HATTN_OK or HATTN_ENOMEM. */
static int aux_init(const hattn__mask *m, const hattn__mask_env *env, int64_t bm, int64_t ntables,
                    aux **out) {
  aux *x = calloc((size_t)m->nops, sizeof *x);
  int64_t i;
  int reg;
  *out = NULL;
  if (x == NULL) return HATTN_ENOMEM;
  for (reg = 0; reg < m->nops; reg++) {
    const hattn__op *op = &m->ops[reg];
    aux *me = &x[reg];
    if (op->kind == HATTN_OP_LAYOUT) {
      const hattn__layout *l = &env->layouts[op->a];
      int64_t w = l->nkb + 1, r, c;
      if (l->nqb == 0 || l->nkb == 0) continue;
      if ((uint64_t)(l->nqb + 1) > SIZE_MAX / sizeof(int64_t) / (uint64_t)w) goto fail;
      me->prefix = malloc((size_t)(l->nqb + 1) * (size_t)w * sizeof *me->prefix);
      if (me->prefix == NULL) goto fail;
      for (c = 0; c < w; c++) me->prefix[c] = 0;
      for (r = 0; r < l->nqb; r++) {
        int64_t run = 0;
        me->prefix[(r + 1) * w] = 0;
        for (c = 0; c < l->nkb; c++) {
          run += l->bits[r * l->nkb + c] != 0;
          me->prefix[(r + 1) * w + c + 1] = me->prefix[r * w + c + 1] + run;
        }
      }
    } else if (op->kind == HATTN_OP_RANDOM) {
      int64_t nkb64 = hattn__nblocks64(env->lk);
      me->rnd_r = min64(op->b, nkb64);
      if (me->rnd_r <= 0 || me->rnd_r >= nkb64) continue; /* nothing, or everything */
      me->rnd_cap = min64(bm / BLOCK64 + 2, nkb64);
      if ((uint64_t)me->rnd_cap > SIZE_MAX / sizeof(int64_t) / (uint64_t)me->rnd_r) goto fail;
      me->rnd = malloc((size_t)(me->rnd_cap * me->rnd_r) * sizeof *me->rnd);
      me->rnd_len = malloc((size_t)me->rnd_cap * sizeof *me->rnd_len);
      me->rnd_tag = malloc((size_t)me->rnd_cap * sizeof *me->rnd_tag);
      if (me->rnd == NULL || me->rnd_len == NULL || me->rnd_tag == NULL) goto fail;
      for (i = 0; i < me->rnd_cap; i++) me->rnd_tag[i] = -1;
    } else if (op->kind == HATTN_OP_TOPK) {
      int64_t rows = ntables * hattn__nblocks64(env->lk), k = env->topk_k, row;
      if (rows == 0 || k == 0) continue;
      if ((uint64_t)rows > SIZE_MAX / sizeof(int32_t) / (uint64_t)k) goto fail;
      me->topk = malloc((size_t)(rows * k) * sizeof *me->topk);
      me->topk_len = malloc((size_t)rows * sizeof *me->topk_len);
      if (me->topk == NULL || me->topk_len == NULL) goto fail;
      for (row = 0; row < rows; row++)
        me->topk_len[row] = topk_normalise(env->topk_blocks + row * k, k, me->topk + row * k);
    }
  }
  *out = x;
  return HATTN_OK;

fail:
  aux_free(m, x);
  return HATTN_ENOMEM;
}

/* A growing list of key-block indices. */
typedef struct idxvec {
  int32_t *v;
  int64_t n, cap;
} idxvec;

static int idxvec_push(idxvec *iv, int64_t x) {
  if (iv->n == iv->cap) {
    int64_t cap = iv->cap ? 2 * iv->cap : 64;
    int32_t *v = realloc(iv->v, (size_t)cap * sizeof *v);
    if (v == NULL) return HATTN_ENOMEM;
    iv->v = v;
    iv->cap = cap;
  }
  iv->v[iv->n++] = (int32_t)x;
  return HATTN_OK;
}

/* The key blocks that building one table of MASK for ENV in BM x BN tiles
** visits: those in the key ranges of each of its NQB query blocks.  Stops
** counting past CAP. */
static int64_t plan_visits(const hattn__mask *mask, const hattn__mask_env *env, int64_t bm, int64_t bn,
                           int64_t nqb, int64_t cap) {
  hattn__krange kr[HATTN_MAX_KRANGES];
  int64_t i, v = 0;
  int n, j;
  for (i = 0; i < nqb && v <= cap; i++) {
    int64_t q0 = i * bm, q1 = min64(q0 + bm, env->lq), next = 0;
    n = row_ranges(mask, q0, q1, env, kr);
    for (j = 0; j < n; j++) {
      int64_t kb0 = max64(kr[j].lo / bn, next), kb1 = (kr[j].hi - 1) / bn;
      if (kb1 >= kb0) v += kb1 - kb0 + 1;
      next = max64(next, kb1 + 1);
    }
  }
  return v;
}

/* Build table T of P (offsets already allocated), listing at most ROOM
** more blocks: HATTN_ENOTSUP past that. */
static int build_table(hattn__plan *p, int64_t t, const hattn__mask *mask, aux *x,
                       const hattn__mask_env *env, int64_t room) {
  idxvec full = {NULL, 0, 0}, part = {NULL, 0, 0};
  hattn__krange kr[HATTN_MAX_KRANGES];
  int64_t i, kb;
  int n, j, rc = HATTN_OK;
  p->full_off[t][0] = p->partial_off[t][0] = 0;
  for (i = 0; i < p->nqb; i++) {
    int64_t q0 = i * p->bm, q1 = min64(q0 + p->bm, p->lq), next = 0;
    n = row_ranges(mask, q0, q1, env, kr);
    for (j = 0; j < n; j++) {
      int64_t kb1 = (kr[j].hi - 1) / p->bn;
      for (kb = max64(kr[j].lo / p->bn, next); kb <= kb1; kb++) {
        rect r;
        hattn__block c;
        rect_set(&r, q0, q1, kb * p->bn, min64((kb + 1) * p->bn, p->lk), env);
        c = classify(mask, mask->nops - 1, x, &r, t, env);
        if (c == HATTN_BLOCK_FULL) rc = idxvec_push(&full, kb);
        else if (c == HATTN_BLOCK_PARTIAL) rc = idxvec_push(&part, kb);
        if (rc == HATTN_OK && full.n + part.n > room) rc = HATTN_ENOTSUP;
        if (rc != HATTN_OK) goto fail;
      }
      next = max64(next, kb1 + 1);
    }
    p->full_off[t][i + 1] = full.n;
    p->partial_off[t][i + 1] = part.n;
  }
  p->full_idx[t] = full.v;
  p->partial_idx[t] = part.v;
  p->nfull += full.n;
  p->npartial += part.n;
  return HATTN_OK;

fail:
  free(full.v);
  free(part.v);
  return rc;
}

/* The sentence for a plan past HATTN_PLAN_MAX_BYTES. */
static void too_many_bytes(const hattn__mask_env *env, int64_t bm, int64_t bn, char *err, size_t errlen) {
  snprintf(err, errlen, "the block plan of %lld queries x %lld keys in tiles of %lld x %lld would take more "
           "than %lld bytes (256 MiB), the limit: use larger tiles or shorter sequences", (long long)env->lq,
           (long long)env->lk, (long long)bm, (long long)bn, (long long)HATTN_PLAN_MAX_BYTES);
}

int hattn__plan_build(const hattn__mask *mask, const hattn__mask_env *env,
                      int64_t bm, int64_t bn, hattn__plan **out,
                      char *err, size_t errlen) {
  hattn__plan *p = NULL;
  aux *x = NULL;
  int64_t t, ntables = 1, blocks, off_bytes;
  int rc;

  *out = NULL;
  if (bm <= 0 || bn <= 0) {
    snprintf(err, errlen, "block sizes must be positive, got %lld x %lld", (long long)bm,
             (long long)bn);
    return HATTN_EINVAL;
  }
  rc = hattn__mask_env_check(mask, env, mask->nlayouts, err, errlen);
  if (rc != HATTN_OK) return rc;
  if (mask->needs & HATTN_NEEDS_TOPK) {
    if (env->batch > INT64_MAX / env->heads) {
      snprintf(err, errlen, "batch %lld times heads %lld is too large", (long long)env->batch,
               (long long)env->heads);
      return HATTN_EINVAL;
    }
    ntables = env->batch * env->heads;
  }

  p = calloc(1, sizeof *p);
  if (p == NULL) goto fail_nomem;
  p->lq = env->lq;
  p->lk = env->lk;
  p->bm = bm;
  p->bn = bn;
  p->nqb = ceildiv(env->lq, bm);
  p->nkb = ceildiv(env->lk, bn);
  p->ntables = ntables;
  if (p->nkb > INT32_MAX) {
    snprintf(err, errlen, "%lld keys make %lld key blocks of %lld, more than 2^31 - 1",
             (long long)env->lk, (long long)p->nkb, (long long)bn);
    rc = HATTN_EINVAL;
    goto fail;
  }
  if ((p->nkb > 0 && p->nqb > INT64_MAX / p->nkb) ||
      (p->nqb * p->nkb > 0 && ntables > INT64_MAX / (p->nqb * p->nkb))) {
    snprintf(err, errlen, "%lld tables of %lld x %lld blocks are too many to count",
             (long long)ntables, (long long)p->nqb, (long long)p->nkb);
    rc = HATTN_EINVAL;
    goto fail;
  }
  blocks = ntables * p->nqb * p->nkb;
  /* The limits, before any allocation: the offsets' bytes, then the blocks
  ** the tables would visit (the same for every table: only topk makes
  ** more than one, and it has no key ranges). */
  if (ntables > HATTN_PLAN_MAX_BYTES / 16 / (p->nqb + 1)) {
    too_many_bytes(env, bm, bn, err, errlen);
    rc = HATTN_ENOTSUP;
    goto fail;
  }
  off_bytes = 16 * ntables * (p->nqb + 1);
  if (plan_visits(mask, env, bm, bn, p->nqb, HATTN_PLAN_MAX_VISITS / ntables) > HATTN_PLAN_MAX_VISITS / ntables) {
    snprintf(err, errlen, "the block plan of %lld queries x %lld keys in tiles of %lld x %lld would classify "
             "more than %lld (2^26) blocks, the limit: use larger tiles or shorter sequences", (long long)env->lq,
             (long long)env->lk, (long long)bm, (long long)bn, (long long)HATTN_PLAN_MAX_VISITS);
    rc = HATTN_ENOTSUP;
    goto fail;
  }
  if ((uint64_t)ntables > SIZE_MAX / sizeof(void *) ||
      (uint64_t)p->nqb >= SIZE_MAX / sizeof(int64_t))
    goto fail_nomem;
  p->full_off = calloc((size_t)ntables, sizeof *p->full_off);
  p->partial_off = calloc((size_t)ntables, sizeof *p->partial_off);
  p->full_idx = calloc((size_t)ntables, sizeof *p->full_idx);
  p->partial_idx = calloc((size_t)ntables, sizeof *p->partial_idx);
  if (!p->full_off || !p->partial_off || !p->full_idx || !p->partial_idx) goto fail_nomem;

  rc = aux_init(mask, env, bm, ntables, &x);
  if (rc != HATTN_OK) goto fail_nomem;

  for (t = 0; t < ntables; t++) {
    p->full_off[t] = malloc((size_t)(p->nqb + 1) * sizeof **p->full_off);
    p->partial_off[t] = malloc((size_t)(p->nqb + 1) * sizeof **p->partial_off);
    if (p->full_off[t] == NULL || p->partial_off[t] == NULL) goto fail_nomem;
    rc = build_table(p, t, mask, x, env, (HATTN_PLAN_MAX_BYTES - off_bytes) / 4 - p->nfull - p->npartial);
    if (rc == HATTN_ENOTSUP) {
      too_many_bytes(env, bm, bn, err, errlen);
      goto fail;
    }
    if (rc != HATTN_OK) goto fail_nomem;
  }
  p->nempty = blocks - p->nfull - p->npartial;
  aux_free(mask, x);
  *out = p;
  return HATTN_OK;

fail_nomem:
  snprintf(err, errlen, "out of memory for the block plan of %lld x %lld keys in %lld x %lld tiles",
           (long long)env->lq, (long long)env->lk, (long long)bm, (long long)bn);
  rc = HATTN_ENOMEM;
fail:
  aux_free(mask, x);
  hattn__plan_destroy(p);
  return rc;
}

void hattn__plan_destroy(hattn__plan *plan) {
  int64_t t;
  if (plan == NULL) return;
  for (t = 0; t < plan->ntables; t++) {
    if (plan->full_off) free(plan->full_off[t]);
    if (plan->partial_off) free(plan->partial_off[t]);
    if (plan->full_idx) free(plan->full_idx[t]);
    if (plan->partial_idx) free(plan->partial_idx[t]);
  }
  free(plan->full_off);
  free(plan->partial_off);
  free(plan->full_idx);
  free(plan->partial_idx);
  free(plan);
}

/* ---------------------------------------------------------------- *
** Counting visible pairs.
** ---------------------------------------------------------------- */

/* Register REG of a distance-only mask M at distance D. */
static int visible_d(const hattn__mask *m, int reg, int64_t d) {
  const hattn__op *op = &m->ops[reg];
  int i;
  switch (op->kind) {
  case HATTN_OP_DIST: return op->lo <= d && d <= op->hi && d % op->m == 0;
  case HATTN_OP_NOT: return !visible_d(m, op->args[0], d);
  case HATTN_OP_AND:
    for (i = 0; i < op->nargs; i++)
      if (!visible_d(m, op->args[i], d)) return 0;
    return 1;
  case HATTN_OP_OR:
    for (i = 0; i < op->nargs; i++)
      if (visible_d(m, op->args[i], d)) return 1;
    return 0;
  default: return 0;
  }
}

/* Visible pairs of an R x C rectangle whose smallest distance is DMIN: the
** distance dmin + t occurs min(t + 1, R, C, R + C - 1 - t) times. */
static int64_t count_by_distance(const hattn__mask *e, int64_t dmin, int64_t rows, int64_t cols) {
  int64_t t, n = 0, m = min64(rows, cols);
  for (t = 0; t < rows + cols - 1; t++)
    if (visible_d(e, e->nops - 1, dmin + t)) n += min64(min64(t + 1, m), rows + cols - 1 - t);
  return n;
}

/* A memo of count_by_distance, keyed by (dmin, rows, cols). */
typedef struct memo_slot {
  int64_t dmin, rows, cols, count; /* rows == 0: free */
} memo_slot;

#define MEMO_SLOTS 4096

static int64_t count_memo(memo_slot *memo, const hattn__mask *e, int64_t dmin, int64_t rows,
                          int64_t cols) {
  uint64_t h;
  int probe;
  if (memo == NULL) return count_by_distance(e, dmin, rows, cols);
  h = (uint64_t)dmin * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)rows * UINT64_C(0xc2b2ae3d27d4eb4f) ^
      (uint64_t)cols * UINT64_C(0x165667b19e3779f9);
  h ^= h >> 29;
  for (probe = 0; probe < 8; probe++) {
    memo_slot *s = &memo[(h + (uint64_t)probe) & (MEMO_SLOTS - 1)];
    if (s->rows == 0) {
      s->dmin = dmin;
      s->rows = rows;
      s->cols = cols;
      s->count = count_by_distance(e, dmin, rows, cols);
      return s->count;
    }
    if (s->dmin == dmin && s->rows == rows && s->cols == cols) return s->count;
  }
  return count_by_distance(e, dmin, rows, cols);
}

/* Visible pairs of a PARTIAL rectangle: split it in halves along its longer
** side and classify the halves, down to single elements, where
** classification is exact; work follows the boundary, not the area. */
static int64_t count_split(const hattn__mask *mask, aux *x, const rect *r, int64_t head,
                           const hattn__mask_env *env, int64_t *steps) {
  int64_t rows = r->q1 - r->q0, cols = r->k1 - r->k0, n = 0;
  rect half[2];
  int i;
  if (--*steps < 0) return 0; /* past the budget: the caller says so */
  if (rows == 1 && cols == 1) return hattn__mask_visible(mask, r->q0, r->k0, head, env);
  if (rows >= cols) {
    int64_t m = r->q0 + rows / 2;
    rect_set(&half[0], r->q0, m, r->k0, r->k1, env);
    rect_set(&half[1], m, r->q1, r->k0, r->k1, env);
  } else {
    int64_t m = r->k0 + cols / 2;
    rect_set(&half[0], r->q0, r->q1, r->k0, m, env);
    rect_set(&half[1], r->q0, r->q1, m, r->k1, env);
  }
  for (i = 0; i < 2; i++) {
    hattn__block c = classify(mask, mask->nops - 1, x, &half[i], head, env);
    if (c == HATTN_BLOCK_FULL) n += (half[i].q1 - half[i].q0) * (half[i].k1 - half[i].k0);
    else if (c == HATTN_BLOCK_PARTIAL) n += count_split(mask, x, &half[i], head, env, steps);
  }
  return n;
}

int64_t hattn__plan_count_visible(const hattn__plan *plan, const hattn__mask *mask,
                                  int64_t table, const hattn__mask_env *env) {
  int dist = mask->distance_only;
  memo_slot *memo = dist ? calloc(MEMO_SLOTS, sizeof *memo) : NULL;
  int64_t i, j, total = 0, shift = hattn__env_qpos0(env) - hattn__env_kpos0(env);
  int64_t steps = HATTN_PLAN_MAX_COUNT_STEPS;
  const int64_t *fo = plan->full_off[table], *po = plan->partial_off[table];
  const int32_t *fi = plan->full_idx[table], *pi = plan->partial_idx[table];
  aux *x = NULL;
  /* Without memory for the prepared data, classification reads ENV directly. */
  if (!dist) (void)aux_init(mask, env, plan->bm, plan->ntables, &x);
  for (i = 0; i < plan->nqb; i++) {
    int64_t q0 = i * plan->bm, q1 = min64(q0 + plan->bm, plan->lq), rows = q1 - q0;
    for (j = fo[i]; j < fo[i + 1]; j++) {
      int64_t k0 = (int64_t)fi[j] * plan->bn, k1 = min64(k0 + plan->bn, plan->lk);
      total += rows * (k1 - k0);
    }
    for (j = po[i]; j < po[i + 1]; j++) {
      int64_t k0 = (int64_t)pi[j] * plan->bn, k1 = min64(k0 + plan->bn, plan->lk);
      rect r;
      if (dist) {
        total += count_memo(memo, mask, q0 + shift - (k1 - 1), rows, k1 - k0);
        steps -= 1;
      } else {
        rect_set(&r, q0, q1, k0, k1, env);
        total += count_split(mask, x, &r, table, env, &steps);
      }
    }
  }
  aux_free(mask, x);
  free(memo);
  return steps < 0 ? -1 : total;
}
