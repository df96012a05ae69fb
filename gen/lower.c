/*
** lower.c: the one lowering of a mask tree to operations (lower.h).  This
** is the only file that knows what each atom of the language means.
*/
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "lower.h"

typedef struct lowering {
  hattn__mask *m;
  int cap;            /* ops allocated */
  int *args;          /* operand registers, NARGS used of ARGCAP */
  int nargs, argcap;
  int oom;
} lowering;

/* Append an operation; returns its register, or -1 when memory runs out. */
static int push(lowering *L, const hattn__op *op) {
  hattn__mask *m = L->m;
  if (L->oom) return -1;
  if (m->nops == L->cap) {
    int cap = L->cap ? 2 * L->cap : 16;
    hattn__op *ops = realloc(m->ops, (size_t)cap * sizeof *ops);
    if (ops == NULL) {
      L->oom = 1;
      return -1;
    }
    m->ops = ops;
    L->cap = cap;
  }
  m->ops[m->nops] = *op;
  return m->nops++;
}

/* A leaf with the canonical text of the atom E it lowers. */
static int leaf(lowering *L, const hattn__expr *e, hattn__op op) {
  op.what = hattn__expr_text(e);
  if (op.what == NULL) {
    L->oom = 1;
    return -1;
  }
  return push(L, &op);
}

static int dist(lowering *L, const hattn__expr *e, int64_t lo, int64_t hi, int64_t m) {
  hattn__op op = {0};
  op.kind = HATTN_OP_DIST;
  op.lo = lo;
  op.hi = hi;
  op.m = m;
  return leaf(L, e, op);
}

static int constant(lowering *L, const hattn__expr *e, hattn__op_kind kind, int64_t a) {
  hattn__op op = {0};
  op.kind = kind;
  op.a = a;
  return leaf(L, e, op);
}

/* An operation over the registers R[0 .. N).  Operands are kept as offsets
** into L->args until the end (the array moves as it grows). */
static int combine(lowering *L, hattn__op_kind kind, const int *r, int n) {
  hattn__op op = {0};
  int i;
  if (L->oom) return -1;
  if (L->nargs + n > L->argcap) {
    int cap = 2 * (L->nargs + n) + 16;
    int *a = realloc(L->args, (size_t)cap * sizeof *a);
    if (a == NULL) {
      L->oom = 1;
      return -1;
    }
    L->args = a;
    L->argcap = cap;
  }
  for (i = 0; i < n; i++) L->args[L->nargs + i] = r[i];
  op.kind = kind;
  op.nargs = n;
  op.a = L->nargs;  /* the offset, made a pointer in hattn__mask_lower */
  L->nargs += n;
  return push(L, &op);
}

/* What each atom means. */
static int lower(lowering *L, const hattn__expr *e) {
  int r[2], *kids, i, v;
  switch (e->kind) {
  case HATTN_NODE_FULL: return dist(L, e, -HATTN_MASK_INF, HATTN_MASK_INF, 1);
  case HATTN_NODE_CAUSAL: return dist(L, e, 0, HATTN_MASK_INF, 1);
  case HATTN_NODE_WINDOW: return dist(L, e, -e->b, e->a, 1);
  case HATTN_NODE_DILATED: return dist(L, e, 0, e->a * e->b - 1, e->b);
  case HATTN_NODE_STRIDE: return dist(L, e, -HATTN_MASK_INF, HATTN_MASK_INF, e->a);
  case HATTN_NODE_SINK: return constant(L, e, HATTN_OP_KPOS_LT, e->a);
  case HATTN_NODE_GLOBAL:
    r[0] = constant(L, e, HATTN_OP_KPOS_LT, e->a);
    r[1] = constant(L, e, HATTN_OP_QPOS_LT, e->a);
    return combine(L, HATTN_OP_OR, r, 2);
  case HATTN_NODE_CHUNK: return constant(L, e, HATTN_OP_CHUNK, e->a);
  case HATTN_NODE_DOCUMENT:
    L->m->needs |= HATTN_NEEDS_DOCUMENT;
    return constant(L, e, HATTN_OP_DOC, 0);
  case HATTN_NODE_BLOCKS:
    L->m->needs |= HATTN_NEEDS_BLOCKS;
    if (e->a >= L->m->nlayouts) L->m->nlayouts = e->a >= INT_MAX - 1 ? INT_MAX : (int)e->a + 1;
    return constant(L, e, HATTN_OP_LAYOUT, e->a);
  case HATTN_NODE_RANDOM: {
    hattn__op op = {0};
    L->m->needs |= HATTN_NEEDS_RANDOM;
    op.kind = HATTN_OP_RANDOM;
    op.a = L->m->nrandom++;
    op.b = e->a;
    op.seed = e->b;
    return leaf(L, e, op);
  }
  case HATTN_NODE_TOPK:
    L->m->needs |= HATTN_NEEDS_TOPK;
    L->m->topk_k = e->a;
    return constant(L, e, HATTN_OP_TOPK, e->a);
  case HATTN_NODE_NOT:
    r[0] = lower(L, e->kids[0]);
    return combine(L, HATTN_OP_NOT, r, 1);
  case HATTN_NODE_AND:
  case HATTN_NODE_OR:
    kids = malloc((size_t)e->nkids * sizeof *kids);
    if (kids == NULL) {
      L->oom = 1;
      return -1;
    }
    for (i = 0; i < e->nkids; i++) kids[i] = lower(L, e->kids[i]);
    v = combine(L, e->kind == HATTN_NODE_AND ? HATTN_OP_AND : HATTN_OP_OR, kids, e->nkids);
    free(kids);
    return v;
  default:
    L->oom = 1;  /* a checked tree has no other kind */
    return -1;
  }
}

