/*
** spec.h: the checked syntax tree of a pattern spec (docs/spec.md), and the
** parser that builds it.  Internal to hattn; not installed.
**
** A spec holds patterns and models.  A pattern is a mask expression (a tree
** of atoms under !, & and |) plus score modifiers.  After a successful parse
** every pattern's mask is in canonical form: n-ary & and | with operands in
** a fixed order, duplicates and implied operands folded, and its canonical
** text and 64-bit key are set.  The emitters, the plan and the reference work
** from this tree alone; nothing of the spec's text reaches generated code.
*/
#ifndef HATTN_GEN_SPEC_H
#define HATTN_GEN_SPEC_H

#include <stddef.h>
#include <stdint.h>

/* Positions are grouped in blocks of this many for random() and topk():
** random and routed blocks are a property of the pattern, not of the tile
** size a kernel happens to use. */
#define HATTN_SPEC_BLOCK 64

/* Node kinds of a mask expression, in canonical order: when operands of &
** and | are sorted, lower kinds come first, then smaller arguments. */
typedef enum hattn__node_kind {
  HATTN_NODE_FULL = 0,  /* always visible */
  HATTN_NODE_CAUSAL,    /* d >= 0 */
  HATTN_NODE_WINDOW,    /* -b <= d <= a (a = L, b = R); window(W) is a = W-1, b = 0 */
  HATTN_NODE_DILATED,   /* 0 <= d < a*b and d mod b == 0 (a = W, b = S) */
  HATTN_NODE_STRIDE,    /* d mod a == 0 (a = S) */
  HATTN_NODE_SINK,      /* kpos < a (sink(G) and prefix(P) are one predicate) */
  HATTN_NODE_GLOBAL,    /* kpos < a or qpos < a */
  HATTN_NODE_CHUNK,     /* qpos / a == kpos / a */
  HATTN_NODE_DOCUMENT,  /* doc(qpos) == doc(kpos), offsets given at run time */
  HATTN_NODE_BLOCKS,    /* layout number a has block (q / bm, k / bn) set */
  HATTN_NODE_RANDOM,    /* a random 64-blocks per query 64-block, seed b */
  HATTN_NODE_TOPK,      /* the a routed key 64-blocks of this query 64-block */
  HATTN_NODE_NOT,       /* !kids[0] */
  HATTN_NODE_AND,       /* kids[0] & kids[1] & ... (nkids >= 2) */
  HATTN_NODE_OR,        /* kids[0] | kids[1] | ... (nkids >= 2) */
  HATTN_NODE_COUNT_
} hattn__node_kind;

/* One node of a mask expression.  Integer arguments are in [0, 2^31). */
typedef struct hattn__expr {
  hattn__node_kind kind;
  int64_t a, b;                 /* the arguments, as documented per kind */
  int nkids;                    /* children of NOT, AND, OR */
  struct hattn__expr **kids;
  int line, col;                /* where it was written (1-based), for errors */
  const char *name;             /* BLOCKS: the layout's name (owned by the spec, also
                                ** layouts[a]); NULL for every other kind */
} hattn__expr;

/* What run-time data a mask needs: a bit set of these. */
enum {
  HATTN_NEEDS_DOCUMENT = 1,     /* document offsets */
  HATTN_NEEDS_BLOCKS = 2,       /* one block layout per name */
  HATTN_NEEDS_RANDOM = 4,       /* nothing from the caller; fixed by the seed */
  HATTN_NEEDS_TOPK = 8          /* routed key blocks per head and query block */
};

typedef enum hattn__alibi {
  HATTN_ALIBI_NONE = 0,
  HATTN_ALIBI_STANDARD,         /* slope m_h = 2^(-8 (h+1) / H) */
  HATTN_ALIBI_FIXED             /* one slope for every head: alibi_slope */
} hattn__alibi;

typedef struct hattn__pattern {
  char *name;
  int line, col;                /* of the name */
  hattn__expr *mask;            /* canonical */
  struct hattn__mask *lowered;  /* MASK lowered (lower.h): what every consumer
                                ** of the mask reads */
  double scale;                 /* 0: the default 1/sqrt(head_dim) */
  double softcap;               /* 0: none */
  hattn__alibi alibi;
  double alibi_slope;           /* for HATTN_ALIBI_FIXED */
  unsigned needs;               /* HATTN_NEEDS_* */
  char *canon;                  /* canonical text: mask, then " with " modifiers */
  uint64_t key;                 /* FNV-1a 64 of canon; compare canon as well */
} hattn__pattern;

typedef enum hattn__dtype {
  HATTN_DTYPE_FP32 = 0,
  HATTN_DTYPE_FP16,
  HATTN_DTYPE_BF16
} hattn__dtype;

typedef struct hattn__model {
  char *name;
  int line, col;
  int layers, heads, kv_heads, head_dim;
  hattn__dtype dtype;            /* bf16 unless the model says otherwise */
  int *assign;                  /* [layers * heads]: pattern index per (layer, head) */
} hattn__model;

/* A parsed, checked spec.  All memory is owned by the spec. */
typedef struct hattn__spec {
  hattn__pattern *patterns;
  int npatterns;
  hattn__model *models;
  int nmodels;
  char **layouts;               /* names used in blocks(NAME); BLOCKS' a indexes this */
  int nlayouts;
} hattn__spec;

/* The diagnostics of one parse. */
typedef struct hattn__diag {
  int line, col;                /* 1-based */
  char *msg;                    /* "window size must be positive, got 0" */
} hattn__diag;

typedef struct hattn__diags {
  hattn__diag *items;
  int count;
  char *text;                   /* every diagnostic, formatted as compilers do */
} hattn__diags;

/*
** Parse and check LEN bytes of TEXT (not NUL-terminated; any bytes at all).
** FILENAME is used in messages only.  On success returns HATTN_OK and sets
** *OUT; on a spec with errors returns HATTN_ESPEC, sets *OUT to NULL and
** fills DIAGS (one entry per problem, in source order, and the formatted
** text: "file:line:col: error: msg\n  <source line>\n  <caret>\n" each).
** DIAGS may be NULL.  Returns HATTN_ENOMEM when memory runs out.
*/
int hattn__spec_parse(const char *text, size_t len, const char *filename,
                      hattn__spec **out, hattn__diags *diags);

/* Free a spec; NULL is allowed. */
void hattn__spec_destroy(hattn__spec *spec);

/* Free what a parse put in DIAGS (not DIAGS itself); NULL is allowed. */
void hattn__diags_clear(hattn__diags *diags);

/* Look a pattern or model up by name: its index, or -1. */
int hattn__spec_find_pattern(const hattn__spec *spec, const char *name);
int hattn__spec_find_model(const hattn__spec *spec, const char *name);

/*
** The canonical text of a mask expression alone (without modifiers), as
** written in a pattern's canon: a malloc'd string the caller frees, or NULL
** when memory runs out.
*/
char *hattn__expr_text(const hattn__expr *e);

/* The number of nodes of KIND in the tree E (0 when there is none). */
int hattn__expr_count(const hattn__expr *e, hattn__node_kind kind);

/* The first node of KIND in E, depth first and left to right, or NULL. */
const hattn__expr *hattn__expr_find(const hattn__expr *e, hattn__node_kind kind);

/* The name of a dtype ("bf16"). */
const char *hattn__dtype_name(hattn__dtype t);

/* The size in bytes of one element of a dtype. */
int hattn__dtype_size(hattn__dtype t);

#endif /* HATTN_GEN_SPEC_H */
