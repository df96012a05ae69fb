/*
** reach.c: the receptive field of a stack of layers.  See reach.h.
**
** Walking the layers from the last to the first, CUR is the set of
** positions that reach position n - 1 after the layer, and the set before
** it is CUR and every key that a query of CUR sees in some head of the
** layer.  Per key block not yet wholly in the new set, the query blocks
** holding positions of CUR are classified against it: an EMPTY pair adds
** nothing, a FULL one adds the whole key block (a query of CUR sees every
** key of it), and a PARTIAL one adds the keys that some query of CUR in it
** sees, found by the element predicate, the latest queries first (under
** causal masks they see the most).  Once every position is in, the rest of
** the layers change nothing.
*/
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "plan.h"
#include "reach.h"
#include "spec.h"

/* One head of a layer: its mask, environment and head index. */
typedef struct reach_head {
  const hattn__mask *mask;
  const hattn__mask_env *env;
  int64_t head;
} reach_head;

/* The heads of layer L that differ, into OUT (HEADS entries at most):
** heads that share a pattern count once unless it is routed per head. */
static int layer_heads(int l, int heads, const int *assign, const hattn__mask *const *masks,
                       const hattn__mask_env *envs, reach_head *out) {
  int h, j, n = 0;
  for (h = 0; h < heads; h++) {
    int p = assign[(size_t)l * heads + h], seen = 0;
    if (!(masks[p]->needs & HATTN_NEEDS_TOPK))
      for (j = 0; j < h && !seen; j++) seen = assign[(size_t)l * heads + j] == p;
    if (seen) continue;
    out[n].mask = masks[p], out[n].env = &envs[p], out[n].head = envs[p].heads > 0 ? h % envs[p].heads : 0;
    n++;
  }
  return n;
}

int hattn__reach(int layers, int heads, const int *assign, const hattn__mask *const *masks,
                 const hattn__mask_env *envs, int64_t n, int64_t bs, int64_t max_steps, uint8_t *reach,
                 int64_t *steps) {
  int64_t nb = n > 0 ? (n + bs - 1) / bs : 0, total = n > 0 ? 1 : 0, used = 0, *qb = NULL, *count = NULL;
  uint8_t *cur = NULL;
  reach_head *hs = NULL;
  int l, rc = HATTN_OK;

  *steps = 0;
  if (n <= 0) return HATTN_OK;
  memset(reach, 0, (size_t)n);
  reach[n - 1] = 1;
  cur = malloc((size_t)n);
  qb = malloc((size_t)nb * sizeof *qb);
  count = calloc((size_t)nb, sizeof *count);
  hs = malloc((size_t)(heads > 0 ? heads : 1) * sizeof *hs);
  if (cur == NULL || qb == NULL || count == NULL || hs == NULL) {
    rc = HATTN_ENOMEM;
    goto done;
  }
  count[nb - 1] = 1;
  for (l = layers - 1; l >= 0 && total < n; l--) {
    int nh = layer_heads(l, heads, assign, masks, envs, hs), i;
    int64_t nq = 0, b, kb;
    /* CUR: the set after this layer; REACH grows into the set before it. */
    memcpy(cur, reach, (size_t)n);
    for (b = 0; b < nb; b++)
      if (count[b] > 0) qb[nq++] = b;
    for (i = 0; i < nh; i++) {
      const reach_head *hd = &hs[i];
      for (kb = 0; kb < nb; kb++) {
        int64_t k0 = kb * bs, k1 = k0 + bs < n ? k0 + bs : n, j;
        for (j = 0; j < nq && count[kb] < k1 - k0; j++) {
          int64_t q0 = qb[j] * bs, q1 = q0 + bs < n ? q0 + bs : n, k, q;
          hattn__block c;
          if (++used > max_steps) {
            rc = HATTN_ENOTSUP;
            goto done;
          }
          c = hattn__block_classify(hd->mask, q0, q1, k0, k1, hd->head, hd->env);
          if (c == HATTN_BLOCK_EMPTY) continue;
          if (c == HATTN_BLOCK_FULL) {
            memset(reach + k0, 1, (size_t)(k1 - k0));
            total += (k1 - k0) - count[kb];
            count[kb] = k1 - k0;
            break;
          }
          for (k = k0; k < k1; k++) {
            if (reach[k]) continue;
            for (q = q1 - 1; q >= q0; q--) {
              if (!cur[q]) continue;
              if (++used > max_steps) {
                rc = HATTN_ENOTSUP;
                goto done;
              }
              if (hattn__mask_visible(hd->mask, q, k, hd->head, hd->env)) {
                reach[k] = 1;
                count[kb]++;
                total++;
                break;
              }
            }
          }
        }
      }
    }
  }
done:
  *steps = used;
  free(cur);
  free(qb);
  free(count);
  free(hs);
  return rc;
}
