/*
** plan.h: lowering a pattern to blocks.  For query rows [q0, q1) and key
** rows [k0, k1), a block is FULL (every pair visible: no mask code runs),
** PARTIAL (the element predicate is evaluated) or EMPTY (skipped).
** Classification is safe: never EMPTY where a pair is visible, never FULL
** where one is masked; it is exact for every single atom.
** Internal to hattn; not installed.
*/
#ifndef HATTN_GEN_PLAN_H
#define HATTN_GEN_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "mask.h"
#include "spec.h"

typedef enum hattn__block {
  HATTN_BLOCK_EMPTY = 0,
  HATTN_BLOCK_PARTIAL = 1,
  HATTN_BLOCK_FULL = 2
} hattn__block;

/*
** Classify rows [q0, q1) x keys [k0, k1) (row indices; q0 < q1, k0 < k1)
** for head HEAD.  O(1) per atom for position atoms and documents (binary
** search of the offsets), O(R) for random and O(K) for topk per 64-block
** row, O(1) for layouts once hattn__plan_build has summed them.
*/
hattn__block hattn__block_classify(const hattn__mask *m, int64_t q0, int64_t q1,
                                   int64_t k0, int64_t k1, int64_t head,
                                   const hattn__mask_env *env);

/* A half-open interval of key positions. */
typedef struct hattn__krange {
  int64_t lo, hi;
} hattn__krange;

#define HATTN_MAX_KRANGES 8

/*
** The closed-form key ranges of query positions [qp0, qp1): a sorted list of
** disjoint intervals of [0, lk) outside which no key is visible to any of
** those queries.  Exact for causal, window, dilated, sink, global and chunk
** and their & and |; the whole of [0, lk) where a subexpression has no
** closed form (!, stride, run-time atoms), or where | would need more than
** HATTN_MAX_KRANGES pieces (then the hull of the pieces).  Returns the number
** of intervals written to OUT (0: nothing visible).
*/
int hattn__key_ranges(const hattn__mask *m, int64_t qp0, int64_t qp1, int64_t lk,
                      hattn__krange *out);

/*
** The plan of one pattern for one problem: block classes for lq x lk in
** tiles of bm x bn, as compressed lists per query block (FlexAttention's
** BlockMask): the FULL key blocks and the PARTIAL key blocks of query block
** i are full_idx[full_off[t][i] .. full_off[t][i+1]) and likewise for
** partial, in increasing order, with t the table of flattened head
** bh = b * heads + h (mask.h): t = bh when the mask routes per head (topk),
** else t = 0 for every head.
*/
typedef struct hattn__plan {
  int64_t lq, lk, bm, bn;
  int64_t nqb, nkb;             /* ceil(lq / bm), ceil(lk / bn) */
  int64_t ntables;              /* 1, or batch * heads when the mask has topk */
  int64_t **full_off, **partial_off;   /* [ntables][nqb + 1] */
  int32_t **full_idx, **partial_idx;   /* [ntables][...] */
  int64_t nfull, npartial, nempty;     /* summed over the tables */
} hattn__plan;

/*
** The limits of one plan (docs/spec.md, "Limits"): its offsets and lists
** take at most HATTN_PLAN_MAX_BYTES (256 MiB: about 67 million FULL and
** PARTIAL blocks), and it classifies at most HATTN_PLAN_MAX_VISITS blocks
** (2^26: seconds), counted over its tables from the closed-form key
** ranges before anything is allocated.  Causal attention at 1m x 1m keys
** in tiles of 128 x 128 is within both; at 16m it is not.
*/
#define HATTN_PLAN_MAX_BYTES ((int64_t)1 << 28)
#define HATTN_PLAN_MAX_VISITS ((int64_t)1 << 26)

/*
** Build the plan of MASK for ENV (lq, lk and run-time data, which must pass
** hattn__mask_env_check) in tiles of BM x BN.  Work is proportional to the
** number of blocks (key blocks outside hattn__key_ranges, or outside the
** document of a query block, are not visited), never to the number of
** elements.  Returns HATTN_OK and sets *OUT, or HATTN_EINVAL (sizes),
** HATTN_ENOTSUP (past the limits above, said before any work), HATTN_ENOMEM,
** with a sentence in ERR.
*/
int hattn__plan_build(const hattn__mask *mask, const hattn__mask_env *env,
                      int64_t bm, int64_t bn, hattn__plan **out,
                      char *err, size_t errlen);

/* Free a plan; NULL is allowed. */
void hattn__plan_destroy(hattn__plan *plan);

/*
** The exact number of visible (query, key) pairs of the plan's table T,
** counted from the plan: FULL blocks by area, PARTIAL blocks by evaluating
** the predicate (by distance histogram when the mask depends only on d).
** Returns -1 when that would take more than HATTN_PLAN_MAX_COUNT_STEPS
** classifications of pieces of PARTIAL blocks (2^24: seconds; reached,
** for instance, by causal & document at 16m keys).
*/
#define HATTN_PLAN_MAX_COUNT_STEPS ((int64_t)1 << 24)

int64_t hattn__plan_count_visible(const hattn__plan *plan, const hattn__mask *mask,
                                  int64_t table, const hattn__mask_env *env);

#endif /* HATTN_GEN_PLAN_H */
