/*
** spec_check.c: what the spec checker knows of the masks' meaning, and the
** checks that need the whole file (docs/spec.md, "Errors" and "Canonical
** form").
**
** Implied operands (subset): which atom sees every pair another sees, so
** that the canonical form drops the redundant one.  The empty-pattern check
** (mask_is_empty, on the lowered mask): a pattern that masks every (query, key) pair is
** an error.  Whole-file checks: names defined twice, and each model's
** statements, pattern names, ranges and coverage.
*/
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "lower.h"
#include "mask.h"
#include "spec_int.h"

/* ------------------------------------------------------------------ */
/* Implied operands                                                     */
/* ------------------------------------------------------------------ */

/* Whether every pair that atom-or-node X sees, Y sees too, by the subsets
** listed in docs/spec.md, "Canonical form", step 3 (a safe
** under-approximation of inclusion). */
int subset(const hattn__expr *x, const hattn__expr *y)
{
  if (y->kind == HATTN_NODE_FULL)
    return 1;
  if (!is_atom(x) || !is_atom(y))
    return 0;
  if (x->kind == y->kind && x->a == y->a && x->b == y->b)
    return 1;
  switch (x->kind) {
  case HATTN_NODE_WINDOW:
    if (x->a == 0 && x->b == 0 &&
        (y->kind == HATTN_NODE_CAUSAL || y->kind == HATTN_NODE_STRIDE || y->kind == HATTN_NODE_CHUNK ||
         y->kind == HATTN_NODE_DOCUMENT || y->kind == HATTN_NODE_DILATED))
      return 1;
    if (x->b == 0 && y->kind == HATTN_NODE_CAUSAL)
      return 1;
    return y->kind == HATTN_NODE_WINDOW && x->a <= y->a && x->b <= y->b;
  case HATTN_NODE_DILATED:
    if (y->kind == HATTN_NODE_CAUSAL)
      return 1;
    if (y->kind == HATTN_NODE_WINDOW)
      return x->a * x->b - 1 <= y->a;
    if (y->kind == HATTN_NODE_STRIDE)
      return x->b % y->a == 0;
    return y->kind == HATTN_NODE_DILATED && x->b == y->b && x->a <= y->a;
  case HATTN_NODE_STRIDE:
    return y->kind == HATTN_NODE_STRIDE && x->a % y->a == 0;
  case HATTN_NODE_SINK:
    return (y->kind == HATTN_NODE_SINK || y->kind == HATTN_NODE_GLOBAL) && x->a <= y->a;
  case HATTN_NODE_GLOBAL:
    return y->kind == HATTN_NODE_GLOBAL && x->a <= y->a;
  case HATTN_NODE_CHUNK:
    return y->kind == HATTN_NODE_CHUNK && y->a % x->a == 0;
  default:
    return 0;
  }
}

/* ------------------------------------------------------------------ */
/* The empty-pattern check                                              */
/* ------------------------------------------------------------------ */

typedef struct ivec {
  int64_t v[4096];
  int n;
} ivec;

static void ivec_add(ivec *v, int64_t x)
{
  if (v->n < (int)(sizeof v->v / sizeof v->v[0]))
    v->v[v->n++] = x;
}

/* Gathers the constants and strides of the lowered mask M into CONSTS and
** STRIDES (which drop what does not fit: callers bound the operation count
** first): every finite bound of a distance interval, the interval's end
** and, with a modulus, the modulus, its multiple below the end and the
** number of multiples; the constant of a position test; the 64-blocks of
** run-time tables. */
static void gather(const hattn__mask *m, ivec *consts, ivec *strides)
{
  int i;
  for (i = 0; i < m->nops; i++) {
    const hattn__op *op = &m->ops[i];
    switch (op->kind) {
    case HATTN_OP_DIST:
      if (op->lo > -HATTN_MASK_INF)
        ivec_add(consts, op->lo < 0 ? -op->lo : op->lo);
      if (op->hi < HATTN_MASK_INF)
        ivec_add(consts, op->hi);
      if (op->m > 1) {
        ivec_add(consts, op->m);
        ivec_add(strides, op->m);
        if (op->hi < HATTN_MASK_INF) {
          ivec_add(consts, op->hi + 1);
          ivec_add(consts, op->hi + 1 - op->m);
          ivec_add(consts, (op->hi + 1) / op->m);
        }
      }
      break;
    case HATTN_OP_KPOS_LT:
    case HATTN_OP_QPOS_LT:
    case HATTN_OP_CHUNK:
      ivec_add(consts, op->a);
      break;
    case HATTN_OP_LAYOUT:
    case HATTN_OP_RANDOM:
    case HATTN_OP_TOPK:
      ivec_add(consts, HATTN_SPEC_BLOCK);
      break;
    default:
      break;
    }
  }
}