/* Whether register R is a band lo <= d <= hi: a DIST without modulus, or
** an AND of bands. */
static int band_of(const hattn__mask *m, int r, int64_t *lo, int64_t *hi) {
  const hattn__op *op = &m->ops[r];
  int64_t l, h;
  int i;
  switch (op->kind) {
  case HATTN_OP_DIST:
    if (op->m != 1) return 0;
    *lo = op->lo;
    *hi = op->hi;
    return 1;
  case HATTN_OP_AND:
    *lo = -HATTN_MASK_INF;
    *hi = HATTN_MASK_INF;
    for (i = 0; i < op->nargs; i++) {
      if (!band_of(m, op->args[i], &l, &h)) return 0;
      if (l > *lo) *lo = l;
      if (h < *hi) *hi = h;
    }
    return 1;
  default:
    return 0;
  }
}

/* Derive the facts from the operations. */
static void facts(hattn__mask *m) {
  int i;
  m->distance_only = 1;
  for (i = 0; i < m->nops; i++) {
    hattn__op_kind k = m->ops[i].kind;
    if (k != HATTN_OP_DIST && k != HATTN_OP_NOT && k != HATTN_OP_AND && k != HATTN_OP_OR)
      m->distance_only = 0;
  }
  m->closed_form = m->needs == 0;
  m->band = band_of(m, m->nops - 1, &m->band_lo, &m->band_hi);
  if (!m->band) m->band_lo = m->band_hi = 0;
  m->dense = m->band && m->band_lo <= -HATTN_MASK_INF && m->band_hi >= HATTN_MASK_INF;
}

int hattn__mask_lower(const hattn__expr *e, hattn__mask **out) {
  lowering L;
  int i, rc = HATTN_ENOMEM;
  memset(&L, 0, sizeof L);
  *out = NULL;
  L.m = calloc(1, sizeof *L.m);
  if (L.m == NULL) goto fail;
  lower(&L, e);
  if (L.oom) goto fail;
  /* Operands move into one block after the operations. */
  if (L.nargs > 0) {
    hattn__op *ops = realloc(L.m->ops, (size_t)L.m->nops * sizeof *ops + (size_t)L.nargs * sizeof(int));
    int *args;
    if (ops == NULL) goto fail;
    L.m->ops = ops;
    args = (int *)(void *)(ops + L.m->nops);
    memcpy(args, L.args, (size_t)L.nargs * sizeof *args);
    for (i = 0; i < L.m->nops; i++) {
      if (L.m->ops[i].nargs > 0) {
        L.m->ops[i].args = args + L.m->ops[i].a;
        L.m->ops[i].a = 0;
      }
    }
  }
  facts(L.m);
  *out = L.m;
  L.m = NULL;
  rc = HATTN_OK;
fail:
  free(L.args);
  hattn__mask_free(L.m);
  return rc;
}

void hattn__mask_free(hattn__mask *m) {
  int i;
  if (m == NULL) return;
  for (i = 0; i < m->nops; i++) free((char *)m->ops[i].what);
  free(m->ops);
  free(m);
}

int hattn__mask_uses_layout(const hattn__mask *m, int64_t idx) {
  int i;
  for (i = 0; i < m->nops; i++)
    if (m->ops[i].kind == HATTN_OP_LAYOUT && m->ops[i].a == idx) return 1;
  return 0;
}

const hattn__op *hattn__mask_random_op(const hattn__mask *m, int n) {
  int i;
  for (i = 0; i < m->nops; i++)
    if (m->ops[i].kind == HATTN_OP_RANDOM && m->ops[i].a == n) return &m->ops[i];
  return NULL;
}
