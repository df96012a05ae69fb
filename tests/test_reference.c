/*
** test_reference.c: the float64 reference against hand-computed cases, and
** the run-time helpers of mask.c (random blocks, top-k routing).  Values
** are drawn fresh every run (seed printed; HATTN_TEST_SEED repeats one).
*/
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

static unsigned seed;

static double urand(void) { return (double)rand() / RAND_MAX * 2.0 - 1.0; }

/* Parse TEXT, which must hold one pattern, and return the spec. */
static hattn__spec *parse1(const char *text) {
  hattn__spec *spec = NULL;
  hattn__diags diags = {0};
  int rc = hattn__spec_parse(text, strlen(text), "test.hattn", &spec, &diags);
  ck_assert_msg(rc == HATTN_OK, "parse failed: %s", diags.text ? diags.text : "?");
  hattn__diags_clear(&diags);
  return spec;
}

static hattn__mask_env env_for(int64_t b, int64_t h, int64_t lq, int64_t lk) {
  hattn__mask_env env;
  memset(&env, 0, sizeof env);
  env.batch = b;
  env.heads = h;
  env.lq = lq;
  env.lk = lk;
  return env;
}

/* Run the reference for one pattern; O and LSE are poisoned first. */
static int run_ref(const hattn__pattern *p, hattn__shape sh, const hattn__mask_env *env,
                   const double *q, const double *k, const double *v, double *o, double *lse,
                   char *err) {
  size_t no = (size_t)(sh.batch * sh.heads * sh.lq * sh.head_dim), nl = (size_t)(sh.batch * sh.heads * sh.lq), i;
  for (i = 0; i < no; i++) o[i] = NAN;
  for (i = 0; i < nl; i++) lse[i] = NAN;
  return hattn__reference(p, &sh, env, 0, q, k, v, o, lse, err, 256);
}

START_TEST(one_key_gives_its_value) {
  hattn__spec *spec = parse1("pattern p = full");
  hattn__shape sh = {1, 1, 1, 1, 1, 4};
  hattn__mask_env env = env_for(1, 1, 1, 1);
  double q[4], k[4], v[4], o[4], lse[1], dot = 0;
  char err[256];
  int i;
  for (i = 0; i < 4; i++) q[i] = urand(), k[i] = urand(), v[i] = urand(), dot += q[i] * k[i];
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  for (i = 0; i < 4; i++) ck_assert_double_eq_tol(o[i], v[i], 1e-15);
  ck_assert_double_eq_tol(lse[0], dot / 2.0, 1e-15); /* scale 1/sqrt(4) */
  hattn__spec_destroy(spec);
}
END_TEST

START_TEST(sink_logits_by_hand) {
  /* Two heads, two keys, causal, lq 3 > lk 2: row 0 (qpos -1) sees nothing,
  ** row 1 sees key 0, row 2 sees both.  Every score is s (q . k = 0 with
  ** k = 0), so with sink logit g a row of n keys gives O = n e^0 / (n + e^g)
  ** times the mean of its values and LSE = ln(n + e^g); head 1 has no sink. */
  hattn__spec *spec = parse1("pattern p = causal");
  hattn__shape sh = {1, 2, 2, 3, 2, 1};
  hattn__mask_env env = env_for(1, 2, 3, 2);
  double q[6], k[4] = {0, 0, 0, 0}, v[4], o[6], lse[6], g = 0.5 + urand();
  float sinks[2];
  char err[256];
  int i;
  for (i = 0; i < 6; i++) q[i] = urand();
  for (i = 0; i < 4; i++) v[i] = urand();
  sinks[0] = (float)g, sinks[1] = -INFINITY;
  g = sinks[0];
  env.sink_logits = sinks;
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  ck_assert_double_eq_tol(o[0], 0.0, 1e-15);
  ck_assert_double_eq_tol(lse[0], g, 1e-12);                 /* no key: the sink alone */
  ck_assert_double_eq_tol(o[1], v[0] / (1 + exp(g)), 1e-12);
  ck_assert_double_eq_tol(lse[1], log(1 + exp(g)), 1e-12);
  ck_assert_double_eq_tol(o[2], (v[0] + v[1]) / (2 + exp(g)), 1e-12);
  ck_assert_double_eq_tol(lse[2], log(2 + exp(g)), 1e-12);
  ck_assert_double_eq_tol(o[3], 0.0, 1e-15);                 /* head 1: as without sinks */
  ck_assert(isinf(lse[3]) && lse[3] < 0);
  ck_assert_double_eq_tol(o[4], v[2], 1e-12);
  ck_assert_double_eq_tol(o[5], (v[2] + v[3]) / 2, 1e-12);
  ck_assert_double_eq_tol(lse[5], log(2.0), 1e-12);
  hattn__spec_destroy(spec);
}
END_TEST

