/*
** varlen.c: variable-length batches in the padded form (hattn_inputs.q_lens,
** k_lens) on a backend that runs them (backend.h: varlen): one problem of
** batch 1 per distinct (q_len, k_len) pair, each batch entry launched on
** views of its first rows, and O 0, LSE -inf written past its queries.
** The API and hattn run share it.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dtype.h"

int hattn__varlen_supported(const hattn__backend_i *be, const hattn__pattern *p, int offsets_set, char *err,
                            size_t errlen) {
  if ((be->version < 7 || !be->varlen) && (be->version < 8 || be->launch_varlen == NULL)) {
    snprintf(err, errlen, "inputs.q_lens/k_lens: variable-length batches are not supported on the %s backend yet",
             be->name);
    return HATTN_ENOTSUP;
  }
  if (offsets_set) {
    snprintf(err, errlen, "inputs.q_lens/k_lens: not with offsets_set (the positions of a sequence of a "
             "variable-length batch follow from its lengths)");
    return HATTN_ENOTSUP;
  }
  if ((p->needs & (HATTN_NEEDS_DOCUMENT | HATTN_NEEDS_BLOCKS | HATTN_NEEDS_TOPK)) || p->lowered->nrandom > 0) {
    snprintf(err, errlen, "inputs.q_lens/k_lens: pattern '%s' uses document(), blocks(), random() or topk(), "
             "whose run-time data covers the padded lk; variable-length batches are not supported with them",
             p->name);
    return HATTN_ENOTSUP;
  }
  return HATTN_OK;
}

int hattn__varlen_check(const hattn__backend_i *be, const hattn__pattern *p, const hattn__shape *shape,
                        int offsets_set, const int32_t *q_lens, const int32_t *k_lens, char *err, size_t errlen) {
  int64_t b;
  int i, st;
  if (q_lens == NULL && k_lens == NULL) return HATTN_OK;
  if ((st = hattn__varlen_supported(be, p, offsets_set, err, errlen)) != HATTN_OK) return st;
  for (i = 0; i < 2; i++) {
    const int32_t *l = i == 0 ? q_lens : k_lens;
    int64_t max = i == 0 ? shape->lq : shape->lk;
    if (l == NULL) continue;
    for (b = 0; b < shape->batch; b++) {
      if (l[b] < 0) {
        snprintf(err, errlen, "%s[%lld] is %d, below 0", i == 0 ? "q_lens" : "k_lens", (long long)b, (int)l[b]);
        return HATTN_EINPUT;
      }
      if (l[b] > max) {
        snprintf(err, errlen, "%s[%lld] is %d, above %s %lld", i == 0 ? "q_lens" : "k_lens", (long long)b,
                 (int)l[b], i == 0 ? "lq" : "lk", (long long)max);
        return HATTN_EINPUT;
      }
    }
  }
  return HATTN_OK;
}

int hattn__varlen_create(const hattn__backend_i *be, void *dev, const hattn__kernel_desc *desc,
                         const hattn__config *cfg, const hattn__shape *shape, const hattn__mask_env *env,
                         const int32_t *q_lens, const int32_t *k_lens, hattn__varlen **out, char *err,
                         size_t errlen) {
  int64_t B = shape->batch, b, j;
  hattn__varlen *vl;
  int st;
  *out = NULL;
  if ((vl = calloc(1, sizeof *vl)) == NULL) goto nomem;
  vl->batch = B;
  vl->lens = malloc((size_t)(2 * B) * sizeof *vl->lens);
  vl->probs = calloc((size_t)B, sizeof *vl->probs);
  vl->prob_of = malloc((size_t)B * sizeof *vl->prob_of);
  if (vl->lens == NULL || vl->probs == NULL || vl->prob_of == NULL) goto nomem;
  for (b = 0; b < B; b++) {
    vl->lens[b] = q_lens ? q_lens[b] : (int32_t)shape->lq;
    vl->lens[B + b] = k_lens ? k_lens[b] : (int32_t)shape->lk;
  }
  for (b = 0; b < B; b++) {
    hattn__shape sh = *shape;
    hattn__mask_env e = *env;
    for (j = 0; j < b; j++)
      if (vl->lens[j] == vl->lens[b] && vl->lens[B + j] == vl->lens[B + b]) break;
    if (j < b) {
      vl->prob_of[b] = vl->prob_of[j];
      continue;
    }
    sh.batch = e.batch = 1;
    sh.lq = e.lq = vl->lens[b];
    sh.lk = e.lk = vl->lens[B + b];
    if ((st = be->problem_create(dev, desc, cfg, &sh, &e, &vl->probs[vl->nprobs], err, errlen)) != HATTN_OK) {
      hattn__varlen_destroy(be, vl);
      return st;
    }
    vl->prob_of[b] = vl->nprobs++;
  }
  *out = vl;
  return HATTN_OK;
nomem:
  hattn__varlen_destroy(be, vl);
  snprintf(err, errlen, "out of memory for a variable-length batch");
  return HATTN_ENOMEM;
}

void hattn__varlen_destroy(const hattn__backend_i *be, hattn__varlen *vl) {
  int64_t i;
  if (vl == NULL) return;
  for (i = 0; i < vl->nprobs; i++) be->problem_destroy(vl->probs[i]);
  free(vl->probs);
  free(vl->prob_of);
  free(vl->lens);
  free(vl);
}

/* A view of batch entry B of tensor T of ES-byte elements, its rows from
** CU[B] on where CU (packed) is given (T itself when its data is NULL). */
static hattn__tensor entry_view(const hattn__tensor *t, int64_t b, const int32_t *cu, size_t es) {
  hattn__tensor v = *t;
  if (v.data != NULL) v.data = (char *)v.data + (size_t)(b * t->stride[0] + (cu ? cu[b] : 0) * t->stride[2]) * es;
  return v;
}

