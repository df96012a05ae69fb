/*
** mask.h: the element predicate of a mask expression, and the run-time data
** that document, blocks, random and topk atoms read.  This is the one
** definition of "visible" that the plan, the reference and the tests share.
** Internal to hattn; not installed.
**
** Positions (docs/spec.md): for query row q in [0, lq) and key row k in
** [0, lk), qpos = q + qpos0 and kpos = k + kpos0, d = qpos - kpos, where
** qpos0 = lk - lq and kpos0 = 0 unless the environment sets offsets
** (hattn__env_qpos0, hattn__env_kpos0).
*/
#ifndef HATTN_GEN_MASK_H
#define HATTN_GEN_MASK_H

#include <stddef.h>
#include <stdint.h>

#include "lower.h"
#include "spec.h"

/* An explicit block-sparse layout for blocks(NAME): block (q / bm, k / bn),
** with q and k row indices, is visible when bits[(q / bm) * nkb + k / bn] is
** nonzero.  Blocks outside nqb x nkb are not set. */
typedef struct hattn__layout {
  int64_t bm, bn;               /* > 0 */
  int64_t nqb, nkb;             /* >= 0 */
  const uint8_t *bits;          /* [nqb * nkb], row-major */
} hattn__layout;

/* Everything a mask may depend on besides (q, k). */
typedef struct hattn__mask_env {
  int64_t lq, lk;               /* sequence lengths, >= 0 */
  int64_t batch, heads;         /* topk tables are per (batch entry, head) */
  /* document: ndocs + 1 cumulative offsets over key positions, offsets[0] = 0,
  ** nondecreasing, offsets[ndocs] = lk; document i holds [off[i], off[i+1]).
  ** Empty documents are allowed.  Shared by every batch entry. */
  const int64_t *doc_offsets;
  int64_t ndocs;
  /* blocks(NAME): layouts[i] for the spec's layout number i. */
  const hattn__layout *layouts;
  int nlayouts;
  /* topk(K): topk_blocks[(bh * nqb64 + i) * topk_k + j], with
  ** nqb64 = ceil(lk / 64) and bh = b * heads + h, is the j-th routed key
  ** 64-block of query 64-block i (qpos / 64) for batch entry b and head h,
  ** or -1.  topk_k is K of the atom, or hattn__topk_width(K, lk) (lower.h):
  ** min(K, nqb64), since no row holds more.  Wherever this interface takes
  ** a "head", it means this flattened index bh. */
  const int32_t *topk_blocks;
  int64_t topk_k;
  /* What the caller may set instead of the spec (0 / NULL: the spec's).
  ** SEED is XORed into the seed S of every random(R, S) atom, so atoms
  ** stay distinct.  ALIBI_SLOPES [heads] are the slopes of a pattern
  ** "with alibi".  SINK_LOGITS [heads] are learned per-head sink logits:
  ** one more term e^sink_h in each row's softmax denominator, with no
  ** value, so O = sum_j e^s_j v_j / (sum_j e^s_j + e^sink_h), LSE counts
  ** the sink too, and a row that sees no key gets O = 0 and LSE = sink_h;
  ** -inf means no sink for that head. */
  uint64_t seed;
  const float *alibi_slopes;
  const float *sink_logits;
  /* Positions: with OFFSETS_SET nonzero, query row q is at q + q_offset and
  ** key row k at k + k_offset; zero (a zeroed environment), at q + lk - lq
  ** and k. */
  int64_t q_offset, k_offset;
  int offsets_set;
} hattn__mask_env;

/* The position of query row 0 and of key row 0 under ENV. */
static inline int64_t hattn__env_qpos0(const hattn__mask_env *env) {
  return env->offsets_set ? env->q_offset : env->lk - env->lq;
}
static inline int64_t hattn__env_kpos0(const hattn__mask_env *env) {
  return env->offsets_set ? env->k_offset : 0;
}
/* Whether ENV's positions are the default ones (qpos0 = lk - lq, kpos0 = 0). */
static inline int hattn__env_default_positions(const hattn__mask_env *env) {
  return hattn__env_qpos0(env) == env->lk - env->lq && hattn__env_kpos0(env) == 0;
}

/* The seed random operation OP draws with under ENV (NULL: the spec's). */
static inline int64_t hattn__random_seed(const hattn__op *op, const hattn__mask_env *env) {
  return env ? (int64_t)((uint64_t)op->seed ^ env->seed) : op->seed;
}

/* Number of 64-position blocks that cover [0, n). */
static inline int64_t hattn__nblocks64(int64_t n) { return (n + HATTN_SPEC_BLOCK - 1) / HATTN_SPEC_BLOCK; }