START_TEST(two_keys_by_hand) {
  /* q = (1, 0), k0 = (1, 0), k1 = (0, 0): s0 = 1/sqrt(2), s1 = 0. */
  hattn__spec *spec = parse1("pattern p = full");
  hattn__shape sh = {1, 1, 1, 1, 2, 2};
  hattn__mask_env env = env_for(1, 1, 1, 2);
  double q[2] = {1, 0}, k[4] = {1, 0, 0, 0}, v[4], o[2], lse[1], s0 = 1 / sqrt(2.0);
  double w0 = exp(s0) / (exp(s0) + 1), w1 = 1 / (exp(s0) + 1);
  char err[256];
  int i;
  for (i = 0; i < 4; i++) v[i] = urand();
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  ck_assert_double_eq_tol(o[0], w0 * v[0] + w1 * v[2], 1e-15);
  ck_assert_double_eq_tol(o[1], w0 * v[1] + w1 * v[3], 1e-15);
  ck_assert_double_eq_tol(lse[0], log(exp(s0) + 1), 1e-15);
  hattn__spec_destroy(spec);
}
END_TEST

/* With q = 0 every visible key has score 0, so a row's output is the mean
** of the visible values and its LSE is log(count). */
static void check_means(const char *text, int64_t lq, int64_t lk, const int64_t *offsets,
                        int64_t ndocs, const char *expect /* lq rows of lk chars: 1 visible */) {
  hattn__spec *spec = parse1(text);
  int64_t d = 3, i, j, c;
  hattn__shape sh = {1, 1, 1, lq, lk, d};
  hattn__mask_env env = env_for(1, 1, lq, lk);
  double *q = calloc((size_t)(lq * d), sizeof *q), *k = malloc((size_t)(lk * d) * sizeof *k);
  double *v = malloc((size_t)(lk * d) * sizeof *v), *o = malloc((size_t)(lq * d) * sizeof *o);
  double *lse = malloc((size_t)lq * sizeof *lse);
  char err[256];
  env.doc_offsets = offsets;
  env.ndocs = ndocs;
  for (i = 0; i < lk * d; i++) k[i] = urand(), v[i] = urand();
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  for (i = 0; i < lq; i++) {
    int n = 0;
    for (j = 0; j < lk; j++) n += expect[i * lk + j] == '1';
    for (c = 0; c < d; c++) {
      double mean = 0;
      for (j = 0; j < lk; j++)
        if (expect[i * lk + j] == '1') mean += v[j * d + c] / n;
      ck_assert_msg(fabs(o[i * d + c] - mean) < 1e-14, "%s: row %lld col %lld: %g, expected %g",
                    text, (long long)i, (long long)c, o[i * d + c], mean);
    }
    if (n == 0) ck_assert_msg(isinf(lse[i]) && lse[i] < 0, "%s: row %lld: empty row LSE %g", text, (long long)i, lse[i]);
    else ck_assert_double_eq_tol(lse[i], log((double)n), 1e-14);
  }
  free(q), free(k), free(v), free(o), free(lse);
  hattn__spec_destroy(spec);
}

START_TEST(causal_rows_are_prefix_means) {
  check_means("pattern p = causal", 3, 3, NULL, 0, "100" "110" "111");
  /* Decoding: one query, bottom-right aligned, sees every key. */
  check_means("pattern p = causal", 1, 3, NULL, 0, "111");
  /* More queries than keys: the first row sees nothing. */
  check_means("pattern p = causal", 3, 2, NULL, 0, "00" "10" "11");
}
END_TEST

START_TEST(window_sink_and_documents) {
  check_means("pattern p = causal & window(2)", 4, 4, NULL, 0, "1000" "1100" "0110" "0011");
  check_means("pattern p = causal & (window(1) | sink(1))", 3, 3, NULL, 0, "100" "110" "101");
  {
    int64_t off[4] = {0, 2, 2, 5}; /* documents [0,2), [2,2) empty, [2,5) */
    check_means("pattern p = document & causal", 5, 5, off, 3, "10000" "11000" "00100" "00110" "00111");
  }
  check_means("pattern p = window(0, 1)", 3, 3, NULL, 0, "110" "011" "001");
}
END_TEST

