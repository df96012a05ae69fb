/*
** cpu_run.c: launching a CPU kernel over a problem.  See cpu.h and
** gen/cpu_abi.h.  A problem holds the plan, the run-time tables (built by
** tables.c, read in place) and the order of the work items, made once;
** a launch fills in the tensors and spreads the work over the pool.
*/
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "cpu.h"
#include "cpu_config.h"
#include "dtype.h"
#include "plan.h"
#include "tables.h"

/* Positions are handled as 32-bit integers inside the kernels. */
#define MAX_LEN (INT64_C(1) << 30)

struct hattn__cpu_problem {
  hattn__kernel_desc desc;
  hattn__cpu_config cfg;
  hattn__shape shape;
  hattn__plan *plan;            /* NULL when lq is 0 */
  hattn__tables tables;
  hattn_cpu_layout *layouts;    /* [tables.nlayouts], bits in the tables */
  const uint64_t **random_bits; /* [tables.nrandom], in the tables */
  hattn_cpu_args args;          /* all but the tensors and their strides */
  int64_t n;                    /* work items: batch * heads * nqb */
  int64_t *order;               /* [n], longest first */
  char *scratch;                /* the workers' scratch, kept between launches */
  size_t scratch_size;          /* its bytes */
  /* Decode (see hattn__cpu_launch_kernel): whether launches with a decode
  ** kernel take it; query heads a work item packs (all of a KV head's, or
  ** one when the plan is per head) and the groups of them (heads / pack);
  ** the splits of each (batch entry, group)'s key blocks; PART, the splits'
  ** partial results (cpu_abi.h), PART_STRIDE floats each, PART_SPLITS
  ** splits' worth allocated; NBLOCKS, the longest list of query block 0. */
  int decode;
  int64_t pack, groups, nsplit, nblocks;
  size_t part_stride;
  float *part;
  int64_t part_splits;
};

/* Decode launches so far (hattn__cpu_decode_launches). */
static atomic_long g_decode_launches;

