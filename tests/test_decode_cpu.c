/*
** test_decode_cpu.c: the CPU decode kernels (1 to 16 query rows, the
** module's NAME_decode, runtime/cpu_run.c's split-KV launch and merge)
** through the public API.
**   - hattn_forward and a plan run twice (hattn_run, or hattn_run_paged)
**     against the float64 reference (hattn_reference) for lq 1, 2, 5 and
**     16, GQA (8 heads over 2) and MHA (4 over 4, head dim 72: a partial
**     vector), fp32 / fp16 / bf16, for dense, causal, causal & window,
**     causal & (window | sink), document & causal, softcap, ALiBi, learned
**     sink logits, query and key offsets, paged K and V, and routed top-k
**     blocks (a plan per head, so one head a work item); lk not a
**     multiple of the key block; each run counted as a decode launch;
**   - lk 0, 1 and 3, and rows that see no key (O 0, LSE -inf);
**   - HATTN_CPU_DECODE=0 runs the forward kernel (no decode launch), and
**     both agree.
** Fresh random inputs on every run (HATTN_TEST_SEED replays), outputs
** poisoned (NaN) before each kernel runs, per-dtype tolerances (relative
** Frobenius error).  Exits 77 (skip) when hattn was built without LLVM.
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "cpu.h"
#include "dtype.h"
#include "reference.h"

static uint64_t g_seed;
static hattn_ctx *g_ctx;

#include "testutil.h"
#include "api_main.h"

static void setup(void) {
  hattn_options opt;
  hattn_options_init(&opt);
  opt.db = "";
  opt.quiet = 1;
  opt.threads = 2;
  ck_assert_int_eq(hattn_open(&opt, &g_ctx), HATTN_OK);
  unsetenv("HATTN_CPU_DECODE");
}

static void teardown(void) {
  hattn_close(g_ctx);
  g_ctx = NULL;
  unsetenv("HATTN_CPU_DECODE");
}

static double tolerance(hattn__dtype dt) { return dt == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2; }

static hattn_eltype eltype(hattn__dtype dt) {
  return dt == HATTN_DTYPE_BF16 ? HATTN_BF16 : dt == HATTN_DTYPE_FP16 ? HATTN_FP16 : HATTN_FP32;
}

/* One decode case: the pattern (with its modifiers) and what it runs with. */
typedef struct dcase {
  const char *name, *mask;
  int sinks;                    /* learned sink logits */
  int docs;                     /* document offsets */
  int offsets;                  /* q_offset, k_offset */
  int paged;                    /* K and V in a pool of 16-key pages */
  int topk;                     /* routed blocks (a plan per head: one head a work item) */
} dcase;

static const dcase g_cases[] = {
  {"dense", "full", 0, 0, 0, 0, 0},
  {"causal", "causal", 0, 0, 0, 0, 0},
  {"window", "causal & window(37)", 0, 0, 0, 0, 0},
  {"window | sink", "causal & (window(37) | sink(4))", 0, 0, 0, 0, 0},
  {"document", "document & causal", 0, 1, 0, 0, 0},
  {"softcap", "causal with softcap(5)", 0, 0, 0, 0, 0},
  {"alibi", "causal & window(50) with alibi", 0, 0, 0, 0, 0},
  {"sinks", "causal & window(37)", 1, 0, 0, 0, 0},
  {"offsets", "causal & (window(37) | sink(4))", 0, 0, 1, 0, 0},
  {"paged", "causal & window(37)", 1, 0, 0, 1, 0},
  {"topk", "causal & (topk(2) | window(20))", 0, 0, 0, 0, 1},
};
#define NCASES ((int)(sizeof g_cases / sizeof g_cases[0]))