static int cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void ivec_sort_unique(ivec *v)
{
  int i, m = 0;
  qsort(v->v, (size_t)v->n, sizeof v->v[0], cmp_i64);
  for (i = 0; i < v->n; i++)
    if (m == 0 || v->v[m - 1] != v->v[i])
      v->v[m++] = v->v[i];
  v->n = m;
}

static int64_t gcd64(int64_t a, int64_t b)
{
  while (b) {
    int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/*
** Whether MASK (canonical) is FALSE at every critical sample.  Samples are
** (qpos, qpos - d) and (kpos + d, kpos) for positions 0..3, each constant c,
** c +- 1, 2c +- 1 and one beyond every constant, and distances 0, +-1, +-2,
** +-c, +-(c +- 1), +- the lcm of the strides, and +- the multiples of each
** stride around each constant (so that stride and dilated combinations are
** not missed).  Masks with more than EMPTY_MAX_NODES nodes,
** EMPTY_MAX_CONSTS constants or 4 strides are not sampled and count as
** non-empty: the check only ever rejects what it has shown to be empty.
** Returns 0 (not shown empty), 1 (empty), or -1 when memory runs out.
*/
int mask_is_empty(const hattn__expr *tree)
{
  ivec *consts = malloc(sizeof *consts), *strides = malloc(sizeof *strides);
  ivec *pos = malloc(sizeof *pos), *dist = malloc(sizeof *dist);
  hattn__mask *mask = NULL;
  int r = -1, i, j, nodes;
  int64_t maxc = 3, lcm = 1;

  if (!consts || !strides || !pos || !dist || hattn__mask_lower(tree, &mask) != HATTN_OK)
    goto done;
  consts->n = strides->n = pos->n = dist->n = 0;
  gather(mask, consts, strides);
  nodes = mask->nops;
  ivec_sort_unique(consts);
  ivec_sort_unique(strides);
  r = 0;
  if (nodes > EMPTY_MAX_NODES || consts->n > EMPTY_MAX_CONSTS || strides->n > 4)
    goto done;
  for (i = 0; i < strides->n && lcm > 0; i++) {
    int64_t s = strides->v[i];
    lcm = lcm / gcd64(lcm, s) * s;
    if (lcm > INT_LIMIT)
      lcm = 0;
  }
  for (i = 0; i <= 3; i++)
    ivec_add(pos, i);
  ivec_add(dist, 0);
  ivec_add(dist, 1);
  ivec_add(dist, 2);
  if (lcm > 0)
    ivec_add(dist, lcm);
  for (i = 0; i < consts->n; i++) {
    int64_t c = consts->v[i];
    if (c > maxc)
      maxc = c;
    ivec_add(pos, c);
    ivec_add(pos, c + 1);
    ivec_add(pos, 2 * c + 1);
    if (c >= 1) {
      ivec_add(pos, c - 1);
      ivec_add(pos, 2 * c - 1);
    }
    ivec_add(dist, c);
    ivec_add(dist, c + 1);
    if (c >= 1)
      ivec_add(dist, c - 1);
    for (j = 0; j < strides->n; j++) {
      int64_t s = strides->v[j], k;
      for (k = -2; k <= 3; k++)
        if (c / s + k >= 0)
          ivec_add(dist, (c / s + k) * s);
    }
  }
  ivec_add(pos, 2 * maxc + 3);
  for (i = 0, j = dist->n; i < j; i++)
    ivec_add(dist, -dist->v[i]);
  ivec_sort_unique(pos);
  ivec_sort_unique(dist);
  r = 1;
  for (i = 0; i < pos->n && r; i++) {
    for (j = 0; j < dist->n && r; j++) {
      int64_t x = pos->v[i], d = dist->v[j];
      if (x - d >= 0 && hattn__mask_eval3(mask, x, x - d) != HATTN_TRI_FALSE)
        r = 0;
      if (x + d >= 0 && hattn__mask_eval3(mask, x + d, x) != HATTN_TRI_FALSE)
        r = 0;
    }
  }
done:
  hattn__mask_free(mask);
  free(consts);
  free(strides);
  free(pos);
  free(dist);
  return r;
}

/* ------------------------------------------------------------------ */
/* Checks over the whole file                                           */
/* ------------------------------------------------------------------ */

static int cmp_named(const void *a, const void *b)
{
  const named *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* The sorted (name, index) table of the patterns or models, or NULL. */
named *name_table(parser *p, int models)
{
  int n = models ? p->nmodels : p->npats, i;
  named *t = malloc((size_t)(n ? n : 1) * sizeof *t);
  if (!t) {
    set_oom(p);
    return NULL;
  }
  for (i = 0; i < n; i++) {
    t[i].name = models ? p->models[i].m.name : p->pats[i].pat.name;
    t[i].index = i;
  }
  qsort(t, (size_t)n, sizeof *t, cmp_named);
  return t;
}

/* Reports every name defined twice, at its later definitions. */
void check_duplicates(parser *p, const named *t, int n, int models)
{
  int i, first = 0;
  char buf[SHOWN + 4];
  for (i = 1; i < n; i++) {
    spos at;
    int line;
    if (strcmp(t[i].name, t[first].name) != 0) {
      first = i;
      continue;
    }
    if (models) {
      const mrec *m = &p->models[t[i].index];
      at.off = m->off;
      at.line = m->m.line;
      at.col = m->m.col;
      line = p->models[t[first].index].m.line;
      diag(p, at, "model '%s' is already defined at line %d", name_text(t[i].name, buf), line);
    } else {
      const prec *pr = &p->pats[t[i].index];
      at.off = pr->off;
      at.line = pr->pat.line;
      at.col = pr->pat.col;
      line = p->pats[t[first].index].pat.line;
      diag(p, at, "pattern '%s' is already defined at line %d", name_text(t[i].name, buf), line);
    }
  }
}

/* The first pattern named NAME, or -1. */
static int lookup_pattern(const named *t, int n, const char *name)
{
  int lo = 0, hi = n;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (strcmp(t[mid].name, name) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && strcmp(t[lo].name, name) == 0 ? t[lo].index : -1;
}

/* Reports the (layer, head) cells of M that no line covers, runs coalesced. */
static void report_coverage(parser *p, mrec *m, spos at)
{
  int L = m->m.layers, H = m->m.heads, l, h;
  char buf[SHOWN + 4];
  const char *name = name_text(m->m.name, buf);

  for (l = 0; l < L;) {
    int uncovered = 0;
    for (h = 0; h < H; h++)
      uncovered += m->m.assign[(size_t)l * H + h] < 0;
    if (uncovered == H) {
      int l1 = l;
      for (;;) {
        int all = l1 + 1 < L;
        for (h = 0; all && h < H; h++)
          all = m->m.assign[(size_t)(l1 + 1) * H + h] < 0;
        if (!all)
          break;
        l1++;
      }
      if (l1 == l)
        diag(p, at, "layer %d of model '%s' is not covered by any line", l, name);
      else
        diag(p, at, "layers %d-%d of model '%s' are not covered by any line", l, l1, name);
      l = l1 + 1;
      continue;
    }
    for (h = 0; h < H && uncovered;) {
      int h1;
      if (m->m.assign[(size_t)l * H + h] >= 0) {
        h++;
        continue;
      }
      for (h1 = h; h1 + 1 < H && m->m.assign[(size_t)l * H + h1 + 1] < 0; h1++)
        ;
      if (h1 == h)
        diag(p, at, "layer %d head %d of model '%s' is not covered by any line", l, h, name);
      else
        diag(p, at, "layer %d heads %d-%d of model '%s' are not covered by any line", l, h, h1, name);
      h = h1 + 1;
    }
    l++;
  }
}

/* The checks of a model that need the whole file: required statements,
** GQA, pattern names, ranges, coverage; then its assignment table. */
void finish_model(parser *p, mrec *m, const named *pt)
{
  char buf[SHOWN + 4];
  const char *name = name_text(m->m.name, buf);
  int nerr0 = p->nerr, i;
  spos at;

  at.off = m->off;
  at.line = m->m.line;
  at.col = m->m.col;
  if (!m->bad) {
    if (!m->have[ST_LAYERS])
      diag(p, at, "model '%s' does not say how many layers", name);
    if (!m->have[ST_HEADS])
      diag(p, at, "model '%s' does not say how many heads", name);
    if (!m->have[ST_HEAD_DIM])
      diag(p, at, "model '%s' does not say its head_dim", name);
  }
  if (!m->have[ST_KV_HEADS] && m->have[ST_HEADS])
    m->m.kv_heads = m->m.heads;
  if (m->have[ST_KV_HEADS] && m->have[ST_HEADS] && m->m.heads % m->m.kv_heads != 0)
    diag(p, m->valat[ST_KV_HEADS], "heads (%d) must be a multiple of kv_heads (%d)", m->m.heads,
         m->m.kv_heads);
  for (i = 0; i < m->nlines; i++) {
    lline *L = &m->lines[i];
    int pi = lookup_pattern(pt, p->npats, L->pname);
    char pbuf[SHOWN + 4];
    if (L->bad)
      continue;
    if (pi < 0) {
      diag(p, L->nameat, "unknown pattern '%s'", name_text(L->pname, pbuf));
      L->bad = 1;
    }
    if (m->have[ST_LAYERS] && (L->l0 >= m->m.layers || L->l1 >= m->m.layers)) {
      int lo = L->l0 >= m->m.layers;
      diag(p, lo ? L->l0at : L->l1at, "layer %lld is outside model '%s' (layers 0-%d)",
           (long long)(lo ? L->l0 : L->l1), name, m->m.layers - 1);
      L->bad = 1;
    }
    if (L->has_heads && m->have[ST_HEADS] && (L->h0 >= m->m.heads || L->h1 >= m->m.heads)) {
      int lo = L->h0 >= m->m.heads;
      diag(p, lo ? L->h0at : L->h1at, "head %lld is outside model '%s' (heads 0-%d)",
           (long long)(lo ? L->h0 : L->h1), name, m->m.heads - 1);
      L->bad = 1;
    }
  }
  if (m->bad || p->nerr != nerr0) {
    m->bad = 1;
    return;
  }
  /* The work and memory of the grids are bounded per file, before any is
  ** allocated: MAX_GRID_CELLS cells in all models, MAX_LINE_CELLS written
  ** by their lines. */
  if (p->grid_cells + (int64_t)m->m.layers * m->m.heads > MAX_GRID_CELLS) {
    diag(p, at, "model '%s' has %lld (layer, head) cells, and the models of one file may have at most %d "
         "(2^24) in all", name, (long long)m->m.layers * m->m.heads, MAX_GRID_CELLS);
    m->bad = 1;
    return;
  }
  for (i = 0; i < m->nlines; i++) {
    const lline *L = &m->lines[i];
    int64_t h0 = L->has_heads ? L->h0 : 0, h1 = L->has_heads ? L->h1 : m->m.heads - 1;
    if (L->bad || L->l1 < L->l0 || h1 < h0)
      continue;
    p->line_cells += ((L->l1 - L->l0) / L->step + 1) * (h1 - h0 + 1);
    if (p->line_cells > MAX_LINE_CELLS) {
      diag(p, L->l0at, "this line takes the layer lines of one file past %d (2^26) (layer, head) cells in all",
           MAX_LINE_CELLS);
      m->bad = 1;
      return;
    }
  }
  p->grid_cells += (int64_t)m->m.layers * m->m.heads;
  {
    size_t cells = (size_t)m->m.layers * (size_t)m->m.heads, c;
    m->m.assign = palloc(p, cells * sizeof *m->m.assign);
    if (!m->m.assign)
      return;
    for (c = 0; c < cells; c++)
      m->m.assign[c] = -1;
  }
  for (i = 0; i < m->nlines; i++) {
    const lline *L = &m->lines[i];
    int pi = lookup_pattern(pt, p->npats, L->pname);
    int64_t l, h, h0 = L->has_heads ? L->h0 : 0, h1 = L->has_heads ? L->h1 : m->m.heads - 1;
    for (l = L->l0; l <= L->l1; l += L->step)
      for (h = h0; h <= h1; h++)
        m->m.assign[l * m->m.heads + h] = pi;
  }
  report_coverage(p, m, at);
}
