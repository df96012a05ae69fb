/*
** report_measure.c: hattn report --measure: one attention layer of each
** pattern a model uses, timed on a backend with the kernel the runtime's
** lookup gives (this process, then the database, then a compile of the
** default configuration), for a prefill of the prompt and for one decode
** step at that context.  See tools.h (tool_measure_*).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "dtype.h"
#include "kernel_cache.h"
#include "tools.h"

/* Timed runs of one layer at most, and the warm-up the backend adds. */
#define MEASURE_REPS 5

struct tool_measure {
  const hattn__backend_i *be;
  void *dev;
  hattn__kcache *kc;
  hattn__ident id;
};

int tool_measure_open(const char *backend, const char *db, int threads, tool_measure **out) {
  tool_measure *mm = calloc(1, sizeof *mm);
  char err[4096];
  *out = NULL;
  if (mm == NULL) {
    fprintf(stderr, "hattn report: out of memory\n");
    return -1;
  }
  if ((mm->be = tool_backend("report", backend)) == NULL) goto fail;
  if (mm->be->dev_open(0, threads, &mm->dev, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn report: --measure: %s\n", err);
    goto fail;
  }
  mm->be->ident(mm->dev, &mm->id);
  {
    hattn__kcache_opts ko = {mm->be->id, db, 1, mm->dev};
    if (hattn__kcache_open(&ko, &mm->kc, err, sizeof err) != HATTN_OK) {
      fprintf(stderr, "hattn report: --measure: %s\n", err);
      goto fail;
    }
  }
  *out = mm;
  return 0;
fail:
  tool_measure_close(mm);
  return -1;
}

void tool_measure_close(tool_measure *mm) {
  if (mm == NULL) return;
  hattn__kcache_close(mm->kc);
  if (mm->dev != NULL) mm->be->dev_close(mm->dev);
  free(mm);
}

const char *tool_measure_device(const tool_measure *mm) { return mm->id.name; }

const char *tool_measure_backend(const tool_measure *mm) { return mm->be->name; }

int tool_measure_dtype(const tool_measure *mm, const hattn__model *m) {
  if (mm->be->dtypes & 1u << m->dtype) return 0;
  fprintf(stderr, "hattn report: --measure: the %s backend does not run %s, the dtype of model %s\n", mm->be->name,
          hattn__dtype_name(m->dtype), m->name);
  return -1;
}

/* How many timed runs: MEASURE_REPS, fewer where a run takes seconds. */
static int measure_reps(void *ctx, double sample_s) {
  (void)ctx;
  return sample_s > 2.0 ? 1 : sample_s > 0.5 ? 3 : MEASURE_REPS;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

int tool_measure_layer(tool_measure *mm, const hattn__spec *spec, const hattn__pattern *p, tool_rtdata *rt,
                       const hattn__model *m, int64_t batch, int64_t lq, int64_t lk, double *ms) {
  const hattn__backend_i *be = mm->be;
  hattn__shape shape = {batch, m->heads, m->kv_heads, lq, lk, m->head_dim};
  size_t esz = (size_t)hattn__dtype_size(m->dtype);
  size_t nq = (size_t)(batch * m->heads * lq * m->head_dim), nk = (size_t)(batch * m->kv_heads * lk * m->head_dim);
  hattn__mask_env env;
  hattn__kc_kernel *kk;
  hattn__tensor_set set;
  void *prob = NULL, *host = NULL;
  double samples[MEASURE_REPS];
  char err[16384];
  uint64_t state = 0x9e3779b97f4a7c15u;
  size_t i;
  int n = 0, rc = -1;

  memset(&set, 0, sizeof set);
  *ms = NAN;
  if (p->needs & HATTN_NEEDS_TOPK) {
    fprintf(stderr, "hattn report: --measure: pattern '%s' is routed by data (topk) at run time, which "
            "report does not stand in for when it times layers\n", p->name);
    return -1;
  }
  if (tool_rtdata_env(rt, spec, p, lq, lk, &env)) return -1;
  env.batch = batch, env.heads = m->heads;
  if (hattn__kcache_get(mm->kc, p, m->dtype, m->head_dim, lq, lk, batch * m->heads, &kk, err, sizeof err) !=
      HATTN_OK) {
    fprintf(stderr, "hattn report: --measure: the kernel of '%s': %s\n", p->name, err);
    return -1;
  }
  if ((host = malloc((nq > nk ? nq : nk) * esz + 1)) == NULL) {
    snprintf(err, sizeof err, "out of memory for %zu elements", nq > nk ? nq : nk);
    goto done;
  }
  /* Inputs uniform in [-1, 1). */
  for (i = 0; i < (nq > nk ? nq : nk); i++) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    hattn__elem_set(host, m->dtype, i, (float)((double)(state >> 40) / (double)(1 << 24) * 2 - 1));
  }
  if (be->problem_create(mm->dev, &kk->desc, &kk->cfg, &shape, &env, &prob, err, sizeof err) != HATTN_OK ||
      be->mem_alloc(mm->dev, nq * esz, &set.q.data, err, sizeof err) != HATTN_OK ||
      be->mem_alloc(mm->dev, nk * esz, &set.k.data, err, sizeof err) != HATTN_OK ||
      be->mem_alloc(mm->dev, nk * esz, &set.v.data, err, sizeof err) != HATTN_OK ||
      be->mem_alloc(mm->dev, nq * esz, &set.o.data, err, sizeof err) != HATTN_OK ||
      be->mem_upload(mm->dev, set.q.data, host, nq * esz, err, sizeof err) != HATTN_OK ||
      be->mem_upload(mm->dev, set.k.data, host, nk * esz, err, sizeof err) != HATTN_OK ||
      be->mem_upload(mm->dev, set.v.data, host, nk * esz, err, sizeof err) != HATTN_OK)
    goto done;
  hattn__tensor_strides(&shape, &set.q, &set.k, &set.v, &set.o, &set.lse);
  set.lse.data = NULL;
  if (be->time(mm->dev, kk->kern, prob, &kk->desc, &kk->cfg, &set, 1, 0, measure_reps, NULL, MEASURE_REPS, samples,
               &n, err, sizeof err) != HATTN_OK)
    goto done;
  if (n < 1) {
    snprintf(err, sizeof err, "no timed run");
    goto done;
  }
  qsort(samples, (size_t)n, sizeof *samples, cmp_double);
  *ms = (n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2])) / 1e3;
  rc = 0;
done:
  if (rc != 0)
    fprintf(stderr, "hattn report: --measure: pattern '%s' at %lld x %lld: %s\n", p->name, (long long)lq,
            (long long)lk, err);
  if (set.q.data != NULL) be->mem_free(mm->dev, set.q.data);
  if (set.k.data != NULL) be->mem_free(mm->dev, set.k.data);
  if (set.v.data != NULL) be->mem_free(mm->dev, set.v.data);
  if (set.o.data != NULL) be->mem_free(mm->dev, set.o.data);
  if (prob != NULL) be->problem_destroy(prob);
  free(host);
  return rc;
}
