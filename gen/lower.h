/*
** lower.h: the one lowering of a mask.  A checked, canonical mask tree
** (spec.h) becomes a short flat list of operations over the positions of a
** (query, key) pair and the run-time tables, plus the facts every consumer
** needs.  The evaluator (mask.c), the plan (plan.c), the spec's empty
** pattern check (spec.c) and both emitters read this form alone: each has
** one case per operation, and only lower.c knows what an atom of the
** language means.  Internal to hattn; not installed.
**
** Positions (docs/spec.md): for query row q and key row k, qpos = q + (lk -
** lq), kpos = k, d = qpos - kpos.
*/
#ifndef HATTN_GEN_LOWER_H
#define HATTN_GEN_LOWER_H

#include <stdint.h>

#include "spec.h"

/* A bound of a distance interval that is no bound: beyond any distance a
** kernel meets (lengths are below 2^31), and small enough that adding a
** length to it never overflows. */
#define HATTN_MASK_INF (INT64_C(1) << 40)

/* The operations.  Each writes one boolean register: operation i writes
** register i.  Leaves read positions and tables; NOT, AND and OR read the
** registers of earlier operations. */
typedef enum hattn__op_kind {
  HATTN_OP_DIST = 0,  /* lo <= d <= hi and d mod m == 0 (a bound at
                      ** +-HATTN_MASK_INF is none; m == 1 is no modulus) */
  HATTN_OP_KPOS_LT,   /* kpos < a */
  HATTN_OP_QPOS_LT,   /* qpos < a */
  HATTN_OP_CHUNK,     /* floor(qpos / a) == floor(kpos / a) */
  HATTN_OP_DOC,       /* qpos >= 0 and doc(qpos) == doc(kpos): the document
                      ** ids table */
  HATTN_OP_LAYOUT,    /* layout number a has block (q / bm, k / bn) set:
                      ** the layouts table */
  HATTN_OP_RANDOM,    /* qpos >= 0 and bit (kpos / 64) of row (qpos / 64) of
                      ** random bit set number a (drawn a.r blocks, seed b) */
  HATTN_OP_TOPK,      /* qpos >= 0 and kpos / 64 is one of the a routed key
                      ** 64-blocks of query 64-block qpos / 64: the top-k table */
  HATTN_OP_NOT,       /* !register args[0] */
  HATTN_OP_AND,       /* registers args[0] && ... && args[nargs - 1] */
  HATTN_OP_OR         /* registers args[0] || ... || args[nargs - 1] */
} hattn__op_kind;

typedef struct hattn__op {
  hattn__op_kind kind;
  int64_t lo, hi, m;  /* DIST */
  int64_t a, b;       /* KPOS_LT, QPOS_LT, CHUNK: the constant; LAYOUT: the
                      ** layout number; RANDOM: a = the bit set's number,
                      ** b = blocks per row (R), seed = the spec's seed;
                      ** TOPK: a = K */
  int64_t seed;       /* RANDOM: the spec's seed (the caller's is XORed in) */
  int nargs;          /* NOT, AND, OR: operand registers, all < this op's */
  const int *args;    /* into hattn__mask's storage */
  const char *what;   /* the atom this leaf comes from in canonical text
                      ** ("window(1024, 0)"), for comments; NULL for NOT,
                      ** AND, OR */
} hattn__op;

/*
** A lowered mask: NOPS operations in evaluation order (every operand
** before its user); the last one's register is the mask.  Made by
** hattn__mask_lower and owned by whoever lowered it.
*/
typedef struct hattn__mask {
  int nops;
  hattn__op *ops;
  /* The facts. */
  unsigned needs;        /* HATTN_NEEDS_*: which run-time tables */
  int distance_only;     /* every leaf is a DIST: the mask depends on d alone */
  int closed_form;       /* no run-time table: key ranges per query block
                         ** follow from the positions alone */
  int band;              /* the mask is band_lo <= d <= band_hi: an AND of
                         ** (or one) DIST with m == 1, or always visible */
  int64_t band_lo, band_hi;
  int dense;             /* every pair is visible */
  int nrandom;           /* random bit sets, numbered 0.. in op order */
  int nlayouts;          /* 1 + the largest layout number (0: none) */
  int64_t topk_k;        /* K of the topk table (0: none) */
} hattn__mask;

/* Lower the canonical tree E.  Returns HATTN_OK and sets *OUT, or
** HATTN_ENOMEM. */
int hattn__mask_lower(const hattn__expr *e, hattn__mask **out);

/* Free a lowered mask; NULL is allowed. */
void hattn__mask_free(hattn__mask *m);

/* Whether M reads layout number IDX of the spec (blocks(NAME)). */
int hattn__mask_uses_layout(const hattn__mask *m, int64_t idx);

/* The operation that random bit set number N comes from, or NULL. */
const hattn__op *hattn__mask_random_op(const hattn__mask *m, int n);

/*
** Rows of routed blocks for topk(K) at LK keys.  A query 64-block can be
** routed to at most the ceil(lk / 64) key 64-blocks that exist, so a row
** needs no more entries than hattn__topk_width: topk(2147483647) at 1k keys
** is a table of 16 entries a row, not of 2^31.  Callers may pass rows of K
** entries or of this width (mask.h).
**
** The kernels read the tables that runtime/tables.c stages, whose rows hold
** hattn__topk_staged_width entries: K itself up to HATTN_TOPK_UNROLL, where
** the kernels unroll their loop over a row with K a constant (padding with
** -1 where fewer blocks exist), else hattn__topk_width, where they loop to
** the row width they are given.
*/
#define HATTN_TOPK_UNROLL 64

static inline int64_t hattn__topk_width(int64_t k, int64_t lk) {
  int64_t nb = (lk + HATTN_SPEC_BLOCK - 1) / HATTN_SPEC_BLOCK;
  return k < nb ? k : nb;
}

static inline int64_t hattn__topk_staged_width(int64_t k, int64_t lk) {
  return k <= HATTN_TOPK_UNROLL ? k : hattn__topk_width(k, lk);
}

#endif /* HATTN_GEN_LOWER_H */