/* What every worker needs for one call. */
typedef struct run_ctx {
  hattn__cpu_fn fn;
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

/* Whether SHAPE and CFG suit kernels of DESC. */
static int check_shape(const hattn__kernel_desc *desc, const hattn__cpu_config *cfg, const hattn__shape *shape,
                       char *err, size_t errlen) {
  int64_t B = shape->batch, H = shape->heads, HK = shape->kv_heads, LQ = shape->lq, LK = shape->lk,
          D = shape->head_dim;
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
  return hattn__cpu_config_check(cfg, desc->head_dim, err, errlen);
}

/* Whether the tensors suit SHAPE. */
static int check_tensors(const hattn__shape *s, const hattn__tensor *q, const hattn__tensor *k,
                         const hattn__tensor *v, const hattn__tensor *o, char *err, size_t errlen) {
  int rc;
  if ((rc = check_tensor("Q", q, s->batch, s->heads, s->lq, s->head_dim, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("K", k, s->batch, s->kv_heads, s->lk, s->head_dim, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("V", v, s->batch, s->kv_heads, s->lk, s->head_dim, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("O", o, s->batch, s->heads, s->lq, s->head_dim, err, errlen)) != HATTN_OK)
    return rc;
  return HATTN_OK;
}

int hattn__cpu_problem_create(const hattn__kernel_desc *desc, const hattn__cpu_config *cfg,
                              const hattn__shape *shape, const hattn__mask_env *env,
                              hattn__cpu_problem **out, char *err, size_t errlen) {
  const hattn__pattern *pat = desc->pattern;
  hattn__cpu_problem *pr = NULL;
  hattn__plan *plan;
  hattn_cpu_args *a;
  int64_t *cost = NULL, *count = NULL, t, H = shape->heads;
  int rc, i;

  *out = NULL;
  if ((rc = check_shape(desc, cfg, shape, err, errlen)) != HATTN_OK) return rc;
  if ((rc = hattn__env_check(env, shape, pat->lowered, err, errlen)) != HATTN_OK) return rc;
  if ((pr = calloc(1, sizeof *pr)) == NULL) goto fail_nomem;
  pr->desc = *desc;
  pr->cfg = *cfg;
  pr->shape = *shape;
  hattn__tables_clear(&pr->tables);
  if (shape->lq == 0) {
    *out = pr;
    return HATTN_OK;
  }

  rc = hattn__plan_build(pat->lowered, env, cfg->bm, cfg->bn, &pr->plan, err, errlen);
  if (rc != HATTN_OK) goto fail;
  plan = pr->plan;
  rc = hattn__tables_build(pat, shape, env, NULL, &pr->tables, err, errlen);
  if (rc != HATTN_OK) goto fail;

  a = &pr->args;
  a->heads = H;
  a->kv_heads = shape->kv_heads;
  a->lq = shape->lq;
  a->lk = shape->lk;
  a->q_pos0 = hattn__env_qpos0(env);
  a->k_pos0 = hattn__env_kpos0(env);
  a->scale = pat->scale > 0 ? pat->scale : 1.0 / sqrt((double)shape->head_dim);
  a->full_off = (const int64_t *const *)plan->full_off;
  a->full_idx = (const int32_t *const *)plan->full_idx;
  a->partial_off = (const int64_t *const *)plan->partial_off;
  a->partial_idx = (const int32_t *const *)plan->partial_idx;
  a->plan_per_head = plan->ntables > 1;
  a->alibi_slopes = hattn__tables_at(&pr->tables, pr->tables.slopes);
  a->doc_id = hattn__tables_at(&pr->tables, pr->tables.doc_id);
  if (pr->tables.nlayouts > 0) {
    if ((pr->layouts = calloc((size_t)pr->tables.nlayouts, sizeof *pr->layouts)) == NULL) goto fail_nomem;
    for (i = 0; i < pr->tables.nlayouts; i++) {
      pr->layouts[i].bm = env->layouts[i].bm;
      pr->layouts[i].bn = env->layouts[i].bn;
      pr->layouts[i].nqb = env->layouts[i].nqb;
      pr->layouts[i].nkb = env->layouts[i].nkb;
      pr->layouts[i].bits = hattn__tables_at(&pr->tables, pr->tables.layout[i]);
    }
    a->layouts = pr->layouts;
  }
  if (pr->tables.nrandom > 0) {
    if ((pr->random_bits = calloc((size_t)pr->tables.nrandom, sizeof *pr->random_bits)) == NULL) goto fail_nomem;
    for (i = 0; i < pr->tables.nrandom; i++)
      pr->random_bits[i] = hattn__tables_at(&pr->tables, pr->tables.random[i]);
    a->random_bits = (const uint64_t *const *)pr->random_bits;
    a->random_words_per_row = pr->tables.random_words;
  }
  if (pr->tables.topk != HATTN__TABLE_NONE) {
    a->topk_blocks = hattn__tables_at(&pr->tables, pr->tables.topk);
    a->topk_k = pr->tables.topk_k;
  }
  a->sink_logits = hattn__tables_at(&pr->tables, pr->tables.sink);

  /* Decode: lq at most the block's rows, so that every row is in query
  ** block 0, and not turned off. */
  {
    const char *dv = getenv("HATTN_CPU_DECODE");
    int64_t rp;
    pr->decode = shape->lq >= 1 && shape->lq <= HATTN_CPU_DECODE_MAX_LQ && shape->lq <= cfg->bm &&
                 !(dv != NULL && strcmp(dv, "0") == 0);
    pr->pack = plan->ntables > 1 ? 1 : H / shape->kv_heads;
    pr->groups = H / pr->pack;
    rp = (pr->pack * shape->lq + cfg->rows - 1) / cfg->rows * cfg->rows;
    pr->part_stride = ((size_t)rp * (size_t)(2 * hattn__cpu_padded_dim(desc->head_dim, cfg->vec) + 2) + 15) / 16 * 16;
    for (t = 0; t < plan->ntables; t++) {
      int64_t c = plan->full_off[t][1] - plan->full_off[t][0] + plan->partial_off[t][1] - plan->partial_off[t][0];
      if (c > pr->nblocks) pr->nblocks = c;
    }
  }

  /* Work items (bh, qb), longest first: a stable counting sort by the
  ** number of key blocks of each item's plan row. */
  pr->n = shape->batch * H * plan->nqb;
  pr->order = malloc((size_t)pr->n * sizeof *pr->order + 1);
  cost = malloc((size_t)pr->n * sizeof *cost + 1);
  count = calloc((size_t)plan->nkb + 2, sizeof *count);
  if (pr->order == NULL || cost == NULL || count == NULL) goto fail_nomem;
  for (t = 0; t < pr->n; t++) {
    int64_t bh = t / plan->nqb, qb = t % plan->nqb, tab = plan->ntables > 1 ? bh : 0;
    int64_t c = plan->full_off[tab][qb + 1] - plan->full_off[tab][qb] +
                plan->partial_off[tab][qb + 1] - plan->partial_off[tab][qb];
    if (c > plan->nkb) c = plan->nkb;
    cost[t] = c;
    count[plan->nkb - c + 1]++;
  }
  for (t = 1; t <= plan->nkb + 1; t++) count[t] += count[t - 1];
  for (t = 0; t < pr->n; t++) pr->order[count[plan->nkb - cost[t]]++] = t;
  free(cost);
  free(count);
  *out = pr;
  return HATTN_OK;

fail_nomem:
  snprintf(err, errlen, "out of memory for the run-time tables of a CPU launch");
  rc = HATTN_ENOMEM;
fail:
  free(cost);
  free(count);
  hattn__cpu_problem_destroy(pr);
  return rc;
}

void hattn__cpu_problem_destroy(hattn__cpu_problem *pr) {
  if (pr == NULL) return;
  free(pr->scratch);
  free(pr->part);
  free(pr->order);
  free(pr->random_bits);
  free(pr->layouts);
  hattn__tables_clear(&pr->tables);
  hattn__plan_destroy(pr->plan);
  free(pr);
}

/* The bytes of one worker's scratch for PR. */
static size_t scratch_bytes(const hattn__cpu_problem *pr) {
  return (hattn__cpu_scratch_bytes(&pr->cfg, pr->desc.head_dim) + 63) / 64 * 64;
}

/* The splits of a decode launch over NTHREADS: enough work items (batch *
** groups * splits) for 4 a thread, at most a split per key block. */
static int64_t decode_splits(const hattn__cpu_problem *pr, int nthreads) {
  int64_t items = pr->shape.batch * pr->groups, n = 1;
  if (nthreads > 1) n = (4 * (int64_t)nthreads + items - 1) / items;
  if (n > pr->nblocks) n = pr->nblocks;
  if (n > HATTN_CPU_DECODE_MAX_SPLITS) n = HATTN_CPU_DECODE_MAX_SPLITS;
  return n < 1 ? 1 : n;
}

int hattn__cpu_problem_reserve(hattn__cpu_problem *pr, int nthreads, char *err, size_t errlen) {
  size_t need = scratch_bytes(pr) * (size_t)(nthreads > 0 ? nthreads : 1);
  char *s;
  if (pr->decode) {
    int64_t nsplit = decode_splits(pr, nthreads);
    if (nsplit > pr->part_splits) {
      size_t bytes = (size_t)(pr->shape.batch * pr->groups * nsplit) * pr->part_stride * sizeof(float);
      float *p = aligned_alloc(64, bytes);
      if (p == NULL) {
        snprintf(err, errlen, "out of memory for the partial results of a CPU decode launch");
        return HATTN_ENOMEM;
      }
      free(pr->part);
      pr->part = p;
      pr->part_splits = nsplit;
    }
    pr->nsplit = nsplit;
  }
  if (need <= pr->scratch_size) return HATTN_OK;
  if ((s = aligned_alloc(64, need)) == NULL) {
    snprintf(err, errlen, "out of memory for the scratch of a CPU launch");
    return HATTN_ENOMEM;
  }
  free(pr->scratch);
  pr->scratch = s;
  pr->scratch_size = need;
  return HATTN_OK;
}

/* What every worker of a decode launch needs. */
typedef struct decode_ctx {
  hattn__cpu_decode_fn fn;
  const hattn_cpu_args *args;
  const hattn__cpu_problem *pr;
  char *scratch;                /* threads x scratch_bytes */
  size_t scratch_bytes;
} decode_ctx;

/* Work item ITEM of a decode launch: split ITEM % nsplit of (batch entry,
** group) ITEM / nsplit. */
static void run_split(void *ctx, int64_t item, int thread) {
  const decode_ctx *dc = ctx;
  const hattn__cpu_problem *pr = dc->pr;
  const hattn__plan *plan = pr->plan;
  int64_t bg = item / pr->nsplit, s = item % pr->nsplit, n;
  hattn_cpu_split sp;
  sp.b = bg / pr->groups;
  sp.h0 = bg % pr->groups * pr->pack;
  sp.pack = pr->pack;
  sp.table = plan->ntables > 1 ? sp.b * pr->shape.heads + sp.h0 : 0;
  n = plan->full_off[sp.table][1] - plan->full_off[sp.table][0] + plan->partial_off[sp.table][1] -
      plan->partial_off[sp.table][0];
  sp.begin = s * n / pr->nsplit;
  sp.end = (s + 1) * n / pr->nsplit;
  sp.part = pr->part + (size_t)item * pr->part_stride;
  dc->fn(dc->args, &sp, (float *)(void *)(dc->scratch + (size_t)thread * dc->scratch_bytes));
}

/* Merge the splits of (batch entry, group) ITEM: O = sum_s acc_s 2^(m_s -
** M) / L and LSE = ln 2 (M + log2 L), L = sum_s l_s 2^(m_s - M) + 2^sink,
** in O's dtype; a row that sees nothing (L = 0) gets O = 0 and LSE = -inf,
** as the forward kernel writes it. */
static void run_combine(void *ctx, int64_t item, int thread) {
  const decode_ctx *dc = ctx;
  const hattn__cpu_problem *pr = dc->pr;
  const hattn_cpu_args *a = dc->args;
  int64_t b = item / pr->groups, h0 = item % pr->groups * pr->pack, lq = pr->shape.lq;
  int64_t nrows = pr->pack * lq, rp = (nrows + pr->cfg.rows - 1) / pr->cfg.rows * pr->cfg.rows, r, s;
  int d, D = pr->desc.head_dim, dp = hattn__cpu_padded_dim(D, pr->cfg.vec);
  const float *part = pr->part + (size_t)(item * pr->nsplit) * pr->part_stride;
  float f[HATTN_CPU_DECODE_MAX_SPLITS];
  (void)thread;
  for (r = 0; r < nrows; r++) {
    int64_t h = h0 + r / lq, qi = r % lq;
    float sink = a->sink_logits != NULL ? a->sink_logits[h] * 1.4426950408889634f : -INFINITY, M = sink, L, inv;
    size_t orow = (size_t)(b * a->o_stride[0] + h * a->o_stride[1] + qi * a->o_stride[2]);
    int empty;
    for (s = 0; s < pr->nsplit; s++) M = fmaxf(M, part[(size_t)s * pr->part_stride + (size_t)(2 * rp * dp + r)]);
    if (M == -INFINITY) M = 0;
    L = exp2f(sink - M);
    for (s = 0; s < pr->nsplit; s++) {
      const float *ps = part + (size_t)s * pr->part_stride;
      f[s] = exp2f(ps[2 * rp * dp + r] - M);
      L += ps[2 * rp * dp + rp + r] * f[s];
    }
    empty = L <= 0;
    inv = empty ? 0 : 1 / L;
    for (d = 0; d < D; d++) {
      float acc = 0;
      for (s = 0; s < pr->nsplit; s++) acc += part[(size_t)s * pr->part_stride + (size_t)(r * dp + d)] * f[s];
      hattn__elem_set(a->o, pr->desc.dtype, orow + (size_t)d, acc * inv);
    }
    if (a->lse != NULL) {
      float lv = empty ? -INFINITY : (M + log2f(L)) * 0.6931471805599453f;
      a->lse[b * a->lse_stride[0] + h * a->lse_stride[1] + qi * a->lse_stride[2]] = isnan(L) ? L : lv;
    }
  }
}

long hattn__cpu_decode_launches(void) { return atomic_load(&g_decode_launches); }

int hattn__cpu_launch(hattn__cpu_fn fn, hattn__cpu_problem *pr, const hattn__tensor *q,
                      const hattn__tensor *k, const hattn__tensor *v, hattn__tensor *o,
                      hattn__tensor *lse, hattn__pool *pool, char *err, size_t errlen) {
  return hattn__cpu_launch_kernel(fn, NULL, pr, q, k, v, NULL, o, lse, pool, err, errlen);
}

int hattn__cpu_launch_paged(hattn__cpu_fn fn, hattn__cpu_problem *pr, const hattn__tensor *q,
                            const hattn__tensor *k, const hattn__tensor *v, const hattn__paged *pg,
                            hattn__tensor *o, hattn__tensor *lse, hattn__pool *pool, char *err,
                            size_t errlen) {
  return hattn__cpu_launch_kernel(fn, NULL, pr, q, k, v, pg, o, lse, pool, err, errlen);
}

int hattn__cpu_launch_kernel(hattn__cpu_fn fn, hattn__cpu_decode_fn dfn, hattn__cpu_problem *pr,
                             const hattn__tensor *q, const hattn__tensor *k, const hattn__tensor *v,
                             const hattn__paged *pg, hattn__tensor *o, hattn__tensor *lse, hattn__pool *pool,
                             char *err, size_t errlen) {
  hattn_cpu_args args;
  run_ctx ctx;
  int64_t t;
  int nthreads, rc, i;

  if ((rc = check_tensors(&pr->shape, q, k, v, o, err, errlen)) != HATTN_OK) return rc;
  if (pr->plan == NULL) return HATTN_OK;
  args = pr->args;
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
  args.block_table = NULL;
  args.block_table_stride = args.page_shift = args.k_page_stride = args.v_page_stride = 0;
  if (pg != NULL) {
    if (pg->page_size < 1 || (pg->page_size & (pg->page_size - 1)) != 0 || pg->block_table == NULL) {
      snprintf(err, errlen, "paged K and V: page size %lld is not a power of two, or no block table",
               (long long)pg->page_size);
      return HATTN_EINPUT;
    }
    args.block_table = pg->block_table;
    args.block_table_stride = pg->table_stride;
    while ((INT64_C(1) << args.page_shift) < pg->page_size) args.page_shift++;
    args.k_page_stride = pg->k_page_stride;
    args.v_page_stride = pg->v_page_stride;
    args.k_stride[0] = args.v_stride[0] = 0;
  }

  nthreads = pool != NULL ? hattn__pool_threads(pool) : 1;
  if ((rc = hattn__cpu_problem_reserve(pr, nthreads, err, errlen)) != HATTN_OK) return rc;
  if (dfn != NULL && pr->decode && pr->part != NULL) {
    decode_ctx dc;
    int64_t nitems = pr->shape.batch * pr->groups;
    dc.fn = dfn;
    dc.args = &args;
    dc.pr = pr;
    dc.scratch = pr->scratch;
    dc.scratch_bytes = scratch_bytes(pr);
    if (pool != NULL) {
      hattn__pool_run(pool, nitems * pr->nsplit, NULL, run_split, &dc);
      hattn__pool_run(pool, nitems, NULL, run_combine, &dc);
    } else {
      for (t = 0; t < nitems * pr->nsplit; t++) run_split(&dc, t, 0);
      for (t = 0; t < nitems; t++) run_combine(&dc, t, 0);
    }
    atomic_fetch_add(&g_decode_launches, 1);
    return HATTN_OK;
  }
  ctx.fn = fn;
  ctx.args = &args;
  ctx.nqb = pr->plan->nqb;
  ctx.scratch = pr->scratch;
  ctx.scratch_bytes = scratch_bytes(pr);
  if (pool != NULL) {
    hattn__pool_run(pool, pr->n, pr->order, run_item, &ctx);
  } else {
    for (t = 0; t < pr->n; t++) run_item(&ctx, pr->order[t], 0);
  }
  return HATTN_OK;
}

int hattn__cpu_forward(hattn__cpu_fn fn, const hattn__kernel_desc *desc,
                       const hattn__cpu_config *cfg, const hattn__shape *shape,
                       const hattn__mask_env *env, const hattn__tensor *q,
                       const hattn__tensor *k, const hattn__tensor *v, hattn__tensor *o,
                       hattn__tensor *lse, hattn__pool *pool, char *err, size_t errlen) {
  hattn__cpu_problem *pr = NULL;
  int rc;
  if ((rc = check_shape(desc, cfg, shape, err, errlen)) != HATTN_OK ||
      (rc = check_tensors(shape, q, k, v, o, err, errlen)) != HATTN_OK ||
      (rc = hattn__cpu_problem_create(desc, cfg, shape, env, &pr, err, errlen)) != HATTN_OK)
    return rc;
  rc = hattn__cpu_launch(fn, pr, q, k, v, o, lse, pool, err, errlen);
  hattn__cpu_problem_destroy(pr);
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
