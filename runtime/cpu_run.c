/*
** cpu_run.c: launching a CPU kernel over a problem.  See cpu.h and
** gen/cpu_abi.h.  The run-time tables the kernels read (plan lists,
** document ids, layouts, random bit sets, ALiBi slopes) are built here, per
** call, in time proportional to the number of blocks and positions.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "cpu.h"
#include "cpu_config.h"
#include "plan.h"

/* Positions are handled as 32-bit integers inside the kernels. */
#define MAX_LEN (INT64_C(1) << 30)

/* What every worker needs for one call. */
typedef struct run_ctx {
  hattn_cpu_fn fn;
  const hattn_cpu_args *args;
  int64_t nqb;
  char *scratch;                /* threads x scratch_bytes */
  size_t scratch_bytes;
} run_ctx;

static void run_item(void *ctx, int64_t item, int thread) {
  const run_ctx *rc = ctx;
  rc->fn(rc->args, item / rc->nqb, item % rc->nqb,
         (float *)(void *)(rc->scratch + (size_t)thread * rc->scratch_bytes));
}

static int check_tensor(const char *name, const hattn__tensor *t, int64_t n0, int64_t n1,
                        int64_t n2, int64_t n3, char *err, size_t errlen) {
  if (t == NULL) {
    snprintf(err, errlen, "tensor %s is missing", name);
    return HATTN_ESHAPE;
  }
  if (t->stride[3] != 1) {
    snprintf(err, errlen, "tensor %s must be contiguous in the head dimension (stride 3 is 1), got %lld",
             name, (long long)t->stride[3]);
    return HATTN_ESHAPE;
  }
  if (t->data == NULL && n0 * n1 * n2 * n3 > 0) {
    snprintf(err, errlen, "tensor %s has no data", name);
    return HATTN_ESHAPE;
  }
  return HATTN_OK;
}

