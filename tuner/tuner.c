/*
** tuner.c: candidate spaces, the correctness gate, timing, selection and
** storage of tunings.  See tuner.h.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hattn.h"
#include "dtype.h"
#include "reference.h"
#include "tuner.h"

/* A candidate within the spread of the fastest wins only when it is at
** most this much slower than it: a noisy candidate cannot win on noise. */
#define MAX_SLOWER 0.03

/* Elements of the gate problem's sequences, at most: small enough that
** the float64 reference takes milliseconds, not a multiple of any tile so
** that partial tiles are exercised. */
#define GATE_LEN 300

/* Bytes of input sets the timing rotates through, at least (larger than
** the last-level cache of the CPU, and than an H100's 50 MB L2). */
#define ROTATE_BYTES ((size_t)96 << 20)
#define MAX_SETS 8

const char *hattn__cand_status_name(hattn__cand_status s) {
  switch (s) {
  case HATTN__CAND_PENDING: return "pending";
  case HATTN__CAND_TIMED: return "ok";
  case HATTN__CAND_WRONG: return "WRONG";
  case HATTN__CAND_FAILED: return "failed";
  case HATTN__CAND_SKIPPED: return "skipped (budget)";
  }
  return "?";
}

void hattn__tune_result_clear(hattn__tune_result *r) {
  if (r == NULL) return;
  free(r->cands);
  r->cands = NULL;
  r->ncands = 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- spaces ---------------------------------------------------------------- */

static int add_cpu(hattn__tune_cand *c, int *n, int cap, int head_dim, int bm, int bn, int rows, int vec,
                   int threads) {
  hattn_cpu_config cfg;
  char err[256];
  int i;
  cfg.bm = bm, cfg.bn = bn, cfg.rows = rows, cfg.vec = vec;
  if (*n >= cap || hattn__cpu_config_check(&cfg, head_dim, err, sizeof err) != HATTN_OK) return 0;
  for (i = 0; i < *n; i++)
    if (!memcmp(&c[i].cpu, &cfg, sizeof cfg) && c[i].threads == threads) return 0;
  memset(&c[*n], 0, sizeof c[*n]);
  c[*n].cpu = cfg;
  c[*n].threads = threads;
  hattn__kc_cpu_config_text(&cfg, threads, c[*n].config, sizeof c[*n].config);
  (*n)++;
  return 1;
}

int hattn__tune_space_cpu(int head_dim, int vec, int cores, hattn__tune_cand **out, int *n) {
  /* Query tiles x key tiles around the default, 4 register rows (and 2
  ** and 8 for the default tile), the host's vector width (and 8 floats on
  ** AVX-512 hosts), every core (and half of them for the default). */
  static const int bms[] = {64, 128, 256}, bns[] = {32, 64, 128};
  hattn__tune_cand *c;
  hattn_cpu_config d;
  int cap = 24, i, j;

  *out = NULL;
  *n = 0;
  if ((c = calloc((size_t)cap, sizeof *c)) == NULL) return HATTN_ENOMEM;
  if (cores < 1) cores = 1;
  hattn__cpu_config_default(head_dim, vec, &d);
  add_cpu(c, n, cap, head_dim, d.bm, d.bn, d.rows, d.vec, cores);
  for (i = 0; i < 3; i++)
    for (j = 0; j < 3; j++) {
      if (head_dim > 256 && (bms[i] > 128 || bns[j] > 64)) continue; /* scratch beyond L2 */
      add_cpu(c, n, cap, head_dim, bms[i], bns[j], 4, d.vec, cores);
    }
  add_cpu(c, n, cap, head_dim, d.bm, d.bn, 2, d.vec, cores);
  add_cpu(c, n, cap, head_dim, d.bm, d.bn, 8, d.vec, cores);
  if (d.vec == 16) add_cpu(c, n, cap, head_dim, d.bm, d.bn < 64 ? 64 : d.bn, d.rows, 8, cores);
  if (cores >= 2) add_cpu(c, n, cap, head_dim, d.bm, d.bn, d.rows, d.vec, cores / 2);
  *out = c;
  return HATTN_OK;
}

/* Append CFG to C (N of CAP used) when DESC accepts it. */
static void add_cuda(hattn__tune_cand *c, int *n, int cap, const hattn_cuda_kernel_desc *desc,
                     const hattn_cuda_config *cfg) {
  char err[256];
  if (hattn__cuda_config_check(desc, cfg, err, sizeof err) != HATTN_OK || *n >= cap) return;
  memset(&c[*n], 0, sizeof c[*n]);
  c[*n].cuda = *cfg;
  hattn__kc_cuda_config_text(cfg, c[*n].config, sizeof c[*n].config);
  (*n)++;
}

int hattn__tune_space_cuda(const hattn_cuda_kernel_desc *desc, int sm, hattn__tune_cand **out, int *n) {
  static const int bms[] = {64, 128}, bns[] = {32, 64, 128}, warps[] = {4, 8}, stages[] = {2, 3};
  hattn__tune_cand *c;
  hattn_cuda_config d, cfg;
  int cap = 32, i;

  *out = NULL;
  *n = 0;
  if ((c = calloc((size_t)cap, sizeof *c)) == NULL) return HATTN_ENOMEM;
  /* The default first. */
  hattn__cuda_config_default(desc, sm, &d);
  add_cuda(c, n, cap, desc, &d);
  /* The mma.sync kernel, pruned: 128-row tiles with 8 warps only (16 rows
  ** a warp), 64-row tiles with 4; 128-key tiles only at head dim 64. */
  for (i = 0; i < 2 * 3 * 2 * 2; i++) {
    memset(&cfg, 0, sizeof cfg);
    cfg.block_m = bms[i / 12], cfg.block_n = bns[i / 4 % 3], cfg.warps = warps[i / 2 % 2];
    cfg.stages = stages[i % 2];
    if (cfg.block_m / cfg.warps != 16) continue;
    if (cfg.block_n == 128 && desc->head_dim > 64) continue;
    if (!memcmp(&cfg, &d, sizeof cfg)) continue;
    add_cuda(c, n, cap, desc, &cfg);
  }
  /* The warpgroup kernel's tiles, on sm_90 only. */
  for (i = 0; sm == 90 && i < 4; i++) {
    memset(&cfg, 0, sizeof cfg);
    cfg.block_m = i < 2 ? 128 : 64, cfg.block_n = i % 2 ? 64 : 128;
    cfg.warps = cfg.block_m / 16, cfg.stages = 2, cfg.wgmma = 1;
    if (!memcmp(&cfg, &d, sizeof cfg)) continue;
    add_cuda(c, n, cap, desc, &cfg);
  }
  *out = c;
  return HATTN_OK;
}

/* ---- statistics and selection ------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The Q-quantile of N sorted samples, interpolated. */
static double quantile(const double *s, int n, double q) {
  double pos = q * (n - 1), f = floor(pos);
  int i = (int)f;
  if (i + 1 >= n) return s[n - 1];
  return s[i] + (pos - f) * (s[i + 1] - s[i]);
}

void hattn__tune_stats(double *samples, int n, double *median, double *iqr) {
  if (n <= 0) {
    *median = *iqr = 0;
    return;
  }
  qsort(samples, (size_t)n, sizeof *samples, cmp_double);
  *median = quantile(samples, n, 0.5);
  *iqr = quantile(samples, n, 0.75) - quantile(samples, n, 0.25);
}

int hattn__tune_select(const hattn__tune_cand *c, int n, int *fastest) {
  int i, f = -1;
  for (i = 0; i < n; i++)
    if (c[i].status == HATTN__CAND_TIMED && (f < 0 || c[i].median_us < c[f].median_us)) f = i;
  if (fastest) *fastest = f;
  if (f < 0) return -1;
  for (i = 0; i < n; i++) {
    double tol;
    if (c[i].status != HATTN__CAND_TIMED) continue;
    tol = fmax(c[i].spread_us, c[f].spread_us);
    tol = fmin(tol, MAX_SLOWER * c[f].median_us);
    if (c[i].median_us <= c[f].median_us + tol) return i;
  }
  return f;
}

static const hattn__tune_cand *find_cand(const hattn__tune_result *r, const char *config) {
  int i;
  for (i = 0; i < r->ncands; i++)
    if (!strcmp(r->cands[i].config, config)) return &r->cands[i];
  return NULL;
}

/* Whether, in R, candidate OTHER is within the measured spread of R's winner. */
static int within(const hattn__tune_result *r, const char *other) {
  const hattn__tune_cand *w = &r->cands[r->winner], *o = find_cand(r, other);
  if (o == NULL || o->status != HATTN__CAND_TIMED) return 0;
  return fabs(o->median_us - w->median_us) <= fmax(o->spread_us, w->spread_us);
}

int hattn__tune_agree(const hattn__tune_result *a, const hattn__tune_result *b) {
  const char *wa, *wb;
  if (a->winner < 0 || b->winner < 0) return HATTN__TUNE_DIFFER;
  wa = a->cands[a->winner].config;
  wb = b->cands[b->winner].config;
  if (!strcmp(wa, wb)) return HATTN__TUNE_SAME;
  return within(a, wb) || within(b, wa) ? HATTN__TUNE_WITHIN : HATTN__TUNE_DIFFER;
}

/* ---- problems and inputs ------------------------------------------------------------ */

/* One set of host tensors of a shape: Q, K, V, O in the dtype, LSE float32. */
typedef struct tset {
  void *q, *k, *v, *o;
  float *lse;
  void *dq, *dk, *dv, *dout, *dl;  /* device copies (cuda) */
} tset;

typedef struct tproblem {
  hattn__shape shape;
  hattn__mask_env env;
  int64_t *offsets;
  size_t nq, nkv, nlse;
  int nsets;
  tset sets[MAX_SETS];
  double *qd, *kd, *vd, *oref, *lref;  /* the gate's doubles and reference */
} tproblem;

static void tproblem_free(tproblem *t, hattn__cuda *cu) {
  int i;
  for (i = 0; i < MAX_SETS; i++) {
    free(t->sets[i].q), free(t->sets[i].k), free(t->sets[i].v), free(t->sets[i].o), free(t->sets[i].lse);
    if (cu) {
      hattn__cuda_free(cu, t->sets[i].dq), hattn__cuda_free(cu, t->sets[i].dk);
      hattn__cuda_free(cu, t->sets[i].dv), hattn__cuda_free(cu, t->sets[i].dout);
      hattn__cuda_free(cu, t->sets[i].dl);
    }
  }
  free(t->offsets);
  free(t->qd), free(t->kd), free(t->vd), free(t->oref), free(t->lref);
  memset(t, 0, sizeof *t);
}

/* Shape and run-time data of T for pattern P: packed documents of a
** quarter of the keys for document(); random() needs nothing; blocks()
** and topk() are refused. */
static int tproblem_init(tproblem *t, const hattn__pattern *p, const hattn__shape *s, char *err, size_t errlen) {
  int64_t doc, n, i;
  memset(t, 0, sizeof *t);
  t->shape = *s;
  t->env.lq = s->lq, t->env.lk = s->lk, t->env.batch = s->batch, t->env.heads = s->heads;
  if (p->needs & (HATTN_NEEDS_BLOCKS | HATTN_NEEDS_TOPK)) {
    snprintf(err, errlen, "the tuner cannot make up the run-time data of '%s' (blocks() and topk() patterns "
             "are not tuned yet); it runs with the default configuration", p->name);
    return HATTN_ENOTSUP;
  }
  if (p->needs & HATTN_NEEDS_DOCUMENT) {
    doc = s->lk / 4 > 0 ? s->lk / 4 : 1;
    n = (s->lk + doc - 1) / doc;
    if ((t->offsets = malloc((size_t)(n + 1) * sizeof *t->offsets)) == NULL) goto nomem;
    for (i = 0; i < n; i++) t->offsets[i] = i * doc;
    t->offsets[n] = s->lk;
    t->env.doc_offsets = t->offsets;
    t->env.ndocs = n;
  }
  t->nq = (size_t)(s->batch * s->heads * s->lq * s->head_dim);
  t->nkv = (size_t)(s->batch * s->kv_heads * s->lk * s->head_dim);
  t->nlse = (size_t)(s->batch * s->heads * s->lq);
  return HATTN_OK;
nomem:
  snprintf(err, errlen, "out of memory");
  return HATTN_ENOMEM;
}

/* Draw NSETS input sets (uniform in [-1, 1), rounded to DTYPE) from SEED;
** with WANT_REF, also the doubles of set 0 and the float64 reference. */
static int tproblem_inputs(tproblem *t, const hattn__pattern *p, int nlayouts, hattn_dtype dtype, int nsets,
                           int want_ref, uint64_t seed, char *err, size_t errlen) {
  size_t esz = (size_t)hattn__dtype_size(dtype), j;
  uint64_t st = seed;
  int i;
  t->nsets = nsets;
  for (i = 0; i < nsets; i++) {
    tset *s = &t->sets[i];
    s->q = malloc(t->nq * esz + 1), s->k = malloc(t->nkv * esz + 1), s->v = malloc(t->nkv * esz + 1);
    s->o = malloc(t->nq * esz + 1), s->lse = malloc(t->nlse * sizeof(float) + 1);
    if (!s->q || !s->k || !s->v || !s->o || !s->lse) goto nomem;
    for (j = 0; j < t->nq; j++) hattn__elem_set(s->q, dtype, j, (float)(hattn__splitmix64(&st) >> 40) * 0x1p-23f - 1.0f);
    for (j = 0; j < t->nkv; j++) hattn__elem_set(s->k, dtype, j, (float)(hattn__splitmix64(&st) >> 40) * 0x1p-23f - 1.0f);
    for (j = 0; j < t->nkv; j++) hattn__elem_set(s->v, dtype, j, (float)(hattn__splitmix64(&st) >> 40) * 0x1p-23f - 1.0f);
  }
  if (!want_ref) return HATTN_OK;
  t->qd = malloc(t->nq * sizeof(double) + 1), t->kd = malloc(t->nkv * sizeof(double) + 1);
  t->vd = malloc(t->nkv * sizeof(double) + 1), t->oref = malloc(t->nq * sizeof(double) + 1);
  t->lref = malloc(t->nlse * sizeof(double) + 1);
  if (!t->qd || !t->kd || !t->vd || !t->oref || !t->lref) goto nomem;
  for (j = 0; j < t->nq; j++) t->qd[j] = hattn__elem_get(t->sets[0].q, dtype, j);
  for (j = 0; j < t->nkv; j++) t->kd[j] = hattn__elem_get(t->sets[0].k, dtype, j);
  for (j = 0; j < t->nkv; j++) t->vd[j] = hattn__elem_get(t->sets[0].v, dtype, j);
  return hattn__reference(p, &t->shape, &t->env, nlayouts, t->qd, t->kd, t->vd, t->oref, t->lref, err, errlen);
nomem:
  snprintf(err, errlen, "out of memory for the tuning inputs");
  return HATTN_ENOMEM;
}

/* How many input sets to rotate among for a problem of SET_BYTES a set. */
static int sets_for(size_t set_bytes) {
  size_t n = (ROTATE_BYTES + set_bytes - 1) / (set_bytes ? set_bytes : 1);
  if (n > MAX_SETS) n = MAX_SETS;
  if (n < 1) n = 1;
  if (n > 1 && set_bytes * n > ((size_t)4 << 30)) n = 1;
  return (int)n;
}

/* The gate's verdict on O and LSE of set 0 of G: 0 when within the dtype's
** tolerance, else -1 with the reason in C->why. */
static int gate_check(tproblem *g, hattn_dtype dtype, const hattn__tune_opts *opt, hattn__tune_cand *c) {
  double *od = malloc(g->nq * sizeof *od + 1), *ld = malloc(g->nlse * sizeof *ld + 1), eo, el;
  double tol = dtype == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2;
  size_t j;
  if (!od || !ld) {
    free(od), free(ld);
    snprintf(c->why, sizeof c->why, "out of memory in the gate");
    return -1;
  }
  if (opt->hooks.corrupt) opt->hooks.corrupt(opt->hooks.ctx, c, g->sets[0].o, g->nq, dtype);
  for (j = 0; j < g->nq; j++) od[j] = hattn__elem_get(g->sets[0].o, dtype, j);
  for (j = 0; j < g->nlse; j++) ld[j] = g->sets[0].lse[j];
  eo = hattn__rel_error(od, g->oref, g->nq);
  el = hattn__rel_error(ld, g->lref, g->nlse);
  free(od), free(ld);
  c->gate_err = eo;
  if (eo <= tol && el <= tol) return 0;
  snprintf(c->why, sizeof c->why, "wrong on the gate problem: error of O %.3g, of LSE %.3g (tolerance %g)", eo,
           el, tol);
  return -1;
}

/* ---- progress ------------------------------------------------------------------------ */

static void progress(const hattn__tune_opts *opt, const hattn__tune_result *r, int i, int done) {
  const hattn__tune_cand *c = &r->cands[i];
  int bar = opt->progress == 1 || (opt->progress == -1 && isatty(2)), best, k, width = 24;
  char line[512], bestbuf[160] = "none yet";
  if (opt->progress == 2) return;
  best = hattn__tune_select(r->cands, r->ncands, NULL);
  if (best >= 0) snprintf(bestbuf, sizeof bestbuf, "%.1f us (%s)", r->cands[best].median_us, r->cands[best].config);
  if (bar) {
    int fill = (i + done) * width / (r->ncands ? r->ncands : 1), n = 0;
    for (k = 0; k < width; k++) line[n++] = k < fill ? '#' : '.';
    line[n] = '\0';
    fprintf(stderr, "\r\033[K[%s] candidate %d of %d: %s | best %s", line, i + 1, r->ncands, c->config, bestbuf);
  } else if (done) {
    if (c->status == HATTN__CAND_TIMED)
      fprintf(stderr, "hattn tune: candidate %d of %d: %s: %.1f us (spread %.1f) | best %s\n", i + 1, r->ncands,
              c->config, c->median_us, c->spread_us, bestbuf);
    else
      fprintf(stderr, "hattn tune: candidate %d of %d: %s: %s%s%s | best %s\n", i + 1, r->ncands, c->config,
              hattn__cand_status_name(c->status), c->why[0] ? ": " : "", c->why, bestbuf);
  }
  fflush(stderr);
}

/* End the bar's line. */
static void progress_end(const hattn__tune_opts *opt) {
  if (opt->progress == 1 || (opt->progress == -1 && isatty(2))) fputc('\n', stderr);
}

/* How many timed runs candidate C gets: OPT's reps, fewer (not below 5)
** when the rest of the budget, shared by the LEFT candidates still to run,
** does not hold them at SAMPLE_S seconds each. */
static int reps_for(const hattn__tune_opts *opt, double t0, double sample_s, int left) {
  int reps = opt->reps > 0 ? opt->reps : 15;
  double share;
  if (opt->budget_s <= 0) return reps;
  share = (opt->budget_s - (now_s() - t0)) / (left > 0 ? left : 1);
  if (sample_s > 0 && share / sample_s < reps) reps = (int)(share / sample_s);
  return reps < 5 ? 5 : reps;
}

/* Run the fake timer of the hooks for C, when set: 1 when it did. */
static int fake_time(const hattn__tune_opts *opt, hattn__tune_cand *c) {
  double s[64];
  int n;
  if (opt->hooks.timer == NULL) return 0;
  n = opt->hooks.timer(opt->hooks.ctx, c, s, 64);
  if (n < 1) n = 1;
  c->reps = n;
  hattn__tune_stats(s, n, &c->median_us, &c->spread_us);
  c->min_us = s[0];
  c->status = HATTN__CAND_TIMED;
  return 1;
}

/* ---- CPU --------------------------------------------------------------------------------- */

typedef struct pool_slot {
  int threads;
  hattn__pool *pool;
} pool_slot;

/* The shapes of P's gate (one batch entry, at most two KV heads, at most
** GATE_LEN positions) and of its timed problem. */
static void problem_shapes(const hattn__tune_problem *p, hattn__shape *gate, hattn__shape *timed) {
  gate->kv_heads = p->kv_heads < 2 ? p->kv_heads : 2;
  gate->heads = gate->kv_heads * (p->heads / p->kv_heads);
  gate->batch = 1;
  gate->lq = p->lq < GATE_LEN ? p->lq : GATE_LEN;
  gate->lk = p->lk < GATE_LEN ? p->lk : GATE_LEN;
  gate->head_dim = p->head_dim;
  timed->batch = p->batch, timed->heads = p->heads, timed->kv_heads = p->kv_heads;
  timed->lq = p->lq, timed->lk = p->lk, timed->head_dim = p->head_dim;
}

static int tune_cpu(const hattn__tune_problem *p, const hattn__tune_opts *opt, hattn__tune_result *r, char *err,
                    size_t errlen) {
  const hattn__kc_host *host;
  hattn__jit *jit = NULL;
  pool_slot pools[4];
  int npools = 0, rc, i, j, cores;
  tproblem g, m;
  hattn__shape gs, ms;
  hattn_cpu_kernel_desc desc;
  hattn__tensor tq, tk, tv, to, tl, gq, gk, gv, go, gl;
  double t0 = now_s(), *samples = NULL;
  size_t esz = (size_t)hattn__dtype_size(p->dtype), j2;

  memset(&g, 0, sizeof g), memset(&m, 0, sizeof m);
  if ((rc = hattn__kc_host_cpu(&host, err, errlen)) != HATTN_OK) return rc;
  snprintf(r->target, sizeof r->target, "%s", host->target);
  snprintf(r->model, sizeof r->model, "%s", host->model);
  snprintf(r->compiler, sizeof r->compiler, "%s", host->compiler);
  cores = opt->max_threads > 0 ? opt->max_threads : host->cores;
  if ((rc = hattn__tune_space_cpu(p->head_dim, host->vec, cores, &r->cands, &r->ncands)) != HATTN_OK) {
    snprintf(err, errlen, "out of memory");
    return rc;
  }
  if ((rc = hattn__jit_create(&jit, err, errlen)) != HATTN_OK) return rc;
  desc.pattern = p->pattern, desc.dtype = p->dtype, desc.head_dim = p->head_dim;

  problem_shapes(p, &gs, &ms);
  if ((rc = tproblem_init(&g, p->pattern, &gs, err, errlen)) != HATTN_OK ||
      (rc = tproblem_inputs(&g, p->pattern, p->nlayouts, p->dtype, 1, 1, opt->seed ? opt->seed : 42, err, errlen)) !=
          HATTN_OK ||
      (rc = tproblem_init(&m, p->pattern, &ms, err, errlen)) != HATTN_OK)
    goto done;
  if (opt->hooks.timer == NULL &&
      (rc = tproblem_inputs(&m, p->pattern, p->nlayouts, p->dtype,
                            sets_for((2 * m.nq + 2 * m.nkv) * esz + m.nlse * 4), 0,
                            (opt->seed ? opt->seed : 42) + 1, err, errlen)) != HATTN_OK)
    goto done;
  if ((samples = malloc(256 * sizeof *samples)) == NULL) {
    rc = HATTN_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  hattn__tensor_strides(&gs, &gq, &gk, &gv, &go, &gl);
  hattn__tensor_strides(&ms, &tq, &tk, &tv, &to, &tl);

  for (i = 0; i < r->ncands; i++) {
    hattn__tune_cand *c = &r->cands[i];
    hattn__pool *pool = NULL;
    hattn__cpu_problem *mprob = NULL;
    hattn_cpu_fn fn;
    double t, ts;
    int reps, warm = opt->warmup > 0 ? opt->warmup : 2;

    if (opt->budget_s > 0 && now_s() - t0 > opt->budget_s && i > 0) {
      c->status = HATTN__CAND_SKIPPED;
      r->budget_hit = 1;
      continue;
    }
    progress(opt, r, i, 0);
    for (j = 0; j < npools; j++)
      if (pools[j].threads == c->threads) pool = pools[j].pool;
    if (pool == NULL && npools < 4) {
      if (hattn__pool_create(c->threads, &pool) != HATTN_OK) pool = NULL;
      else pools[npools].threads = c->threads, pools[npools++].pool = pool;
    }
    if (pool == NULL) {
      c->status = HATTN__CAND_FAILED;
      snprintf(c->why, sizeof c->why, "cannot start %d threads", c->threads);
      goto next;
    }
    if (hattn__jit_compile(jit, &desc, &c->cpu, &fn, c->why, sizeof c->why) != HATTN_OK) {
      c->status = HATTN__CAND_FAILED;
      goto next;
    }
    /* The gate: NaN-poisoned outputs, the small problem, the reference. */
    for (j2 = 0; j2 < g.nq; j2++) hattn__elem_set(g.sets[0].o, p->dtype, j2, NAN);
    for (j2 = 0; j2 < g.nlse; j2++) g.sets[0].lse[j2] = NAN;
    gq.data = g.sets[0].q, gk.data = g.sets[0].k, gv.data = g.sets[0].v, go.data = g.sets[0].o,
    gl.data = g.sets[0].lse;
    if (hattn__cpu_forward(fn, &desc, &c->cpu, &gs, &g.env, &gq, &gk, &gv, &go, &gl, pool, c->why,
                           sizeof c->why) != HATTN_OK) {
      c->status = HATTN__CAND_FAILED;
      goto next;
    }
    if (gate_check(&g, p->dtype, opt, c) != 0) {
      c->status = HATTN__CAND_WRONG;
      goto next;
    }
    if (fake_time(opt, c)) goto next;
    /* Timing: the problem made once (plan and tables), warm-up, then one
    ** launch a sample, rotating the input sets. */
    if (hattn__cpu_problem_create(&desc, &c->cpu, &ms, &m.env, &mprob, c->why, sizeof c->why) != HATTN_OK) {
      c->status = HATTN__CAND_FAILED;
      goto next;
    }
    ts = now_s();
    for (j = 0; j < warm; j++) {
      tset *s = &m.sets[j % m.nsets];
      tq.data = s->q, tk.data = s->k, tv.data = s->v, to.data = s->o, tl.data = s->lse;
      if (hattn__cpu_launch(fn, mprob, &tq, &tk, &tv, &to, &tl, pool, c->why, sizeof c->why) != HATTN_OK) {
        c->status = HATTN__CAND_FAILED;
        goto next;
      }
    }
    reps = reps_for(opt, t0, (now_s() - ts) / warm, r->ncands - i);
    if (reps > 256) reps = 256;
    for (j = 0; j < reps; j++) {
      tset *s = &m.sets[(j + warm) % m.nsets];
      tq.data = s->q, tk.data = s->k, tv.data = s->v, to.data = s->o, tl.data = s->lse;
      t = now_s();
      if (hattn__cpu_launch(fn, mprob, &tq, &tk, &tv, &to, &tl, pool, c->why, sizeof c->why) != HATTN_OK) {
        c->status = HATTN__CAND_FAILED;
        goto next;
      }
      samples[j] = (now_s() - t) * 1e6;
    }
    c->reps = reps;
    hattn__tune_stats(samples, reps, &c->median_us, &c->spread_us);
    c->min_us = samples[0];
    c->status = HATTN__CAND_TIMED;
  next:
    hattn__cpu_problem_destroy(mprob);
    progress(opt, r, i, 1);
  }
  progress_end(opt);
  r->winner = hattn__tune_select(r->cands, r->ncands, &r->fastest);
  rc = HATTN_OK;
  if (r->winner < 0) {
    snprintf(err, errlen, "no candidate passed the gate (the first: %s)", r->cands[0].why);
    rc = HATTN_ECOMPILE;
  }
done:
  free(samples);
  tproblem_free(&g, NULL);
  tproblem_free(&m, NULL);
  for (j = 0; j < npools; j++) hattn__pool_destroy(pools[j].pool);
  hattn__jit_destroy(jit);
  return rc;
}

/* ---- CUDA ------------------------------------------------------------------------------- */

/* Upload the sets of T to the device (O and LSE allocated, not filled). */
static int upload_sets(hattn__cuda *cu, tproblem *t, size_t esz, char *err, size_t errlen) {
  int i;
  for (i = 0; i < t->nsets; i++) {
    tset *s = &t->sets[i];
    if (hattn__cuda_alloc(cu, t->nq * esz, &s->dq, err, errlen) != HATTN_OK ||
        hattn__cuda_alloc(cu, t->nkv * esz, &s->dk, err, errlen) != HATTN_OK ||
        hattn__cuda_alloc(cu, t->nkv * esz, &s->dv, err, errlen) != HATTN_OK ||
        hattn__cuda_alloc(cu, t->nq * esz, &s->dout, err, errlen) != HATTN_OK ||
        hattn__cuda_alloc(cu, t->nlse * sizeof(float), &s->dl, err, errlen) != HATTN_OK ||
        hattn__cuda_upload(cu, s->dq, s->q, t->nq * esz, err, errlen) != HATTN_OK ||
        hattn__cuda_upload(cu, s->dk, s->k, t->nkv * esz, err, errlen) != HATTN_OK ||
        hattn__cuda_upload(cu, s->dv, s->v, t->nkv * esz, err, errlen) != HATTN_OK)
      return HATTN_ENOMEM;
  }
  return HATTN_OK;
}

static void dev_tensors(const tset *s, hattn__tensor *tq, hattn__tensor *tk, hattn__tensor *tv, hattn__tensor *to,
                        hattn__tensor *tl) {
  tq->data = s->dq, tk->data = s->dk, tv->data = s->dv, to->data = s->dout, tl->data = s->dl;
}

static int tune_cuda(const hattn__tune_problem *p, const hattn__tune_opts *opt, hattn__tune_result *r, char *err,
                     size_t errlen) {
  hattn__cuda *cu = opt->cu;
  hattn__kc_gpu gpu;
  hattn_cuda_kernel_desc desc;
  tproblem g, m;
  hattn__shape gs, ms;
  hattn__tensor tq, tk, tv, to, tl;
  size_t esz = (size_t)hattn__dtype_size(p->dtype), flush_bytes = (size_t)128 << 20;
  void *flush = NULL;
  double t0 = now_s(), *samples = NULL;
  int rc, i, j;

  memset(&g, 0, sizeof g), memset(&m, 0, sizeof m);
  if (cu == NULL) {
    snprintf(err, errlen, "the cuda backend needs an open device");
    return HATTN_EINVAL;
  }
  hattn__kc_gpu_identity(cu, &gpu);
  snprintf(r->target, sizeof r->target, "%s", gpu.arch);
  snprintf(r->model, sizeof r->model, "%s", gpu.model);
  snprintf(r->compiler, sizeof r->compiler, "%s", gpu.compiler);
  desc.pattern = p->pattern, desc.dtype = p->dtype, desc.head_dim = p->head_dim;
  if ((rc = hattn__tune_space_cuda(&desc, hattn__cuda_sm(cu), &r->cands, &r->ncands)) != HATTN_OK) {
    snprintf(err, errlen, "out of memory");
    return rc;
  }
  if (r->ncands == 0) {
    snprintf(err, errlen, "no CUDA configuration suits %s at head dim %d", hattn__dtype_name(p->dtype), p->head_dim);
    return HATTN_ENOTSUP;
  }
  problem_shapes(p, &gs, &ms);
  if ((rc = tproblem_init(&g, p->pattern, &gs, err, errlen)) != HATTN_OK ||
      (rc = tproblem_inputs(&g, p->pattern, p->nlayouts, p->dtype, 1, 1, opt->seed ? opt->seed : 42, err, errlen)) !=
          HATTN_OK ||
      (rc = tproblem_init(&m, p->pattern, &ms, err, errlen)) != HATTN_OK ||
      (rc = tproblem_inputs(&m, p->pattern, p->nlayouts, p->dtype,
                            opt->hooks.timer ? 0 : sets_for((2 * m.nq + 2 * m.nkv) * esz), 0,
                            (opt->seed ? opt->seed : 42) + 1, err, errlen)) != HATTN_OK ||
      (rc = upload_sets(cu, &g, esz, err, errlen)) != HATTN_OK || (rc = upload_sets(cu, &m, esz, err, errlen)) != HATTN_OK)
    goto done;
  /* A small problem fits in L2 even rotated: write a buffer larger than
  ** L2 before each timed run. */
  if (m.nsets * (2 * m.nq + 2 * m.nkv) * esz < flush_bytes && hattn__cuda_alloc(cu, flush_bytes, &flush, err, errlen) != HATTN_OK)
    flush = NULL;
  if ((samples = malloc(256 * sizeof *samples)) == NULL) {
    rc = HATTN_ENOMEM;
    goto done;
  }
  for (i = 0; i < r->ncands; i++) {
    hattn__tune_cand *c = &r->cands[i];
    hattn__cuda_kernel *kern = NULL;
    hattn__cuda_plan *gplan = NULL, *mplan = NULL;
    double ms1;
    int reps, warm = opt->warmup > 0 ? opt->warmup : 3;

    if (opt->budget_s > 0 && now_s() - t0 > opt->budget_s && i > 0) {
      c->status = HATTN__CAND_SKIPPED;
      r->budget_hit = 1;
      continue;
    }
    progress(opt, r, i, 0);
    c->status = HATTN__CAND_FAILED;
    if (hattn__cuda_kernel_get(cu, &desc, &c->cuda, &kern, c->why, sizeof c->why) != HATTN_OK ||
        hattn__cuda_plan_create(cu, &desc, &c->cuda, &gs, &g.env, &gplan, c->why, sizeof c->why) != HATTN_OK)
      goto next;
    dev_tensors(&g.sets[0], &tq, &tk, &tv, &to, &tl);
    hattn__tensor_strides(&gs, &tq, &tk, &tv, &to, &tl);
    if (hattn__cuda_memset(cu, g.sets[0].dout, 0xff, g.nq * esz, c->why, sizeof c->why) != HATTN_OK ||
        hattn__cuda_memset(cu, g.sets[0].dl, 0xff, g.nlse * sizeof(float), c->why, sizeof c->why) != HATTN_OK ||
        hattn__cuda_launch(kern, gplan, &gs, &tq, &tk, &tv, &to, &tl, NULL, c->why, sizeof c->why) != HATTN_OK ||
        hattn__cuda_sync(cu, c->why, sizeof c->why) != HATTN_OK ||
        hattn__cuda_download(cu, g.sets[0].o, g.sets[0].dout, g.nq * esz, c->why, sizeof c->why) != HATTN_OK ||
        hattn__cuda_download(cu, g.sets[0].lse, g.sets[0].dl, g.nlse * sizeof(float), c->why, sizeof c->why) !=
            HATTN_OK)
      goto next;
    if (gate_check(&g, p->dtype, opt, c) != 0) {
      c->status = HATTN__CAND_WRONG;
      goto next;
    }
    if (fake_time(opt, c)) goto next;
    if (hattn__cuda_plan_create(cu, &desc, &c->cuda, &ms, &m.env, &mplan, c->why, sizeof c->why) != HATTN_OK)
      goto next;
    /* Device events around one launch a sample, after a warm-up; input
    ** sets rotated and L2 flushed before each. */
    dev_tensors(&m.sets[0], &tq, &tk, &tv, &to, &tl);
    hattn__tensor_strides(&ms, &tq, &tk, &tv, &to, &tl);
    if (hattn__cuda_time(kern, mplan, &ms, &tq, &tk, &tv, &to, &tl, warm, 1, &ms1, c->why, sizeof c->why) != HATTN_OK)
      goto next;
    reps = reps_for(opt, t0, ms1 * 1e-3 + 50e-6, r->ncands - i);
    if (reps > 256) reps = 256;
    for (j = 0; j < reps; j++) {
      dev_tensors(&m.sets[j % m.nsets], &tq, &tk, &tv, &to, &tl);
      if ((flush && hattn__cuda_memset(cu, flush, j & 0xff, flush_bytes, c->why, sizeof c->why) != HATTN_OK) ||
          hattn__cuda_time(kern, mplan, &ms, &tq, &tk, &tv, &to, &tl, 0, 1, &samples[j], c->why, sizeof c->why) !=
              HATTN_OK)
        goto next;
      samples[j] *= 1e3;
    }
    c->reps = reps;
    hattn__tune_stats(samples, reps, &c->median_us, &c->spread_us);
    c->min_us = samples[0];
    c->status = HATTN__CAND_TIMED;
    c->why[0] = '\0';
  next:
    hattn__cuda_plan_destroy(gplan);
    hattn__cuda_plan_destroy(mplan);
    progress(opt, r, i, 1);
  }
  progress_end(opt);
  r->winner = hattn__tune_select(r->cands, r->ncands, &r->fastest);
  rc = HATTN_OK;
  if (r->winner < 0) {
    snprintf(err, errlen, "no candidate passed the gate (the first: %s)", r->cands[0].why);
    rc = HATTN_ECOMPILE;
  }
done:
  free(samples);
  hattn__cuda_free(cu, flush);
  tproblem_free(&g, cu);
  tproblem_free(&m, cu);
  return rc;
}

/* The configuration of candidate C as the backend tables take it. */
static void cand_config(const hattn__tune_cand *c, hattn__config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->cpu = c->cpu;
  cfg->threads = c->threads;
  cfg->cuda = c->cuda;
}

/* ---- entry points ------------------------------------------------------------------------- */

int hattn__tune_run(hattn__backend backend, const hattn__tune_problem *p, const hattn__tune_opts *opt,
                    hattn__tune_result *r, char *err, size_t errlen) {
  double t0 = now_s();
  int rc;
  memset(r, 0, sizeof *r);
  r->backend = backend;
  r->winner = r->fastest = -1;
  if (p->kv_heads < 1 || p->heads % p->kv_heads != 0 || p->lq < 1 || p->lk < 1 || p->batch < 1) {
    snprintf(err, errlen, "bad problem shape for tuning");
    return HATTN_ESHAPE;
  }
  /* The timing loops differ: wall clock over the thread pool, device
  ** events with the L2 flushed in between. */
  rc = backend == HATTN__BACKEND_CUDA ? tune_cuda(p, opt, r, err, errlen) : tune_cpu(p, opt, r, err, errlen);
  r->elapsed_s = now_s() - t0;
  hattn__db_bucket(p->lk, p->batch * p->heads, &r->lk_log2, &r->bh_class);
  if (r->target[0]) hattn__kc_key(p->pattern->canon, p->dtype, p->head_dim, backend, r->target, NULL, r->kclass);
  if (r->winner >= 0) {
    const hattn__backend_i *be = hattn__backend_get(backend);
    hattn__config cfg;
    char text[96];
    cand_config(&r->cands[r->winner], &cfg);
    be->config_text(&cfg, 0, text, sizeof text);
    hattn__kc_key(p->pattern->canon, p->dtype, p->head_dim, backend, r->target, text, r->winner_key);
  }
  return rc;
}

int hattn__tune_store(hattn__db *db, const hattn__tune_problem *p, const hattn__tune_opts *opt,
                      const hattn__tune_result *r, char *err, size_t errlen) {
  const hattn__backend_i *be = hattn__backend_get(r->backend);
  const hattn__tune_cand *w;
  hattn__kernel_desc desc;
  hattn__config cfg;
  hattn__ident id;
  hattn__db_kernel k;
  hattn__db_tuning t;
  hattn__db_candidate *cands;
  void *dev = NULL, *own = NULL, *kern = NULL;
  char text[96];
  int rc, i, n = 0;

  if (r->winner < 0) {
    snprintf(err, errlen, "the tuning has no winner to store");
    return HATTN_EINVAL;
  }
  if (be == NULL || be->compile == NULL) {
    snprintf(err, errlen, "the %s backend compiles nothing here", be ? be->name : "unknown");
    return HATTN_ENOTSUP;
  }
  w = &r->cands[r->winner];
  /* The device the tuning ran on: the open GPU, or a CPU device of our own. */
  dev = r->backend == HATTN__BACKEND_CUDA ? (void *)opt->cu : NULL;
  if (dev == NULL && r->backend == HATTN__BACKEND_CUDA) {
    snprintf(err, errlen, "the cuda backend needs an open device");
    return HATTN_EINVAL;
  }
  if (dev == NULL) {
    if ((rc = be->dev_open(0, -1, &own, err, errlen)) != HATTN_OK) return rc;
    dev = own;
  }
  be->ident(dev, &id);
  desc.pattern = p->pattern, desc.dtype = p->dtype, desc.head_dim = p->head_dim;
  cand_config(w, &cfg);
  be->config_text(&cfg, 0, text, sizeof text);
  /* The winner's binary: a CPU object compiled again (named after the
  ** winner's key), or the cubin the timed kernel was loaded from (the
  ** device's cache holds it). */
  memset(&k, 0, sizeof k);
  if ((rc = be->compile(dev, &desc, &cfg, r->winner_key, &kern, err, errlen)) != HATTN_OK) goto done;
  be->binary(kern, &k.binary, &k.size);
  k.backend = be->name;
  k.key = r->winner_key;
  k.canon = p->pattern->canon;
  k.target = r->target;
  k.config = text;
  k.compiler = r->compiler;
  if ((rc = hattn__db_kernel_put(db, &k, err, errlen)) != HATTN_OK) goto done;

  if ((cands = calloc((size_t)r->ncands + 1, sizeof *cands)) == NULL) {
    snprintf(err, errlen, "out of memory");
    rc = HATTN_ENOMEM;
    goto done;
  }
  for (i = 0; i < r->ncands; i++) {
    if (r->cands[i].status != HATTN__CAND_TIMED) continue;
    cands[n].config = r->cands[i].config;
    cands[n].time_us = r->cands[i].median_us;
    cands[n].spread_us = r->cands[i].spread_us;
    n++;
  }
  memset(&t, 0, sizeof t);
  t.kernel_class = r->kclass;
  t.compiler = r->compiler;
  t.lk_log2 = r->lk_log2;
  t.bh_class = r->bh_class;
  t.winner = w->config;
  t.winner_us = w->median_us;
  t.ncandidates = n;
  t.candidates = cands;
  rc = hattn__db_tuning_put(db, &id.device, &t, err, errlen);
  free(cands);
done:
  if (own) be->dev_close(own);
  return rc;
}
