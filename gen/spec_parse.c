/*
** spec_parse.c: the lexer and parser of the pattern spec language
** (docs/spec.md), and hattn__spec_parse, which drives the parse, the
** canonical form (spec_canon.c) and the checks (spec_check.c).  Bytes in; a
** canonical syntax tree, or one compiler-style diagnostic per problem, out.
**
** The input is untrusted: it is read only within its length, recursion is
** bounded by MAX_DEPTH, the number of reported errors by MAX_ERRORS, and
** every integer is checked against 2^31 before it is multiplied.
**
** Memory: everything a spec holds lives in one arena owned by the spec, so
** hattn__spec_destroy frees it in one sweep.  Diagnostics are malloc'd
** separately, since they outlive a failed parse.
*/
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "lower.h"
#include "spec_int.h"

/* ------------------------------------------------------------------ */
/* Arena                                                                */
/* ------------------------------------------------------------------ */

struct arena_chunk {
  struct arena_chunk *next;
  size_t size, used;
  max_align_t data[];
};

#define ARENA_CHUNK 65536

/* A spec as allocated: the public struct first, so a hattn__spec * is one of
** these. */
typedef struct spec_impl {
  hattn__spec pub;
  arena_chunk *arena;
} spec_impl;

/* N zeroed bytes from the arena at *HEAD, aligned for any type, or NULL
** when memory runs out. */
static void *arena_alloc(arena_chunk **head, size_t n)
{
  const size_t align = sizeof(max_align_t);
  arena_chunk *c = *head;
  void *r;

  if (n == 0)
    n = 1;
  if (n > SIZE_MAX - align - sizeof(arena_chunk))
    return NULL;
  n = (n + align - 1) / align * align;
  if (!c || c->size - c->used < n) {
    size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
    c = malloc(sizeof(arena_chunk) + size);
    if (!c)
      return NULL;
    c->size = size;
    c->used = 0;
    c->next = *head;
    *head = c;
  }
  r = (char *)c->data + c->used;
  c->used += n;
  memset(r, 0, n);
  return r;
}

static void arena_free(arena_chunk *c)
{
  while (c) {
    arena_chunk *next = c->next;
    free(c);
    c = next;
  }
}

/* ------------------------------------------------------------------ */
/* Parser state                                                         */
/* ------------------------------------------------------------------ */

static const char *const stmt_names[ST_COUNT] = {
  "layers", "heads", "kv_heads", "head_dim", "dtype", "layer"
};

void set_oom(parser *p)
{
  p->oom = 1;
  p->halt = 1;
}

void *palloc(parser *p, size_t n)
{
  void *r = arena_alloc(&p->arena, n);
  if (!r)
    set_oom(p);
  return r;
}

/* Grows a malloc'd array *V of *CAP elements of SIZE bytes so that one more
** fits after N; returns 0, or -1 when memory runs out. */
int grow(parser *p, void **v, int n, int *cap, size_t size)
{
  void *q;
  int nc;
  if (n < *cap)
    return 0;
  if (*cap > INT_MAX / 2 || (size_t)(*cap ? *cap * 2 : 8) > SIZE_MAX / size) {
    set_oom(p);
    return -1;
  }
  nc = *cap ? *cap * 2 : 8;
  q = realloc(*v, (size_t)nc * size);
  if (!q) {
    set_oom(p);
    return -1;
  }
  *v = q;
  *cap = nc;
  return 0;
}

/* A NUL-terminated arena copy of N bytes at S. */
char *pstrndup(parser *p, const unsigned char *s, size_t n)
{
  char *r = n < SIZE_MAX ? palloc(p, n + 1) : NULL;
  if (r)
    memcpy(r, s, n);
  return r;
}

/* ------------------------------------------------------------------ */
/* Diagnostics                                                          */
/* ------------------------------------------------------------------ */

static void vdiag(parser *p, spos at, const char *fmt, va_list ap)
{
  sbuf b = {0};
  pdiag *d;

  p->nerr++;
  if (p->stopped || p->oom)
    return;
  if (p->ndiags >= MAX_ERRORS) {
    p->stopped = 1;
    p->halt = 1;
    return;
  }
  if (grow(p, (void **)&p->diags, p->ndiags, &p->capdiags, sizeof *p->diags) < 0)
    return;
  sb_vprintf(&b, fmt, ap);
  if (!sb_take(&b)) {
    set_oom(p);
    return;
  }
  d = &p->diags[p->ndiags];
  d->at = at;
  d->seq = p->ndiags;
  d->msg = b.p;
  p->ndiags++;
}

void diag(parser *p, spos at, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vdiag(p, at, fmt, ap);
  va_end(ap);
}

/* Copies the bytes of T (a name or number: [A-Za-z0-9_.+-] only) to BUF as a
** C string, cut at SHOWN bytes with "...". */
static const char *tok_text(const parser *p, const token *t, char buf[SHOWN + 4])
{
  size_t n = t->len > SHOWN ? SHOWN : t->len;
  memcpy(buf, p->s + t->at.off, n);
  strcpy(buf + n, t->len > SHOWN ? "..." : "");
  return buf;
}

/* Likewise for a NUL-terminated name held by the parser. */
const char *name_text(const char *name, char buf[SHOWN + 4])
{
  size_t n = strlen(name);
  if (n > SHOWN)
    n = SHOWN;
  memcpy(buf, name, n);
  strcpy(buf + n, strlen(name) > SHOWN ? "..." : "");
  return buf;
}

static int tok_is(const parser *p, const char *word)
{
  size_t n = strlen(word);
  return p->tok.kind == T_NAME && p->tok.len == n && memcmp(p->s + p->tok.at.off, word, n) == 0;
}

static int tok_eq(const parser *p, const token *t, const char *word)
{
  size_t n = strlen(word);
  return t->kind == T_NAME && t->len == n && memcmp(p->s + t->at.off, word, n) == 0;
}

