/*
** reach.h: the receptive field of a stack of attention layers: the
** positions whose tokens can reach the last position's output through the
** layers.  Layer l carries key k into query q when some head of l sees k
** from q; the residual stream carries every position's own state, so what
** reaches a position before a layer still reaches it after.  Exact, by the
** block classification of plan.h and the element predicate where a block
** is PARTIAL.  Internal to hattn; not installed.
*/
#ifndef HATTN_GEN_REACH_H
#define HATTN_GEN_REACH_H

#include <stdint.h>

#include "mask.h"

/*
** The positions of [0, N) that reach position N - 1 after LAYERS layers of
** HEADS heads each: head h of layer l uses mask MASKS[ASSIGN[l * HEADS +
** h]] with environment ENVS[ASSIGN[l * HEADS + h]] (lq = lk = N; routed
** tables read at head h modulo the environment's heads).  REACH [N] gets 1 for each such position,
** else 0.  Blocks of BS positions (>= 1) are classified at once.  At most
** MAX_STEPS block classifications and predicate evaluations are taken;
** *STEPS gets how many were.  Returns HATTN_OK, HATTN_ENOMEM, or
** HATTN_ENOTSUP when MAX_STEPS would not do (REACH then holds what was
** found so far, a subset of the answer).
*/
int hattn__reach(int layers, int heads, const int *assign, const hattn__mask *const *masks,
                 const hattn__mask_env *envs, int64_t n, int64_t bs, int64_t max_steps, uint8_t *reach,
                 int64_t *steps);

#endif /* HATTN_GEN_REACH_H */
