/*
** reference.h: attention in float64 for any pattern, shape, GQA ratio and
** score modifier.  It is the judge of every backend, so it stays simple:
** one query row at a time, every key, the predicate of mask.h.
** Internal to hattn; not installed.
*/
#ifndef HATTN_GEN_REFERENCE_H
#define HATTN_GEN_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "mask.h"
#include "spec.h"

/* The shape of one attention problem. */
typedef struct hattn__shape {
  int64_t batch, heads, kv_heads;   /* heads % kv_heads == 0 */
  int64_t lq, lk;                   /* >= 0 */
  int64_t head_dim;                 /* > 0 */
} hattn__shape;

/*
** O = softmax(mask(modify(Q K^T * scale))) V for pattern P, and
** LSE = log(sum(exp(s))) over the visible keys of each row (natural log).
** ENV's overrides apply (mask.h: random seeds, ALiBi slopes, and sink
** logits, which add a term with no value to each row's sum).
** Q, O are [batch, heads, lq, head_dim]; K, V are [batch, kv_heads, lk,
** head_dim]; LSE is [batch, heads, lq]; all contiguous.  ENV carries the
** run-time data (its lq, lk, heads must match SHAPE).  A row that sees no key
** gets zeros in O and -inf in LSE.  NaN is never taken for "masked": a row
** that sees a key whose score is NaN (a NaN in its Q row or in that K row)
** gets NaN in all of O and in LSE, and a NaN in a V row reaches the O of
** every row that sees that key.  Returns HATTN_OK, or HATTN_ESHAPE /
** HATTN_EINPUT with a sentence in ERR.
*/
int hattn__reference(const hattn__pattern *p, const hattn__shape *shape,
                     const hattn__mask_env *env, int nlayouts_in_spec,
                     const double *q, const double *k, const double *v,
                     double *o, double *lse, char *err, size_t errlen);

/*
** The reference of a variable-length batch in the padded form: Q, O, LSE
** and K, V of SHAPE as above, batch entry b using its first q_lens[b]
** query rows and k_lens[b] key rows (NULL: all lq, resp. lk; each within
** [0, lq], [0, lk], checked by the caller), computed as a problem of its
** own (batch 1, lq q_lens[b], lk k_lens[b]: queries at q + k_lens[b] -
** q_lens[b]); rows past q_lens[b] get O 0 and LSE -inf, and rows past the
** lengths of Q, K and V are not read.  ENV as for hattn__reference, for
** the padded shape.  Returns as hattn__reference does, or HATTN_ENOMEM.
*/
int hattn__reference_varlen(const hattn__pattern *p, const hattn__shape *shape,
                            const hattn__mask_env *env, int nlayouts_in_spec,
                            const int32_t *q_lens, const int32_t *k_lens,
                            const double *q, const double *k, const double *v,
                            double *o, double *lse, char *err, size_t errlen);

/* The relative Frobenius error ||x - ref|| / ||ref|| of N values: 0 when
** both are zero; infinity when ref is zero and x is not, when x has a NaN
** where ref has none or none where ref has one, or when an infinite value
** (the -inf LSE of an empty row) is not matched exactly.  Matched NaNs and
** infinities count as equal and add nothing. */
double hattn__rel_error(const double *x, const double *ref, size_t n);

#endif /* HATTN_GEN_REFERENCE_H */