/*
** Check that ENV carries well-formed run-time data for every atom of MASK
** (offsets that start at 0, never decrease and end at lk; a layout for every
** layout number; topk tables with the atom's K and indices in range;
** offsets within their bounds).  Returns HATTN_OK, HATTN_EINPUT, or
** HATTN_ENOTSUP (offsets with atoms that need other positions: document()
** with k_offset != 0, random() and topk() with other than the default
** positions), with a sentence in ERR (ERRLEN bytes).
*/
int hattn__mask_env_check(const hattn__mask *mask, const hattn__mask_env *env,
                          int nlayouts_in_spec, char *err, size_t errlen);

/* Whether key row K is visible to query row Q of head HEAD.  When lq > lk
** (or with a negative q_offset) the first rows have negative qpos: they are
** in no document, no chunk shared with a key, and no random or routed
** block. */
int hattn__mask_visible(const hattn__mask *m, int64_t q, int64_t k, int64_t head,
                        const hattn__mask_env *env);

/* Three-valued visibility: run-time tables are unknown. */
enum { HATTN_TRI_FALSE = 0, HATTN_TRI_UNKNOWN = 1, HATTN_TRI_TRUE = 2 };

/* Whether key position KPOS is visible to query position QPOS (both >= 0)
** whatever the run-time tables say: HATTN_TRI_TRUE or HATTN_TRI_FALSE when
** the positions decide, HATTN_TRI_UNKNOWN when a table does (a position is
** always in its own document).  The spec's empty-pattern check and the
** KV-cache count of hattn report use it. */
int hattn__mask_eval3(const hattn__mask *m, int64_t qpos, int64_t kpos);

/* The period in distance of M's moduli (their least common multiple; 1
** without), or CAP when it exceeds CAP. */
int64_t hattn__mask_period(const hattn__mask *m, int64_t cap);

/* The document that holds position POS: the last i with off[i] <= pos and
** off[i+1] > pos, found by binary search; -1 when POS is outside [0, lk). */
int64_t hattn__doc_of(const hattn__mask_env *env, int64_t pos);

/*
** The R random key 64-blocks of query 64-block QB, drawn without repetition
** from [0, nkb) by selection sampling with a splitmix64 generator seeded by
** SEED and QB (all of [0, nkb) when R >= nkb).  Writes min(R, nkb) distinct
** indices, in increasing order, to OUT and returns how many.  The same
** arguments give the same blocks on every machine.  O(nkb) time, no memory.
*/
int64_t hattn__random_blocks(int64_t seed, int64_t r, int64_t nkb, int64_t qb, int64_t *out);

/* 64-bit words a row of a random bit set has for LK keys. */
static inline int64_t hattn__random_words(int64_t lk) { return (hattn__nblocks64(lk) + 63) / 64; }

/*
** The bit set of random operation A (random(R, SEED)) for ENV's lk keys and seed
** (hattn__random_seed): row i (query 64-block i) holds
** hattn__random_words(lk) words, bit kb set when key 64-block kb is one of
** the row's random blocks.  OUT has ceil(lk / 64) rows and must be zeroed.  Returns HATTN_OK or HATTN_ENOMEM.
*/
int hattn__random_bitset(const hattn__op *a, const hattn__mask_env *env, uint64_t *out);

/* The document of every key position of ENV (offsets already checked):
** OUT[pos] for pos in [0, lk). */
void hattn__doc_ids(const hattn__mask_env *env, int32_t *out);

/* Whether key 64-block KB is one of the random blocks of query 64-block QB. */
int hattn__random_has(int64_t seed, int64_t r, int64_t nkb, int64_t qb, int64_t kb);

/*
** Route topk(K) in float64: for each head h and query 64-block i, the K key
** 64-blocks j <= i with the highest pooled score mean(Q rows of block i) .
** mean(K rows of block j) (ties to the lower j), written in increasing order
** and padded with -1.  Q is [heads, lq, d], K is [kv_heads, lk, d],
** contiguous, of one batch entry; query head h reads kv head
** h / (heads / kv_heads).  OUT is [heads][ceil(lk / 64)][K]: call it once
** per batch entry, at OUT + b * heads * ceil(lk / 64) * K.  Returns HATTN_OK
** or HATTN_ENOMEM.
*/
int hattn__topk_route(const double *q, const double *k, int64_t heads, int64_t kv_heads,
                      int64_t lq, int64_t lk, int64_t d, int64_t topk_k, int32_t *out);

/* The ALiBi slope of head H of HEADS under pattern P's modifier (0 without). */
double hattn__alibi_slope(const hattn__pattern *p, int64_t h, int64_t heads);

/* The same with ENV's alibi_slopes, when set, for a pattern "with alibi". */
double hattn__env_slope(const hattn__pattern *p, const hattn__mask_env *env, int64_t h, int64_t heads);

#endif /* HATTN_GEN_MASK_H */