/* The kernel of MASK for the shape. */
static hattn_kernel *kernel(const char *mask, hattn__dtype dt, int64_t b, int64_t h, int64_t hk, int64_t lq,
                            int64_t lk, int64_t d) {
  char text[512];
  hattn_specfile *spec = NULL;
  hattn_kernel *kern = NULL;
  hattn_problem pr;
  int rc;
  snprintf(text, sizeof text, "pattern p = %s\n", mask);
  rc = hattn_specfile_parse(g_ctx, text, strlen(text), "t", &spec);
  ck_assert_msg(rc == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  pr.batch = b, pr.heads = h, pr.kv_heads = hk, pr.lq = lq, pr.lk = lk, pr.head_dim = d;
  pr.dtype = eltype(dt);
  rc = hattn_kernel_get(g_ctx, spec, "p", &pr, &kern);
  ck_assert_msg(rc == HATTN_OK, "kernel '%s': %s", mask, hattn_errmsg(g_ctx));
  hattn_specfile_destroy(spec);
  return kern;
}

/* A problem: logical Q [b, h, lq, d], K and V [b, hk, lk, d]; the pools
** (NHD, PAGE keys a page, unused pages NaN) and block table when paged; O,
** LSE; the reference RO, RL; the inputs. */
typedef struct prob {
  const dcase *c;
  hattn__dtype dt;
  int64_t b, h, hk, lq, lk, d;
  int64_t sq[4], sk[4], sl[3], sp[4], sbt[2];
  int64_t page, cols, npages;
  void *q, *k, *v, *o, *kp, *vp;
  float *lse, *sink;
  int32_t *bt, *routes;
  double *ro, *rl;
  int64_t doc[4];
  hattn_paged_kv pk;
  hattn_inputs in, in_ref;
  DLTensor tq, tk, tv, to, tl, tkp, tvp, tbt;
} prob;

static size_t nq_of(const prob *p) { return (size_t)(p->b * p->h * p->lq * p->d); }
static size_t nl_of(const prob *p) { return (size_t)(p->b * p->h * p->lq); }

static void prob_make(prob *p, const dcase *c, rng *r, hattn__dtype dt, int64_t b, int64_t h, int64_t hk,
                      int64_t lq, int64_t lk, int64_t d) {
  size_t es = api_esize(dt), nq, nk, i;
  int64_t x, kh, t;
  memset(p, 0, sizeof *p);
  p->c = c, p->dt = dt, p->b = b, p->h = h, p->hk = hk, p->lq = lq, p->lk = lk, p->d = d;
  p->sq[0] = b, p->sq[1] = h, p->sq[2] = lq, p->sq[3] = d;
  p->sk[0] = b, p->sk[1] = hk, p->sk[2] = lk, p->sk[3] = d;
  p->sl[0] = b, p->sl[1] = h, p->sl[2] = lq;
  nq = nq_of(p), nk = (size_t)(b * hk * lk * d);
  p->q = malloc(nq * es + 1), p->o = malloc(nq * es + 1), p->lse = malloc(nl_of(p) * sizeof(float) + 1);
  p->k = malloc(nk * es + 1), p->v = malloc(nk * es + 1);
  p->ro = malloc(nq * sizeof(double) + 1), p->rl = malloc(nl_of(p) * sizeof(double) + 1);
  p->sink = malloc((size_t)h * sizeof(float));
  ck_assert(p->q && p->o && p->lse && p->k && p->v && p->ro && p->rl && p->sink);
  for (i = 0; i < nq; i++) put(p->q, i, dt, 2 * rng_unit(r));
  for (i = 0; i < nk; i++) put(p->k, i, dt, 2 * rng_unit(r)), put(p->v, i, dt, rng_unit(r));
  for (x = 0; x < h; x++) p->sink[x] = x == 1 ? -INFINITY : (float)(1.5 * rng_unit(r) + 0.5);
  api_host_tensor(&p->tq, p->q, api_dl_dtype(dt), 4, p->sq);
  api_host_tensor(&p->tk, p->k, api_dl_dtype(dt), 4, p->sk);
  api_host_tensor(&p->tv, p->v, api_dl_dtype(dt), 4, p->sk);
  api_host_tensor(&p->to, p->o, api_dl_dtype(dt), 4, p->sq);
  api_host_tensor(&p->tl, p->lse, api_dl_dtype(HATTN_DTYPE_FP32), 3, p->sl);
  if (c->sinks) p->in.sink_logits = p->sink;
  if (c->docs) {
    p->doc[0] = 0, p->doc[1] = lk / 3, p->doc[2] = lk / 3 + lk / 4, p->doc[3] = lk;
    p->in.doc_offsets = p->doc, p->in.ndocs = 3;
  }
  if (c->topk) {
    int64_t nb = (lk + 63) / 64, kk = nb < 2 ? nb : 2, n = b * h * nb * kk;
    p->routes = malloc((size_t)n * sizeof *p->routes + 1);
    ck_assert_ptr_nonnull(p->routes);
    for (x = 0; x < n; x++) p->routes[x] = rng_range(r, 0, 3) == 0 ? -1 : (int32_t)rng_range(r, 0, nb - 1);
    p->in.topk_blocks = p->routes, p->in.topk_k = kk;
  }
  if (c->offsets) {
    p->in.offsets_set = 1;
    p->in.q_offset = lk + 20 - lq;  /* queries past the keys' end, */
    p->in.k_offset = 7;             /* which start at 7 */
  }
  p->in_ref = p->in;
  if (c->paged) {
    int64_t *perm;
    p->page = 16;
    p->cols = (lk + p->page - 1) / p->page + 1;
    p->npages = b * p->cols + 2;
    p->sp[0] = p->npages, p->sp[1] = p->page, p->sp[2] = hk, p->sp[3] = d;
    p->sbt[0] = b, p->sbt[1] = p->cols;
    p->kp = malloc((size_t)(p->npages * p->page * hk * d) * es);
    p->vp = malloc((size_t)(p->npages * p->page * hk * d) * es);
    p->bt = malloc((size_t)(b * p->cols) * sizeof *p->bt);
    perm = malloc((size_t)p->npages * sizeof *perm);
    ck_assert(p->kp && p->vp && p->bt && perm);
    for (x = 0; x < p->npages; x++) perm[x] = x;
    for (x = p->npages - 1; x > 0; x--) {
      int64_t j = rng_range(r, 0, x), y = perm[x];
      perm[x] = perm[j], perm[j] = y;
    }
    for (x = 0; x < b * p->cols; x++) p->bt[x] = (int32_t)perm[x];
    free(perm);
    for (i = 0; i < (size_t)(p->npages * p->page * hk * d); i++) put(p->kp, i, dt, NAN), put(p->vp, i, dt, NAN);
    for (x = 0; x < b; x++)
      for (kh = 0; kh < hk; kh++)
        for (t = 0; t < lk; t++) {
          size_t src = (size_t)(((x * hk + kh) * lk + t) * d);
          size_t dst = (size_t)(((p->bt[x * p->cols + t / p->page] * p->page + t % p->page) * hk + kh) * d);
          memcpy((char *)p->kp + dst * es, (char *)p->k + src * es, (size_t)d * es);
          memcpy((char *)p->vp + dst * es, (char *)p->v + src * es, (size_t)d * es);
        }
    api_host_tensor(&p->tkp, p->kp, api_dl_dtype(dt), 4, p->sp);
    api_host_tensor(&p->tvp, p->vp, api_dl_dtype(dt), 4, p->sp);
    api_host_tensor(&p->tbt, p->bt, (DLDataType){kDLInt, 32, 1}, 2, p->sbt);
    p->pk.page_size = p->page;
    p->pk.layout = HATTN_PAGED_NHD;
    p->pk.block_table = &p->tbt;
    p->in.paged = &p->pk;
  }
}

static void prob_free(prob *p) {
  free(p->q), free(p->k), free(p->v), free(p->o), free(p->lse), free(p->ro), free(p->rl), free(p->sink);
  free(p->kp), free(p->vp), free(p->bt), free(p->routes);
}

/* The float64 reference of KERN on P's logical tensors into RO, RL. */
static void reference(hattn_kernel *kern, prob *p) {
  DLTensor to, tl;
  int rc;
  api_host_tensor(&to, p->ro, (DLDataType){kDLFloat, 64, 1}, 4, p->sq);
  api_host_tensor(&tl, p->rl, (DLDataType){kDLFloat, 64, 1}, 3, p->sl);
  rc = hattn_reference(kern, &p->tq, &p->tk, &p->tv, &to, &tl, &p->in_ref);
  ck_assert_msg(rc == HATTN_OK, "reference: %s", hattn_errmsg(g_ctx));
}

/* O and LSE poisoned with NaN. */
static void poison(prob *p) {
  size_t i;
  for (i = 0; i < nq_of(p); i++) put(p->o, i, p->dt, NAN);
  for (i = 0; i < nl_of(p); i++) p->lse[i] = NAN;
}

/* O and LSE against the reference; WHAT names the run. */
static void check(const prob *p, const char *what) {
  size_t nq = nq_of(p), nl = nl_of(p), i;
  double *xo = malloc(nq * sizeof *xo + 1), *xl = malloc(nl * sizeof *xl + 1), eo, el;
  ck_assert(xo && xl);
  for (i = 0; i < nq; i++) xo[i] = get(p->o, i, p->dt);
  for (i = 0; i < nl; i++) xl[i] = p->lse[i];
  eo = hattn__rel_error(xo, p->ro, nq);
  el = hattn__rel_error(xl, p->rl, nl);
  ck_assert_msg(eo <= tolerance(p->dt) && el <= tolerance(p->dt),
                "%s, %s, %s, b %" PRId64 " h %" PRId64 "/%" PRId64 " lq %" PRId64 " lk %" PRId64 " d %" PRId64
                ": error O %g, LSE %g (tolerance %g, seed %" PRIu64 ")",
                what, p->c->name, hattn__dtype_name(p->dt), p->b, p->h, p->hk, p->lq, p->lk, p->d, eo, el,
                tolerance(p->dt), g_seed);
  free(xo), free(xl);
}

/* One run of KERN on P through hattn_forward, poisoned first. */
static void run_forward(hattn_kernel *kern, prob *p) {
  int rc;
  poison(p);
  if (p->c->paged)
    rc = hattn_forward(kern, &p->tq, &p->tkp, &p->tvp, &p->to, &p->tl, &p->in, NULL);
  else
    rc = hattn_forward(kern, &p->tq, &p->tk, &p->tv, &p->to, &p->tl, &p->in, NULL);
  ck_assert_msg(rc == HATTN_OK, "forward: %s", hattn_errmsg(g_ctx));
}

/* hattn_forward, then a plan run twice, each a decode launch checked
** against the reference. */
static void run_case(const dcase *c, rng *r, hattn__dtype dt, int64_t b, int64_t h, int64_t hk, int64_t lq,
                     int64_t lk, int64_t d) {
  hattn_kernel *kern = kernel(c->mask, dt, b, h, hk, lq, lk, d);
  hattn_plan *plan = NULL;
  prob p;
  long n0;
  int run, rc;
  prob_make(&p, c, r, dt, b, h, hk, lq, lk, d);
  reference(kern, &p);
  n0 = hattn__cpu_decode_launches();
  run_forward(kern, &p);
  ck_assert_msg(hattn__cpu_decode_launches() == n0 + 1, "%s lq %" PRId64 ": not a decode launch", c->name, lq);
  check(&p, "hattn_forward");
  {
    hattn_inputs pin = p.in;
    hattn_paged_kv pk = p.pk;
    if (c->paged) {
      pk.block_table = NULL;
      pin.paged = &pk;
    }
    ck_assert_msg(hattn_plan_create(kern, &pin, &plan) == HATTN_OK, "%s", hattn_errmsg(g_ctx));
  }
  for (run = 0; run < 2; run++) {
    poison(&p);
    if (c->paged)
      rc = hattn_run_paged(plan, &p.tq, &p.tkp, &p.tvp, &p.tbt, &p.to, &p.tl, NULL);
    else
      rc = hattn_run(plan, &p.tq, &p.tk, &p.tv, &p.to, &p.tl, NULL);
    ck_assert_msg(rc == HATTN_OK, "run: %s", hattn_plan_errmsg(plan));
    check(&p, "plan");
  }
  ck_assert_msg(hattn__cpu_decode_launches() == n0 + 3, "%s: plan runs were not decode launches", c->name);
  hattn_plan_destroy(plan);
  prob_free(&p);
  hattn_kernel_destroy(kern);
}

/* Case _i: every dtype, lq 1, 2, 5, 16, GQA and MHA, lk random (rarely a
** multiple of the key block). */
START_TEST(against_reference) {
  static const hattn__dtype dts[3] = {HATTN_DTYPE_FP32, HATTN_DTYPE_FP16, HATTN_DTYPE_BF16};
  static const int64_t lqs[4] = {1, 2, 5, 16};
  rng r = {g_seed ^ (0xdec0de + (uint64_t)_i)};
  const dcase *c = &g_cases[_i];
  int t, l;
  for (t = 0; t < 3; t++)
    for (l = 0; l < 4; l++) {
      int64_t lk = rng_range(&r, 70, 400);
      run_case(c, &r, dts[t], 2, 8, 2, lqs[l], lk, 64);
      run_case(c, &r, dts[t], 1, 4, 4, lqs[l], lk + 1, 72);
    }
}
END_TEST

/* lk 0, 1 and 3: rows that see nothing get O 0 and LSE -inf (or the sink). */
START_TEST(tiny) {
  rng r = {g_seed ^ 0x71e7};
  static const int64_t lks[3] = {0, 1, 3};
  int i, c;
  for (c = 0; c < NCASES; c++) {
    if (g_cases[c].docs || g_cases[c].paged || g_cases[c].topk) continue;
    for (i = 0; i < 3; i++) {
      run_case(&g_cases[c], &r, HATTN_DTYPE_FP32, 1, 8, 2, 1, lks[i], 64);
      if (lks[i] > 0) run_case(&g_cases[c], &r, HATTN_DTYPE_BF16, 2, 4, 4, 5, lks[i], 64);
    }
  }
}
END_TEST

/* HATTN_CPU_DECODE=0: the forward kernel runs (no decode launch), and both
** paths agree with each other and the reference. */
START_TEST(decode_off) {
  rng r = {g_seed ^ 0x0ff};
  const dcase *c = &g_cases[_i];
  hattn__dtype dt = _i % 2 ? HATTN_DTYPE_BF16 : HATTN_DTYPE_FP32;
  int64_t lk = rng_range(&r, 100, 500);
  hattn_kernel *kern = kernel(c->mask, dt, 2, 8, 2, 3, lk, 64);
  prob p;
  void *dec;
  size_t nq, i;
  long n0;
  prob_make(&p, c, &r, dt, 2, 8, 2, 3, lk, 64);
  nq = nq_of(&p);
  reference(kern, &p);
  n0 = hattn__cpu_decode_launches();
  run_forward(kern, &p);
  ck_assert(hattn__cpu_decode_launches() == n0 + 1);
  check(&p, "decode");
  dec = malloc(nq * api_esize(dt));
  ck_assert_ptr_nonnull(dec);
  memcpy(dec, p.o, nq * api_esize(dt));
  setenv("HATTN_CPU_DECODE", "0", 1);
  run_forward(kern, &p);
  unsetenv("HATTN_CPU_DECODE");
  ck_assert_msg(hattn__cpu_decode_launches() == n0 + 1, "HATTN_CPU_DECODE=0 still ran the decode kernel");
  check(&p, "HATTN_CPU_DECODE=0");
  {
    double *a = malloc(nq * sizeof *a), *bb = malloc(nq * sizeof *bb), e;
    ck_assert(a && bb);
    for (i = 0; i < nq; i++) a[i] = get(dec, i, dt), bb[i] = get(p.o, i, dt);
    e = hattn__rel_error(a, bb, nq);
    ck_assert_msg(e <= tolerance(dt), "%s: decode and forward differ by %g", c->name, e);
    free(a), free(bb);
  }
  free(dec);
  prob_free(&p);
  hattn_kernel_destroy(kern);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("decode_cpu");
  TCase *tc = tcase_create("decode");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, against_reference, 0, NCASES);
  tcase_add_test(tc, tiny);
  tcase_add_loop_test(tc, decode_off, 0, NCASES);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return api_main(suite, &g_seed); }
