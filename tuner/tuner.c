/*
** tuner.c: the correctness gate, selection and storage of tunings, one
** loop over the backend table (backend.h): the backend gives the
** candidates, the device memory and the timing.  See tuner.h.
*/
#include <ctype.h>
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
  void *dq, *dk, *dv, *dout, *dl;  /* in the device's memory */
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

/* Free what T holds: host sets, and device sets in DEV of BE. */
static void tproblem_free(tproblem *t, const hattn__backend_i *be, void *dev) {
  int i;
  for (i = 0; i < MAX_SETS; i++) {
    free(t->sets[i].q), free(t->sets[i].k), free(t->sets[i].v), free(t->sets[i].o), free(t->sets[i].lse);
    be->mem_free(dev, t->sets[i].dq), be->mem_free(dev, t->sets[i].dk), be->mem_free(dev, t->sets[i].dv);
    be->mem_free(dev, t->sets[i].dout), be->mem_free(dev, t->sets[i].dl);
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
static int tproblem_inputs(tproblem *t, const hattn__pattern *p, int nlayouts, hattn__dtype dtype, int nsets,
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
static int gate_check(tproblem *g, hattn__dtype dtype, const hattn__tune_opts *opt, hattn__tune_cand *c) {
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

/* Progress on stderr after candidate I of R starts (DONE 0) or ends (DONE
** 1), the tuning having started at T0: the time elapsed, an estimate of
** what remains (the mean time a candidate took so far times the candidates
** left, at most what the budget leaves) and the best time so far (the
** fastest candidate timed, not the provisional winner). */
static void progress(const hattn__tune_opts *opt, const hattn__tune_result *r, int i, int done, double t0) {
  const hattn__tune_cand *c = &r->cands[i];
  int bar = opt->progress == 1 || (opt->progress == -1 && isatty(2)), fastest = -1, k, width = 24;
  double elapsed = now_s() - t0, left;
  char line[512], bestbuf[160] = "none yet", timebuf[96];
  if (opt->progress == 2) return;
  for (k = 0; k < r->ncands; k++)
    if (r->cands[k].status == HATTN__CAND_TIMED && (fastest < 0 || r->cands[k].median_us < r->cands[fastest].median_us))
      fastest = k;
  if (fastest >= 0)
    snprintf(bestbuf, sizeof bestbuf, "%.1f us (%s)", r->cands[fastest].median_us, r->cands[fastest].config);
  left = i + done > 0 ? elapsed / (i + done) * (r->ncands - i - done) : 0;
  if (opt->budget_s > 0 && left > opt->budget_s - elapsed) left = opt->budget_s - elapsed;
  if (left < 0) left = 0;
  if (i + done > 0) snprintf(timebuf, sizeof timebuf, "%.1f s elapsed, about %.1f s left", elapsed, left);
  else snprintf(timebuf, sizeof timebuf, "%.1f s elapsed", elapsed);
  if (bar) {
    int fill = (i + done) * width / (r->ncands ? r->ncands : 1), n = 0;
    for (k = 0; k < width; k++) line[n++] = k < fill ? '#' : '.';
    line[n] = '\0';
    fprintf(stderr, "\r\033[K[%s] candidate %d of %d: %s | %s | best so far %s", line, i + 1, r->ncands, c->config,
            timebuf, bestbuf);
  } else if (done) {
    if (c->status == HATTN__CAND_TIMED)
      fprintf(stderr, "hattn tune: candidate %d of %d: %s: %.1f us (spread %.1f) | %s | best so far %s\n", i + 1,
              r->ncands, c->config, c->median_us, c->spread_us, timebuf, bestbuf);
    else
      fprintf(stderr, "hattn tune: candidate %d of %d: %s: %s%s%s | %s | best so far %s\n", i + 1, r->ncands,
              c->config, hattn__cand_status_name(c->status), c->why[0] ? ": " : "", c->why, timebuf, bestbuf);
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


/* ---- the tuning loop ------------------------------------------------------------------ */

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

/* Copy the sets of T into the device's memory (O and LSE allocated, not
** filled) as tensors of T's shape in SETS (may be NULL); with DROP_HOST the
** host copies are freed once uploaded. */
static int upload_sets(const hattn__backend_i *be, void *dev, tproblem *t, size_t esz, int drop_host,
                       hattn__tensor_set *sets, char *err, size_t errlen) {
  int i;
  for (i = 0; i < t->nsets; i++) {
    tset *s = &t->sets[i];
    if (be->mem_alloc(dev, t->nq * esz, &s->dq, err, errlen) != HATTN_OK ||
        be->mem_alloc(dev, t->nkv * esz, &s->dk, err, errlen) != HATTN_OK ||
        be->mem_alloc(dev, t->nkv * esz, &s->dv, err, errlen) != HATTN_OK ||
        be->mem_alloc(dev, t->nq * esz, &s->dout, err, errlen) != HATTN_OK ||
        be->mem_alloc(dev, t->nlse * sizeof(float), &s->dl, err, errlen) != HATTN_OK ||
        be->mem_upload(dev, s->dq, s->q, t->nq * esz, err, errlen) != HATTN_OK ||
        be->mem_upload(dev, s->dk, s->k, t->nkv * esz, err, errlen) != HATTN_OK ||
        be->mem_upload(dev, s->dv, s->v, t->nkv * esz, err, errlen) != HATTN_OK)
      return HATTN_ENOMEM;
    if (drop_host) {
      free(s->q), free(s->k), free(s->v), free(s->o), free(s->lse);
      s->q = s->k = s->v = s->o = NULL, s->lse = NULL;
    }
    if (sets == NULL) continue;
    sets[i].q.data = s->dq, sets[i].k.data = s->dk, sets[i].v.data = s->dv;
    sets[i].o.data = s->dout, sets[i].lse.data = s->dl;
    hattn__tensor_strides(&t->shape, &sets[i].q, &sets[i].k, &sets[i].v, &sets[i].o, &sets[i].lse);
  }
  return HATTN_OK;
}

/* What the timing asks the tuner: how many samples, the budget left
** shared by the candidates still to run. */
typedef struct reps_ctx {
  const hattn__tune_opts *opt;
  double t0;
  int left;
} reps_ctx;

static int reps_cb(void *ctx, double sample_s) {
  const reps_ctx *x = ctx;
  return reps_for(x->opt, x->t0, sample_s, x->left);
}

/* The tuning itself, on DEV of BE: identity, candidates, then per
** candidate the gate, the timing and the verdict. */
static int tune(const hattn__backend_i *be, void *dev, const hattn__tune_problem *p, const hattn__tune_opts *opt,
                hattn__tune_result *r, char *err, size_t errlen) {
  hattn__kernel_desc desc;
  hattn__config *cfgs = NULL;
  hattn__ident id;
  hattn__tensor_set gset, msets[MAX_SETS];
  tproblem g, m;
  hattn__shape gs, ms;
  size_t esz = (size_t)hattn__dtype_size(p->dtype);
  double t0 = now_s(), *samples = NULL;
  char upper[16];
  int rc, i, j;

  memset(&g, 0, sizeof g), memset(&m, 0, sizeof m);
  be->ident(dev, &id);
  snprintf(r->target, sizeof r->target, "%s", id.target);
  snprintf(r->model, sizeof r->model, "%s", id.model);
  snprintf(r->compiler, sizeof r->compiler, "%s", id.compiler);
  desc.pattern = p->pattern, desc.dtype = p->dtype, desc.head_dim = p->head_dim;
  problem_shapes(p, &gs, &ms);
  if ((rc = be->config_candidates(dev, &desc, &ms, opt->max_threads, &cfgs, &r->ncands)) != HATTN_OK ||
      (r->cands = calloc((size_t)r->ncands + 1, sizeof *r->cands)) == NULL) {
    free(cfgs);
    r->ncands = 0;
    snprintf(err, errlen, "out of memory");
    return rc != HATTN_OK ? rc : HATTN_ENOMEM;
  }
  for (i = 0; i < r->ncands; i++) {
    r->cands[i].cfg = cfgs[i];
    be->config_text(&cfgs[i], cfgs[i].threads, r->cands[i].config, sizeof r->cands[i].config);
  }
  free(cfgs);
  if (r->ncands == 0) {
    for (j = 0; be->name[j] && j < (int)sizeof upper - 1; j++) upper[j] = (char)toupper((unsigned char)be->name[j]);
    upper[j] = '\0';
    snprintf(err, errlen, "no %s configuration suits %s at head dim %d", upper, hattn__dtype_name(p->dtype),
             p->head_dim);
    return HATTN_ENOTSUP;
  }
  memset(&gset, 0, sizeof gset), memset(msets, 0, sizeof msets);
  if ((rc = tproblem_init(&g, p->pattern, &gs, err, errlen)) != HATTN_OK ||
      (rc = tproblem_inputs(&g, p->pattern, p->nlayouts, p->dtype, 1, 1, opt->seed ? opt->seed : 42, err, errlen)) !=
          HATTN_OK ||
      (rc = tproblem_init(&m, p->pattern, &ms, err, errlen)) != HATTN_OK ||
      (rc = tproblem_inputs(&m, p->pattern, p->nlayouts, p->dtype,
                            opt->hooks.timer ? 0 : sets_for((2 * m.nq + 2 * m.nkv) * esz), 0,
                            (opt->seed ? opt->seed : 42) + 1, err, errlen)) != HATTN_OK ||
      (rc = upload_sets(be, dev, &g, esz, 0, &gset, err, errlen)) != HATTN_OK ||
      (rc = upload_sets(be, dev, &m, esz, 1, msets, err, errlen)) != HATTN_OK)
    goto done;
  if ((samples = malloc(256 * sizeof *samples)) == NULL) {
    rc = HATTN_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  for (i = 0; i < r->ncands; i++) {
    hattn__tune_cand *c = &r->cands[i];
    void *kern = NULL, *gprob = NULL, *mprob = NULL;
    char key[HATTN__KC_KEY_LEN], text[96];
    reps_ctx rx;
    int n;

    if (opt->budget_s > 0 && now_s() - t0 > opt->budget_s && i > 0) {
      c->status = HATTN__CAND_SKIPPED;
      r->budget_hit = 1;
      continue;
    }
    progress(opt, r, i, 0, t0);
    c->status = HATTN__CAND_FAILED;
    /* The gate: the kernel on the small problem, outputs poisoned with
    ** NaN bytes first, against the float64 reference. */
    be->config_text(&c->cfg, 0, text, sizeof text);
    hattn__kc_key(p->pattern->canon, p->dtype, p->head_dim, be->id, r->target, text, key);
    if (be->compile(dev, &desc, &c->cfg, key, &kern, c->why, sizeof c->why) != HATTN_OK ||
        be->problem_create(dev, &desc, &c->cfg, &gs, &g.env, &gprob, c->why, sizeof c->why) != HATTN_OK ||
        be->mem_set(dev, g.sets[0].dout, 0xff, g.nq * esz, c->why, sizeof c->why) != HATTN_OK ||
        be->mem_set(dev, g.sets[0].dl, 0xff, g.nlse * sizeof(float), c->why, sizeof c->why) != HATTN_OK ||
        be->launch(dev, kern, gprob, &gset.q, &gset.k, &gset.v, &gset.o, &gset.lse, NULL, c->why, sizeof c->why) !=
            HATTN_OK ||
        be->mem_download(dev, g.sets[0].o, g.sets[0].dout, g.nq * esz, c->why, sizeof c->why) != HATTN_OK ||
        be->mem_download(dev, g.sets[0].lse, g.sets[0].dl, g.nlse * sizeof(float), c->why, sizeof c->why) !=
            HATTN_OK)
      goto next;
    if (gate_check(&g, p->dtype, opt, c) != 0) {
      c->status = HATTN__CAND_WRONG;
      goto next;
    }
    if (fake_time(opt, c)) goto next;
    /* Timing: the problem made once (plan and tables), then the backend's
    ** own warm-up and samples, as many as the budget holds. */
    rx.opt = opt, rx.t0 = t0, rx.left = r->ncands - i;
    if (be->problem_create(dev, &desc, &c->cfg, &ms, &m.env, &mprob, c->why, sizeof c->why) != HATTN_OK ||
        be->time(dev, kern, mprob, &desc, &c->cfg, msets, m.nsets, opt->warmup, reps_cb, &rx, 256, samples, &n,
                 c->why, sizeof c->why) != HATTN_OK)
      goto next;
    c->reps = n;
    hattn__tune_stats(samples, n, &c->median_us, &c->spread_us);
    c->min_us = samples[0];
    c->status = HATTN__CAND_TIMED;
    c->why[0] = '\0';
  next:
    be->problem_destroy(gprob);
    be->problem_destroy(mprob);
    progress(opt, r, i, 1, t0);
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
  tproblem_free(&g, be, dev);
  tproblem_free(&m, be, dev);
  return rc;
}

/* ---- entry points ------------------------------------------------------------------------- */

int hattn__tune_run(hattn__backend backend, const hattn__tune_problem *p, const hattn__tune_opts *opt,
                    hattn__tune_result *r, char *err, size_t errlen) {
  const hattn__backend_i *be = hattn__backend_get(backend);
  void *dev = opt->dev, *own = NULL;
  double t0 = now_s();
  int rc;
  memset(r, 0, sizeof *r);
  r->backend = backend;
  r->winner = r->fastest = -1;
  if (p->kv_heads < 1 || p->heads % p->kv_heads != 0 || p->lq < 1 || p->lk < 1 || p->batch < 1) {
    snprintf(err, errlen, "bad problem shape for tuning");
    return HATTN_ESHAPE;
  }
  if (be == NULL || be->compile == NULL) {
    snprintf(err, errlen, "the %s backend compiles nothing here", be ? be->name : "unknown");
    return HATTN_ENOTSUP;
  }
  if (dev == NULL) {
    if ((rc = be->dev_open(0, opt->max_threads, &own, err, errlen)) != HATTN_OK) return rc;
    dev = own;
  }
  rc = tune(be, dev, p, opt, r, err, errlen);
  if (own) be->dev_close(own);
  r->elapsed_s = now_s() - t0;
  hattn__db_bucket(p->lk, p->batch * p->heads, &r->lk_log2, &r->bh_class);
  if (r->target[0]) hattn__kc_class(p->pattern->canon, p->dtype, p->head_dim, backend, r->target, p->lq, r->kclass);
  if (r->winner >= 0) {
    char text[96];
    be->config_text(&r->cands[r->winner].cfg, 0, text, sizeof text);
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
  /* The device the tuning ran on, or one of our own. */
  dev = opt->dev;
  if (dev == NULL) {
    if ((rc = be->dev_open(0, -1, &own, err, errlen)) != HATTN_OK) return rc;
    dev = own;
  }
  be->ident(dev, &id);
  desc.pattern = p->pattern, desc.dtype = p->dtype, desc.head_dim = p->head_dim;
  cfg = w->cfg;
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
  k.kernel_class = r->kclass;
  k.dtype = hattn__dtype_name(p->dtype);
  k.head_dim = p->head_dim;
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
