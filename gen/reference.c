/*
** reference.c: float64 attention, the judge of every backend.  See
** reference.h.  One row at a time: scores of every visible key, a softmax
** with the row maximum subtracted, then the weighted sum of values.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "reference.h"

/* The score of one (query, key) pair after the pattern's modifiers. */
static double modified_score(const hattn__pattern *p, double dot, double scale, double slope,
                             int64_t qpos, int64_t kpos) {
  double s = dot * scale;
  if (p->softcap > 0) s = p->softcap * tanh(s / p->softcap);
  if (p->alibi != HATTN_ALIBI_NONE) s += slope * (double)(kpos - qpos);
  return s;
}

int hattn__reference(const hattn__pattern *p, const hattn__shape *shape,
                     const hattn__mask_env *env, int nlayouts_in_spec,
                     const double *q, const double *k, const double *v,
                     double *o, double *lse, char *err, size_t errlen) {
  int64_t B = shape->batch, H = shape->heads, HK = shape->kv_heads;
  int64_t LQ = shape->lq, LK = shape->lk, D = shape->head_dim;
  int64_t b, h, i, j, c;
  double scale, *s = NULL;
  char *vis = NULL;
  int rc;

  if (B < 1 || H < 1 || HK < 1 || LQ < 0 || LK < 0 || D < 1 || H % HK != 0) {
    snprintf(err, errlen,
             "bad shape: batch %lld, heads %lld, kv_heads %lld, lq %lld, lk %lld, head_dim %lld "
             "(all positive, lengths may be 0, heads a multiple of kv_heads)",
             (long long)B, (long long)H, (long long)HK, (long long)LQ, (long long)LK, (long long)D);
    return HATTN_ESHAPE;
  }
  if (env->lq != LQ || env->lk != LK || env->heads != H || env->batch != B) {
    snprintf(err, errlen, "the run-time data was made for another shape");
    return HATTN_EINPUT;
  }
  rc = hattn__mask_env_check(p->lowered, env, nlayouts_in_spec, err, errlen);
  if (rc != HATTN_OK) return rc;

  s = malloc(((size_t)LK + 1) * sizeof *s);
  vis = malloc((size_t)LK + 1);
  if (s == NULL || vis == NULL) {
    snprintf(err, errlen, "out of memory for a row of %lld keys", (long long)LK);
    rc = HATTN_ENOMEM;
    goto done;
  }
  scale = p->scale > 0 ? p->scale : 1.0 / sqrt((double)D);

  for (b = 0; b < B; b++) {
    for (h = 0; h < H; h++) {
      int64_t kh = h / (H / HK), bh = b * H + h;
      const double *Q = q + (bh * LQ) * D;
      const double *K = k + ((b * HK + kh) * LK) * D;
      const double *V = v + ((b * HK + kh) * LK) * D;
      double *O = o + (bh * LQ) * D;
      double slope = hattn__env_slope(p, env, h, H);
      double sink = env->sink_logits ? (double)env->sink_logits[h] : -INFINITY;
      for (i = 0; i < LQ; i++) {
        int64_t qpos = i + hattn__env_qpos0(env), kpos0 = hattn__env_kpos0(env);
        double mx = -INFINITY, sum = 0;
        int nan = 0;
        for (j = 0; j < LK; j++) {
          double dot = 0;
          vis[j] = (char)hattn__mask_visible(p->lowered, i, j, bh, env);
          if (!vis[j]) continue;
          for (c = 0; c < D; c++) dot += Q[i * D + c] * K[j * D + c];
          s[j] = modified_score(p, dot, scale, slope, qpos, j + kpos0);
          nan |= isnan(s[j]);
          if (s[j] > mx) mx = s[j];
        }
        for (c = 0; c < D; c++) O[i * D + c] = 0;
        if (nan) { /* a NaN in Q or K that the row sees: the row is NaN */
          for (c = 0; c < D; c++) O[i * D + c] = NAN;
          if (lse) lse[bh * LQ + i] = NAN;
          continue;
        }
        if (sink > mx) mx = sink; /* the sink is one more logit, with no value */
        if (mx == -INFINITY) {    /* the row sees no key */
          if (lse) lse[bh * LQ + i] = -INFINITY;
          continue;
        }
        if (sink > -INFINITY) sum = exp(sink - mx);
        for (j = 0; j < LK; j++) {
          if (!vis[j]) continue;
          s[j] = exp(s[j] - mx);
          sum += s[j];
        }
        for (j = 0; j < LK; j++) {
          if (!vis[j]) continue;
          for (c = 0; c < D; c++) O[i * D + c] += s[j] / sum * V[j * D + c];
        }
        if (lse) lse[bh * LQ + i] = mx + log(sum);
      }
    }
  }
  rc = HATTN_OK;
done:
  free(s);
  free(vis);
  return rc;
}