static int is_top_keyword(const parser *p);
static int is_stmt_keyword(const parser *p);

/* Whether the current token likely begins the next construct, so that
** whatever was expected is missing before it rather than wrong at it. */
static int starts_construct(const parser *p)
{
  return p->tok.kind == T_RBRACE || is_top_keyword(p) || is_stmt_keyword(p);
}

/* A syntax error at the current token: WHAT ("expected ')'"), or "unexpected
** character" when the token is a byte the language does not use.  When the
** token starts a line and the next construct, the error goes just after the
** previous token instead, where the missing piece belongs. */
static void syntax(parser *p, const char *what)
{
  if (p->tok.kind == T_BAD) {
    unsigned c = p->s[p->tok.at.off];
    if (c > 0x20 && c < 0x7f && c != '\'' && c != '\\')
      diag(p, p->tok.at, "unexpected character '%c'", (int)c);
    else
      diag(p, p->tok.at, "unexpected character '\\x%02x'", c);
  } else if (p->tok.bol && p->prev_end.line > 0 && starts_construct(p)) {
    diag(p, p->prev_end, "%s", what);  /* after the last token before it */
  } else {
    diag(p, p->tok.at, "%s", what);
  }
}

/* Edit distance between A and B (both at most SUGGEST_MAX bytes). */
static int edit_distance(const char *a, size_t na, const char *b)
{
  int row[SUGGEST_MAX + 2];
  size_t nb = strlen(b), i, j;

  for (j = 0; j <= nb; j++)
    row[j] = (int)j;
  for (i = 1; i <= na; i++) {
    int diag_prev = row[0];
    row[0] = (int)i;
    for (j = 1; j <= nb; j++) {
      int up = row[j], best;
      best = diag_prev + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      diag_prev = up;
      row[j] = best;
    }
  }
  return row[nb];
}

/* The closest of WORDS (NULL-terminated) to the N bytes at NAME, within an
** edit distance of 2, or NULL. */
static const char *suggest(const char *name, size_t n, const char *const *words)
{
  const char *best = NULL;
  int bestd = 3;
  if (n > SUGGEST_MAX)
    return NULL;
  for (; *words; words++) {
    int d;
    if (strlen(*words) > SUGGEST_MAX)
      continue;
    d = edit_distance(name, n, *words);
    if (d < bestd) {
      bestd = d;
      best = *words;
    }
  }
  return best;
}

/* ------------------------------------------------------------------ */
/* Lexer                                                                */
/* ------------------------------------------------------------------ */