int hattn__cpu_forward(hattn_cpu_fn fn, const struct hattn_cpu_kernel_desc *desc,
                       const struct hattn_cpu_config *cfg, const hattn__shape *shape,
                       const hattn__mask_env *env, const hattn__tensor *q,
                       const hattn__tensor *k, const hattn__tensor *v, hattn__tensor *o,
                       hattn__tensor *lse, hattn__pool *pool, char *err, size_t errlen) {
  const hattn__pattern *pat = desc->pattern;
  hattn__plan *plan = NULL;
  hattn_cpu_args args;
  hattn_cpu_layout *layouts = NULL;
  int32_t *doc_id = NULL;
  uint64_t **random_bits = NULL;
  int64_t *order = NULL, *cost = NULL, *count = NULL;
  float *slopes = NULL;
  char *scratch = NULL;
  int nrandom = 0, nthreads, rc, i;
  int64_t B = shape->batch, H = shape->heads, HK = shape->kv_heads, LQ = shape->lq,
          LK = shape->lk, D = shape->head_dim, n, t, nqb64, wpr;
  size_t sbytes;
  run_ctx ctx;

  /* Shapes and strides. */
  if (B < 1 || H < 1 || HK < 1 || H % HK != 0) {
    snprintf(err, errlen, "bad shape: batch %lld, heads %lld, kv_heads %lld (all positive, heads a multiple of kv_heads)",
             (long long)B, (long long)H, (long long)HK);
    return HATTN_ESHAPE;
  }
  if (LQ < 0 || LK < 0 || LQ >= MAX_LEN || LK >= MAX_LEN) {
    snprintf(err, errlen, "bad shape: sequence lengths %lld and %lld must be in [0, 2^30)",
             (long long)LQ, (long long)LK);
    return HATTN_ESHAPE;
  }
  if (D != desc->head_dim) {
    snprintf(err, errlen, "bad shape: head_dim %lld, but the kernel was compiled for %d",
             (long long)D, desc->head_dim);
    return HATTN_ESHAPE;
  }
  rc = hattn__cpu_config_check(cfg, desc->head_dim, err, errlen);
  if (rc != HATTN_OK) return rc;
  if ((rc = check_tensor("Q", q, B, H, LQ, D, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("K", k, B, HK, LK, D, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("V", v, B, HK, LK, D, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("O", o, B, H, LQ, D, err, errlen)) != HATTN_OK)
    return rc;
  rc = hattn__env_check(env, shape, pat->lowered, err, errlen);
  if (rc != HATTN_OK) return rc;
  if (LQ == 0) return HATTN_OK;

  rc = hattn__plan_build(pat->lowered, env, cfg->bm, cfg->bn, &plan, err, errlen);
  if (rc != HATTN_OK) return rc;

  memset(&args, 0, sizeof args);
  args.q = q->data;
  args.k = k->data;
  args.v = v->data;
  args.o = o->data;
  args.lse = lse != NULL ? lse->data : NULL;
  for (i = 0; i < 4; i++) {
    args.q_stride[i] = q->stride[i];
    args.k_stride[i] = k->stride[i];
    args.v_stride[i] = v->stride[i];
    args.o_stride[i] = o->stride[i];
    if (i < 3 && lse != NULL) args.lse_stride[i] = lse->stride[i];
  }
  args.heads = H;
  args.kv_heads = HK;
  args.lq = LQ;
  args.lk = LK;
  args.scale = pat->scale > 0 ? pat->scale : 1.0 / sqrt((double)D);
  args.full_off = (const int64_t *const *)plan->full_off;
  args.full_idx = (const int32_t *const *)plan->full_idx;
  args.partial_off = (const int64_t *const *)plan->partial_off;
  args.partial_idx = (const int32_t *const *)plan->partial_idx;
  args.plan_per_head = plan->ntables > 1;

  if (pat->alibi != HATTN_ALIBI_NONE) {
    slopes = malloc((size_t)H * sizeof *slopes);
    if (slopes == NULL) goto fail_nomem;
    for (t = 0; t < H; t++) slopes[t] = (float)hattn__env_slope(pat, env, t, H);
    args.alibi_slopes = slopes;
  }

  if (pat->lowered->needs & HATTN_NEEDS_DOCUMENT) {
    doc_id = malloc(((size_t)LK + 1) * sizeof *doc_id);
    if (doc_id == NULL) goto fail_nomem;
    hattn__doc_ids(env, doc_id);
    args.doc_id = doc_id;
  }

  if ((pat->lowered->needs & HATTN_NEEDS_BLOCKS) && env->nlayouts > 0) {
    layouts = calloc((size_t)env->nlayouts, sizeof *layouts);
    if (layouts == NULL) goto fail_nomem;
    for (i = 0; i < env->nlayouts; i++) {
      layouts[i].bm = env->layouts[i].bm;
      layouts[i].bn = env->layouts[i].bn;
      layouts[i].nqb = env->layouts[i].nqb;
      layouts[i].nkb = env->layouts[i].nkb;
      layouts[i].bits = env->layouts[i].bits;
    }
    args.layouts = layouts;
  }

  /* One bit set per random() atom: row qpos / 64, bit kpos / 64. */
  nqb64 = hattn__nblocks64(LK);
  wpr = hattn__random_words(LK);
  nrandom = pat->lowered->nrandom;
  if (nrandom > 0) {
    random_bits = calloc((size_t)nrandom, sizeof *random_bits);
    if (random_bits == NULL) goto fail_nomem;
    for (i = 0; i < nrandom; i++) {
      random_bits[i] = calloc((size_t)(nqb64 * wpr) + 1, sizeof **random_bits);
      if (random_bits[i] == NULL ||
          hattn__random_bitset(hattn__mask_random_op(pat->lowered, i), env, random_bits[i]) != HATTN_OK)
        goto fail_nomem;
    }
    args.random_bits = (const uint64_t *const *)random_bits;
    args.random_words_per_row = wpr;
  }
  if (pat->lowered->needs & HATTN_NEEDS_TOPK) {
    args.topk_blocks = env->topk_blocks;
    args.topk_k = env->topk_k;
  }
  args.sink_logits = env->sink_logits;

  /* Work items (bh, qb), longest first: a stable counting sort by the
  ** number of key blocks of each item's plan row. */
  n = B * H * plan->nqb;
  order = malloc((size_t)n * sizeof *order);
  cost = malloc((size_t)n * sizeof *cost);
  count = calloc((size_t)plan->nkb + 2, sizeof *count);
  if (order == NULL || cost == NULL || count == NULL) goto fail_nomem;
  for (t = 0; t < n; t++) {
    int64_t bh = t / plan->nqb, qb = t % plan->nqb, tab = plan->ntables > 1 ? bh : 0;
    int64_t c = plan->full_off[tab][qb + 1] - plan->full_off[tab][qb] +
                plan->partial_off[tab][qb + 1] - plan->partial_off[tab][qb];
    if (c > plan->nkb) c = plan->nkb;
    cost[t] = c;
    count[plan->nkb - c + 1]++;
  }
  for (t = 1; t <= plan->nkb + 1; t++) count[t] += count[t - 1];
  for (t = 0; t < n; t++) order[count[plan->nkb - cost[t]]++] = t;

  nthreads = pool != NULL ? hattn__pool_threads(pool) : 1;
  sbytes = (hattn__cpu_scratch_bytes(cfg, desc->head_dim) + 63) / 64 * 64;
  scratch = aligned_alloc(64, sbytes * (size_t)nthreads);
  if (scratch == NULL) goto fail_nomem;

  ctx.fn = fn;
  ctx.args = &args;
  ctx.nqb = plan->nqb;
  ctx.scratch = scratch;
  ctx.scratch_bytes = sbytes;
  if (pool != NULL) {
    hattn__pool_run(pool, n, order, run_item, &ctx);
  } else {
    for (t = 0; t < n; t++) run_item(&ctx, order[t], 0);
  }
  rc = HATTN_OK;
  goto done;

fail_nomem:
  snprintf(err, errlen, "out of memory for the run-time tables of a CPU launch");
  rc = HATTN_ENOMEM;
done:
  free(scratch);
  free(order);
  free(cost);
  free(count);
  if (random_bits != NULL)
    for (i = 0; i < nrandom; i++) free(random_bits[i]);
  free(random_bits);
  free(layouts);
  free(doc_id);
  free(slopes);
  hattn__plan_destroy(plan);
  return rc;
}

void hattn__tensor_strides(const hattn__shape *s, hattn__tensor *q, hattn__tensor *k, hattn__tensor *v,
                           hattn__tensor *o, hattn__tensor *lse) {
  q->stride[0] = o->stride[0] = s->heads * s->lq * s->head_dim;
  q->stride[1] = o->stride[1] = s->lq * s->head_dim;
  q->stride[2] = o->stride[2] = s->head_dim;
  k->stride[0] = v->stride[0] = s->kv_heads * s->lk * s->head_dim;
  k->stride[1] = v->stride[1] = s->lk * s->head_dim;
  k->stride[2] = v->stride[2] = s->head_dim;
  q->stride[3] = k->stride[3] = v->stride[3] = o->stride[3] = 1;
  lse->stride[0] = s->heads * s->lq;
  lse->stride[1] = s->lq;
  lse->stride[2] = lse->stride[3] = 1;
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