double hattn__rel_error(const double *x, const double *ref, size_t n) {
  double num = 0, den = 0;
  size_t i;
  for (i = 0; i < n; i++) {
    double dx = x[i] - ref[i];
    if (isnan(ref[i])) { /* a NaN input reached this value: so must it in X */
      if (!isnan(x[i])) return INFINITY;
      continue;
    }
    if (isnan(x[i])) return INFINITY;
    if (isinf(ref[i]) || isinf(x[i])) { /* -inf LSE of an empty row must match exactly */
      if (x[i] != ref[i]) return INFINITY;
      continue;
    }
    num += dx * dx;
    den += ref[i] * ref[i];
  }
  if (den == 0) return num == 0 ? 0.0 : INFINITY;
  return sqrt(num / den);
}

int hattn__reference_varlen(const hattn__pattern *p, const hattn__shape *shape,
                            const hattn__mask_env *env, int nlayouts_in_spec,
                            const int32_t *q_lens, const int32_t *k_lens,
                            const double *q, const double *k, const double *v,
                            double *o, double *lse, char *err, size_t errlen) {
  int64_t B = shape->batch, H = shape->heads, HK = shape->kv_heads, LQ = shape->lq, LK = shape->lk,
          D = shape->head_dim, b, h, r;
  double *q1 = malloc((size_t)(H * LQ * D + 1) * sizeof *q1), *o1 = malloc((size_t)(H * LQ * D + 1) * sizeof *o1);
  double *k1 = malloc((size_t)(HK * LK * D + 1) * sizeof *k1), *v1 = malloc((size_t)(HK * LK * D + 1) * sizeof *v1);
  double *l1 = malloc((size_t)(H * LQ + 1) * sizeof *l1);
  int st = HATTN_OK;
  if (!q1 || !o1 || !k1 || !v1 || !l1) {
    snprintf(err, errlen, "out of memory for the reference");
    st = HATTN_ENOMEM;
    goto done;
  }
  for (b = 0; b < B && st == HATTN_OK; b++) {
    hattn__shape sh = *shape;
    hattn__mask_env e = *env;
    int64_t lq = q_lens ? q_lens[b] : LQ, lk = k_lens ? k_lens[b] : LK;
    sh.batch = e.batch = 1;
    sh.lq = e.lq = lq;
    sh.lk = e.lk = lk;
    for (h = 0; h < H; h++) memcpy(q1 + h * lq * D, q + ((b * H + h) * LQ) * D, (size_t)(lq * D) * sizeof *q1);
    for (h = 0; h < HK; h++) {
      memcpy(k1 + h * lk * D, k + ((b * HK + h) * LK) * D, (size_t)(lk * D) * sizeof *k1);
      memcpy(v1 + h * lk * D, v + ((b * HK + h) * LK) * D, (size_t)(lk * D) * sizeof *v1);
    }
    st = hattn__reference(p, &sh, &e, nlayouts_in_spec, q1, k1, v1, o1, l1, err, errlen);
    for (h = 0; h < H && st == HATTN_OK; h++)
      for (r = 0; r < LQ; r++) {
        double *orow = o + ((b * H + h) * LQ + r) * D;
        if (r < lq) memcpy(orow, o1 + (h * lq + r) * D, (size_t)D * sizeof *orow);
        else memset(orow, 0, (size_t)D * sizeof *orow);
        if (lse != NULL) lse[(b * H + h) * LQ + r] = r < lq ? l1[h * lq + r] : -INFINITY;
      }
  }
done:
  free(q1), free(o1), free(k1), free(v1), free(l1);
  return st;
}
