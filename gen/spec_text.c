/*
** spec_text.c: what the spec checker writes: the string builder, the
** canonical text of masks and modifiers, the key of a canonical text, dtype
** names, and the diagnostics as compiler-style text with the source line.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "spec_int.h"

/* ------------------------------------------------------------------ */
/* String builder                                                       */
/* ------------------------------------------------------------------ */

static void sb_putn(sbuf *b, const char *s, size_t n)
{
  if (b->oom)
    return;
  if (b->cap - b->len <= n) {
    size_t cap = b->cap ? b->cap : 64;
    char *q;
    while (cap - b->len <= n) {
      if (cap > SIZE_MAX / 2) {
        cap = 0;
        break;
      }
      cap *= 2;
    }
    q = cap ? realloc(b->p, cap) : NULL;
    if (!q) {
      free(b->p);
      b->p = NULL;
      b->len = b->cap = 0;
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

static void sb_putc(sbuf *b, char c) { sb_putn(b, &c, 1); }

void sb_vprintf(sbuf *b, const char *fmt, va_list ap)
{
  char small[256];
  va_list ap2;
  int n;

  va_copy(ap2, ap);
  n = vsnprintf(small, sizeof small, fmt, ap2);
  va_end(ap2);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  if ((size_t)n < sizeof small) {
    sb_putn(b, small, (size_t)n);
  } else {
    char *big = malloc((size_t)n + 1);
    if (!big) {
      free(b->p);
      b->p = NULL;
      b->oom = 1;
      return;
    }
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    sb_putn(b, big, (size_t)n);
    free(big);
  }
}

static void sb_printf(sbuf *b, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  sb_vprintf(b, fmt, ap);
  va_end(ap);
}

/* The string built so far, handed to the caller (never NULL unless OOM). */
char *sb_take(sbuf *b)
{
  if (!b->oom && !b->p)
    sb_putn(b, "", 0);
  if (b->oom)
    return NULL;
  return b->p;
}

/* ------------------------------------------------------------------ */
/* Printing the canonical form                                          */
/* ------------------------------------------------------------------ */

/* An integer argument: with suffix m when a nonzero multiple of 2^20, k when
** a multiple of 2^10. */
static void put_int(sbuf *b, int64_t v)
{
  if (v != 0 && v % 1048576 == 0)
    sb_printf(b, "%lldm", (long long)(v / 1048576));
  else if (v != 0 && v % 1024 == 0)
    sb_printf(b, "%lldk", (long long)(v / 1024));
  else
    sb_printf(b, "%lld", (long long)v);
}

/* The shortest text %.Ng (N = 1..17) gives that reads back as V exactly,
** the smaller N on ties: 50 is "50", not "5e+01".  Assumes the C locale's
** decimal point, as strtod in the lexer does. */
void format_real(char *buf, size_t n, double v)
{
  char try[64];
  int digits;
  snprintf(buf, n, "%.17g", v);
  for (digits = 1; digits <= 17; digits++) {
    snprintf(try, sizeof try, "%.*g", digits, v);
    if (strtod(try, NULL) == v && strlen(try) < strlen(buf))
      snprintf(buf, n, "%s", try);
  }
}

static void put_real(sbuf *b, double v)
{
  char buf[64];
  format_real(buf, sizeof buf, v);
  sb_puts(b, buf);
}

int is_atom(const hattn__expr *e) { return e->kind < HATTN_NODE_NOT; }

void put_expr(sbuf *b, const hattn__expr *e)
{
  int i;
  switch (e->kind) {
  case HATTN_NODE_FULL: sb_puts(b, "full"); break;
  case HATTN_NODE_CAUSAL: sb_puts(b, "causal"); break;
  case HATTN_NODE_DOCUMENT: sb_puts(b, "document"); break;
  case HATTN_NODE_WINDOW:
    sb_puts(b, "window(");
    if (e->b == 0) {
      put_int(b, e->a + 1);
    } else {
      put_int(b, e->a);
      sb_puts(b, ", ");
      put_int(b, e->b);
    }
    sb_putc(b, ')');
    break;
  case HATTN_NODE_DILATED:
  case HATTN_NODE_RANDOM:
    sb_puts(b, e->kind == HATTN_NODE_DILATED ? "dilated(" : "random(");
    put_int(b, e->a);
    sb_puts(b, ", ");
    put_int(b, e->b);
    sb_putc(b, ')');
    break;
  case HATTN_NODE_STRIDE:
  case HATTN_NODE_SINK:
  case HATTN_NODE_GLOBAL:
  case HATTN_NODE_CHUNK:
  case HATTN_NODE_TOPK:
    sb_puts(b, e->kind == HATTN_NODE_STRIDE ? "stride("
               : e->kind == HATTN_NODE_SINK ? "sink("
               : e->kind == HATTN_NODE_GLOBAL ? "global("
               : e->kind == HATTN_NODE_CHUNK ? "chunk(" : "topk(");
    put_int(b, e->a);
    sb_putc(b, ')');
    break;
  case HATTN_NODE_BLOCKS:
    if (e->name)
      sb_printf(b, "blocks(%s)", e->name);
    else
      sb_printf(b, "blocks(#%lld)", (long long)e->a);
    break;
  case HATTN_NODE_NOT:
    sb_putc(b, '!');
    if (e->nkids < 1) {
      sb_puts(b, "?");
    } else if (e->kids[0]->kind == HATTN_NODE_AND || e->kids[0]->kind == HATTN_NODE_OR) {
      sb_putc(b, '(');
      put_expr(b, e->kids[0]);
      sb_putc(b, ')');
    } else {
      put_expr(b, e->kids[0]);
    }
    break;
  case HATTN_NODE_AND:
  case HATTN_NODE_OR:
    for (i = 0; i < e->nkids; i++) {
      int paren = e->kind == HATTN_NODE_AND && e->kids[i]->kind == HATTN_NODE_OR;
      if (i > 0)
        sb_puts(b, e->kind == HATTN_NODE_AND ? " & " : " | ");
      if (paren)
        sb_putc(b, '(');
      put_expr(b, e->kids[i]);
      if (paren)
        sb_putc(b, ')');
    }
    break;
  default:
    sb_puts(b, "?");
    break;
  }
}

char *hattn__expr_text(const hattn__expr *e)
{
  sbuf b = {0};
  put_expr(&b, e);
  return sb_take(&b);
}

const char *hattn__dtype_name(hattn__dtype t)
{
  switch (t) {
  case HATTN_DTYPE_FP32: return "fp32";
  case HATTN_DTYPE_FP16: return "fp16";
  case HATTN_DTYPE_BF16: return "bf16";
  }
  return "?";
}

int hattn__dtype_size(hattn__dtype t)
{
  switch (t) {
  case HATTN_DTYPE_FP32: return 4;
  case HATTN_DTYPE_FP16: return 2;
  case HATTN_DTYPE_BF16: return 2;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Modifiers and keys                                                   */
/* ------------------------------------------------------------------ */

void put_modifiers(sbuf *b, const hattn__pattern *pat)
{
  const char *sep = " with ";
  if (pat->scale != 0) {
    sb_puts(b, sep);
    sb_puts(b, "scale(");
    put_real(b, pat->scale);
    sb_putc(b, ')');
    sep = ", ";
  }
  if (pat->softcap != 0) {
    sb_puts(b, sep);
    sb_puts(b, "softcap(");
    put_real(b, pat->softcap);
    sb_putc(b, ')');
    sep = ", ";
  }
  if (pat->alibi == HATTN_ALIBI_STANDARD) {
    sb_puts(b, sep);
    sb_puts(b, "alibi");
  } else if (pat->alibi == HATTN_ALIBI_FIXED) {
    sb_puts(b, sep);
    sb_puts(b, "alibi(");
    put_real(b, pat->alibi_slope);
    sb_putc(b, ')');
  }
}

uint64_t fnv1a64(const char *s)
{
  uint64_t h = 14695981039346656037ULL;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return h;
}

/* ------------------------------------------------------------------ */
/* Diagnostics as text                                                  */
/* ------------------------------------------------------------------ */

static int cmp_diag(const void *a, const void *b)
{
  const pdiag *x = a, *y = b;
  if (x->at.off != y->at.off)
    return x->at.off < y->at.off ? -1 : 1;
  return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Appends the source line around AT and a caret under it to B.  Long lines
** are shown as a window of about 160 bytes around the column. */
static void put_source(sbuf *b, const parser *p, spos at)
{
  size_t off = at.off > p->n ? p->n : at.off, ls = off, le = off, st, en, i;
  const size_t width = 160;

  while (ls > 0 && p->s[ls - 1] != '\n' && p->s[ls - 1] != '\r')
    ls--;
  while (le < p->n && p->s[le] != '\n' && p->s[le] != '\r')
    le++;
  st = le - ls > width && off - ls > width / 2 ? off - width / 2 : ls;
  en = le - st > width ? st + width : le;
  sb_puts(b, "  ");
  if (st > ls)
    sb_puts(b, "...");
  for (i = st; i < en; i++) {
    unsigned c = p->s[i];
    sb_putc(b, c == '\t' || (c >= 0x20 && c < 0x7f) ? (char)c : '?');
  }
  if (en < le)
    sb_puts(b, "...");
  sb_puts(b, "\n  ");
  if (st > ls)
    sb_puts(b, "   ");
  for (i = st; i < off; i++)
    sb_putc(b, p->s[i] == '\t' ? '\t' : ' ');
  sb_puts(b, "^\n");
}

/* Moves the parser's diagnostics, sorted, into D.  Returns 0 or -1 (OOM). */
int emit_diags(parser *p, hattn__diags *d)
{
  sbuf b = {0};
  const char *file = p->file ? p->file : "<spec>";
  int i;

  if (p->ndiags > 0)
    qsort(p->diags, (size_t)p->ndiags, sizeof *p->diags, cmp_diag);
  for (i = 0; i < p->ndiags; i++) {
    sb_printf(&b, "%s:%d:%d: error: %s\n", file, p->diags[i].at.line, p->diags[i].at.col,
              p->diags[i].msg);
    put_source(&b, p, p->diags[i].at);
  }
  if (p->stopped)
    sb_printf(&b, "%s: note: too many errors; stopped after %d\n", file, MAX_ERRORS);
  if (!sb_take(&b))
    return -1;
  if (!d) {
    free(b.p);
    return 0;
  }
  d->text = b.p;
  d->items = calloc((size_t)(p->ndiags ? p->ndiags : 1), sizeof *d->items);
  if (!d->items) {
    free(d->text);
    d->text = NULL;
    return -1;
  }
  for (i = 0; i < p->ndiags; i++) {
    d->items[i].line = p->diags[i].at.line;
    d->items[i].col = p->diags[i].at.col;
    d->items[i].msg = p->diags[i].msg;
    p->diags[i].msg = NULL;
  }
  d->count = p->ndiags;
  return 0;
}