static int is_digit(unsigned c) { return c >= '0' && c <= '9'; }
static int is_alpha(unsigned c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_alnum(unsigned c) { return is_alpha(c) || is_digit(c); }

static int col_of(const parser *p, size_t off)
{
  size_t c = off - p->line_start + 1;
  return c > INT_MAX ? INT_MAX : (int)c;
}

/* Reads the next token into p->tok; after a halt, every token is T_EOF. */
static void next(parser *p)
{
  const unsigned char *s = p->s;
  size_t i = p->pos, n = p->n, j;
  token t;

  memset(&t, 0, sizeof t);
  if (p->tok.kind != T_EOF)
    p->prev_end = p->end;
  if (p->halt) {
    t.kind = T_EOF;
    t.at = p->end;
    p->tok = t;
    return;
  }
  while (i < n) {
    unsigned c = s[i];
    if (c == '\n' || c == '\r') {
      /* A line ends at LF, CR LF or a CR alone. */
      i++;
      if (c == '\r' && i < n && s[i] == '\n')
        i++;
      if (p->line < INT_MAX)
        p->line++;
      p->line_start = i;
      p->at_bol = 1;
    } else if (c == ' ' || c == '\t' || c == '\f' || c == '\v') {
      i++;
    } else if (c == '#') {
      while (i < n && s[i] != '\n' && s[i] != '\r')
        i++;
    } else {
      break;
    }
  }
  if (i >= n) {
    p->pos = n;
    t.kind = T_EOF;
    t.at = p->end;
    p->tok = t;
    return;
  }
  t.at.off = i;
  t.at.line = p->line;
  t.at.col = col_of(p, i);
  t.bol = p->at_bol;
  p->at_bol = 0;
  j = i + 1;
  if (is_alpha(s[i])) {
    t.kind = T_NAME;
    while (j < n && is_alnum(s[j]))
      j++;
  } else if (is_digit(s[i])) {
    t.kind = T_NUM;
    while (j < n && is_digit(s[j]))
      j++;
    if (j + 1 < n && s[j] == '.' && is_digit(s[j + 1])) {
      t.isfloat = 1;
      j += 2;
      while (j < n && is_digit(s[j]))
        j++;
    }
    if (j < n && (s[j] == 'e' || s[j] == 'E')) {
      size_t k = j + 1;
      if (k < n && (s[k] == '+' || s[k] == '-'))
        k++;
      if (k < n && is_digit(s[k])) {
        t.isfloat = 1;
        j = k;
        while (j < n && is_digit(s[j]))
          j++;
      }
    }
    t.numlen = j - i;
    while (j < n && is_alnum(s[j]))
      j++;
  } else {
    switch (s[i]) {
    case '(': t.kind = T_LPAREN; break;
    case ')': t.kind = T_RPAREN; break;
    case ',': t.kind = T_COMMA; break;
    case '=': t.kind = T_EQ; break;
    case '|': t.kind = T_OR; break;
    case '&': t.kind = T_AND; break;
    case '!': t.kind = T_NOT; break;
    case '{': t.kind = T_LBRACE; break;
    case '}': t.kind = T_RBRACE; break;
    case ':': t.kind = T_COLON; break;
    case '-': t.kind = T_MINUS; break;
    default: t.kind = T_BAD; break;
    }
  }
  t.len = j - i;
  p->pos = j;
  p->end.off = j;
  p->end.line = t.at.line;
  p->end.col = col_of(p, j);
  p->tok = t;
}

/* ------------------------------------------------------------------ */
/* Numbers                                                              */
/* ------------------------------------------------------------------ */

/* The integer value of number token T, in [0, 2^31), into *OUT: 0, or -1
** after reporting why it is not one. */
static int num_int(parser *p, const token *t, int64_t *out)
{
  const unsigned char *s = p->s + t->at.off;
  char lit[SHOWN + 4];
  int64_t v = 0, mult = 1;
  size_t i, nsuf = t->len - t->numlen;
  int big = 0;

  if (t->isfloat) {
    diag(p, t->at, "expected an integer, got %s", tok_text(p, t, lit));
    return -1;
  }
  for (i = 0; i < t->numlen && !big; i++) {
    v = v * 10 + (s[i] - '0');
    if (v > INT_LIMIT)
      big = 1;
  }
  if (nsuf == 1 && s[t->numlen] == 'k') {
    mult = 1024;
  } else if (nsuf == 1 && s[t->numlen] == 'm') {
    mult = 1048576;
  } else if (nsuf > 0) {
    diag(p, t->at, "unknown integer suffix '%.*s'", (int)(nsuf > SHOWN ? SHOWN : nsuf),
         (const char *)s + t->numlen);
    return -1;
  }
  if (big || v > INT_LIMIT / mult) {
    diag(p, t->at, "number too large: %s (the limit is 2^31 - 1)", tok_text(p, t, lit));
    return -1;
  }
  *out = v * mult;
  return 0;
}

/* The real value of number token T into *OUT: 0, or -1 after reporting. */
static int num_real(parser *p, const token *t, double *out)
{
  const unsigned char *s = p->s + t->at.off;
  char buf[SHOWN + 4], *end;
  size_t nsuf = t->len - t->numlen;
  double v, mult = 1;

  if (nsuf == 1 && s[t->numlen] == 'k') {
    mult = 1024;
  } else if (nsuf == 1 && s[t->numlen] == 'm') {
    mult = 1048576;
  } else if (nsuf > 0) {
    diag(p, t->at, "unknown number suffix '%.*s'", (int)(nsuf > SHOWN ? SHOWN : nsuf),
         (const char *)s + t->numlen);
    return -1;
  }
  if (t->numlen > SHOWN) {
    diag(p, t->at, "number too long: %s", tok_text(p, t, buf));
    return -1;
  }
  memcpy(buf, s, t->numlen);
  buf[t->numlen] = '\0';
  v = strtod(buf, &end) * mult;
  if (!isfinite(v)) {
    diag(p, t->at, "number too large: %s", tok_text(p, t, buf));
    return -1;
  }
  *out = v;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Mask expressions                                                     */
/* ------------------------------------------------------------------ */

hattn__expr *mk(parser *p, hattn__node_kind kind, int64_t a, int64_t b, spos at)
{
  hattn__expr *e = palloc(p, sizeof *e);
  if (!e)
    return NULL;
  e->kind = kind;
  e->a = a;
  e->b = b;
  e->line = at.line;
  e->col = at.col;
  return e;
}

/* A growing list of nodes (malloc'd). */
typedef struct nvec {
  hattn__expr **v;
  int n, cap;
} nvec;

static int nvec_push(parser *p, nvec *nv, hattn__expr *e)
{
  if (grow(p, (void **)&nv->v, nv->n, &nv->cap, sizeof *nv->v) < 0)
    return -1;
  nv->v[nv->n++] = e;
  return 0;
}

/* A node of KIND whose children are the N nodes at KIDS (copied). */
hattn__expr *mk_nary(parser *p, hattn__node_kind kind, hattn__expr **kids, int n, spos at)
{
  hattn__expr *e = mk(p, kind, 0, 0, at);
  if (!e)
    return NULL;
  e->kids = palloc(p, (size_t)n * sizeof *e->kids);
  if (!e->kids)
    return NULL;
  memcpy(e->kids, kids, (size_t)n * sizeof *kids);
  e->nkids = n;
  return e;
}

typedef struct atom_info {
  const char *name;
  hattn__node_kind kind;
  int minargs, maxargs;
  const char *what[2];          /* the arguments, in messages */
} atom_info;

static const atom_info atom_table[] = {
  {"full", HATTN_NODE_FULL, 0, 0, {0, 0}},
  {"causal", HATTN_NODE_CAUSAL, 0, 0, {0, 0}},
  {"window", HATTN_NODE_WINDOW, 1, 2, {"window size", 0}},
  {"sink", HATTN_NODE_SINK, 1, 1, {"sink size", 0}},
  {"global", HATTN_NODE_GLOBAL, 1, 1, {"global size", 0}},
  {"stride", HATTN_NODE_STRIDE, 1, 1, {"stride", 0}},
  {"dilated", HATTN_NODE_DILATED, 2, 2, {"dilated width", "dilated stride"}},
  {"chunk", HATTN_NODE_CHUNK, 1, 1, {"chunk size", 0}},
  {"prefix", HATTN_NODE_SINK, 1, 1, {"prefix length", 0}},
  {"document", HATTN_NODE_DOCUMENT, 0, 0, {0, 0}},
  {"blocks", HATTN_NODE_BLOCKS, 1, 1, {0, 0}},
  {"random", HATTN_NODE_RANDOM, 2, 2, {"random block count", "random seed"}},
  {"topk", HATTN_NODE_TOPK, 1, 1, {"topk count", 0}},
};
#define NATOMS ((int)(sizeof atom_table / sizeof atom_table[0]))

static const char *const atom_names[] = {
  "full", "causal", "window", "sink", "global", "stride", "dilated", "chunk",
  "prefix", "document", "blocks", "random", "topk", NULL
};

static const char *const modifier_names[] = { "scale", "softcap", "alibi", NULL };

enum { ARG_INT, ARG_NAME, ARG_BAD };

typedef struct parg {
  int kind;
  int64_t v;
  token t;                      /* the argument's first token ('-' if negative) */
  token name;                   /* ARG_NAME: the name */
  double real;                  /* modifiers */
} parg;

#define MAX_ARGS 4

/* "(" arg { "," arg } ")" or "()" when the current token is "(": the first
** MAX_ARGS arguments into ARGS and their count into *NARGS.  With REAL, the
** arguments are numbers (modifiers), else integers or names.  Returns 0, or
** -1 after a syntax error. */
static int parse_args(parser *p, parg *args, int *nargs, int real)
{
  *nargs = 0;
  if (p->tok.kind != T_LPAREN)
    return 0;
  next(p);
  if (p->tok.kind == T_RPAREN) {
    next(p);
    return 0;
  }
  for (;;) {
    parg a;
    int neg = 0;
    memset(&a, 0, sizeof a);
    a.t = p->tok;
    if (p->tok.kind == T_MINUS) {
      neg = 1;
      next(p);
      if (p->tok.kind != T_NUM) {
        syntax(p, "expected a number");
        return -1;
      }
    }
    if (p->tok.kind == T_NUM) {
      if (real) {
        a.kind = num_real(p, &p->tok, &a.real) < 0 ? ARG_BAD : ARG_INT;
        if (neg)
          a.real = -a.real;
      } else {
        a.kind = num_int(p, &p->tok, &a.v) < 0 ? ARG_BAD : ARG_INT;
        if (neg)
          a.v = -a.v;
      }
    } else if (p->tok.kind == T_NAME && !real) {
      a.kind = ARG_NAME;
      a.name = p->tok;
    } else {
      syntax(p, real ? "expected a number" : "expected an argument");
      return -1;
    }
    next(p);
    if (*nargs < MAX_ARGS)
      args[*nargs] = a;
    if (*nargs < INT_MAX)
      (*nargs)++;
    if (p->tok.kind == T_COMMA) {
      next(p);
      continue;
    }
    if (p->tok.kind == T_RPAREN) {
      next(p);
      return 0;
    }
    syntax(p, "expected ',' or ')'");
    return -1;
  }
}

/* The layout number of the N bytes at NAME, numbered in order of first use. */
static int layout_index(parser *p, const unsigned char *name, size_t n)
{
  int i;
  char *copy;
  for (i = 0; i < p->nlayouts; i++)
    if (strlen(p->layouts[i]) == n && memcmp(p->layouts[i], name, n) == 0)
      return i;
  if (grow(p, (void **)&p->layouts, p->nlayouts, &p->caplayouts, sizeof *p->layouts) < 0)
    return -1;
  copy = pstrndup(p, name, n);
  if (!copy)
    return -1;
  p->layouts[p->nlayouts] = copy;
  return p->nlayouts++;
}

/* Checks that integer argument A is at least MIN ("must be positive" for 1,
** "must not be negative" for 0).  Returns 0 or -1 after reporting. */
static int check_min(parser *p, const parg *a, const char *what, int64_t min)
{
  char buf[SHOWN + 4];
  if (a->kind == ARG_BAD)
    return -1;
  if (a->kind == ARG_NAME) {
    diag(p, a->t.at, "expected an integer, got '%s'", tok_text(p, &a->name, buf));
    return -1;
  }
  if (a->v < min) {
    diag(p, a->t.at, "%s must %s, got %lld", what, min > 0 ? "be positive" : "not be negative",
         (long long)a->v);
    return -1;
  }
  return 0;
}

/* atom := NAME [ "(" args ")" ]; the current token is the name.  Returns the
** node (a placeholder after a reported semantic error), or NULL after a
** syntax error. */
static hattn__expr *parse_atom(parser *p)
{
  token name = p->tok;
  const unsigned char *s = p->s + name.at.off;
  const atom_info *ai = NULL;
  parg args[MAX_ARGS];
  int nargs, i, err = 0, had_parens;
  char buf[SHOWN + 4];
  hattn__expr *e;

  next(p);
  had_parens = p->tok.kind == T_LPAREN;
  if (parse_args(p, args, &nargs, 0) < 0)
    return NULL;
  if (++p->atoms == MAX_ATOMS + 1)
    diag(p, name.at, "pattern has more than %d atoms", MAX_ATOMS);
  for (i = 0; i < NATOMS; i++)
    if (tok_eq(p, &name, atom_table[i].name))
      ai = &atom_table[i];
  if (!ai) {
    const char *sug = suggest((const char *)s, name.len, atom_names);
    if (tok_eq(p, &name, "scale") || tok_eq(p, &name, "softcap") || tok_eq(p, &name, "alibi"))
      diag(p, name.at, "%s is a score modifier; write it after 'with'", tok_text(p, &name, buf));
    else if (sug)
      diag(p, name.at, "unknown mask atom '%s'; did you mean '%s'?", tok_text(p, &name, buf), sug);
    else
      diag(p, name.at, "unknown mask atom '%s'", tok_text(p, &name, buf));
    return mk(p, HATTN_NODE_FULL, 0, 0, name.at);
  }
  if (nargs < ai->minargs || nargs > ai->maxargs || (had_parens && ai->maxargs == 0)) {
    if (ai->maxargs == 0)
      diag(p, name.at, "%s takes no arguments", ai->name);
    else if (ai->minargs == ai->maxargs)
      diag(p, name.at, "%s takes %d argument%s, got %d", ai->name, ai->minargs,
           ai->minargs == 1 ? "" : "s", nargs);
    else
      diag(p, name.at, "%s takes %d or %d arguments, got %d", ai->name, ai->minargs,
           ai->maxargs, nargs);
    return mk(p, HATTN_NODE_FULL, 0, 0, name.at);
  }
  e = mk(p, ai->kind, 0, 0, name.at);
  if (!e)
    return NULL;
  switch (ai->kind) {
  case HATTN_NODE_WINDOW:
    if (nargs == 1) {
      err |= check_min(p, &args[0], "window size", 1);
      if (!err)
        e->a = args[0].v - 1;
    } else {
      err |= check_min(p, &args[0], "window extent", 0);
      err |= check_min(p, &args[1], "window extent", 0);
      if (!err) {
        e->a = args[0].v;
        e->b = args[1].v;
      }
    }
    break;
  case HATTN_NODE_DILATED:
    err |= check_min(p, &args[0], ai->what[0], 1);
    err |= check_min(p, &args[1], ai->what[1], 1);
    if (!err && args[0].v * args[1].v > INT_LIMIT) {
      diag(p, name.at, "dilated span %lld * %lld is too large (the limit is 2^31 - 1)",
           (long long)args[0].v, (long long)args[1].v);
      err = -1;
    }
    if (!err) {
      e->a = args[0].v;
      e->b = args[1].v;
    }
    break;
  case HATTN_NODE_RANDOM:
    err |= check_min(p, &args[0], ai->what[0], 1);
    err |= check_min(p, &args[1], ai->what[1], 0);
    if (!err) {
      e->a = args[0].v;
      e->b = args[1].v;
    }
    break;
  case HATTN_NODE_BLOCKS:
    if (args[0].kind == ARG_INT) {
      diag(p, args[0].t.at, "blocks takes a layout name, got %lld", (long long)args[0].v);
      err = -1;
    } else if (args[0].kind == ARG_NAME) {
      int li = layout_index(p, p->s + args[0].name.at.off, args[0].name.len);
      if (li < 0)
        return NULL;
      e->a = li;
      e->name = p->layouts[li];
    }
    break;
  case HATTN_NODE_SINK:
  case HATTN_NODE_GLOBAL:
  case HATTN_NODE_STRIDE:
  case HATTN_NODE_CHUNK:
  case HATTN_NODE_TOPK:
    err |= check_min(p, &args[0], ai->what[0], 1);
    if (!err)
      e->a = args[0].v;
    break;
  default:
    break;
  }
  if (err)
    e->kind = HATTN_NODE_FULL;
  return e;
}

static hattn__expr *parse_or(parser *p, int depth);

static int is_top_keyword(const parser *p)
{
  return tok_is(p, "pattern") || tok_is(p, "model");
}

/* factor := "!" factor | "(" expr ")" | atom */
static hattn__expr *parse_factor(parser *p, int depth)
{
  spos at = p->tok.at;
  hattn__expr *e, *k;

  if (depth > MAX_DEPTH) {
    diag(p, at, "expression nested too deeply");
    return NULL;
  }
  switch (p->tok.kind) {
  case T_NOT:
    next(p);
    k = parse_factor(p, depth + 1);
    if (!k)
      return NULL;
    return mk_nary(p, HATTN_NODE_NOT, &k, 1, at);
  case T_LPAREN:
    next(p);
    e = parse_or(p, depth + 1);
    if (!e)
      return NULL;
    if (p->tok.kind != T_RPAREN) {
      syntax(p, "expected ')'");
      return NULL;
    }
    next(p);
    return e;
  case T_NAME:
    if (!is_top_keyword(p))
      return parse_atom(p);
    /* fall through */
  default:
    syntax(p, "expected a mask atom");
    return NULL;
  }
}

/* term := factor { "&" factor }, and expr := term { "|" term } (KIND says
** which). */
static hattn__expr *parse_nary(parser *p, int depth, hattn__node_kind kind)
{
  nvec nv = {0};
  spos at = p->tok.at;
  hattn__expr *e = NULL;
  int op = kind == HATTN_NODE_AND ? T_AND : T_OR;

  for (;;) {
    hattn__expr *k = kind == HATTN_NODE_AND ? parse_factor(p, depth) : parse_nary(p, depth, HATTN_NODE_AND);
    if (!k || nvec_push(p, &nv, k) < 0)
      goto done;
    if (p->tok.kind != op)
      break;
    next(p);
  }
  e = nv.n == 1 ? nv.v[0] : mk_nary(p, kind, nv.v, nv.n, at);
done:
  free(nv.v);
  return e;
}

static hattn__expr *parse_or(parser *p, int depth) { return parse_nary(p, depth, HATTN_NODE_OR); }

/* ------------------------------------------------------------------ */
/* Patterns                                                             */
/* ------------------------------------------------------------------ */

/* Skips to the next "pattern" or "model" at top level. */
static void recover_top(parser *p)
{
  while (p->tok.kind != T_EOF && !is_top_keyword(p))
    next(p);
}

/* modifier { "," modifier } after "with"; returns 0 or -1 after a syntax
** error. */
static int parse_modifiers(parser *p, hattn__pattern *pat)
{
  int seen[3] = {0, 0, 0};
  for (;;) {
    token name = p->tok;
    parg args[MAX_ARGS];
    int nargs, which = -1, i, had_parens;
    char buf[SHOWN + 4], num[64];

    if (name.kind != T_NAME) {
      syntax(p, "expected a score modifier");
      return -1;
    }
    next(p);
    had_parens = p->tok.kind == T_LPAREN;
    if (parse_args(p, args, &nargs, 1) < 0)
      return -1;
    for (i = 0; modifier_names[i]; i++)
      if (tok_eq(p, &name, modifier_names[i]))
        which = i;
    if (which < 0) {
      diag(p, name.at, "unknown score modifier '%s'", tok_text(p, &name, buf));
    } else if (seen[which]) {
      diag(p, name.at, "%s given twice", modifier_names[which]);
    } else if (which < 2 && nargs != 1) {
      diag(p, name.at, "%s takes 1 argument, got %d", modifier_names[which], nargs);
    } else if (which == 2 && (nargs > 1 || (had_parens && nargs == 0))) {
      diag(p, name.at, "alibi takes 0 or 1 arguments, got %d", nargs);
    } else if (nargs == 1 && args[0].kind == ARG_BAD) {
      /* reported */
    } else if (nargs == 1 && !(args[0].real > 0)) {
      format_real(num, sizeof num, args[0].real);
      diag(p, args[0].t.at, "%s must be positive, got %s",
           which == 2 ? "alibi slope" : modifier_names[which], num);
    } else if (which == 0) {
      pat->scale = args[0].real;
    } else if (which == 1) {
      pat->softcap = args[0].real;
    } else if (nargs == 1) {
      pat->alibi = HATTN_ALIBI_FIXED;
      pat->alibi_slope = args[0].real;
    } else {
      pat->alibi = HATTN_ALIBI_STANDARD;
    }
    if (which >= 0)
      seen[which] = 1;
    if (p->tok.kind != T_COMMA)
      return 0;
    next(p);
  }
}

static void parse_pattern(parser *p)
{
  int nerr0 = p->nerr, withs = 0;
  prec *pr;
  hattn__expr *mask;

  next(p);
  if (p->tok.kind != T_NAME) {
    syntax(p, "expected a pattern name");
    recover_top(p);
    return;
  }
  if (grow(p, (void **)&p->pats, p->npats, &p->cappats, sizeof *p->pats) < 0)
    return;
  pr = &p->pats[p->npats];
  memset(pr, 0, sizeof *pr);
  pr->pat.name = pstrndup(p, p->s + p->tok.at.off, p->tok.len);
  if (!pr->pat.name)
    return;
  pr->pat.line = p->tok.at.line;
  pr->pat.col = p->tok.at.col;
  pr->off = p->tok.at.off;
  pr->bad = 1;
  p->npats++;
  next(p);
  if (p->tok.kind != T_EQ) {
    syntax(p, "expected '='");
    recover_top(p);
    return;
  }
  next(p);
  p->atoms = 0;
  mask = parse_or(p, 0);
  if (!mask) {
    recover_top(p);
    return;
  }
  if (tok_is(p, "with")) {
    withs = 1;
    next(p);
    if (parse_modifiers(p, &pr->pat) < 0) {
      recover_top(p);
      return;
    }
  }
  if (p->tok.kind != T_EOF && !is_top_keyword(p)) {
    syntax(p, withs ? "expected ','" : "expected '&', '|' or 'with'");
    recover_top(p);
    return;
  }
  if (p->nerr != nerr0)
    return;
  pr->bad = 0;
  finish_pattern(p, pr, mask);
}

/* ------------------------------------------------------------------ */
/* Models                                                               */
/* ------------------------------------------------------------------ */

static int is_stmt_keyword(const parser *p)
{
  int i;
  for (i = 0; i < ST_COUNT; i++)
    if (tok_is(p, stmt_names[i]))
      return 1;
  return 0;
}

/* Skips to the next statement of a model: a keyword that starts a line, or
** "}". */
static void recover_stmt(parser *p)
{
  while (p->tok.kind != T_EOF && p->tok.kind != T_RBRACE &&
         !(p->tok.bol && (is_stmt_keyword(p) || is_top_keyword(p))))
    next(p);
}

/* An unsigned integer token: 0 with *V and *AT; 1 when the number was bad
** (reported, consumed); -1 after a syntax error (WHAT). */
static int parse_uint(parser *p, const char *what, int64_t *v, spos *at)
{
  int r;
  if (p->tok.kind != T_NUM) {
    syntax(p, what);
    return -1;
  }
  *at = p->tok.at;
  r = num_int(p, &p->tok, v) < 0 ? 1 : 0;
  next(p);
  return r;
}

/* RANGE := INT [ "-" INT ]; WHAT is "layer" or "head".  Returns as
** parse_uint does. */
static int parse_range(parser *p, const char *what, int64_t *lo, int64_t *hi, spos *loat, spos *hiat)
{
  char expect[32];
  int r, r2;
  snprintf(expect, sizeof expect, "expected a %s number", what);
  r = parse_uint(p, expect, lo, loat);
  if (r < 0)
    return -1;
  *hi = *lo;
  *hiat = *loat;
  if (p->tok.kind == T_MINUS) {
    next(p);
    r2 = parse_uint(p, expect, hi, hiat);
    if (r2 < 0)
      return -1;
    r |= r2;
  }
  if (r == 0 && *hi < *lo) {
    diag(p, *loat, "%s range %lld-%lld is empty", what, (long long)*lo, (long long)*hi);
    r = 1;
  }
  return r;
}

/* "layer" RANGE [ "step" INT ] [ "heads" RANGE ] ":" NAME, after "layer". */
static int parse_layer_line(parser *p, mrec *m)
{
  lline L;
  int r, bad = 0;
  spos at;

  memset(&L, 0, sizeof L);
  L.step = 1;
  r = parse_range(p, "layer", &L.l0, &L.l1, &L.l0at, &L.l1at);
  if (r < 0)
    return -1;
  bad |= r;
  if (tok_is(p, "step")) {
    next(p);
    r = parse_uint(p, "expected a step", &L.step, &at);
    if (r < 0)
      return -1;
    if (r == 0 && L.step < 1) {
      diag(p, at, "step must be positive, got %lld", (long long)L.step);
      r = 1;
    }
    bad |= r;
  }
  if (tok_is(p, "heads")) {
    next(p);
    L.has_heads = 1;
    r = parse_range(p, "head", &L.h0, &L.h1, &L.h0at, &L.h1at);
    if (r < 0)
      return -1;
    bad |= r;
  }
  if (p->tok.kind != T_COLON) {
    syntax(p, "expected ':'");
    return -1;
  }
  next(p);
  if (p->tok.kind != T_NAME) {
    syntax(p, "expected a pattern name");
    return -1;
  }
  L.nameat = p->tok.at;
  L.pname = pstrndup(p, p->s + p->tok.at.off, p->tok.len);
  if (!L.pname)
    return -1;
  next(p);
  L.bad = bad;
  if (grow(p, (void **)&m->lines, m->nlines, &m->caplines, sizeof *m->lines) < 0)
    return -1;
  m->lines[m->nlines++] = L;
  return 0;
}

/* One statement of model M; returns 0, or -1 after a syntax error. */
static int parse_stmt(parser *p, mrec *m)
{
  static const char *const kw[ST_COUNT + 1] = {
    "layers", "heads", "kv_heads", "head_dim", "dtype", "layer", NULL
  };
  static const char *const dtypes[3] = {"fp32", "fp16", "bf16"};
  token t = p->tok;
  char buf[SHOWN + 4];
  int which = -1, i, r, dup;
  int64_t v = 0;
  spos at;

  if (t.kind != T_NAME) {
    syntax(p, "expected a statement or '}'");
    return -1;
  }
  for (i = 0; i < ST_COUNT; i++)
    if (tok_eq(p, &t, stmt_names[i]))
      which = i;
  if (which < 0) {
    const char *sug = suggest((const char *)p->s + t.at.off, t.len, kw);
    if (sug)
      diag(p, t.at, "unknown statement '%s'; did you mean '%s'?", tok_text(p, &t, buf), sug);
    else
      diag(p, t.at, "unknown statement '%s'", tok_text(p, &t, buf));
    next(p);
    return -1;
  }
  next(p);
  if (which == ST_LAYER)
    return parse_layer_line(p, m);
  dup = m->have[which];
  if (dup)
    diag(p, t.at, "'%s' given twice", stmt_names[which]);
  if (which == ST_DTYPE) {
    if (p->tok.kind != T_NAME) {
      syntax(p, "expected a dtype");
      return -1;
    }
    at = p->tok.at;
    for (i = 0; i < 3; i++)
      if (tok_is(p, dtypes[i]))
        break;
    if (i == 3)
      diag(p, at, "unknown dtype '%s' (expected fp32, fp16 or bf16)", tok_text(p, &p->tok, buf));
    else if (!dup)
      m->m.dtype = i == 0 ? HATTN_DTYPE_FP32 : i == 1 ? HATTN_DTYPE_FP16 : HATTN_DTYPE_BF16;
    next(p);
    if (i < 3 && !dup) {
      m->have[which] = 1;
      m->valat[which] = at;
    }
    return 0;
  }
  if (p->tok.kind == T_MINUS) {
    at = p->tok.at;
    next(p);
    if (p->tok.kind != T_NUM) {
      syntax(p, "expected a number");
      return -1;
    }
    r = num_int(p, &p->tok, &v) < 0;
    v = -v;
    next(p);
  } else {
    r = parse_uint(p, "expected a number", &v, &at);
    if (r < 0)
      return -1;
  }
  if (r)
    return 0;
  if (v < 1) {
    diag(p, at, "%s must be positive, got %lld", stmt_names[which], (long long)v);
    return 0;
  }
  if ((which == ST_LAYERS && v > MAX_LAYERS) || (which != ST_LAYERS && which != ST_HEAD_DIM && v > MAX_HEADS)) {
    diag(p, at, "too many %s: %lld (the limit is %d)", stmt_names[which], (long long)v,
         which == ST_LAYERS ? MAX_LAYERS : MAX_HEADS);
    return 0;
  }
  if (dup)
    return 0;
  m->have[which] = 1;
  m->valat[which] = at;
  switch (which) {
  case ST_LAYERS: m->m.layers = (int)v; break;
  case ST_HEADS: m->m.heads = (int)v; break;
  case ST_KV_HEADS: m->m.kv_heads = (int)v; break;
  default: m->m.head_dim = (int)v; break;
  }
  return 0;
}

/* model := "model" NAME "{" { stmt } "}" */
static void parse_model(parser *p)
{
  int nerr0 = p->nerr;
  mrec *m;

  next(p);
  if (p->tok.kind != T_NAME) {
    syntax(p, "expected a model name");
    recover_top(p);
    return;
  }
  if (grow(p, (void **)&p->models, p->nmodels, &p->capmodels, sizeof *p->models) < 0)
    return;
  m = &p->models[p->nmodels];
  memset(m, 0, sizeof *m);
  m->m.name = pstrndup(p, p->s + p->tok.at.off, p->tok.len);
  if (!m->m.name)
    return;
  m->m.line = p->tok.at.line;
  m->m.col = p->tok.at.col;
  m->m.dtype = HATTN_DTYPE_BF16;
  m->off = p->tok.at.off;
  p->nmodels++;
  next(p);
  if (p->tok.kind != T_LBRACE) {
    syntax(p, "expected '{'");
    m->bad = 1;
    recover_top(p);
    return;
  }
  next(p);
  for (;;) {
    if (p->tok.kind == T_RBRACE) {
      next(p);
      break;
    }
    if (p->tok.kind == T_EOF || is_top_keyword(p)) {
      syntax(p, "expected '}'");
      break;
    }
    if (parse_stmt(p, m) < 0)
      recover_stmt(p);
  }
  if (p->nerr != nerr0)
    m->bad = 1;
}

/* ------------------------------------------------------------------ */
/* The parse, and a spec's accessors                                    */
/* ------------------------------------------------------------------ */

/* The spec the parser built (arena moved into it), or NULL when memory runs
** out. */
static hattn__spec *build_spec(parser *p)
{
  spec_impl *s = calloc(1, sizeof *s);
  hattn__spec *pub;
  int i;

  if (!s)
    return NULL;
  pub = &s->pub;
  pub->patterns = palloc(p, (size_t)(p->npats ? p->npats : 1) * sizeof *pub->patterns);
  pub->models = palloc(p, (size_t)(p->nmodels ? p->nmodels : 1) * sizeof *pub->models);
  pub->layouts = palloc(p, (size_t)(p->nlayouts ? p->nlayouts : 1) * sizeof *pub->layouts);
  if (!pub->patterns || !pub->models || !pub->layouts) {
    free(s);
    return NULL;
  }
  for (i = 0; i < p->npats; i++)
    pub->patterns[i] = p->pats[i].pat;
  for (i = 0; i < p->nmodels; i++)
    pub->models[i] = p->models[i].m;
  for (i = 0; i < p->nlayouts; i++)
    pub->layouts[i] = p->layouts[i];
  for (i = 0; i < p->npats; i++) {
    if (hattn__mask_lower(pub->patterns[i].mask, &pub->patterns[i].lowered) != HATTN_OK) {
      while (i-- > 0)
        hattn__mask_free(pub->patterns[i].lowered);
      free(s);
      return NULL;
    }
    pub->patterns[i].needs = pub->patterns[i].lowered->needs;
  }
  pub->npatterns = p->npats;
  pub->nmodels = p->nmodels;
  pub->nlayouts = p->nlayouts;
  s->arena = p->arena;
  p->arena = NULL;
  return pub;
}

int hattn__spec_parse(const char *text, size_t len, const char *filename,
                      hattn__spec **out, hattn__diags *diags)
{
  parser p;
  named *pt = NULL, *mt = NULL;
  int rc = HATTN_ENOMEM, i;

  *out = NULL;
  if (diags)
    memset(diags, 0, sizeof *diags);
  memset(&p, 0, sizeof p);
  p.s = (const unsigned char *)(text ? text : "");
  p.n = text ? len : 0;
  p.line = 1;
  p.at_bol = 1;
  p.end.line = 1;
  p.end.col = 1;
  p.file = filename;

  next(&p);
  while (p.tok.kind != T_EOF) {
    if (tok_is(&p, "pattern")) {
      parse_pattern(&p);
    } else if (tok_is(&p, "model")) {
      parse_model(&p);
    } else {
      const char *sug = NULL;
      if (p.tok.kind == T_NAME) {
        static const char *const top[] = {"pattern", "model", NULL};
        sug = suggest((const char *)p.s + p.tok.at.off, p.tok.len, top);
      }
      if (sug)
        diag(&p, p.tok.at, "expected 'pattern' or 'model'; did you mean '%s'?", sug);
      else
        syntax(&p, "expected 'pattern' or 'model'");
      next(&p);
      recover_top(&p);
    }
  }
  if (!p.halt) {
    pt = name_table(&p, 0);
    mt = name_table(&p, 1);
    if (pt && mt) {
      check_duplicates(&p, pt, p.npats, 0);
      check_duplicates(&p, mt, p.nmodels, 1);
      for (i = 0; i < p.nmodels && !p.halt; i++)
        finish_model(&p, &p.models[i], pt);
    }
  }
  if (p.oom)
    goto done;
  if (p.nerr > 0) {
    if (emit_diags(&p, diags) < 0)
      goto done;
    rc = HATTN_ESPEC;
    goto done;
  }
  *out = build_spec(&p);
  if (!*out)
    goto done;
  if (diags) {
    diags->text = calloc(1, 1);
    if (!diags->text) {
      hattn__spec_destroy(*out);
      *out = NULL;
      goto done;
    }
  }
  rc = HATTN_OK;
done:
  free(pt);
  free(mt);
  for (i = 0; i < p.ndiags; i++)
    free(p.diags[i].msg);
  free(p.diags);
  free(p.pats);
  for (i = 0; i < p.nmodels; i++)
    free(p.models[i].lines);
  free(p.models);
  free(p.layouts);
  arena_free(p.arena);
  return rc;
}

void hattn__spec_destroy(hattn__spec *spec)
{
  spec_impl *s = (spec_impl *)spec;
  int i;
  if (!s)
    return;
  for (i = 0; i < s->pub.npatterns; i++)
    hattn__mask_free(s->pub.patterns[i].lowered);
  arena_free(s->arena);
  free(s);
}

void hattn__diags_clear(hattn__diags *diags)
{
  int i;
  if (!diags)
    return;
  for (i = 0; i < diags->count; i++)
    free(diags->items[i].msg);
  free(diags->items);
  free(diags->text);
  memset(diags, 0, sizeof *diags);
}

int hattn__spec_find_pattern(const hattn__spec *spec, const char *name)
{
  int i;
  if (!spec || !name)
    return -1;
  for (i = 0; i < spec->npatterns; i++)
    if (strcmp(spec->patterns[i].name, name) == 0)
      return i;
  return -1;
}

int hattn__spec_find_model(const hattn__spec *spec, const char *name)
{
  int i;
  if (!spec || !name)
    return -1;
  for (i = 0; i < spec->nmodels; i++)
    if (strcmp(spec->models[i].name, name) == 0)
      return i;
  return -1;
}

int hattn__expr_count(const hattn__expr *e, hattn__node_kind kind) {
  int i, n = e->kind == kind;
  for (i = 0; i < e->nkids; i++) n += hattn__expr_count(e->kids[i], kind);
  return n;
}

const hattn__expr *hattn__expr_find(const hattn__expr *e, hattn__node_kind kind) {
  const hattn__expr *hit = NULL;
  int i;
  if (e->kind == kind) return e;
  for (i = 0; i < e->nkids && hit == NULL; i++) hit = hattn__expr_find(e->kids[i], kind);
  return hit;
}
