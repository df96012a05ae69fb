/*
** test_plan.c: block classification, key ranges and block tables (gen/plan.h)
** against brute-force evaluation of hattn__mask_visible.
**
** Every run draws fresh random patterns and inputs: the seed comes from the
** clock unless HATTN_TEST_SEED is set, and is printed on the first line so
** that a failure can be replayed.
*/
#include <check.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "lower.h"
#include "mask.h"
#include "plan.h"
#include "reach.h"
#include "spec.h"

static uint64_t g_seed;

/* Fail with a message, without Check's per-assertion bookkeeping (which is
** slow in the inner loops of brute force). */
#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) ck_abort_msg(__VA_ARGS__);                                  \
  } while (0)

/* ---------------------------------------------------------------- *
** Random numbers: splitmix64, one stream per test.
** ---------------------------------------------------------------- */

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static int64_t rng_range(rng *r, int64_t lo, int64_t hi) {
  return lo + (int64_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static int rng_chance(rng *r, int percent) { return (int)(rng_next(r) % 100) < percent; }

static rng rng_for(uint64_t salt) {
  rng r;
  r.s = g_seed ^ (salt * UINT64_C(0x2545f4914f6cdd1d));
  rng_next(&r);
  return r;
}

/* ---------------------------------------------------------------- *
** Expressions: a pool that owns every node of one test.
** ---------------------------------------------------------------- */

#define POOL_MAX 100000
static hattn__expr *g_pool[POOL_MAX];
static int g_npool;

static hattn__expr *node_new(hattn__node_kind kind, int64_t a, int64_t b, int nkids) {
  hattn__expr *e = calloc(1, sizeof *e);
  ck_assert_ptr_nonnull(e);
  ck_assert_int_lt(g_npool, POOL_MAX);
  e->kind = kind;
  e->a = a;
  e->b = b;
  e->nkids = nkids;
  if (nkids > 0) {
    e->kids = calloc((size_t)nkids, sizeof *e->kids);
    ck_assert_ptr_nonnull(e->kids);
  }
  g_pool[g_npool++] = e;
  return e;
}

/* The lowered forms of the pool's expressions, made on first use. */
static const hattn__expr *g_lowered_of[POOL_MAX];
static hattn__mask *g_lowered[POOL_MAX];
static int g_nlowered;

static void pool_free(void) {
  while (g_npool > 0) {
    hattn__expr *e = g_pool[--g_npool];
    free(e->kids);
    free(e);
  }
  while (g_nlowered > 0) hattn__mask_free(g_lowered[--g_nlowered]);
}

/* E lowered (lower.h), owned by the pool. */
static const hattn__mask *lw(const hattn__expr *e) {
  int i;
  for (i = g_nlowered - 1; i >= 0; i--)
    if (g_lowered_of[i] == e) return g_lowered[i];
  ck_assert_int_lt(g_nlowered, POOL_MAX);
  ck_assert_int_eq(hattn__mask_lower(e, &g_lowered[g_nlowered]), HATTN_OK);
  g_lowered_of[g_nlowered] = e;
  return g_lowered[g_nlowered++];
}

static hattn__expr *atom(hattn__node_kind kind, int64_t a, int64_t b) { return node_new(kind, a, b, 0); }

static hattn__expr *op_not(hattn__expr *x) {
  hattn__expr *e = node_new(HATTN_NODE_NOT, 0, 0, 1);
  e->kids[0] = x;
  return e;
}

static hattn__expr *op2(hattn__node_kind kind, hattn__expr *x, hattn__expr *y) {
  hattn__expr *e = node_new(kind, 0, 0, 2);
  e->kids[0] = x;
  e->kids[1] = y;
  return e;
}

/* The text of E, for messages. */
static void expr_text(const hattn__expr *e, char *buf, size_t len) {
  static const char *names[] = {"full",  "causal",   "window", "dilated", "stride",
                                "sink",  "global",   "chunk",  "document", "blocks",
                                "random", "topk"};
  size_t n;
  int i;
  if (len == 0) return;
  buf[0] = 0;
  switch (e->kind) {
  case HATTN_NODE_NOT:
    snprintf(buf, len, "!(");
    n = strlen(buf);
    expr_text(e->kids[0], buf + n, len - n);
    n = strlen(buf);
    snprintf(buf + n, len - n, ")");
    return;
  case HATTN_NODE_AND:
  case HATTN_NODE_OR:
    snprintf(buf, len, "(");
    for (i = 0; i < e->nkids; i++) {
      n = strlen(buf);
      if (i > 0) {
        snprintf(buf + n, len - n, e->kind == HATTN_NODE_AND ? " & " : " | ");
        n = strlen(buf);
      }
      expr_text(e->kids[i], buf + n, len - n);
    }
    n = strlen(buf);
    snprintf(buf + n, len - n, ")");
    return;
  case HATTN_NODE_FULL:
  case HATTN_NODE_CAUSAL:
  case HATTN_NODE_DOCUMENT: snprintf(buf, len, "%s", names[e->kind]); return;
  case HATTN_NODE_WINDOW:
  case HATTN_NODE_DILATED:
  case HATTN_NODE_RANDOM:
    snprintf(buf, len, "%s(%" PRId64 ", %" PRId64 ")", names[e->kind], e->a, e->b);
    return;
  default: snprintf(buf, len, "%s(%" PRId64 ")", names[e->kind], e->a); return;
  }
}

static int expr_has(const hattn__expr *e, hattn__node_kind kind) {
  int i;
  if (e->kind == kind) return 1;
  for (i = 0; i < e->nkids; i++)
    if (expr_has(e->kids[i], kind)) return 1;
  return 0;
}

/* ---------------------------------------------------------------- *
** Run-time data.
** ---------------------------------------------------------------- */

#define NLAYOUTS 3

typedef struct tenv {
  hattn__mask_env env;
  int64_t *offs;
  hattn__layout lay[NLAYOUTS];
  uint8_t *bits[NLAYOUTS];
  int32_t *topk;
} tenv;

/* Random document offsets over [0, lk): empty and one-token documents
** included, every document at most MAXLEN long. */
static void make_docs(rng *r, tenv *t, int64_t lk, int64_t maxlen) {
  int64_t n = 0, pos = 0, cap = 2 * lk + 16;
  t->offs = malloc((size_t)cap * sizeof *t->offs);
  ck_assert_ptr_nonnull(t->offs);
  t->offs[0] = 0;
  while (pos < lk || (n < cap - 2 && rng_chance(r, 10))) {
    int64_t len;
    int kind = (int)rng_range(r, 0, 9);
    if (kind == 0) len = 0;
    else if (kind == 1) len = 1;
    else len = rng_range(r, 1, maxlen);
    if (pos + len > lk) len = lk - pos;
    pos += len;
    if (n + 2 >= cap) {
      pos = lk;
    }
    t->offs[++n] = pos;
  }
  t->offs[n] = lk;
  t->env.doc_offsets = t->offs;
  t->env.ndocs = n;
}

static void make_layouts(rng *r, tenv *t, int64_t lq, int64_t lk) {
  int i;
  int64_t j;
  for (i = 0; i < NLAYOUTS; i++) {
    hattn__layout *l = &t->lay[i];
    int density = (int)rng_range(r, 0, 100);
    l->bm = rng_range(r, 1, 97);
    l->bn = rng_range(r, 1, 97);
    if (rng_chance(r, 30)) l->bm = 2 * rng_range(r, 1, 48) + 1; /* odd */
    if (rng_chance(r, 30)) l->bn = 2 * rng_range(r, 1, 48) + 1;
    /* Sometimes too few blocks (the rest are unset), sometimes too many. */
    l->nqb = (lq + l->bm - 1) / l->bm + rng_range(r, -2, 2);
    l->nkb = (lk + l->bn - 1) / l->bn + rng_range(r, -2, 2);
    if (l->nqb < 0) l->nqb = 0;
    if (l->nkb < 0) l->nkb = 0;
    t->bits[i] = malloc((size_t)(l->nqb * l->nkb + 1));
    ck_assert_ptr_nonnull(t->bits[i]);
    for (j = 0; j < l->nqb * l->nkb; j++)
      t->bits[i][j] = rng_chance(r, density) ? (uint8_t)rng_range(r, 1, 255) : 0;
    l->bits = t->bits[i];
  }
  t->env.layouts = t->lay;
  t->env.nlayouts = NLAYOUTS;
}

/* Random routed tables: per row a random selection of distinct key
** 64-blocks (mostly not in the future), padded with -1, now and then
** shuffled or with a duplicate. */
static void make_topk(rng *r, tenv *t, int64_t lk, int64_t k) {
  int64_t nb = hattn__nblocks64(lk), rows = t->env.batch * t->env.heads * nb, row, i, j;
  t->topk = malloc((size_t)(rows * k + 1) * sizeof *t->topk);
  ck_assert_ptr_nonnull(t->topk);
  for (row = 0; row < rows; row++) {
    int32_t *v = t->topk + row * k;
    int64_t qb = row % nb, lim = rng_chance(r, 80) ? qb + 1 : nb, n = rng_range(r, 0, k);
    if (n > lim) n = lim;
    for (i = 0; i < k; i++) v[i] = -1;
    for (i = 0; i < n;) {
      int32_t c = (int32_t)rng_range(r, 0, lim - 1);
      int dup = 0;
      for (j = 0; j < i; j++) dup |= v[j] == c;
      if (!dup || rng_chance(r, 3)) v[i++] = c;
    }
    if (rng_chance(r, 30))
      for (i = k - 1; i > 0; i--) {
        int64_t s = rng_range(r, 0, i);
        int32_t tmp = v[i];
        v[i] = v[s];
        v[s] = tmp;
      }
  }
  t->env.topk_blocks = t->topk;
  t->env.topk_k = k;
}

static void tenv_make(rng *r, tenv *t, int64_t lq, int64_t lk) {
  memset(t, 0, sizeof *t);
  t->env.lq = lq;
  t->env.lk = lk;
  t->env.batch = rng_range(r, 1, 2);
  t->env.heads = rng_range(r, 1, 3);
  make_docs(r, t, lk, rng_range(r, 1, rng_chance(r, 50) ? 20 : 200));
  make_layouts(r, t, lq, lk);
  make_topk(r, t, lk, rng_range(r, 1, 4));
}

static void tenv_free(tenv *t) {
  int i;
  free(t->offs);
  for (i = 0; i < NLAYOUTS; i++) free(t->bits[i]);
  free(t->topk);
}

/* A length for a random problem: edges now and then. */
static int64_t rand_len(rng *r, int64_t maxlen) {
  int c = (int)rng_range(r, 0, 19);
  if (c == 0) return 1;
  if (c == 1) return 64;
  if (c == 2) return 128;
  if (c == 3) return rng_range(r, 1, 70);
  return rng_range(r, 1, maxlen);
}

/* lq and lk with lq > lk, lq < lk, lq = lk and lq = 1 all common. */
static void rand_lengths(rng *r, int64_t maxlen, int64_t *lq, int64_t *lk) {
  int c = (int)rng_range(r, 0, 9);
  *lk = rand_len(r, maxlen);
  if (c == 0) *lq = 1;
  else if (c == 1) *lq = *lk;
  else *lq = rand_len(r, maxlen);
}

/* ---------------------------------------------------------------- *
** Random atoms and expressions.
** ---------------------------------------------------------------- */

/* An argument >= MIN: 1, small, near the sequence, or huge. */
static int64_t rand_arg(rng *r, int64_t lk, int64_t min) {
  int64_t v;
  switch (rng_range(r, 0, 9)) {
  case 0: v = 1; break;
  case 1: v = 0; break;
  case 2: v = rng_range(r, 2, 5); break;
  case 3: v = INT32_MAX; break;
  case 4: v = lk + rng_range(r, 0, 3); break;
  case 5: v = rng_range(r, 64, 300); break;
  default: v = rng_range(r, 1, lk + 2 > 70 ? lk + 2 : 70); break;
  }
  return v < min ? min : v;
}

static const hattn__node_kind g_atoms[] = {
    HATTN_NODE_FULL,   HATTN_NODE_CAUSAL,   HATTN_NODE_WINDOW, HATTN_NODE_DILATED,
    HATTN_NODE_STRIDE, HATTN_NODE_SINK,     HATTN_NODE_GLOBAL, HATTN_NODE_CHUNK,
    HATTN_NODE_DOCUMENT, HATTN_NODE_BLOCKS, HATTN_NODE_RANDOM, HATTN_NODE_TOPK};
#define NATOMS ((int)(sizeof g_atoms / sizeof g_atoms[0]))

static hattn__expr *rand_atom_of(rng *r, hattn__node_kind kind, const tenv *t) {
  int64_t lk = t->env.lk, a = 0, b = 0;
  switch (kind) {
  case HATTN_NODE_WINDOW:
    a = rand_arg(r, lk, 0);
    b = rng_chance(r, 50) ? 0 : rand_arg(r, lk, 0);
    break;
  case HATTN_NODE_DILATED:
    a = rand_arg(r, lk, 1);
    b = rng_chance(r, 50) ? rng_range(r, 1, 9) : rand_arg(r, lk, 1);
    if (a * b >= INT32_MAX) {
      b = (INT32_MAX - 1) / a;
      if (b < 1) {
        b = 1;
        a = INT32_MAX - 1;
      }
    }
    break;
  case HATTN_NODE_STRIDE:
    a = rng_chance(r, 60) ? rng_range(r, 1, 9) : rand_arg(r, lk, 1);
    break;
  case HATTN_NODE_SINK:
  case HATTN_NODE_GLOBAL:
  case HATTN_NODE_CHUNK: a = rand_arg(r, lk, 1); break;
  case HATTN_NODE_BLOCKS: a = rng_range(r, 0, NLAYOUTS - 1); break;
  case HATTN_NODE_RANDOM:
    a = rng_chance(r, 70) ? rng_range(r, 1, 4) : rand_arg(r, lk, 1);
    b = rng_chance(r, 10) ? INT32_MAX : rng_range(r, 0, 1000000);
    break;
  case HATTN_NODE_TOPK: a = t->env.topk_k; break;
  default: break;
  }
  return atom(kind, a, b);
}

static hattn__expr *rand_expr(rng *r, const tenv *t, int depth) {
  int c;
  hattn__expr *e;
  if (depth == 0 || rng_chance(r, 35))
    return rand_atom_of(r, g_atoms[rng_range(r, 0, NATOMS - 1)], t);
  c = (int)rng_range(r, 0, 4);
  if (c == 0) return op_not(rand_expr(r, t, depth - 1));
  e = node_new(c <= 2 ? HATTN_NODE_AND : HATTN_NODE_OR, 0, 0, (int)rng_range(r, 2, 3));
  for (c = 0; c < e->nkids; c++) e->kids[c] = rand_expr(r, t, depth - 1);
  return e;
}

/* ---------------------------------------------------------------- *
** Brute force.
** ---------------------------------------------------------------- */

/* Visibility of every pair of every table, with 2-D prefix sums. */
typedef struct truth {
  int64_t lq, lk, ntables;
  uint8_t *vis;                 /* [ntables][lq][lk] */
  int64_t *sum;                 /* [ntables][lq + 1][lk + 1] */
} truth;

static void truth_make(truth *tr, const hattn__expr *e, const hattn__mask_env *env) {
  int64_t t, q, k, lq = env->lq, lk = env->lk, w = lk + 1;
  tr->lq = lq;
  tr->lk = lk;
  tr->ntables = expr_has(e, HATTN_NODE_TOPK) ? env->batch * env->heads : 1;
  tr->vis = malloc((size_t)(tr->ntables * lq * lk + 1));
  tr->sum = calloc((size_t)(tr->ntables * (lq + 1) * w), sizeof *tr->sum);
  ck_assert_ptr_nonnull(tr->vis);
  ck_assert_ptr_nonnull(tr->sum);
  for (t = 0; t < tr->ntables; t++) {
    uint8_t *v = tr->vis + t * lq * lk;
    int64_t *s = tr->sum + t * (lq + 1) * w;
    for (q = 0; q < lq; q++) {
      int64_t run = 0;
      for (k = 0; k < lk; k++) {
        v[q * lk + k] = (uint8_t)(hattn__mask_visible(lw(e), q, k, t, env) != 0);
        run += v[q * lk + k];
        s[(q + 1) * w + k + 1] = s[q * w + k + 1] + run;
      }
    }
  }
}

static void truth_free(truth *tr) {
  free(tr->vis);
  free(tr->sum);
}

/* Visible pairs of table T in rows [q0, q1) x keys [k0, k1). */
static int64_t truth_count(const truth *tr, int64_t t, int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
  const int64_t *s = tr->sum + t * (tr->lq + 1) * (tr->lk + 1);
  int64_t w = tr->lk + 1;
  return s[q1 * w + k1] - s[q0 * w + k1] - s[q1 * w + k0] + s[q0 * w + k0];
}

static hattn__block exact_class(const truth *tr, int64_t t, int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
  int64_t c = truth_count(tr, t, q0, q1, k0, k1);
  if (c == 0) return HATTN_BLOCK_EMPTY;
  return c == (q1 - q0) * (k1 - k0) ? HATTN_BLOCK_FULL : HATTN_BLOCK_PARTIAL;
}

static const char *class_name(hattn__block c) {
  return c == HATTN_BLOCK_FULL ? "FULL" : c == HATTN_BLOCK_EMPTY ? "EMPTY" : "PARTIAL";
}

/* ---------------------------------------------------------------- *
** The checks of one (mask, problem).
** ---------------------------------------------------------------- */

typedef struct ctxt {
  char what[4096];              /* the case, for messages */
  int exact;                    /* a single atom: classification is exact */
  int tight;                    /* a single closed-form atom: ranges are tight */
} ctxt;

static void describe(ctxt *c, const hattn__expr *e, const hattn__mask_env *env) {
  char text[3000];
  expr_text(e, text, sizeof text);
  snprintf(c->what, sizeof c->what, "seed %" PRIu64 ", mask %s, lq %" PRId64 ", lk %" PRId64 "%s", g_seed,
           text, env->lq, env->lk, env->offsets_set ? ", offsets set" : "");
  if (env->offsets_set) {
    size_t n = strlen(c->what);
    snprintf(c->what + n, sizeof c->what - n, " (q_offset %" PRId64 ", k_offset %" PRId64 ")", env->q_offset,
             env->k_offset);
  }
}

/* Block classification of arbitrary rectangles. */
static void check_rects(rng *r, const ctxt *c, const hattn__expr *e, const hattn__mask_env *env,
                        const truth *tr, int n) {
  int i;
  if (env->lq == 0 || env->lk == 0) return;
  for (i = 0; i < n; i++) {
    int64_t t = rng_range(r, 0, tr->ntables - 1);
    int64_t q0 = rng_range(r, 0, env->lq - 1), q1 = rng_range(r, q0 + 1, env->lq);
    int64_t k0 = rng_range(r, 0, env->lk - 1), k1 = rng_range(r, k0 + 1, env->lk);
    hattn__block got = hattn__block_classify(lw(e), q0, q1, k0, k1, t, env);
    hattn__block want = exact_class(tr, t, q0, q1, k0, k1);
    if (rng_chance(r, 20)) { /* single rows and columns */
      q1 = q0 + 1;
      if (rng_chance(r, 50)) k1 = k0 + 1;
      got = hattn__block_classify(lw(e), q0, q1, k0, k1, t, env);
      want = exact_class(tr, t, q0, q1, k0, k1);
    }
    if (c->exact)
      CHECK(got == want, "%s: rows [%" PRId64 ", %" PRId64 ") keys [%" PRId64 ", %" PRId64
            ") table %" PRId64 ": classified %s, brute force %s",
            c->what, q0, q1, k0, k1, t, class_name(got), class_name(want));
    else
      CHECK(got == HATTN_BLOCK_PARTIAL || got == want,
            "%s: rows [%" PRId64 ", %" PRId64 ") keys [%" PRId64 ", %" PRId64
            ") table %" PRId64 ": classified %s, brute force %s (unsafe)",
            c->what, q0, q1, k0, k1, t, class_name(got), class_name(want));
  }
}

/* The key ranges of row range [q0, q1): sorted, disjoint, inside [0, lk),
** holding every visible key; tight for single closed-form atoms. */
static void check_ranges_rows(const ctxt *c, const hattn__expr *e, const hattn__mask_env *env,
                              const truth *tr, int64_t q0, int64_t q1) {
  hattn__krange kr[HATTN_MAX_KRANGES + 1];
  int64_t shift = hattn__env_qpos0(env), t, q, k;
  int n, i, j;
  /* hattn__key_ranges takes key positions from 0: keys at their rows. */
  if (hattn__env_kpos0(env) != 0) return;
  n = hattn__key_ranges(lw(e), q0 + shift, q1 + shift, env->lk, kr);
  CHECK(n >= 0 && n <= HATTN_MAX_KRANGES, "%s: %d key ranges", c->what, n);
  for (i = 0; i < n; i++) {
    CHECK(kr[i].lo >= 0 && kr[i].lo < kr[i].hi && kr[i].hi <= env->lk,
          "%s: rows [%" PRId64 ", %" PRId64 "): range %d is [%" PRId64 ", %" PRId64 ")", c->what, q0,
          q1, i, kr[i].lo, kr[i].hi);
    CHECK(i == 0 || kr[i - 1].hi < kr[i].lo,
          "%s: rows [%" PRId64 ", %" PRId64 "): ranges %d and %d not sorted and disjoint", c->what,
          q0, q1, i - 1, i);
  }
  for (t = 0; t < tr->ntables; t++)
    for (q = q0; q < q1; q++)
      for (k = 0, j = 0; k < env->lk; k++) {
        if (!tr->vis[(t * env->lq + q) * env->lk + k]) continue;
        while (j < n && kr[j].hi <= k) j++;
        CHECK(j < n && kr[j].lo <= k,
              "%s: query row %" PRId64 " sees key %" PRId64 " outside the key ranges of rows [%" PRId64
              ", %" PRId64 ")",
              c->what, q, k, q0, q1);
      }
  if (!c->tight) return;
  /* Queries past the keys (offsets): a dilated window's range is cut at lk,
  ** where a key off the stride may end it. */
  if (e->kind == HATTN_NODE_DILATED && q1 + shift > env->lk) return;
  for (i = 0; i < n; i++) {
    int64_t ends[2] = {kr[i].lo, kr[i].hi - 1};
    int end;
    for (end = 0; end < 2; end++) {
      int seen = 0;
      for (q = q0; q < q1 && !seen; q++) seen = tr->vis[q * env->lk + ends[end]];
      CHECK(seen, "%s: key ranges of rows [%" PRId64 ", %" PRId64 ") not tight: range [%" PRId64
            ", %" PRId64 ") %s key %" PRId64 " is visible to none",
            c->what, q0, q1, kr[i].lo, kr[i].hi, end ? "last" : "first", ends[end]);
    }
  }
}

/* A plan in tiles of BM x BN: tables well formed, safe (exact for single
** atoms), consistent with the standalone classification, counts right. */
static void check_plan(const ctxt *c, const hattn__expr *e, const hattn__mask_env *env,
                       const truth *tr, int64_t bm, int64_t bn) {
  hattn__plan *p = NULL;
  char err[256] = "";
  int64_t t, i, j, nfull = 0, npartial = 0;
  int rc = hattn__plan_build(lw(e), env, bm, bn, &p, err, sizeof err);
  uint8_t *cls;
  CHECK(rc == HATTN_OK, "%s: plan_build %" PRId64 "x%" PRId64 " failed (%d): %s", c->what, bm, bn,
        rc, err);
  CHECK(p->lq == env->lq && p->lk == env->lk && p->bm == bm && p->bn == bn, "%s: plan sizes", c->what);
  CHECK(p->nqb == (env->lq + bm - 1) / bm && p->nkb == (env->lk + bn - 1) / bn,
        "%s: nqb %" PRId64 " nkb %" PRId64, c->what, p->nqb, p->nkb);
  CHECK(p->ntables == tr->ntables, "%s: %" PRId64 " tables, expected %" PRId64, c->what, p->ntables,
        tr->ntables);
  cls = malloc((size_t)p->nkb + 1);
  ck_assert_ptr_nonnull(cls);
  for (t = 0; t < p->ntables; t++) {
    CHECK(p->full_off[t][0] == 0 && p->partial_off[t][0] == 0, "%s: offsets start at 0", c->what);
    for (i = 0; i < p->nqb; i++) {
      int64_t q0 = i * bm, q1 = q0 + bm < env->lq ? q0 + bm : env->lq, kb;
      int64_t f0 = p->full_off[t][i], f1 = p->full_off[t][i + 1];
      int64_t p0 = p->partial_off[t][i], p1 = p->partial_off[t][i + 1];
      CHECK(f0 <= f1 && p0 <= p1, "%s: offsets decrease at query block %" PRId64, c->what, i);
      memset(cls, HATTN_BLOCK_EMPTY, (size_t)p->nkb + 1);
      for (j = f0; j < f1; j++) {
        CHECK(p->full_idx[t][j] >= 0 && p->full_idx[t][j] < p->nkb, "%s: full index out of range", c->what);
        CHECK(j == f0 || p->full_idx[t][j - 1] < p->full_idx[t][j],
              "%s: FULL list of query block %" PRId64 " not increasing", c->what, i);
        cls[p->full_idx[t][j]] = HATTN_BLOCK_FULL;
      }
      for (j = p0; j < p1; j++) {
        CHECK(p->partial_idx[t][j] >= 0 && p->partial_idx[t][j] < p->nkb,
              "%s: partial index out of range", c->what);
        CHECK(j == p0 || p->partial_idx[t][j - 1] < p->partial_idx[t][j],
              "%s: PARTIAL list of query block %" PRId64 " not increasing", c->what, i);
        CHECK(cls[p->partial_idx[t][j]] == HATTN_BLOCK_EMPTY,
              "%s: key block %d of query block %" PRId64 " both FULL and PARTIAL", c->what,
              (int)p->partial_idx[t][j], i);
        cls[p->partial_idx[t][j]] = HATTN_BLOCK_PARTIAL;
      }
      nfull += f1 - f0;
      npartial += p1 - p0;
      for (kb = 0; kb < p->nkb; kb++) {
        int64_t k0 = kb * bn, k1 = k0 + bn < env->lk ? k0 + bn : env->lk;
        hattn__block want = exact_class(tr, t, q0, q1, k0, k1), got = (hattn__block)cls[kb];
        if (c->exact)
          CHECK(got == want, "%s: plan %" PRId64 "x%" PRId64 " table %" PRId64 " block (%" PRId64 ", %" PRId64
                "): %s, brute force %s",
                c->what, bm, bn, t, i, kb, class_name(got), class_name(want));
        else
          CHECK(got == HATTN_BLOCK_PARTIAL || got == want,
                "%s: plan %" PRId64 "x%" PRId64 " table %" PRId64 " block (%" PRId64 ", %" PRId64
                "): %s, brute force %s (unsafe)",
                c->what, bm, bn, t, i, kb, class_name(got), class_name(want));
        if (got != HATTN_BLOCK_EMPTY) {
          hattn__block alone = hattn__block_classify(lw(e), q0, q1, k0, k1, t, env);
          CHECK(got == alone, "%s: plan %" PRId64 "x%" PRId64 " block (%" PRId64 ", %" PRId64
                "): plan says %s, hattn__block_classify %s",
                c->what, bm, bn, i, kb, class_name(got), class_name(alone));
        }
      }
    }
    {
      int64_t got = hattn__plan_count_visible(p, lw(e), t, env);
      int64_t want = truth_count(tr, t, 0, env->lq, 0, env->lk);
      CHECK(got == want, "%s: plan %" PRId64 "x%" PRId64 " table %" PRId64 ": count_visible %" PRId64
            ", brute force %" PRId64, c->what, bm, bn, t, got, want);
    }
  }
  CHECK(nfull == p->nfull && npartial == p->npartial &&
            p->nempty == p->ntables * p->nqb * p->nkb - nfull - npartial,
        "%s: counts %" PRId64 "/%" PRId64 "/%" PRId64 " inconsistent with the lists (%" PRId64 "/%" PRId64 ")",
        c->what, p->nfull, p->npartial, p->nempty, nfull, npartial);
  /* The key ranges of the plan's own query blocks. */
  for (i = 0; i < p->nqb; i++)
    check_ranges_rows(c, e, env, tr, i * bm, (i + 1) * bm < env->lq ? (i + 1) * bm : env->lq);
  free(cls);
  hattn__plan_destroy(p);
}

static int64_t rand_tile(rng *r) {
  switch (rng_range(r, 0, 5)) {
  case 0: return 16;
  case 1: return 64;
  case 2: return 128;
  default: return rng_range(r, 16, 128);
  }
}

static int is_closed_atom(hattn__node_kind k) {
  return k == HATTN_NODE_FULL || k == HATTN_NODE_CAUSAL || k == HATTN_NODE_WINDOW ||
         k == HATTN_NODE_DILATED || k == HATTN_NODE_SINK || k == HATTN_NODE_GLOBAL ||
         k == HATTN_NODE_CHUNK;
}

/* Everything about one mask on one problem. */
static void check_case(rng *r, const hattn__expr *e, const hattn__mask_env *env, int nplans) {
  ctxt c;
  truth tr;
  int i;
  describe(&c, e, env);
  c.exact = e->nkids == 0;
  c.tight = is_closed_atom(e->kind);
  truth_make(&tr, e, env);
  check_rects(r, &c, e, env, &tr, 60);
  for (i = 0; i < nplans; i++) check_plan(&c, e, env, &tr, rand_tile(r), rand_tile(r));
  for (i = 0; i < 10 && env->lq > 0; i++) {
    int64_t q0 = rng_range(r, 0, env->lq - 1);
    check_ranges_rows(&c, e, env, &tr, q0, rng_range(r, q0 + 1, env->lq));
  }
  truth_free(&tr);
}

/* ---------------------------------------------------------------- *
** Tests.
** ---------------------------------------------------------------- */

/* Every atom, with arguments that include 1 and more than the sequence. */
/* The receptive field (reach.h) of random stacks of layers: random
** patterns per (layer, head), lengths and block sizes, against brute force
** (every query of the set after a layer, every head, every key); and the
** step limit. */
START_TEST(test_reach) {
  rng r = rng_for(900 + (uint64_t)_i);
  int round;
  for (round = 0; round < 40; round++) {
    tenv t;
    int64_t n = rand_len(&r, 300), bs = rng_range(&r, 1, 70), steps, q, k;
    int layers = (int)rng_range(&r, 1, 6), npat = (int)rng_range(&r, 1, 4), heads, i, l, h, rc;
    const hattn__mask *masks[4];
    hattn__mask_env envs[4];
    int *assign;
    uint8_t *got = malloc((size_t)n), *want = malloc((size_t)n), *cur = malloc((size_t)n);
    tenv_make(&r, &t, n, n);
    heads = (int)t.env.heads;
    assign = malloc((size_t)(layers * heads) * sizeof *assign);
    ck_assert(got && want && cur && assign);
    for (i = 0; i < npat; i++) {
      masks[i] = lw(rand_expr(&r, &t, (int)rng_range(&r, 1, 3)));
      envs[i] = t.env;
    }
    for (i = 0; i < layers * heads; i++) assign[i] = (int)rng_range(&r, 0, npat - 1);
    rc = hattn__reach(layers, heads, assign, masks, envs, n, bs, INT64_MAX, got, &steps);
    CHECK(rc == HATTN_OK, "hattn__reach: %d", rc);
    memset(want, 0, (size_t)n);
    want[n - 1] = 1;
    for (l = layers - 1; l >= 0; l--) {
      memcpy(cur, want, (size_t)n);
      for (q = 0; q < n; q++)
        for (h = 0; cur[q] && h < heads; h++)
          for (k = 0; k < n; k++)
            if (hattn__mask_visible(masks[assign[l * heads + h]], q, k, h, &t.env)) want[k] = 1;
    }
    for (k = 0; k < n; k++)
      CHECK(got[k] == want[k], "seed %" PRIu64 " round %d: position %" PRId64 " of %" PRId64 " reaches: %d, "
            "brute force %d (%d layers, %d heads, blocks of %" PRId64 ")", g_seed, round, k, n, got[k], want[k],
            layers, heads, bs);
    /* Too few steps: HATTN_ENOTSUP, and what was found is a subset. */
    if (steps > 1) {
      rc = hattn__reach(layers, heads, assign, masks, envs, n, bs, steps - 1, got, &steps);
      CHECK(rc == HATTN_ENOTSUP, "a step limit below the need: %d", rc);
      for (k = 0; k < n; k++) CHECK(!got[k] || want[k], "position %" PRId64 " beyond the answer", k);
    }
    free(got);
    free(want);
    free(cur);
    free(assign);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

START_TEST(test_atoms) {
  rng r = rng_for(1 + (uint64_t)_i);
  int round, k;
  for (round = 0; round < 12; round++) {
    for (k = 0; k < NATOMS; k++) {
      tenv t;
      int64_t lq, lk;
      rand_lengths(&r, 400, &lq, &lk);
      tenv_make(&r, &t, lq, lk);
      check_case(&r, rand_atom_of(&r, g_atoms[k], &t), &t.env, 2);
      tenv_free(&t);
      pool_free();
    }
  }
}
END_TEST

/* Fixed small arguments for every position atom on every kind of shape. */
START_TEST(test_atoms_fixed_args) {
  static const int64_t args[][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {2, 3}, {5, 7}, {63, 0},
                                    {64, 64}, {100, 1}, {1000, 1000}, {INT32_MAX, 0}, {0, INT32_MAX}};
  static const hattn__node_kind kinds[] = {HATTN_NODE_WINDOW, HATTN_NODE_DILATED, HATTN_NODE_STRIDE,
                                           HATTN_NODE_SINK, HATTN_NODE_GLOBAL, HATTN_NODE_CHUNK,
                                           HATTN_NODE_CAUSAL, HATTN_NODE_FULL};
  static const int64_t shapes[][2] = {{1, 1}, {1, 300}, {300, 1}, {77, 200}, {200, 77}, {129, 129}};
  rng r = rng_for(2);
  size_t a, k, s;
  for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    tenv t;
    tenv_make(&r, &t, shapes[s][0], shapes[s][1]);
    for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
      for (a = 0; a < sizeof args / sizeof args[0]; a++) {
        int64_t x = args[a][0], y = args[a][1];
        if (kinds[k] == HATTN_NODE_DILATED) {
          x = x < 1 ? 1 : x;
          y = y < 1 ? 1 : y;
          if (x * y >= INT32_MAX) y = 1;
          if (x * y >= INT32_MAX) x = INT32_MAX - 1;
        } else if (kinds[k] != HATTN_NODE_WINDOW && x < 1) {
          x = 1;
        }
        check_case(&r, atom(kinds[k], x, y), &t.env, 1);
      }
    }
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

/* Hundreds of random combinations under !, & and |. */
START_TEST(test_combinations) {
  rng r = rng_for(100 + (uint64_t)_i);
  int round;
  for (round = 0; round < 100; round++) {
    tenv t;
    int64_t lq, lk;
    rand_lengths(&r, 300, &lq, &lk);
    tenv_make(&r, &t, lq, lk);
    check_case(&r, rand_expr(&r, &t, (int)rng_range(&r, 1, 4)), &t.env, 2);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

/* Combinations of position atoms only: closed forms and distance counting. */
START_TEST(test_position_combinations) {
  static const hattn__node_kind pos[] = {HATTN_NODE_FULL,   HATTN_NODE_CAUSAL, HATTN_NODE_WINDOW,
                                         HATTN_NODE_DILATED, HATTN_NODE_STRIDE, HATTN_NODE_SINK,
                                         HATTN_NODE_GLOBAL, HATTN_NODE_CHUNK};
  rng r = rng_for(200 + (uint64_t)_i);
  int round;
  for (round = 0; round < 60; round++) {
    tenv t;
    int64_t lq, lk;
    hattn__expr *e;
    rand_lengths(&r, 400, &lq, &lk);
    tenv_make(&r, &t, lq, lk);
    if (rng_chance(&r, 50)) {
      /* d only: the distance histogram path of count_visible. */
      hattn__node_kind k1 = pos[rng_range(&r, 0, 4)], k2 = pos[rng_range(&r, 0, 4)];
      e = op2(rng_chance(&r, 50) ? HATTN_NODE_AND : HATTN_NODE_OR, rand_atom_of(&r, k1, &t),
              rand_atom_of(&r, k2, &t));
      if (rng_chance(&r, 30)) e = op_not(e);
      if (rng_chance(&r, 30)) e = op2(HATTN_NODE_OR, e, rand_atom_of(&r, pos[rng_range(&r, 0, 4)], &t));
    } else {
      e = op2(rng_chance(&r, 60) ? HATTN_NODE_AND : HATTN_NODE_OR,
              rand_atom_of(&r, pos[rng_range(&r, 0, 7)], &t),
              rand_atom_of(&r, pos[rng_range(&r, 0, 7)], &t));
      if (rng_chance(&r, 50))
        e = op2(rng_chance(&r, 50) ? HATTN_NODE_AND : HATTN_NODE_OR, e,
                rand_atom_of(&r, pos[rng_range(&r, 0, 7)], &t));
    }
    check_case(&r, e, &t.env, 3);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

/* Query and key offsets (hattn__mask_env.q_offset, k_offset): position
** atoms, documents (k_offset 0) and layouts, alone and combined, with
** offsets that put queries before, among and after the keys, negative
** query positions included. */
START_TEST(test_offsets) {
  static const hattn__node_kind kinds[] = {HATTN_NODE_FULL,   HATTN_NODE_CAUSAL,  HATTN_NODE_WINDOW,
                                           HATTN_NODE_DILATED, HATTN_NODE_STRIDE, HATTN_NODE_SINK,
                                           HATTN_NODE_GLOBAL, HATTN_NODE_CHUNK,   HATTN_NODE_BLOCKS,
                                           HATTN_NODE_DOCUMENT};
  const int nk = (int)(sizeof kinds / sizeof kinds[0]);
  rng r = rng_for(250 + (uint64_t)_i);
  int round;
  for (round = 0; round < 80; round++) {
    tenv t;
    int64_t lq, lk;
    hattn__expr *e;
    int docs;
    rand_lengths(&r, 300, &lq, &lk);
    tenv_make(&r, &t, lq, lk);
    e = rand_atom_of(&r, kinds[rng_range(&r, 0, nk - 1)], &t);
    if (rng_chance(&r, 60))
      e = op2(rng_chance(&r, 60) ? HATTN_NODE_AND : HATTN_NODE_OR, e,
              rand_atom_of(&r, kinds[rng_range(&r, 0, nk - 1)], &t));
    if (rng_chance(&r, 20)) e = op_not(e);
    docs = expr_has(e, HATTN_NODE_DOCUMENT);
    t.env.offsets_set = 1;
    switch (rng_range(&r, 0, 3)) {
    case 0: t.env.q_offset = rng_range(&r, 0, 2 * lk + 10); break;           /* among and after the keys */
    case 1: t.env.q_offset = -rng_range(&r, 0, lq + 10); break;              /* negative positions */
    case 2: t.env.q_offset = rng_range(&r, 0, 1 << 20); break;               /* far away */
    default: t.env.q_offset = lk - lq + rng_range(&r, -64, 64); break;
    }
    t.env.k_offset = docs ? 0 : rng_chance(&r, 20) ? 0 : rng_range(&r, 0, rng_chance(&r, 50) ? 300 : 1 << 20);
    check_case(&r, e, &t.env, 2);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

/* Documents: many empty and one-token documents, alone and combined. */
START_TEST(test_document) {
  rng r = rng_for(300 + (uint64_t)_i);
  int round;
  for (round = 0; round < 40; round++) {
    tenv t;
    int64_t lq, lk;
    hattn__expr *d, *e;
    rand_lengths(&r, 400, &lq, &lk);
    tenv_make(&r, &t, lq, lk);
    free(t.offs);
    make_docs(&r, &t, lk, rng_range(&r, 1, round % 2 ? 4 : 150));
    d = atom(HATTN_NODE_DOCUMENT, 0, 0);
    switch (round % 4) {
    case 0: e = d; break;
    case 1: e = op2(HATTN_NODE_AND, atom(HATTN_NODE_CAUSAL, 0, 0), d); break;
    case 2: e = op2(HATTN_NODE_AND, d, rand_atom_of(&r, HATTN_NODE_WINDOW, &t)); break;
    default: e = op2(HATTN_NODE_OR, op2(HATTN_NODE_AND, d, atom(HATTN_NODE_CAUSAL, 0, 0)),
                     rand_atom_of(&r, HATTN_NODE_SINK, &t)); break;
    }
    check_case(&r, e, &t.env, 3);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

/* Documents made only of empty and one-token documents. */
START_TEST(test_document_tiny) {
  rng r = rng_for(350);
  int64_t offs[] = {0, 0, 1, 1, 1, 2, 3, 3, 5, 5, 5};
  tenv t;
  tenv_make(&r, &t, 3, 5);
  t.env.doc_offsets = offs;
  t.env.ndocs = 10;
  check_case(&r, atom(HATTN_NODE_DOCUMENT, 0, 0), &t.env, 4);
  t.env.lq = 9; /* four query rows before the first key position */
  check_case(&r, atom(HATTN_NODE_DOCUMENT, 0, 0), &t.env, 4);
  tenv_free(&t);
  pool_free();
}
END_TEST

/* Layouts with odd block sizes, alone and with position atoms. */
START_TEST(test_blocks) {
  rng r = rng_for(400 + (uint64_t)_i);
  int round;
  for (round = 0; round < 40; round++) {
    tenv t;
    int64_t lq, lk;
    hattn__expr *b;
    rand_lengths(&r, 400, &lq, &lk);
    tenv_make(&r, &t, lq, lk);
    b = atom(HATTN_NODE_BLOCKS, rng_range(&r, 0, NLAYOUTS - 1), 0);
    check_case(&r, round % 2 ? b : op2(HATTN_NODE_OR, b, rand_expr(&r, &t, 1)), &t.env, 3);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

START_TEST(test_random_atom) {
  rng r = rng_for(500 + (uint64_t)_i);
  int round;
  for (round = 0; round < 30; round++) {
    tenv t;
    int64_t lq, lk;
    hattn__expr *e;
    rand_lengths(&r, 800, &lq, &lk);
    tenv_make(&r, &t, lq, lk);
    e = atom(HATTN_NODE_RANDOM, rng_range(&r, 1, round % 3 ? 3 : 20), rng_range(&r, 0, INT32_MAX));
    if (round % 4 == 1) e = op2(HATTN_NODE_OR, e, atom(HATTN_NODE_WINDOW, rng_range(&r, 0, 100), 0));
    if (round % 4 == 2) e = op2(HATTN_NODE_AND, e, atom(HATTN_NODE_CAUSAL, 0, 0));
    check_case(&r, e, &t.env, 3);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

START_TEST(test_topk) {
  rng r = rng_for(600 + (uint64_t)_i);
  int round;
  for (round = 0; round < 30; round++) {
    tenv t;
    int64_t lq, lk;
    hattn__expr *e;
    rand_lengths(&r, 700, &lq, &lk);
    tenv_make(&r, &t, lq, lk);
    free(t.topk);
    make_topk(&r, &t, lk, rng_range(&r, 1, round % 2 ? 3 : 12));
    e = atom(HATTN_NODE_TOPK, t.env.topk_k, 0);
    if (round % 3 == 1) e = op2(HATTN_NODE_AND, e, atom(HATTN_NODE_CAUSAL, 0, 0));
    if (round % 3 == 2) e = op2(HATTN_NODE_OR, e, atom(HATTN_NODE_SINK, rng_range(&r, 1, 100), 0));
    check_case(&r, e, &t.env, 2);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

/* Tables from hattn__topk_route on random queries and keys. */
START_TEST(test_topk_routed) {
  rng r = rng_for(700);
  int round;
  for (round = 0; round < 6; round++) {
    tenv t;
    int64_t lq, lk, d = 4, b, i, nb;
    double *q, *k;
    rand_lengths(&r, 500, &lq, &lk);
    tenv_make(&r, &t, lq, lk);
    nb = hattn__nblocks64(lk);
    free(t.topk);
    make_topk(&r, &t, lk, rng_range(&r, 1, 3));
    q = malloc((size_t)(t.env.heads * lq * d + 1) * sizeof *q);
    k = malloc((size_t)(t.env.heads * lk * d + 1) * sizeof *k);
    ck_assert_ptr_nonnull(q);
    ck_assert_ptr_nonnull(k);
    for (b = 0; b < t.env.batch; b++) {
      for (i = 0; i < t.env.heads * lq * d; i++) q[i] = (double)rng_range(&r, -1000, 1000) / 1000.0;
      for (i = 0; i < t.env.heads * lk * d; i++) k[i] = (double)rng_range(&r, -1000, 1000) / 1000.0;
      ck_assert_int_eq(hattn__topk_route(q, k, t.env.heads, t.env.heads, lq, lk, d, t.env.topk_k,
                                         t.topk + b * t.env.heads * nb * t.env.topk_k),
                       HATTN_OK);
    }
    check_case(&r, atom(HATTN_NODE_TOPK, t.env.topk_k, 0), &t.env, 3);
    free(q);
    free(k);
    tenv_free(&t);
    pool_free();
  }
}
END_TEST

/* Zero lengths: no blocks, nothing visible, well-formed tables. */
START_TEST(test_empty_lengths) {
  rng r = rng_for(800);
  static const int64_t shapes[][2] = {{0, 0}, {0, 5}, {5, 0}, {0, 200}, {200, 0}};
  size_t s;
  int k;
  for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    for (k = 0; k < NATOMS; k++) {
      tenv t;
      hattn__plan *p = NULL;
      char err[256];
      hattn__krange kr[HATTN_MAX_KRANGES];
      hattn__expr *e;
      tenv_make(&r, &t, shapes[s][0], shapes[s][1]);
      e = rand_atom_of(&r, g_atoms[k], &t);
      ck_assert_int_eq(hattn__plan_build(lw(e), &t.env, 64, 48, &p, err, sizeof err), HATTN_OK);
      ck_assert_int_eq(p->nfull + p->npartial + p->nempty, p->ntables * p->nqb * p->nkb);
      ck_assert_int_eq(p->nfull + p->npartial, 0);
      ck_assert_int_eq(hattn__plan_count_visible(p, lw(e), 0, &t.env), 0);
      hattn__plan_destroy(p);
      ck_assert_int_eq(hattn__key_ranges(lw(e), 0, 10, 0, kr), 0);
      ck_assert_int_eq(hattn__key_ranges(lw(e), 5, 5, 100, kr), 0);
      tenv_free(&t);
      pool_free();
    }
  }
}
END_TEST

START_TEST(test_closed_form) {
  hattn__expr *c = atom(HATTN_NODE_CAUSAL, 0, 0);
  ck_assert_int_eq(lw(c)->closed_form, 1);
  ck_assert_int_eq(lw(op_not(op2(HATTN_NODE_AND, c, atom(HATTN_NODE_WINDOW, 5, 0))))->closed_form, 1);
  ck_assert_int_eq(lw(op2(HATTN_NODE_OR, atom(HATTN_NODE_STRIDE, 3, 0), atom(HATTN_NODE_CHUNK, 9, 0)))->closed_form,
                   1);
  ck_assert_int_eq(lw(op2(HATTN_NODE_AND, c, atom(HATTN_NODE_DOCUMENT, 0, 0)))->closed_form, 0);
  ck_assert_int_eq(lw(op_not(atom(HATTN_NODE_BLOCKS, 0, 0)))->closed_form, 0);
  ck_assert_int_eq(lw(op2(HATTN_NODE_OR, c, atom(HATTN_NODE_RANDOM, 1, 2)))->closed_form, 0);
  ck_assert_int_eq(lw(atom(HATTN_NODE_TOPK, 2, 0))->closed_form, 0);
  pool_free();
}
END_TEST

/* Key ranges of fixed cases, and | beyond HATTN_MAX_KRANGES pieces. */
/* The lowering's operations and facts for parsed, canonical patterns. */
static hattn__mask *lower_text(const char *mask, hattn__spec **spec) {
  char text[256];
  snprintf(text, sizeof text, "pattern p = %s\n", mask);
  ck_assert_int_eq(hattn__spec_parse(text, strlen(text), "lower", spec, NULL), HATTN_OK);
  ck_assert_ptr_nonnull((*spec)->patterns[0].lowered);
  return (*spec)->patterns[0].lowered;
}

START_TEST(test_lowering) {
  hattn__spec *spec = NULL;
  const hattn__mask *m;

  m = lower_text("full", &spec);
  ck_assert_int_eq(m->nops, 1);
  ck_assert(m->dense && m->band && m->distance_only && m->closed_form && m->needs == 0);
  hattn__spec_destroy(spec);

  m = lower_text("causal & window(1k)", &spec);
  ck_assert(m->band && !m->dense && m->distance_only);
  ck_assert_int_eq(m->band_lo, 0);
  ck_assert_int_eq(m->band_hi, 1023);
  ck_assert_int_eq(m->ops[m->nops - 1].kind, HATTN_OP_DIST);
  ck_assert_str_eq(m->ops[0].what, "window(1k)");
  hattn__spec_destroy(spec);

  /* A modulus is no band, but still depends on d alone. */
  m = lower_text("dilated(4, 3)", &spec);
  ck_assert(!m->band && m->distance_only && m->closed_form);
  ck_assert_int_eq(m->ops[0].lo, 0);
  ck_assert_int_eq(m->ops[0].hi, 11);
  ck_assert_int_eq(m->ops[0].m, 3);
  hattn__spec_destroy(spec);

  /* global(G) is two position tests under |. */
  m = lower_text("causal & (window(64) | global(8))", &spec);
  ck_assert(!m->band && !m->distance_only && m->closed_form);
  {
    int i, nk = 0, nq = 0;
    for (i = 0; i < m->nops; i++) {
      nk += m->ops[i].kind == HATTN_OP_KPOS_LT && m->ops[i].a == 8;
      nq += m->ops[i].kind == HATTN_OP_QPOS_LT && m->ops[i].a == 8;
      if (m->ops[i].nargs > 0) ck_assert_int_lt(m->ops[i].args[m->ops[i].nargs - 1], i);
    }
    ck_assert_int_eq(nk, 1);
    ck_assert_int_eq(nq, 1);
  }
  hattn__spec_destroy(spec);

  /* Run-time tables: numbered in order, counted, and no closed form. */
  m = lower_text("causal & (random(2, 7) | random(3, 9) | document | blocks(a) | blocks(b) | topk(4))", &spec);
  ck_assert(!m->closed_form && !m->distance_only && !m->band);
  ck_assert_uint_eq(m->needs, HATTN_NEEDS_RANDOM | HATTN_NEEDS_DOCUMENT | HATTN_NEEDS_BLOCKS | HATTN_NEEDS_TOPK);
  ck_assert_int_eq(m->nrandom, 2);
  ck_assert_int_eq(m->nlayouts, 2);
  ck_assert_int_eq(m->topk_k, 4);
  ck_assert_int_eq(hattn__mask_random_op(m, 0)->b, 2);
  ck_assert_int_eq(hattn__mask_random_op(m, 0)->seed, 7);
  ck_assert_int_eq(hattn__mask_random_op(m, 1)->b, 3);
  ck_assert_ptr_null(hattn__mask_random_op(m, 2));
  hattn__spec_destroy(spec);
}
END_TEST

START_TEST(test_key_ranges_fixed) {
  hattn__krange kr[HATTN_MAX_KRANGES];
  hattn__expr *e;
  int i, n;
  n = hattn__key_ranges(lw(atom(HATTN_NODE_WINDOW, 10, 2)), 100, 108, 1000, kr);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(kr[0].lo, 90);
  ck_assert_int_eq(kr[0].hi, 110);
  n = hattn__key_ranges(lw(atom(HATTN_NODE_CHUNK, 16, 0)), 20, 40, 35, kr);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(kr[0].lo, 16);
  ck_assert_int_eq(kr[0].hi, 35);
  /* causal & (window(4) | sink(8)) at positions [100, 104): two pieces. */
  e = op2(HATTN_NODE_AND, atom(HATTN_NODE_CAUSAL, 0, 0),
          op2(HATTN_NODE_OR, atom(HATTN_NODE_WINDOW, 3, 0), atom(HATTN_NODE_SINK, 8, 0)));
  n = hattn__key_ranges(lw(e), 100, 104, 1000, kr);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(kr[0].lo, 0);
  ck_assert_int_eq(kr[0].hi, 8);
  ck_assert_int_eq(kr[1].lo, 97);
  ck_assert_int_eq(kr[1].hi, 104);
  /* Twelve disjoint pieces under one | (canonical form is n-ary): their hull. */
  e = node_new(HATTN_NODE_OR, 0, 0, 12);
  for (i = 0; i < 12; i++)
    e->kids[i] = op2(HATTN_NODE_AND, atom(HATTN_NODE_WINDOW, 1000 - 20 * i, 0), atom(HATTN_NODE_SINK, 20 * i + 5, 0));
  n = hattn__key_ranges(lw(e), 1000, 1001, 5000, kr);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(kr[0].lo, 0);
  ck_assert_int_eq(kr[0].hi, 225);
  /* Eight are kept as they are. */
  e = op2(HATTN_NODE_AND, atom(HATTN_NODE_WINDOW, 1000, 0), atom(HATTN_NODE_SINK, 5, 0));
  for (i = 1; i < 8; i++)
    e = op2(HATTN_NODE_OR, e,
            op2(HATTN_NODE_AND, atom(HATTN_NODE_WINDOW, 1000 - 20 * i, 0), atom(HATTN_NODE_SINK, 20 * i + 5, 0)));
  n = hattn__key_ranges(lw(e), 1000, 1001, 5000, kr);
  ck_assert_int_eq(n, 8);
  for (i = 0; i < 8; i++) {
    ck_assert_int_eq(kr[i].lo, 20 * i);
    ck_assert_int_eq(kr[i].hi, 20 * i + 5);
  }
  /* stride and ! have no closed form: everything. */
  n = hattn__key_ranges(lw(atom(HATTN_NODE_STRIDE, 7, 0)), 10, 20, 300, kr);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(kr[0].lo, 0);
  ck_assert_int_eq(kr[0].hi, 300);
  pool_free();
}
END_TEST

/* Misuse and bad inputs: the exact code and a useful message. */
START_TEST(test_failures) {
  rng r = rng_for(900);
  tenv t;
  hattn__plan *p = (hattn__plan *)&t; /* must come back NULL */
  char err[256];
  int64_t bad[] = {0, 5, 3, 10};
  hattn__expr *c = atom(HATTN_NODE_CAUSAL, 0, 0), *d = atom(HATTN_NODE_DOCUMENT, 0, 0);
  tenv_make(&r, &t, 10, 10);

  err[0] = 0;
  ck_assert_int_eq(hattn__plan_build(lw(c), &t.env, 0, 64, &p, err, sizeof err), HATTN_EINVAL);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err, "block sizes must be positive") != NULL, "message: %s", err);
  ck_assert_int_eq(hattn__plan_build(lw(c), &t.env, 64, -3, &p, err, sizeof err), HATTN_EINVAL);
  ck_assert_msg(strstr(err, "-3") != NULL, "message: %s", err);

  t.env.doc_offsets = bad;
  t.env.ndocs = 3;
  p = (hattn__plan *)&t;
  err[0] = 0;
  ck_assert_int_eq(hattn__plan_build(lw(op2(HATTN_NODE_AND, c, d)), &t.env, 16, 16, &p, err, sizeof err),
                   HATTN_EINPUT);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err, "document offsets must not decrease") != NULL, "message: %s", err);
  bad[1] = 2;
  bad[3] = 9;
  ck_assert_int_eq(hattn__plan_build(lw(d), &t.env, 16, 16, &p, err, sizeof err), HATTN_EINPUT);
  ck_assert_msg(strstr(err, "must end at the key length 10") != NULL, "message: %s", err);
  t.env.doc_offsets = NULL;
  ck_assert_int_eq(hattn__plan_build(lw(d), &t.env, 16, 16, &p, err, sizeof err), HATTN_EINPUT);
  ck_assert_msg(strstr(err, "document") != NULL, "message: %s", err);

  /* topk with a K whose rows the tables hold neither as K entries nor as
  ** min(K, the key blocks that exist). */
  {
    int64_t k = t.env.topk_k, other = k > 1 ? k - 1 : k + 1;
    if (hattn__topk_width(other, t.env.lk) != k) {
      ck_assert_int_eq(hattn__plan_build(lw(atom(HATTN_NODE_TOPK, other, 0)), &t.env, 16, 16, &p, err, sizeof err),
                       HATTN_EINPUT);
      ck_assert_msg(strstr(err, "topk") != NULL, "message: %s", err);
    }
  }

  /* More key blocks than int32 indices hold. */
  t.env.lq = 1;
  t.env.lk = (int64_t)1 << 33;
  err[0] = 0;
  ck_assert_int_eq(hattn__plan_build(lw(c), &t.env, 1, 1, &p, err, sizeof err), HATTN_EINVAL);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err, "key blocks") != NULL, "message: %s", err);

  /* Plans past the documented limits are refused before they are built
  ** (bug: causal at 16m grew to 24 GB and was killed). */
  t.env.lq = t.env.lk = (int64_t)16 << 20;
  err[0] = 0;
  ck_assert_int_eq(hattn__plan_build(lw(c), &t.env, 128, 128, &p, err, sizeof err), HATTN_ENOTSUP);
  ck_assert_ptr_null(p);
  ck_assert_str_eq(err, "the block plan of 16777216 queries x 16777216 keys in tiles of 128 x 128 would "
                        "classify more than 67108864 (2^26) blocks, the limit: use larger tiles or shorter "
                        "sequences");
  ck_assert_int_eq(hattn__plan_build(lw(c), &t.env, 1, 128, &p, err, sizeof err), HATTN_ENOTSUP);
  ck_assert_ptr_null(p);
  ck_assert_str_eq(err, "the block plan of 16777216 queries x 16777216 keys in tiles of 1 x 128 would take "
                        "more than 268435456 bytes (256 MiB), the limit: use larger tiles or shorter "
                        "sequences");
  /* window(4k) at 16m visits few blocks: built. */
  ck_assert_int_eq(hattn__plan_build(lw(atom(HATTN_NODE_WINDOW, 4095, 0)), &t.env, 128, 128, &p, err, sizeof err),
                   HATTN_OK);
  hattn__plan_destroy(p);

  hattn__plan_destroy(NULL);
  tenv_free(&t);
  pool_free();
}
END_TEST

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* causal & window(1k) at 128k: built from the closed form, quickly. */
START_TEST(test_big_window) {
  const int64_t n = 128 * 1024, w = 1024, bs = 128;
  hattn__mask_env env;
  hattn__plan *p = NULL;
  char err[256];
  hattn__expr *e = op2(HATTN_NODE_AND, atom(HATTN_NODE_CAUSAL, 0, 0), atom(HATTN_NODE_WINDOW, w - 1, 0));
  double t0;
  int64_t want = w * (w + 1) / 2 + (n - w) * w, i;
  memset(&env, 0, sizeof env);
  env.lq = env.lk = n;
  env.batch = env.heads = 1;
  t0 = now_s();
  ck_assert_int_eq(hattn__plan_build(lw(e), &env, bs, bs, &p, err, sizeof err), HATTN_OK);
  ck_assert_msg(now_s() - t0 < 1.0, "plan of %s took %.3f s", "causal & window(1k) at 128k", now_s() - t0);
  ck_assert_int_eq(p->nqb, n / bs);
  /* Per query block: 7 FULL key blocks behind the diagonal, the diagonal
  ** and the window's far edge PARTIAL (fewer at the start). */
  for (i = 0; i < p->nqb; i++) {
    int64_t nf = p->full_off[0][i + 1] - p->full_off[0][i];
    int64_t np = p->partial_off[0][i + 1] - p->partial_off[0][i];
    ck_assert_int_eq(nf, i < 8 ? i : 7);
    ck_assert_int_eq(np, i < 8 ? 1 : 2);
  }
  ck_assert_int_eq(p->nempty, p->nqb * p->nkb - p->nfull - p->npartial);
  t0 = now_s();
  ck_assert_int_eq(hattn__plan_count_visible(p, lw(e), 0, &env), want);
  ck_assert_msg(now_s() - t0 < 1.0, "count took %.3f s", now_s() - t0);
  hattn__plan_destroy(p);
  pool_free();
}
END_TEST

/* document at 16k with about 1k-token documents touches only blocks near the
** diagonal; at 2M it builds in milliseconds, which visiting every block
** (2^28 of them) could not. */
START_TEST(test_big_document) {
  rng r = rng_for(1000);
  static const int64_t lens[] = {16 * 1024, 2 * 1024 * 1024};
  size_t s;
  for (s = 0; s < 2; s++) {
    int64_t n = lens[s], bs = 128, cap = n / 64 + 2, nd = 0, pos = 0, i, j, want = 0;
    int64_t *offs = malloc((size_t)cap * sizeof *offs);
    hattn__mask_env env;
    hattn__plan *p = NULL;
    char err[256];
    hattn__expr *e = s ? op2(HATTN_NODE_AND, atom(HATTN_NODE_CAUSAL, 0, 0), atom(HATTN_NODE_DOCUMENT, 0, 0))
                       : atom(HATTN_NODE_DOCUMENT, 0, 0);
    double t0;
    ck_assert_ptr_nonnull(offs);
    offs[0] = 0;
    while (pos < n) {
      int64_t len = rng_range(&r, 1, 2047);
      if (pos + len > n) len = n - pos;
      pos += len;
      offs[++nd] = pos;
      want += s ? len * (len + 1) / 2 : len * len;
    }
    memset(&env, 0, sizeof env);
    env.lq = env.lk = n;
    env.batch = env.heads = 1;
    env.doc_offsets = offs;
    env.ndocs = nd;
    t0 = now_s();
    ck_assert_int_eq(hattn__plan_build(lw(e), &env, bs, bs, &p, err, sizeof err), HATTN_OK);
    ck_assert_msg(now_s() - t0 < 2.0, "document plan at %lld took %.3f s", (long long)n, now_s() - t0);
    /* Every listed key block shares a document with its query block. */
    for (i = 0; i < p->nqb; i++) {
      int64_t d0 = hattn__doc_of(&env, i * bs), d1 = hattn__doc_of(&env, (i + 1) * bs - 1);
      int64_t lo = offs[d0], hi = offs[d1 + 1];
      for (j = p->full_off[0][i]; j < p->full_off[0][i + 1]; j++)
        CHECK(p->full_idx[0][j] * bs < hi && (p->full_idx[0][j] + 1) * bs > lo,
              "seed %" PRIu64 ": FULL key block %d far from query block %" PRId64, g_seed,
              (int)p->full_idx[0][j], i);
      for (j = p->partial_off[0][i]; j < p->partial_off[0][i + 1]; j++)
        CHECK(p->partial_idx[0][j] * bs < hi && (p->partial_idx[0][j] + 1) * bs > lo,
              "seed %" PRIu64 ": PARTIAL key block %d far from query block %" PRId64, g_seed,
              (int)p->partial_idx[0][j], i);
      CHECK(p->full_off[0][i + 1] - p->full_off[0][i] + p->partial_off[0][i + 1] - p->partial_off[0][i] <=
                (2 * 2047 + bs) / bs + 3,
            "seed %" PRIu64 ": query block %" PRId64 " lists too many key blocks", g_seed, i);
    }
    /* Counting evaluates PARTIAL blocks element by element: 16k only. */
    if (s == 0) ck_assert_int_eq(hattn__plan_count_visible(p, lw(e), 0, &env), want);
    else ck_assert_int_le(p->nfull + p->npartial, p->nqb * ((2 * 2047 + bs) / bs + 3));
    hattn__plan_destroy(p);
    free(offs);
    pool_free();
  }
}
END_TEST

/* Arguments at 2^31 - 1 with long sequences: no overflow. */
START_TEST(test_large_arguments) {
  rng r = rng_for(1100);
  const int64_t big = INT32_MAX;
  hattn__krange kr[HATTN_MAX_KRANGES];
  hattn__mask_env env;
  hattn__plan *p = NULL;
  char err[256];
  int k;
  hattn__expr *es[8];
  es[0] = atom(HATTN_NODE_WINDOW, big, big);
  es[1] = atom(HATTN_NODE_DILATED, 1, big - 1);
  es[2] = atom(HATTN_NODE_DILATED, big - 1, 1);
  es[3] = atom(HATTN_NODE_STRIDE, big, 0);
  es[4] = atom(HATTN_NODE_SINK, big, 0);
  es[5] = atom(HATTN_NODE_GLOBAL, big, 0);
  es[6] = atom(HATTN_NODE_CHUNK, big, 0);
  es[7] = op2(HATTN_NODE_OR, es[3], op_not(es[6]));
  memset(&env, 0, sizeof env);
  env.lq = (int64_t)1 << 20;
  env.lk = (int64_t)3 << 31; /* longer than every argument */
  env.batch = env.heads = 1;
  for (k = 0; k < 8; k++) {
    int64_t q0 = rng_range(&r, 0, env.lq - 1), k0 = rng_range(&r, 0, env.lk - 1);
    (void)hattn__block_classify(lw(es[k]), q0, q0 + 1, k0, env.lk, 0, &env);
    (void)hattn__block_classify(lw(es[k]), 0, env.lq, 0, env.lk, 0, &env);
    (void)hattn__key_ranges(lw(es[k]), env.lk - 5, env.lk, env.lk, kr);
    (void)hattn__key_ranges(lw(es[k]), -big, big, env.lk, kr);
  }
  /* One query row of decoding against 6 billion keys, in blocks of 2^24. */
  env.lq = 1;
  for (k = 0; k < 7; k++) {
    ck_assert_int_eq(hattn__plan_build(lw(es[k]), &env, 1, (int64_t)1 << 24, &p, err, sizeof err), HATTN_OK);
    hattn__plan_destroy(p);
  }
  pool_free();
}
END_TEST

static Suite *plan_suite(void) {
  Suite *s = suite_create("plan");
  TCase *tc = tcase_create("brute_force");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, test_atoms, 0, 3);
  tcase_add_test(tc, test_atoms_fixed_args);
  tcase_add_loop_test(tc, test_combinations, 0, 6);
  tcase_add_loop_test(tc, test_position_combinations, 0, 2);
  tcase_add_loop_test(tc, test_document, 0, 2);
  tcase_add_loop_test(tc, test_offsets, 0, 3);
  tcase_add_test(tc, test_document_tiny);
  tcase_add_loop_test(tc, test_blocks, 0, 2);
  tcase_add_loop_test(tc, test_random_atom, 0, 2);
  tcase_add_loop_test(tc, test_topk, 0, 2);
  tcase_add_loop_test(tc, test_reach, 0, 3);
  tcase_add_test(tc, test_topk_routed);
  tcase_add_test(tc, test_empty_lengths);
  suite_add_tcase(s, tc);

  tc = tcase_create("api");
  tcase_add_test(tc, test_closed_form);
  tcase_add_test(tc, test_lowering);
  tcase_add_test(tc, test_key_ranges_fixed);
  tcase_add_test(tc, test_failures);
  suite_add_tcase(s, tc);

  tc = tcase_create("large");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_big_window);
  tcase_add_test(tc, test_big_document);
  tcase_add_test(tc, test_large_arguments);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  const char *env = getenv("HATTN_TEST_SEED");
  SRunner *sr;
  int failed;
  if (env != NULL && *env != 0) {
    g_seed = strtoull(env, NULL, 0);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g_seed = (uint64_t)ts.tv_sec * UINT64_C(1000003) ^ (uint64_t)ts.tv_nsec;
  }
  printf("test_plan: seed %" PRIu64 " (set HATTN_TEST_SEED=%" PRIu64 " to repeat)\n", g_seed, g_seed);
  fflush(stdout);
  sr = srunner_create(plan_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (failed) printf("test_plan: %d failed with seed %" PRIu64 "\n", failed, g_seed);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
