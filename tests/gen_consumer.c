/*
** gen_consumer.c: a program that uses kernels written by `hattn gen`
** without LLVM.  It includes the generated hattn_kernels.h, links the
** generated object files and the non-LLVM part of hattn (spec, mask, plan,
** reference), and for every kernel of the table: reads the pattern back
** from its canonical text (the key must match), builds the plan for the
** kernel's blocks, calls the kernel for every (head, query block) on random
** fp32 inputs with NaN-poisoned outputs, and compares O and LSE with the
** float64 reference.  Exits 0 when every kernel is within 1e-5 (relative
** Frobenius error), 1 otherwise, 77 when the table holds no fp32 kernel.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "hattn_kernels.h"
#include "mask.h"
#include "plan.h"
#include "reference.h"
#include "spec.h"

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Run kernel G on one problem of LQ queries and LK keys; returns 0 when it
** matches the reference, 1 when not, -1 on a setup failure. */
static int check_kernel(const hattn_gen_kernel *g, int64_t lq, int64_t lk, uint64_t seed) {
  const int64_t B = 2, H = 4, HK = 2, D = g->head_dim;
  size_t nq = (size_t)(B * H * lq * D), nk = (size_t)(B * HK * lk * D), nl = (size_t)(B * H * lq), i;
  float *q = NULL, *k = NULL, *v = NULL, *o = NULL, *lse = NULL, *slopes = NULL, *scratch = NULL;
  double *qd = NULL, *kd = NULL, *vd = NULL, *od = NULL, *ld = NULL, *og = NULL, *lg = NULL, eo, el;
  char *text = NULL, err[512];
  hattn__spec *spec = NULL;
  hattn__plan *plan = NULL;
  hattn__mask_env env;
  hattn__shape shape = {B, H, HK, lq, lk, D};
  hattn_cpu_args a;
  int64_t bh, qb;
  int rc = -1;
  size_t tlen;

  /* The pattern, read back from the table's canonical text. */
  tlen = strlen(g->canon) + 32;
  if ((text = malloc(tlen)) == NULL) goto done;
  snprintf(text, tlen, "pattern p = %s\n", g->canon);
  if (hattn__spec_parse(text, strlen(text), "canon", &spec, NULL) != HATTN_OK) {
    fprintf(stderr, "%s: the canonical text '%s' does not parse\n", g->symbol, g->canon);
    goto done;
  }
  if (spec->patterns[0].key != g->key || strcmp(spec->patterns[0].canon, g->canon) != 0) {
    fprintf(stderr, "%s: the canonical text reads back as '%s' (key %016llx, table %016llx)\n", g->symbol,
            spec->patterns[0].canon, (unsigned long long)spec->patterns[0].key,
            (unsigned long long)g->key);
    goto done;
  }
  if (g->needs != 0) {
    printf("skip %s (%s): needs run-time data\n", g->pattern, g->canon);
    rc = 0;
    goto done;
  }

  memset(&env, 0, sizeof env);
  env.lq = lq;
  env.lk = lk;
  env.batch = B;
  env.heads = H;
  if (hattn__plan_build(spec->patterns[0].lowered, &env, g->bm, g->bn, &plan, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "%s: plan: %s\n", g->symbol, err);
    goto done;
  }

  q = malloc(nq * sizeof *q), o = malloc(nq * sizeof *o), k = malloc(nk * sizeof *k);
  v = malloc(nk * sizeof *v), lse = malloc(nl * sizeof *lse), slopes = malloc((size_t)H * sizeof *slopes);
  qd = malloc(nq * sizeof *qd), od = malloc(nq * sizeof *od), og = malloc(nq * sizeof *og);
  kd = malloc(nk * sizeof *kd), vd = malloc(nk * sizeof *vd);
  ld = malloc(nl * sizeof *ld), lg = malloc(nl * sizeof *lg);
  scratch = aligned_alloc(64, (g->scratch_bytes + 63) / 64 * 64 + 64);
  if (!q || !o || !k || !v || !lse || !slopes || !qd || !od || !og || !kd || !vd || !ld || !lg || !scratch)
    goto done;
  for (i = 0; i < nq; i++) qd[i] = q[i] = (float)(splitmix64(&seed) >> 40) * 0x1p-23f - 1.0f;
  for (i = 0; i < nk; i++) kd[i] = k[i] = (float)(splitmix64(&seed) >> 40) * 0x1p-23f - 1.0f;
  for (i = 0; i < nk; i++) vd[i] = v[i] = (float)(splitmix64(&seed) >> 40) * 0x1p-23f - 1.0f;
  for (i = 0; i < nq; i++) o[i] = NAN;
  for (i = 0; i < nl; i++) lse[i] = NAN;
  for (bh = 0; bh < H; bh++) slopes[bh] = (float)hattn__alibi_slope(&spec->patterns[0], bh, H);

  memset(&a, 0, sizeof a);
  a.q = q, a.k = k, a.v = v, a.o = o, a.lse = lse;
  a.q_stride[0] = a.o_stride[0] = H * lq * D;
  a.q_stride[1] = a.o_stride[1] = lq * D;
  a.q_stride[2] = a.o_stride[2] = D;
  a.k_stride[0] = a.v_stride[0] = HK * lk * D;
  a.k_stride[1] = a.v_stride[1] = lk * D;
  a.k_stride[2] = a.v_stride[2] = D;
  a.q_stride[3] = a.k_stride[3] = a.v_stride[3] = a.o_stride[3] = 1;
  a.lse_stride[0] = H * lq;
  a.lse_stride[1] = lq;
  a.lse_stride[2] = 1;
  a.heads = H, a.kv_heads = HK, a.lq = lq, a.lk = lk;
  a.q_pos0 = lk - lq, a.k_pos0 = 0;
  a.scale = g->scale;
  a.alibi_slopes = g->alibi == 1 ? slopes : NULL;
  a.full_off = (const int64_t *const *)plan->full_off;
  a.full_idx = (const int32_t *const *)plan->full_idx;
  a.partial_off = (const int64_t *const *)plan->partial_off;
  a.partial_idx = (const int32_t *const *)plan->partial_idx;
  a.plan_per_head = plan->ntables > 1;
  for (bh = 0; bh < B * H; bh++)
    for (qb = 0; qb < plan->nqb; qb++) g->fn(&a, bh, qb, scratch);

  if (hattn__reference(&spec->patterns[0], &shape, &env, 0, qd, kd, vd, od, ld, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "%s: reference: %s\n", g->symbol, err);
    goto done;
  }
  for (i = 0; i < nq; i++) og[i] = o[i];
  for (i = 0; i < nl; i++) lg[i] = lse[i];
  eo = hattn__rel_error(og, od, nq);
  el = hattn__rel_error(lg, ld, nl);
  rc = eo <= 1e-5 && el <= 1e-5 ? 0 : 1;
  printf("%s %s (%s) %s at %lld x %lld, block %dx%d: error O %.3g LSE %.3g\n", rc ? "FAIL" : "ok",
         g->pattern, g->canon, g->symbol, (long long)lq, (long long)lk, g->bm, g->bn, eo, el);
done:
  if (rc < 0) fprintf(stderr, "%s: setup failed\n", g->symbol);
  free(q), free(k), free(v), free(o), free(lse), free(slopes), free(scratch);
  free(qd), free(kd), free(vd), free(od), free(ld), free(og), free(lg);
  free(text);
  hattn__plan_destroy(plan);
  hattn__spec_destroy(spec);
  return rc;
}

int main(void) {
  int i, ran = 0, bad = 0;
  for (i = 0; i < HATTN_GEN_NKERNELS; i++) {
    const hattn_gen_kernel *g = &hattn_gen_kernels[i];
    if (g->dtype_code != 0) continue;
    ran++;
    if (check_kernel(g, 300, 300, 1 + (uint64_t)i) != 0) bad++;   /* prefill, ragged last block */
    if (check_kernel(g, 77, 333, 100 + (uint64_t)i) != 0) bad++;  /* a chunk after a cache */
  }
  if (ran == 0) {
    printf("no fp32 kernel in hattn_kernels.h\n");
    return 77;
  }
  printf("%d kernels, %d failed\n", ran, bad);
  return bad ? 1 : 0;
}