START_TEST(empty_rows_are_zero_with_minus_inf_lse) {
  /* chunk(2) & !causal: the last row of each chunk sees nothing. */
  check_means("pattern p = chunk(2) & !causal", 4, 4, NULL, 0, "0100" "0000" "0001" "0000");
}
END_TEST

START_TEST(gqa_heads_share_kv) {
  /* heads 4, kv_heads 2: heads 0, 1 read kv head 0; heads 2, 3 read kv head 1.
  ** Each head must equal a one-head run on its own kv head. */
  hattn__spec *spec = parse1("pattern p = causal with softcap(3)");
  int64_t H = 4, HK = 2, L = 5, D = 4, h, i;
  hattn__shape sh = {1, H, HK, L, L, D}, one = {1, 1, 1, L, L, D};
  hattn__mask_env env = env_for(1, H, L, L), env1 = env_for(1, 1, L, L);
  double q[4 * 5 * 4], k[2 * 5 * 4], v[2 * 5 * 4], o[4 * 5 * 4], lse[4 * 5], o1[5 * 4], lse1[5];
  char err[256];
  for (i = 0; i < H * L * D; i++) q[i] = urand() * 3;
  for (i = 0; i < HK * L * D; i++) k[i] = urand() * 3, v[i] = urand();
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  for (h = 0; h < H; h++) {
    int64_t kh = h / 2;
    ck_assert_int_eq(run_ref(&spec->patterns[0], one, &env1, q + h * L * D, k + kh * L * D,
                             v + kh * L * D, o1, lse1, err), HATTN_OK);
    for (i = 0; i < L * D; i++) ck_assert_double_eq_tol(o[h * L * D + i], o1[i], 1e-15);
    for (i = 0; i < L; i++) ck_assert_double_eq_tol(lse[h * L + i], lse1[i], 1e-15);
  }
  hattn__spec_destroy(spec);
}
END_TEST

/* Two keys, one query: the softmax of two modified scores by hand. */
static void check_two_scores(const char *text, int64_t heads, int64_t h, double s0, double s1) {
  hattn__spec *spec = parse1(text);
  int64_t D = 2, i;
  hattn__shape sh = {1, heads, heads, 1, 2, D};
  hattn__mask_env env = env_for(1, heads, 1, 2);
  double q[16], k[32], v[32], o[16], lse[8], w0, w1, m;
  char err[256];
  /* Head h: q = (1, 1), k0 = (0.5, 0.25), k1 = (-1, 0.5); other heads random. */
  for (i = 0; i < heads * 2 * D; i++) k[i] = urand(), v[i] = urand();
  for (i = 0; i < heads * D; i++) q[i] = urand();
  q[h * D] = 1, q[h * D + 1] = 1;
  k[h * 2 * D + 0] = 0.5, k[h * 2 * D + 1] = 0.25, k[h * 2 * D + 2] = -1, k[h * 2 * D + 3] = 0.5;
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  m = fmax(s0, s1);
  w0 = exp(s0 - m) / (exp(s0 - m) + exp(s1 - m));
  w1 = 1 - w0;
  ck_assert_double_eq_tol(o[h * D], w0 * v[h * 2 * D] + w1 * v[h * 2 * D + 2], 1e-14);
  ck_assert_double_eq_tol(o[h * D + 1], w0 * v[h * 2 * D + 1] + w1 * v[h * 2 * D + 3], 1e-14);
  ck_assert_double_eq_tol(lse[h], m + log(exp(s0 - m) + exp(s1 - m)), 1e-14);
  hattn__spec_destroy(spec);
}