int hattn__varlen_launch(const hattn__backend_i *be, void *dev, void *kern, const hattn__varlen *vl,
                         const hattn__shape *shape, hattn__dtype dtype, const hattn__tensor *q,
                         const hattn__tensor *k, const hattn__tensor *v, const hattn__paged *pg, hattn__tensor *o,
                         hattn__tensor *lse, char *err, size_t errlen) {
  size_t es = (size_t)hattn__dtype_size(dtype);
  int64_t b, h, r;
  int st;
  for (b = 0; b < vl->batch; b++) {
    hattn__tensor q1 = entry_view(q, b, vl->cu_q, es), k1 = entry_view(k, b, vl->cu_k, es),
                  v1 = entry_view(v, b, vl->cu_k, es), o1 = entry_view(o, b, vl->cu_q, es),
                  l1 = entry_view(lse, b, vl->cu_q, sizeof(float));
    void *prob = vl->probs[vl->prob_of[b]];
    if (pg != NULL) {
      hattn__paged p1 = *pg;
      p1.block_table += b * pg->table_stride;
      st = be->launch_paged(dev, kern, prob, &q1, &k1, &v1, &p1, &o1, &l1, NULL, 1, err, errlen);
    } else {
      st = be->launch(dev, kern, prob, &q1, &k1, &v1, &o1, &l1, NULL, err, errlen);
    }
    if (st != HATTN_OK) return st;
    if (vl->cu_q != NULL) continue;             /* packed: no rows past the entry's */
    for (h = 0; h < shape->heads; h++)
      for (r = vl->lens[b]; r < shape->lq; r++) {
        memset((char *)o1.data + (size_t)(h * o->stride[1] + r * o->stride[2]) * es, 0,
               (size_t)shape->head_dim * es);
        if (l1.data != NULL) ((float *)l1.data)[h * lse->stride[1] + r * lse->stride[2]] = -INFINITY;
      }
  }
  return HATTN_OK;
}
