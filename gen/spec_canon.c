/*
** spec_canon.c: the canonical form of a pattern (docs/spec.md, "Canonical
** form"): its mask flattened, folded, sorted, deduplicated and stripped of
** implied operands, then its canonical text, key and needs, and the
** empty-pattern check.
*/
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "spec_int.h"

/* ------------------------------------------------------------------ */
/* Canonical form                                                       */
/* ------------------------------------------------------------------ */

/* An operand being sorted: composites carry their canonical text. */
typedef struct cop {
  hattn__expr *e;
  char *text;
  int drop;
} cop;

static int cmp_cop(const void *pa, const void *pb)
{
  const cop *x = pa, *y = pb;
  int ax = is_atom(x->e), ay = is_atom(y->e);
  if (ax != ay)
    return ax ? -1 : 1;
  if (!ax)
    return strcmp(x->text, y->text);
  if (x->e->kind != y->e->kind)
    return x->e->kind < y->e->kind ? -1 : 1;
  if (x->e->kind == HATTN_NODE_BLOCKS && x->e->name && y->e->name)
    return strcmp(x->e->name, y->e->name);
  if (x->e->a != y->e->a)
    return x->e->a < y->e->a ? -1 : 1;
  if (x->e->b != y->e->b)
    return x->e->b < y->e->b ? -1 : 1;
  return 0;
}

static hattn__expr *canon(parser *p, hattn__expr *e);

/* The canonical form of an AND or OR node: flatten, fold, sort, dedupe,
** collapse.  NULL when memory runs out. */
static hattn__expr *canon_nary(parser *p, hattn__expr *e)
{
  int isand = e->kind == HATTN_NODE_AND;
  cop *ops = NULL;
  int n = 0, cap = 0, i, j, m, wi = -1, causal = 0;
  hattn__expr *r = NULL, **kids = NULL;
  spos at;

  at.off = 0;
  at.line = e->line;
  at.col = e->col;
  for (i = 0; i < e->nkids; i++) {
    hattn__expr *c = canon(p, e->kids[i]);
    int nk, k;
    if (!c)
      goto done;
    nk = c->kind == e->kind ? c->nkids : 1;
    for (k = 0; k < nk; k++) {
      if (grow(p, (void **)&ops, n, &cap, sizeof *ops) < 0)
        goto done;
      ops[n].e = c->kind == e->kind ? c->kids[k] : c;
      ops[n].text = NULL;
      ops[n].drop = 0;
      n++;
    }
  }
  for (i = 0; i < n; i++) {
    if (ops[i].e->kind != HATTN_NODE_FULL)
      continue;
    if (!isand) {
      r = ops[i].e;
      goto done;
    }
    ops[i].drop = 1;
  }
  if (isand) {
    int64_t wa = 0, wb = 0;
    for (i = 0; i < n; i++) {
      if (ops[i].e->kind == HATTN_NODE_CAUSAL)
        causal = 1;
      if (ops[i].e->kind != HATTN_NODE_WINDOW)
        continue;
      if (wi < 0) {
        wi = i;
        wa = ops[i].e->a;
        wb = ops[i].e->b;
      } else {
        wa = ops[i].e->a < wa ? ops[i].e->a : wa;
        wb = ops[i].e->b < wb ? ops[i].e->b : wb;
        ops[i].drop = 1;
      }
    }
    if (wi >= 0 && causal)
      wb = 0;
    if (wi >= 0 && (wa != ops[wi].e->a || wb != ops[wi].e->b)) {
      ops[wi].e = mk(p, HATTN_NODE_WINDOW, wa, wb, at);
      if (!ops[wi].e)
        goto done;
    }
  }
  for (i = m = 0; i < n; i++)
    if (!ops[i].drop)
      ops[m++] = ops[i];
  n = m;
  if (n == 0) {
    r = mk(p, HATTN_NODE_FULL, 0, 0, at);
    goto done;
  }
  for (i = 0; i < n; i++) {
    if (is_atom(ops[i].e))
      continue;
    ops[i].text = hattn__expr_text(ops[i].e);
    if (!ops[i].text) {
      set_oom(p);
      goto done;
    }
  }
  qsort(ops, (size_t)n, sizeof *ops, cmp_cop);
  for (i = 1; i < n; i++)
    if (cmp_cop(&ops[i - 1], &ops[i]) == 0)
      ops[i].drop = 1;
  for (i = 0; i < n; i++) {
    if (ops[i].drop)
      continue;
    for (j = 0; j < n; j++) {
      if (j == i || ops[j].drop)
        continue;
      if (isand ? subset(ops[j].e, ops[i].e) : subset(ops[i].e, ops[j].e)) {
        ops[i].drop = 1;
        break;
      }
    }
  }
  kids = malloc((size_t)(n > 0 ? n : 1) * sizeof *kids);
  if (!kids) {
    set_oom(p);
    goto done;
  }
  for (i = m = 0; i < n; i++)
    if (!ops[i].drop)
      kids[m++] = ops[i].e;
  r = m == 1 ? kids[0] : mk_nary(p, e->kind, kids, m, at);
done:
  for (i = 0; i < n; i++)
    free(ops[i].text);
  free(ops);
  free(kids);
  return r;
}

/* The canonical form of E (new nodes in the arena; E itself is unchanged
** where it already is canonical), or NULL when memory runs out. */
static hattn__expr *canon(parser *p, hattn__expr *e)
{
  spos at;
  hattn__expr *k;

  at.off = 0;
  at.line = e->line;
  at.col = e->col;
  switch (e->kind) {
  case HATTN_NODE_STRIDE:
    return e->a == 1 ? mk(p, HATTN_NODE_FULL, 0, 0, at) : e;
  case HATTN_NODE_NOT:
    k = canon(p, e->kids[0]);
    if (!k)
      return NULL;
    if (k->kind == HATTN_NODE_NOT)
      return k->kids[0];
    return k == e->kids[0] ? e : mk_nary(p, HATTN_NODE_NOT, &k, 1, at);
  case HATTN_NODE_AND:
  case HATTN_NODE_OR:
    return canon_nary(p, e);
  default:
    return e;
  }
}

/* ------------------------------------------------------------------ */
/* A pattern: canonical mask, text, key                                */
/* ------------------------------------------------------------------ */

/* Canonicalises a pattern that parsed without errors, sets its text and
** key, and reports it when it masks every pair.  Its lowered form and needs
** are set when the spec is built. */
void finish_pattern(parser *p, prec *pr, hattn__expr *mask)
{
  hattn__pattern *pat = &pr->pat;
  sbuf b = {0};
  spos at;
  char buf[SHOWN + 4];
  int empty;

  pat->mask = canon(p, mask);
  if (!pat->mask)
    return;
  put_expr(&b, pat->mask);
  put_modifiers(&b, pat);
  if (!sb_take(&b)) {
    set_oom(p);
    return;
  }
  pat->canon = pstrndup(p, (const unsigned char *)b.p, b.len);
  free(b.p);
  if (!pat->canon)
    return;
  pat->key = fnv1a64(pat->canon);
  empty = mask_is_empty(pat->mask);
  if (empty < 0) {
    set_oom(p);
  } else if (empty) {
    at.off = pr->off;
    at.line = pat->line;
    at.col = pat->col;
    diag(p, at, "pattern '%s' masks every (query, key) pair", name_text(pat->name, buf));
    pr->bad = 1;
  }
}

/* pattern := "pattern" NAME "=" expr [ "with" modifiers ] */