START_TEST(score_modifiers_by_hand) {
  /* Dots: q.k0 = 0.75, q.k1 = -0.5; default scale 1/sqrt(2). qpos = 1, kpos 0 and 1. */
  double r = 1 / sqrt(2.0);
  check_two_scores("pattern p = full", 1, 0, 0.75 * r, -0.5 * r);
  check_two_scores("pattern p = full with scale(2)", 1, 0, 1.5, -1.0);
  check_two_scores("pattern p = full with scale(2), softcap(1)", 1, 0, tanh(1.5), tanh(-1.0));
  /* alibi: s + m_h (kpos - qpos); standard slopes for H = 2: 2^-4, 2^-8. */
  check_two_scores("pattern p = full with scale(2), alibi", 2, 0, 1.5 - pow(2, -4), -1.0);
  check_two_scores("pattern p = full with scale(2), alibi", 2, 1, 1.5 - pow(2, -8), -1.0);
  check_two_scores("pattern p = full with scale(2), alibi(0.5)", 1, 0, 1.5 - 0.5, -1.0);
  /* softcap first, then the bias. */
  check_two_scores("pattern p = full with scale(2), softcap(1), alibi(0.5)", 1, 0, tanh(1.5) - 0.5, tanh(-1.0));
}
END_TEST

START_TEST(failures_have_codes_and_messages) {
  hattn__spec *spec = parse1("pattern p = document & causal");
  hattn__shape bad = {1, 3, 2, 4, 4, 8}, ok = {1, 1, 1, 4, 4, 8};
  hattn__mask_env env = env_for(1, 3, 4, 4);
  double buf[128];
  char err[256];
  int64_t off[3] = {0, 3, 3};
  ck_assert_int_eq(run_ref(&spec->patterns[0], bad, &env, buf, buf, buf, buf, buf, err), HATTN_ESHAPE);
  ck_assert_msg(strstr(err, "heads a multiple of kv_heads") != NULL, "%s", err);
  env = env_for(1, 1, 4, 5);
  ck_assert_int_eq(run_ref(&spec->patterns[0], ok, &env, buf, buf, buf, buf, buf, err), HATTN_EINPUT);
  ck_assert_str_eq(err, "the run-time data was made for another shape");
  env = env_for(1, 1, 4, 4);
  ck_assert_int_eq(run_ref(&spec->patterns[0], ok, &env, buf, buf, buf, buf, buf, err), HATTN_EINPUT);
  ck_assert_str_eq(err, "the pattern uses document, but no document offsets were given");
  env.doc_offsets = off;
  env.ndocs = 2;
  ck_assert_int_eq(run_ref(&spec->patterns[0], ok, &env, buf, buf, buf, buf, buf, err), HATTN_EINPUT);
  ck_assert_str_eq(err, "document offsets must end at the key length 4, got 3");
  hattn__spec_destroy(spec);
}
END_TEST

/* Positions set by offsets (hattn__mask_env.q_offset, k_offset): a chunk of
** query rows at its query offset gives those rows of the whole problem, and
** the keys split into two slices, each at its key offset, merged by LSE,
** give the whole problem's rows. */
START_TEST(offsets_slice_the_whole_problem) {
  static const char *const masks[] = {"causal", "window(7)", "sink(3) | window(5)", "chunk(8)",
                                      "dilated(3, 2)", "causal with alibi(0.5)", "global(2) | window(3, 2)"};
  enum { L = 40, D = 4 };
  double q[L * D], k[L * D], v[L * D], fo[L * D], fl[L], o[L * D], l[L], o2[L * D], l2[L];
  char err[256];
  size_t mi;
  int i, c;
  for (i = 0; i < L * D; i++) q[i] = urand(), k[i] = urand(), v[i] = urand();
  for (mi = 0; mi < sizeof masks / sizeof masks[0]; mi++) {
    char text[128];
    hattn__spec *spec;
    const hattn__pattern *p;
    hattn__shape sh = {1, 1, 1, L, L, D};
    hattn__mask_env env = env_for(1, 1, L, L);
    int64_t s = 1 + rand() % (L - 2), n = 1 + rand() % (L - s), cut = 1 + rand() % (L - 1);
    snprintf(text, sizeof text, "pattern p = %s", masks[mi]);
    spec = parse1(text);
    p = &spec->patterns[0];
    ck_assert_int_eq(run_ref(p, sh, &env, q, k, v, fo, fl, err), HATTN_OK);
    /* Rows [s, s + n) alone. */
    sh.lq = n, env.lq = n;
    env.offsets_set = 1, env.q_offset = s, env.k_offset = 0;
    ck_assert_int_eq(run_ref(p, sh, &env, q + s * D, k, v, o, l, err), HATTN_OK);
    for (i = 0; i < n; i++) {
      ck_assert_msg(l[i] == fl[s + i] || fabs(l[i] - fl[s + i]) < 1e-12, "'%s' row %d of chunk at %d: LSE %g, whole %g",
                    masks[mi], i, (int)s, l[i], fl[s + i]);
      for (c = 0; c < D; c++) ck_assert(fabs(o[i * D + c] - fo[(s + i) * D + c]) < 1e-12);
    }
    /* Keys [0, cut) and [cut, L), merged. */
    sh.lq = L, env.lq = L, env.q_offset = 0;
    sh.lk = cut, env.lk = cut, env.k_offset = 0;
    ck_assert_int_eq(run_ref(p, sh, &env, q, k, v, o, l, err), HATTN_OK);
    sh.lk = L - cut, env.lk = L - cut, env.k_offset = cut;
    ck_assert_int_eq(run_ref(p, sh, &env, q, k + cut * D, v + cut * D, o2, l2, err), HATTN_OK);
    for (i = 0; i < L; i++) {
      double m = l[i] > l2[i] ? l[i] : l2[i], w1, w2;
      if (m == -INFINITY) {
        ck_assert_msg(fl[i] == -INFINITY, "'%s' row %d: no slice sees a key, the whole does", masks[mi], i);
        continue;
      }
      w1 = exp(l[i] - m), w2 = exp(l2[i] - m);
      ck_assert_msg(fabs(m + log(w1 + w2) - fl[i]) < 1e-12, "'%s' keys cut at %d, row %d: merged LSE %g, whole %g",
                    masks[mi], (int)cut, i, m + log(w1 + w2), fl[i]);
      for (c = 0; c < D; c++)
        ck_assert(fabs((w1 * o[i * D + c] + w2 * o2[i * D + c]) / (w1 + w2) - fo[i * D + c]) < 1e-12);
    }
    hattn__spec_destroy(spec);
  }
}
END_TEST

