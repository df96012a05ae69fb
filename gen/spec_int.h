/*
** spec_int.h: what the files of the spec checker share; private to
** gen/spec_*.c and never installed.  The public face of the checker is
** gen/spec.h.
**
**   spec_parse.c   the arena, the lexer, the parser and hattn__spec_parse
**   spec_canon.c   the canonical form of a pattern
**   spec_check.c   implied operands, the empty-pattern check, whole-file checks
**   spec_text.c    the string builder, canonical text, keys, diagnostics text
**
** The functions below are called across these files.  Their short names are
** kept in the source and mapped to hattn__spec_* link names here (as zlib's
** Z_PREFIX does), so that nothing outside gen/spec_*.c can collide with them.
*/
#ifndef HATTN_SPEC_INT_H
#define HATTN_SPEC_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h"

/* Limits on untrusted input. */
#define MAX_DEPTH 200           /* nesting of ( and ! in one expression */
#define MAX_ERRORS 50           /* diagnostics kept before the parse stops */
#define MAX_ATOMS 1000          /* atoms in one pattern */
#define MAX_LAYERS 1024         /* layers of one model */
#define MAX_HEADS 1024          /* heads of one model */
#define MAX_GRID_CELLS (1 << 24) /* (layer, head) cells of all models of one file */
#define MAX_LINE_CELLS (1 << 26) /* cells that the layer lines of one file cover, summed */
#define INT_LIMIT 2147483647LL  /* integers are below 2^31 */
#define SHOWN 64                /* longest name or number quoted whole in a message */
#define SUGGEST_MAX 64          /* longest name that gets a "did you mean" */
#define EMPTY_MAX_CONSTS 32     /* more distinct constants: the empty check assumes non-empty */
#define EMPTY_MAX_NODES 200     /* more canonical nodes: likewise */

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* Link names of the functions shared between the files. */
#define set_oom hattn__spec_set_oom
#define palloc hattn__spec_palloc
#define grow hattn__spec_grow
#define pstrndup hattn__spec_pstrndup
#define diag hattn__spec_diag
#define name_text hattn__spec_name_text
#define mk hattn__spec_mk
#define mk_nary hattn__spec_mk_nary
#define finish_pattern hattn__spec_finish_pattern
#define subset hattn__spec_subset
#define mask_is_empty hattn__spec_mask_is_empty
#define name_table hattn__spec_name_table
#define check_duplicates hattn__spec_check_duplicates
#define finish_model hattn__spec_finish_model
#define sb_vprintf hattn__spec_sb_vprintf
#define sb_take hattn__spec_sb_take
#define format_real hattn__spec_format_real
#define is_atom hattn__spec_is_atom
#define put_expr hattn__spec_put_expr
#define put_modifiers hattn__spec_put_modifiers
#define fnv1a64 hattn__spec_fnv1a64
#define emit_diags hattn__spec_emit_diags

/* The arena that holds everything a spec holds (spec_parse.c). */
typedef struct arena_chunk arena_chunk;

/* A growing malloc'd string; OOM is sticky and leaves P freed. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

/* Tokens. */
enum {
  T_EOF, T_NAME, T_NUM, T_LPAREN, T_RPAREN, T_COMMA, T_EQ, T_OR, T_AND,
  T_NOT, T_LBRACE, T_RBRACE, T_COLON, T_MINUS, T_BAD
};

/* A place in the text: byte offset, 1-based line and byte column. */
typedef struct spos {
  size_t off;
  int line, col;
} spos;

typedef struct token {
  int kind;
  spos at;
  size_t len;
  size_t numlen;                /* T_NUM: digits, fraction and exponent */
  int isfloat;                  /* T_NUM: has a fraction or an exponent */
  int bol;                      /* the first token on its line */
} token;

typedef struct pdiag {
  spos at;
  int seq;
  char *msg;
} pdiag;

/* One "layer" line of a model, as written. */
typedef struct lline {
  int64_t l0, l1, step, h0, h1;
  int has_heads, bad;
  spos l0at, l1at, h0at, h1at, nameat;
  char *pname;
} lline;

typedef struct prec {
  hattn__pattern pat;
  size_t off;
  int bad;
} prec;

enum { ST_LAYERS, ST_HEADS, ST_KV_HEADS, ST_HEAD_DIM, ST_DTYPE, ST_LAYER, ST_COUNT };

typedef struct mrec {
  hattn__model m;
  size_t off;
  int bad;
  int have[ST_DTYPE + 1];
  spos valat[ST_DTYPE + 1];
  lline *lines;
  int nlines, caplines;
} mrec;

typedef struct parser {
  const unsigned char *s;
  size_t n, pos, line_start;
  int line, at_bol;
  token tok;
  spos end;                     /* just after the current token */
  spos prev_end;                /* just after the token before it */
  const char *file;
  arena_chunk *arena;
  pdiag *diags;
  int ndiags, capdiags;
  int nerr;                     /* every error, including those not kept */
  int stopped;                  /* MAX_ERRORS reached */
  int halt;                     /* stop reading: stopped or out of memory */
  int oom;
  prec *pats;
  int npats, cappats;
  mrec *models;
  int nmodels, capmodels;
  char **layouts;
  int nlayouts, caplayouts;
  int atoms;                    /* atoms in the current pattern */
  int64_t grid_cells;           /* (layer, head) cells of the models checked so far */
  int64_t line_cells;           /* cells their layer lines cover, summed */
} parser;

/* A pattern's or model's name and its index, for the sorted name tables. */
typedef struct named {
  const char *name;
  int index;
} named;


/* spec_parse.c: the parser's memory and diagnostics, and tree nodes. */
void set_oom(parser *p);
void *palloc(parser *p, size_t n);
int grow(parser *p, void **v, int n, int *cap, size_t size);
char *pstrndup(parser *p, const unsigned char *s, size_t n);
void diag(parser *p, spos at, const char *fmt, ...) PRINTF_LIKE(3, 4);
const char *name_text(const char *name, char buf[SHOWN + 4]);
hattn__expr *mk(parser *p, hattn__node_kind kind, int64_t a, int64_t b, spos at);
hattn__expr *mk_nary(parser *p, hattn__node_kind kind, hattn__expr **kids, int n, spos at);

/* spec_canon.c */
void finish_pattern(parser *p, prec *pr, hattn__expr *mask);

/* spec_check.c */
int subset(const hattn__expr *x, const hattn__expr *y);
int mask_is_empty(const hattn__expr *mask);
named *name_table(parser *p, int models);
void check_duplicates(parser *p, const named *t, int n, int models);
void finish_model(parser *p, mrec *m, const named *pt);

/* spec_text.c */
void sb_vprintf(sbuf *b, const char *fmt, va_list ap);
char *sb_take(sbuf *b);
void format_real(char *buf, size_t n, double v);
int is_atom(const hattn__expr *e);
void put_expr(sbuf *b, const hattn__expr *e);
void put_modifiers(sbuf *b, const hattn__pattern *pat);
uint64_t fnv1a64(const char *s);
int emit_diags(parser *p, hattn__diags *d);

#endif