START_TEST(rel_error_rules) {
  double ref[3] = {1, -INFINITY, 2}, x[3] = {1, -INFINITY, 2};
  ck_assert(hattn__rel_error(x, ref, 3) == 0);
  x[0] = NAN;
  ck_assert(isinf(hattn__rel_error(x, ref, 3)));
  x[0] = 1, x[1] = 0;
  ck_assert(isinf(hattn__rel_error(x, ref, 3)));
  x[1] = -INFINITY, x[2] = 2.5;
  ck_assert_double_eq_tol(hattn__rel_error(x, ref, 3), 0.5 / sqrt(5.0), 1e-15);
  /* A NaN of the reference must be matched by a NaN, and adds nothing. */
  ref[2] = NAN;
  ck_assert(isinf(hattn__rel_error(x, ref, 3)));
  x[2] = NAN;
  ck_assert(hattn__rel_error(x, ref, 3) == 0);
}
END_TEST

/* NaN in Q, K or V reaches every row that sees it, and no other row (bug:
** a NaN score counted as masked, so a row of NaN Q gave O = 0, LSE -inf). */
START_TEST(nan_reaches_the_rows_that_see_it) {
  hattn__spec *spec = parse1("pattern p = causal");
  hattn__shape sh = {1, 1, 1, 4, 4, 2};
  hattn__mask_env env = env_for(1, 1, 4, 4);
  double q[8], k[8], v[8], o[8], lse[4];
  char err[256];
  int i, r;
  for (i = 0; i < 8; i++) q[i] = urand(), k[i] = urand(), v[i] = urand();
  /* Q row 1: row 1 alone. */
  q[2] = NAN;
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  for (r = 0; r < 4; r++) {
    ck_assert_msg(isnan(lse[r]) == (r == 1), "Q NaN: row %d LSE %g", r, lse[r]);
    ck_assert_msg(isnan(o[2 * r]) == (r == 1) && isnan(o[2 * r + 1]) == (r == 1), "Q NaN: row %d O %g %g", r,
                  o[2 * r], o[2 * r + 1]);
  }
  q[2] = 0.5;
  /* K row 2: rows 2 and 3, which see key 2 (rows 0 and 1 do not). */
  k[5] = NAN;
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  for (r = 0; r < 4; r++) {
    ck_assert_msg(isnan(lse[r]) == (r >= 2), "K NaN: row %d LSE %g", r, lse[r]);
    ck_assert_msg(isnan(o[2 * r]) == (r >= 2), "K NaN: row %d O %g", r, o[2 * r]);
  }
  k[5] = 0.5;
  /* V row 1: O of rows 1 to 3; LSE does not depend on V. */
  v[3] = NAN;
  ck_assert_int_eq(run_ref(&spec->patterns[0], sh, &env, q, k, v, o, lse, err), HATTN_OK);
  for (r = 0; r < 4; r++) {
    ck_assert_msg(!isnan(lse[r]), "V NaN: row %d LSE %g", r, lse[r]);
    ck_assert_msg(isnan(o[2 * r + 1]) == (r >= 1), "V NaN: row %d O %g", r, o[2 * r + 1]);
  }
  hattn__spec_destroy(spec);
}
END_TEST

START_TEST(random_blocks_are_distinct_sorted_and_fair) {
  int64_t nkb = 37, r = 5, qb, i, out[64], count[37] = {0}, again[64];
  int64_t s = rand();
  for (qb = 0; qb < 4000; qb++) {
    int64_t n = hattn__random_blocks(s, r, nkb, qb, out);
    ck_assert_int_eq(n, r);
    ck_assert_int_eq(hattn__random_blocks(s, r, nkb, qb, again), r);
    for (i = 0; i < n; i++) {
      ck_assert_int_eq(out[i], again[i]);
      if (i) ck_assert_int_lt(out[i - 1], out[i]);
      ck_assert(hattn__random_has(s, r, nkb, qb, out[i]));
      count[out[i]]++;
    }
    for (i = 0; i < nkb; i++) {
      int in = 0, j;
      for (j = 0; j < n; j++) in |= out[j] == i;
      ck_assert_int_eq(hattn__random_has(s, r, nkb, qb, i), in);
    }
  }
  /* Each block is drawn 4000 * 5 / 37 = 540 times on average. */
  for (i = 0; i < nkb; i++) ck_assert_msg(count[i] > 400 && count[i] < 700, "block %lld drawn %lld times", (long long)i, (long long)count[i]);
  ck_assert_int_eq(hattn__random_blocks(s, 50, 7, 3, out), 7);
  for (i = 0; i < 7; i++) ck_assert_int_eq(out[i], i);
}
END_TEST

START_TEST(topk_routes_by_pooled_score) {
  /* One head, d = 1, lq = lk = 192 (three 64-blocks).  Keys of block j are
  ** all kv[j]; queries of block i are all qv[i]. */
  double q[192], k[192], kv[3] = {0.5, 2.0, -1.0}, qv[3] = {1.0, 1.0, -1.0};
  int32_t out[3 * 2];
  int i;
  for (i = 0; i < 192; i++) q[i] = qv[i / 64], k[i] = kv[i / 64];
  ck_assert_int_eq(hattn__topk_route(q, k, 1, 1, 192, 192, 1, 2, out), HATTN_OK);
  /* Block 0 sees only block 0. Block 1: scores 0.5, 2.0: both. Block 2:
  ** scores -0.5, -2.0, 1.0: blocks 2 and 0. */
  ck_assert_int_eq(out[0], 0);
  ck_assert_int_eq(out[1], -1);
  ck_assert_int_eq(out[2], 0);
  ck_assert_int_eq(out[3], 1);
  ck_assert_int_eq(out[4], 0);
  ck_assert_int_eq(out[5], 2);
}
END_TEST

int main(void) {
  Suite *s = suite_create("reference");
  TCase *tc = tcase_create("reference");
  SRunner *sr;
  int failed;
  const char *env = getenv("HATTN_TEST_SEED");
  seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
  printf("test_reference: seed %u (HATTN_TEST_SEED=%u repeats this run)\n", seed, seed);
  srand(seed);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, one_key_gives_its_value);
  tcase_add_test(tc, two_keys_by_hand);
  tcase_add_test(tc, sink_logits_by_hand);
  tcase_add_test(tc, causal_rows_are_prefix_means);
  tcase_add_test(tc, window_sink_and_documents);
  tcase_add_test(tc, empty_rows_are_zero_with_minus_inf_lse);
  tcase_add_test(tc, gqa_heads_share_kv);
  tcase_add_test(tc, score_modifiers_by_hand);
  tcase_add_test(tc, failures_have_codes_and_messages);
  tcase_add_test(tc, offsets_slice_the_whole_problem);
  tcase_add_test(tc, rel_error_rules);
  tcase_add_test(tc, nan_reaches_the_rows_that_see_it);
  tcase_add_test(tc, random_blocks_are_distinct_sorted_and_fair);
  tcase_add_test(tc, topk_routes_by_pooled_score);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
