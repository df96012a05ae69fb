/*
** test_spec.c: the spec parser (gen/spec_*.c) against docs/spec.md, which
** holds every decision of the language.  Table-driven: each input either
** parses to an exact canonical text, or fails with an exact message at an
** exact line:col.
*/
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "spec.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

/* Parses the N bytes at SRC as "t.hattn"; returns the status. */
static int parse_n(const char *src, size_t n, hattn__spec **out, hattn__diags *d)
{
  return hattn__spec_parse(src, n, "t.hattn", out, d);
}

static int parse(const char *src, hattn__spec **out, hattn__diags *d)
{
  return parse_n(src, strlen(src), out, d);
}

/* The first line of D's text, in a static buffer. */
static const char *first_line(const hattn__diags *d)
{
  static char buf[512];
  const char *nl;
  size_t n;
  if (!d->text)
    return "(null)";
  nl = strchr(d->text, '\n');
  n = nl ? (size_t)(nl - d->text) : strlen(d->text);
  if (n >= sizeof buf)
    n = sizeof buf - 1;
  memcpy(buf, d->text, n);
  buf[n] = '\0';
  return buf;
}

/* Asserts that "pattern p = EXPR" parses and pattern p's canon is CANON. */
static void expect_canon(const char *src, const char *name, const char *canon)
{
  hattn__spec *s = NULL;
  hattn__diags d;
  int rc = parse(src, &s, &d), i;
  ck_assert_msg(rc == HATTN_OK, "%s: rc %d:\n%s", src, rc, d.text ? d.text : "");
  i = hattn__spec_find_pattern(s, name);
  ck_assert_msg(i >= 0, "%s: no pattern %s", src, name);
  ck_assert_msg(strcmp(s->patterns[i].canon, canon) == 0, "%s: canon '%s', expected '%s'", src,
                s->patterns[i].canon, canon);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
}

/* ------------------------------------------------------------------ */
/* Canonical forms                                                      */
/* ------------------------------------------------------------------ */

typedef struct canon_case {
  const char *expr;             /* after "pattern p = " */
  const char *canon;
} canon_case;

static const canon_case canon_cases[] = {
  /* every atom */
  {"full", "full"},
  {"causal", "causal"},
  {"window(4096)", "window(4k)"},
  {"window(3, 2)", "window(3, 2)"},
  {"window(3, 0)", "window(4)"},
  {"window(0, 0)", "window(1)"},
  {"sink(64)", "sink(64)"},
  {"prefix(128)", "sink(128)"},
  {"global(16)", "global(16)"},
  {"stride(128)", "stride(128)"},
  {"dilated(4, 2)", "dilated(4, 2)"},
  {"chunk(8192)", "chunk(8k)"},
  {"document", "document"},
  {"blocks(lay)", "blocks(lay)"},
  {"random(3, 42)", "random(3, 42)"},
  {"topk(8)", "topk(8)"},
  /* integers and suffixes */
  {"window(2m)", "window(2m)"},
  {"window(1048576)", "window(1m)"},
  {"window(1000)", "window(1000)"},
  {"window(1025)", "window(1025)"},
  {"window(1536)", "window(1536)"},
  {"window(1k, 2k)", "window(1k, 2k)"},
  {"window(2047m)", "window(2047m)"},
  {"window(2147483647)", "window(2147483647)"},
  {"window(2147483647, 0)", "window(2048m)"},
  {"random(2, 1024)", "random(2, 1k)"},
  {"random(1, 0)", "random(1, 0)"},
  /* operators, precedence, parentheses */
  {"causal | prefix(100)", "causal | sink(100)"},
  {"causal & (window(1k) | sink(64))", "causal & (window(1k) | sink(64))"},
  {"sink(4) | causal & window(8)", "window(8) | sink(4)"},
  {"causal & !document | sink(4)", "sink(4) | causal & !document"},
  {"sink(1) | sink(2) & global(3)", "sink(2)"},
  {"(sink(1) | stride(2)) & global(3)", "global(3) & (stride(2) | sink(1))"},
  {"!causal", "!causal"},
  {"!!causal", "causal"},
  {"!(causal & document)", "!(causal & document)"},
  {"!(sink(4) | window(2))", "!(window(2) | sink(4))"},
  {"!(!(causal | document))", "causal | document"},
  {"(((causal)))", "causal"},
  {"causal | !document", "causal | !document"},
  /* folding */
  {"causal & window(4k)", "window(4k)"},
  {"window(4k) & causal & causal", "window(4k)"},
  {"window(10, 5) & window(20, 3)", "window(10, 3)"},
  {"causal & window(10, 5)", "window(11)"},
  {"causal & window(3, 5) & window(8, 1)", "window(4)"},
  {"window(1k) | causal", "causal"},
  {"stride(1)", "full"},
  {"stride(1) & causal", "causal"},
  {"sink(4) | sink(8)", "sink(8)"},
  {"sink(4) & sink(8)", "sink(4)"},
  {"sink(8) | global(8)", "global(8)"},
  {"sink(8) & global(8)", "sink(8)"},
  {"global(4) | global(8)", "global(8)"},
  {"stride(4) & stride(2)", "stride(4)"},
  {"stride(4) | stride(2)", "stride(2)"},
  {"stride(2) & stride(3)", "stride(2) & stride(3)"},
  {"stride(2) & (window(4) & stride(4))", "window(4) & stride(4)"},
  {"chunk(2) & chunk(4)", "chunk(2)"},
  {"chunk(4) | chunk(2)", "chunk(4)"},
  {"chunk(3) & chunk(4)", "chunk(3) & chunk(4)"},
  {"dilated(4, 2) & causal", "dilated(4, 2)"},
  {"dilated(4, 2) & window(8)", "dilated(4, 2)"},
  {"dilated(4, 2) | window(7)", "window(7) | dilated(4, 2)"},
  {"dilated(4, 4) & stride(2)", "dilated(4, 4)"},
  {"dilated(2, 4) | dilated(3, 4)", "dilated(3, 4)"},
  {"dilated(3, 4) | dilated(3, 2)", "dilated(3, 2) | dilated(3, 4)"},
  {"window(1) & document", "window(1)"},
  {"window(1) | chunk(4)", "chunk(4)"},
  {"window(1) & stride(5)", "window(1)"},
  {"full & causal", "causal"},
  {"full | causal", "full"},
  {"causal | document | full", "full"},
  {"(causal & document) & window(5)", "window(5) & document"},
  {"document & causal", "causal & document"},
  {"(document | sink(4)) & (causal | sink(4))", "(causal | sink(4)) & (sink(4) | document)"},
  {"topk(4) & causal", "causal & topk(4)"},
  {"blocks(b) & blocks(a)", "blocks(a) & blocks(b)"},
  {"causal & causal", "causal"},
  {"(sink(4) | causal) & (causal | sink(4))", "causal | sink(4)"},
  /* modifiers */
  {"causal with softcap(50)", "causal with softcap(50)"},
  {"window(4k) with alibi, scale(0.125), softcap(50)",
   "window(4k) with scale(0.125), softcap(50), alibi"},
  {"causal with alibi(0.5)", "causal with alibi(0.5)"},
  {"causal with scale(1e-3)", "causal with scale(0.001)"},
  {"causal with scale(0.1)", "causal with scale(0.1)"},
  {"causal with softcap(1k)", "causal with softcap(1024)"},
  {"causal with scale(2.5e-05)", "causal with scale(2.5e-05)"},
  {"causal with softcap(30.0)", "causal with softcap(30)"},
};

START_TEST(test_canon)
{
  char src[256];
  snprintf(src, sizeof src, "pattern p = %s", canon_cases[_i].expr);
  expect_canon(src, "p", canon_cases[_i].canon);
}
END_TEST

START_TEST(test_comments_whitespace)
{
  expect_canon("# header\npattern p =\tcausal # trailing\r\n& window(8)\r\n# end", "p", "window(8)");
  expect_canon("pattern\np\n=\ncausal", "p", "causal");
  expect_canon("pattern a = full pattern p = sink(4)", "p", "sink(4)");
}
END_TEST

START_TEST(test_keys)
{
  static const char *src =
    "pattern a = causal & window(4k)\n"
    "pattern b = window(4096)\n"
    "pattern c = window(4k) & causal & causal\n"
    "pattern d = (window(4095, 0) & causal)\n"
    "pattern e = window(4097)\n"
    "pattern f = window(4k) with softcap(50)\n"
    "pattern g = causal | prefix(8)\n"
    "pattern h = sink(8) | causal\n";
  hattn__spec *s = NULL;
  hattn__diags d;
  int i;
  ck_assert_int_eq(parse(src, &s, &d), HATTN_OK);
  ck_assert_int_eq(s->npatterns, 8);
  for (i = 1; i <= 3; i++) {
    ck_assert_str_eq(s->patterns[i].canon, s->patterns[0].canon);
    ck_assert(s->patterns[i].key == s->patterns[0].key);
  }
  ck_assert(s->patterns[4].key != s->patterns[0].key);
  ck_assert(s->patterns[5].key != s->patterns[0].key);
  ck_assert_str_eq(s->patterns[6].canon, s->patterns[7].canon);
  ck_assert(s->patterns[6].key == s->patterns[7].key);
  /* FNV-1a 64 of "window(4k)" */
  {
    uint64_t h = 14695981039346656037ULL;
    const char *c;
    for (c = "window(4k)"; *c; c++)
      h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    ck_assert(s->patterns[0].key == h);
  }
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
}
END_TEST

START_TEST(test_modifier_fields)
{
  hattn__spec *s = NULL;
  hattn__diags d;
  ck_assert_int_eq(parse("pattern a = causal with alibi, scale(0.5), softcap(30)\n"
                         "pattern b = causal with alibi(0.25)\n"
                         "pattern c = causal\n", &s, &d), HATTN_OK);
  ck_assert(s->patterns[0].alibi == HATTN_ALIBI_STANDARD);
  ck_assert(s->patterns[0].scale == 0.5);
  ck_assert(s->patterns[0].softcap == 30);
  ck_assert(s->patterns[1].alibi == HATTN_ALIBI_FIXED);
  ck_assert(s->patterns[1].alibi_slope == 0.25);
  ck_assert(s->patterns[2].alibi == HATTN_ALIBI_NONE);
  ck_assert(s->patterns[2].scale == 0 && s->patterns[2].softcap == 0);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
}
END_TEST

START_TEST(test_tree_and_needs)
{
  hattn__spec *s = NULL;
  hattn__diags d;
  const hattn__expr *m;
  ck_assert_int_eq(parse("pattern a = document & causal & blocks(zz) & random(1, 2) & topk(3)\n"
                         "pattern b = blocks(aa) | blocks(zz)\n"
                         "pattern c = causal & window(4k)\n"
                         "pattern d = document | full\n", &s, &d), HATTN_OK);
  ck_assert_uint_eq(s->patterns[0].needs, HATTN_NEEDS_DOCUMENT | HATTN_NEEDS_BLOCKS |
                    HATTN_NEEDS_RANDOM | HATTN_NEEDS_TOPK);
  ck_assert_uint_eq(s->patterns[2].needs, 0);
  ck_assert_uint_eq(s->patterns[3].needs, 0);
  /* layouts numbered in order of first use; canon sorts by name */
  ck_assert_int_eq(s->nlayouts, 2);
  ck_assert_str_eq(s->layouts[0], "zz");
  ck_assert_str_eq(s->layouts[1], "aa");
  ck_assert_str_eq(s->patterns[1].canon, "blocks(aa) | blocks(zz)");
  m = s->patterns[1].mask;
  ck_assert_int_eq(m->kind, HATTN_NODE_OR);
  ck_assert_int_eq(m->nkids, 2);
  ck_assert_int_eq(m->kids[0]->kind, HATTN_NODE_BLOCKS);
  ck_assert_int_eq(m->kids[0]->a, 1);
  ck_assert_int_eq(m->kids[1]->a, 0);
  /* window(4k) is a = 4095, b = 0 */
  m = s->patterns[2].mask;
  ck_assert_int_eq(m->kind, HATTN_NODE_WINDOW);
  ck_assert_int_eq(m->a, 4095);
  ck_assert_int_eq(m->b, 0);
  ck_assert_int_eq(s->patterns[2].line, 3);
  ck_assert_int_eq(s->patterns[2].col, 9);
  m = s->patterns[0].mask;
  ck_assert_int_eq(m->kind, HATTN_NODE_AND);
  ck_assert_int_eq(m->nkids, 5);
  ck_assert_int_eq(m->kids[0]->kind, HATTN_NODE_CAUSAL);
  ck_assert_int_eq(m->kids[1]->kind, HATTN_NODE_DOCUMENT);
  ck_assert_int_eq(m->kids[3]->kind, HATTN_NODE_RANDOM);
  ck_assert_int_eq(m->kids[3]->a, 1);
  ck_assert_int_eq(m->kids[3]->b, 2);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Models                                                               */
/* ------------------------------------------------------------------ */

START_TEST(test_model_assign)
{
  static const char *src =
    "pattern local  = causal & window(4k) with softcap(50)\n"
    "pattern global = causal with softcap(50)\n"
    "model gemma {\n"
    "  layers 6\n"
    "  heads 4 kv_heads 2 head_dim 256\n"
    "  dtype fp16\n"
    "  layer 0-5        : local         # the default\n"
    "  layer 1-5 step 2 : global        # later lines override\n"
    "  layer 0 heads 0-1 : global       # per-head override\n"
    "  layer 4 heads 3 : later\n"
    "}\n"
    "model small { head_dim 64 layers 2 heads 3 layer 0-1 : later }\n"
    "pattern later = full\n";
  static const int want[6][4] = {
    {1, 1, 0, 0}, {1, 1, 1, 1}, {0, 0, 0, 0}, {1, 1, 1, 1}, {0, 0, 0, 2}, {1, 1, 1, 1}
  };
  hattn__spec *s = NULL;
  hattn__diags d;
  const hattn__model *m;
  int l, h;

  ck_assert_int_eq(parse(src, &s, &d), HATTN_OK);
  ck_assert_int_eq(s->nmodels, 2);
  ck_assert_int_eq(hattn__spec_find_model(s, "gemma"), 0);
  ck_assert_int_eq(hattn__spec_find_model(s, "small"), 1);
  ck_assert_int_eq(hattn__spec_find_model(s, "nope"), -1);
  ck_assert_int_eq(hattn__spec_find_pattern(s, "later"), 2);
  ck_assert_int_eq(hattn__spec_find_pattern(s, "nope"), -1);
  m = &s->models[0];
  ck_assert_str_eq(m->name, "gemma");
  ck_assert_int_eq(m->line, 3);
  ck_assert_int_eq(m->col, 7);
  ck_assert_int_eq(m->layers, 6);
  ck_assert_int_eq(m->heads, 4);
  ck_assert_int_eq(m->kv_heads, 2);
  ck_assert_int_eq(m->head_dim, 256);
  ck_assert_int_eq(m->dtype, HATTN_DTYPE_FP16);
  for (l = 0; l < 6; l++)
    for (h = 0; h < 4; h++)
      ck_assert_msg(m->assign[l * 4 + h] == want[l][h], "layer %d head %d: %d", l, h,
                    m->assign[l * 4 + h]);
  m = &s->models[1];
  ck_assert_int_eq(m->kv_heads, 3);          /* defaults to heads */
  ck_assert_int_eq(m->dtype, HATTN_DTYPE_BF16);
  for (l = 0; l < 2 * 3; l++)
    ck_assert_int_eq(m->assign[l], 2);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

typedef struct err_case {
  const char *src;
  const char *first;            /* the first line of the text, after "t.hattn:" */
  int count;                    /* diagnostics expected */
} err_case;

#define P "pattern p = full\n"

static const err_case err_cases[] = {
  {"pattern p = causal & window(0)", "1:29: error: window size must be positive, got 0", 1},
  {"pattern p = causal(1)", "1:13: error: causal takes no arguments", 1},
  {"pattern p = full()", "1:13: error: full takes no arguments", 1},
  {"pattern p = document(2)", "1:13: error: document takes no arguments", 1},
  {"pattern p = window(1, 2, 3)", "1:13: error: window takes 1 or 2 arguments, got 3", 1},
  {"pattern p = window()", "1:13: error: window takes 1 or 2 arguments, got 0", 1},
  {"pattern p = sink(1, 2)", "1:13: error: sink takes 1 argument, got 2", 1},
  {"pattern p = dilated(4)", "1:13: error: dilated takes 2 arguments, got 1", 1},
  {"pattern p = random(4)", "1:13: error: random takes 2 arguments, got 1", 1},
  {"pattern p = windw(4)", "1:13: error: unknown mask atom 'windw'; did you mean 'window'?", 1},
  {"pattern p = casual", "1:13: error: unknown mask atom 'casual'; did you mean 'causal'?", 1},
  {"pattern p = xyzzy", "1:13: error: unknown mask atom 'xyzzy'", 1},
  {"pattern p = causal & softcap(3)",
   "1:22: error: softcap is a score modifier; write it after 'with'", 1},
  {"pattern p = causal with softcapp(3)", "1:25: error: unknown score modifier 'softcapp'", 1},
  {"pattern p = causal with softcap(3), softcap(4)", "1:37: error: softcap given twice", 1},
  {"pattern p = causal with alibi(1, 2)", "1:25: error: alibi takes 0 or 1 arguments, got 2", 1},
  {"pattern p = causal with scale", "1:25: error: scale takes 1 argument, got 0", 1},
  {"pattern p = causal with scale(0)", "1:31: error: scale must be positive, got 0", 1},
  {"pattern p = causal with softcap(-1.5)", "1:33: error: softcap must be positive, got -1.5", 1},
  {"pattern p = causal with alibi(0)", "1:31: error: alibi slope must be positive, got 0", 1},
  {"pattern p = causal with softcap(1e999)", "1:33: error: number too large: 1e999", 1},
  {"pattern p = window(4294967296)",
   "1:20: error: number too large: 4294967296 (the limit is 2^31 - 1)", 1},
  {"pattern p = window(2048m)", "1:20: error: number too large: 2048m (the limit is 2^31 - 1)", 1},
  {"pattern p = window(2097152k)",
   "1:20: error: number too large: 2097152k (the limit is 2^31 - 1)", 1},
  {"pattern p = window(4K)", "1:20: error: unknown integer suffix 'K'", 1},
  {"pattern p = window(4kb)", "1:20: error: unknown integer suffix 'kb'", 1},
  {"pattern p = window(0.5)", "1:20: error: expected an integer, got 0.5", 1},
  {"pattern p = window(w)", "1:20: error: expected an integer, got 'w'", 1},
  {"pattern p = window(-4)", "1:20: error: window size must be positive, got -4", 1},
  {"pattern p = window(1, -1)", "1:23: error: window extent must not be negative, got -1", 1},
  {"pattern p = sink(0)", "1:18: error: sink size must be positive, got 0", 1},
  {"pattern p = prefix(0)", "1:20: error: prefix length must be positive, got 0", 1},
  {"pattern p = global(0)", "1:20: error: global size must be positive, got 0", 1},
  {"pattern p = stride(0)", "1:20: error: stride must be positive, got 0", 1},
  {"pattern p = chunk(0)", "1:19: error: chunk size must be positive, got 0", 1},
  {"pattern p = topk(0)", "1:18: error: topk count must be positive, got 0", 1},
  {"pattern p = dilated(0, 2)", "1:21: error: dilated width must be positive, got 0", 1},
  {"pattern p = dilated(65536, 65536)",
   "1:13: error: dilated span 65536 * 65536 is too large (the limit is 2^31 - 1)", 1},
  {"pattern p = random(0, 1)", "1:20: error: random block count must be positive, got 0", 1},
  {"pattern p = random(1, -1)", "1:23: error: random seed must not be negative, got -1", 1},
  {"pattern p = blocks(3)", "1:20: error: blocks takes a layout name, got 3", 1},
  /* syntax */
  {"pattern p = (causal", "1:20: error: expected ')'", 1},
  {"pattern p = (causal\npattern q = full", "1:20: error: expected ')'", 1},
  {"pattern = causal", "1:9: error: expected a pattern name", 1},
  {"pattern p causal", "1:11: error: expected '='", 1},
  {"pattern p = causal &", "1:21: error: expected a mask atom", 1},
  {"pattern p = causal |\nmodel", "1:21: error: expected a mask atom", 2},
  {"pattern p = causal window(3)", "1:20: error: expected '&', '|' or 'with'", 1},
  {"pattern p = causal with softcap(1) alibi", "1:36: error: expected ','", 1},
  {"pattern p = window(3", "1:21: error: expected ',' or ')'", 1},
  {"pattern p = causal with", "1:24: error: expected a score modifier", 1},
  {"foo", "1:1: error: expected 'pattern' or 'model'", 1},
  {"patern p = full", "1:1: error: expected 'pattern' or 'model'; did you mean 'pattern'?", 1},
  {"pattern p = causal \x01", "1:20: error: unexpected character '\\x01'", 1},
  {"pattern p = causal @", "1:20: error: unexpected character '@'", 1},
  {"pattern p = caus\xc3\xa9", "1:13: error: unknown mask atom 'caus'; did you mean 'causal'?", 2},
  /* patterns */
  {"pattern p = full\npattern p = causal", "2:9: error: pattern 'p' is already defined at line 1", 1},
  {"pattern p = causal & !causal", "1:9: error: pattern 'p' masks every (query, key) pair", 1},
  {"pattern p = !full", "1:9: error: pattern 'p' masks every (query, key) pair", 1},
  {"pattern p = sink(4) & !global(8)", "1:9: error: pattern 'p' masks every (query, key) pair", 1},
  {"pattern p = window(2) & !window(3)", "1:9: error: pattern 'p' masks every (query, key) pair", 1},
  {"pattern p = chunk(2) & !chunk(4)", "1:9: error: pattern 'p' masks every (query, key) pair", 1},
  /* models */
  {P "model m { layers 1 heads 1 head_dim 8 layer 0 : p }\n"
     "model m { layers 1 heads 1 head_dim 8 layer 0 : p }",
   "3:7: error: model 'm' is already defined at line 2", 1},
  {"model g { layers 2 heads 1 head_dim 8\n layer 0-1 : glob\n}",
   "2:14: error: unknown pattern 'glob'", 1},
  {P "model g {\n  layers 42 heads 16 head_dim 64\n  layer 0-50 : p\n}",
   "4:11: error: layer 50 is outside model 'g' (layers 0-41)", 1},
  {P "model g {\n  layers 42 heads 16 head_dim 64\n  layer 0 heads 20 : p\n}",
   "4:17: error: head 20 is outside model 'g' (heads 0-15)", 1},
  {P "model g {\n  layers 42 heads 16 head_dim 64\n  layer 5-3 : p\n}",
   "4:9: error: layer range 5-3 is empty", 1},
  {P "model g {\n  layers 1 heads 16 head_dim 64\n  layer 0 heads 9-2 : p\n}",
   "4:17: error: head range 9-2 is empty", 1},
  {P "model g {\n  layers 1 heads 16 kv_heads 5 head_dim 8\n  layer 0 : p\n}",
   "3:30: error: heads (16) must be a multiple of kv_heads (5)", 1},
  {P "model g { heads 1 head_dim 8 layer 0 : p }",
   "2:7: error: model 'g' does not say how many layers", 1},
  {P "model g { layers 1 head_dim 8 layer 0 : p }",
   "2:7: error: model 'g' does not say how many heads", 1},
  {P "model g { layers 1 heads 1 layer 0 : p }", "2:7: error: model 'g' does not say its head_dim", 1},
  {P "model g { }", "2:7: error: model 'g' does not say how many layers", 3},
  {"model g { layers 1 layers 2 heads 1 head_dim 8 layer 0 : p }\n" P,
   "1:20: error: 'layers' given twice", 1},
  {"model g { dtype fp8 layers 1 heads 1 head_dim 8 layer 0 : p }\n" P,
   "1:17: error: unknown dtype 'fp8' (expected fp32, fp16 or bf16)", 1},
  {"model g { laers 3 }", "1:11: error: unknown statement 'laers'; did you mean 'layers'?", 1},
  {"model g { layers 0 }", "1:18: error: layers must be positive, got 0", 1},
  {"model g { layers 5000 }", "1:18: error: too many layers: 5000 (the limit is 1024)", 1},
  {"model g { layers 2 heads 1 head_dim 8 layer 0-1 step 0 : p }\n" P,
   "1:54: error: step must be positive, got 0", 1},
  {P "model g { layers 1 heads 1 head_dim 8 layer 0 : p\npattern q = full",
   "2:50: error: expected '}'", 1},
  {"model { }", "1:7: error: expected a model name", 1},
  {"model g layers", "1:9: error: expected '{'", 1},
  {P "model g { layers 1 heads 1 head_dim 8 layer x : p }", "2:45: error: expected a layer number", 1},
  {P "model g { layers 1 heads 1 head_dim 8 layer 0 p }", "2:47: error: expected ':'", 1},
  /* coverage */
  {P "model g { layers 6 heads 8 head_dim 8\n layer 0-2 : p\n layer 4 heads 0-3 : p\n"
     " layer 4 heads 6-7 : p\n}",
   "2:7: error: layer 3 of model 'g' is not covered by any line", 3},
  {P "model g { layers 8 heads 2 head_dim 8 layer 0-2 : p layer 6-7 : p }",
   "2:7: error: layers 3-5 of model 'g' are not covered by any line", 1},
  {P "model g { layers 1 heads 8 head_dim 8 layer 0 heads 0-3 : p layer 0 heads 6-7 : p }",
   "2:7: error: layer 0 heads 4-5 of model 'g' are not covered by any line", 1},
  {P "model g { layers 1 heads 8 head_dim 8 layer 0 heads 0-6 : p }",
   "2:7: error: layer 0 head 7 of model 'g' is not covered by any line", 1},
  {P "model g { layers 4 heads 1 head_dim 8 layer 0-3 step 2 : p }",
   "2:7: error: layer 1 of model 'g' is not covered by any line", 2},
};

START_TEST(test_errors)
{
  const err_case *c = &err_cases[_i];
  hattn__spec *s = (hattn__spec *)1;
  hattn__diags d;
  char want[512];
  int rc = parse(c->src, &s, &d);

  ck_assert_msg(rc == HATTN_ESPEC, "%s: rc %d", c->src, rc);
  ck_assert_ptr_null(s);
  snprintf(want, sizeof want, "t.hattn:%s", c->first);
  ck_assert_msg(strcmp(first_line(&d), want) == 0, "%s:\n got  '%s'\n want '%s'\n%s", c->src,
                first_line(&d), want, d.text);
  ck_assert_msg(d.count == c->count, "%s: %d diagnostics, expected %d:\n%s", c->src, d.count,
                c->count, d.text);
  hattn__diags_clear(&d);
}
END_TEST

/* The full text of a diagnostic: source echo and caret. */
START_TEST(test_caret)
{
  hattn__spec *s = NULL;
  hattn__diags d;

  ck_assert_int_eq(parse("\n\npattern local = causal & window(0)\n", &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(d.text, "t.hattn:3:33: error: window size must be positive, got 0\n"
                           "  pattern local = causal & window(0)\n"
                           "                                  ^\n");
  ck_assert_int_eq(d.count, 1);
  ck_assert_int_eq(d.items[0].line, 3);
  ck_assert_int_eq(d.items[0].col, 33);
  ck_assert_str_eq(d.items[0].msg, "window size must be positive, got 0");
  hattn__diags_clear(&d);

  /* tabs kept in the caret line, other bytes shown as '?' */
  ck_assert_int_eq(parse("pattern p =\tcausal &\t\x01\x80", &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(d.text, "t.hattn:1:22: error: unexpected character '\\x01'\n"
                           "  pattern p =\tcausal &\t??\n"
                           "             \t        \t^\n");
  hattn__diags_clear(&d);

  /* a NUL byte inside the buffer */
  ck_assert_int_eq(parse_n("pattern p = causal\0 & full", 26, &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(d.text, "t.hattn:1:19: error: unexpected character '\\x00'\n"
                           "  pattern p = causal? & full\n"
                           "                    ^\n");
  hattn__diags_clear(&d);

  /* end of input: the caret goes after the last token; CRLF is not echoed */
  ck_assert_int_eq(parse("pattern p = (causal\r\n", &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(d.text, "t.hattn:1:20: error: expected ')'\n"
                           "  pattern p = (causal\n"
                           "                     ^\n");
  hattn__diags_clear(&d);

  /* the file name is the caller's */
  ck_assert_int_eq(hattn__spec_parse("x", 1, "model.hattn", &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(d.text, "model.hattn:1:1: error: expected 'pattern' or 'model'\n"
                           "  x\n"
                           "  ^\n");
  hattn__diags_clear(&d);
}
END_TEST

START_TEST(test_multiple_errors)
{
  static const char *src =
    "pattern a = window(0) & sink(0)\n"      /* two argument errors */
    "pattern b = (causal & \n"               /* syntax: recovers at the next pattern */
    "pattern c = full\n"
    "model m {\n"
    "  layers 2 heads 2 head_dim 8 dtype fp8\n"
    "  layer 0-1 : zz\n"
    "  layer 0-1 : c\n"
    "}\n"
    "pattern a = full\n";
  hattn__spec *s = NULL;
  hattn__diags d;
  const char *t;

  ck_assert_int_eq(parse(src, &s, &d), HATTN_ESPEC);
  ck_assert_int_eq(d.count, 6);
  ck_assert_int_eq(d.items[0].line, 1);
  ck_assert_int_eq(d.items[0].col, 20);
  ck_assert_str_eq(d.items[0].msg, "window size must be positive, got 0");
  ck_assert_int_eq(d.items[1].line, 1);
  ck_assert_int_eq(d.items[1].col, 30);
  ck_assert_str_eq(d.items[1].msg, "sink size must be positive, got 0");
  ck_assert_int_eq(d.items[2].line, 2);
  ck_assert_str_eq(d.items[2].msg, "expected a mask atom");
  ck_assert_int_eq(d.items[3].line, 5);
  ck_assert_str_eq(d.items[3].msg, "unknown dtype 'fp8' (expected fp32, fp16 or bf16)");
  ck_assert_int_eq(d.items[4].line, 6);
  ck_assert_str_eq(d.items[4].msg, "unknown pattern 'zz'");
  ck_assert_int_eq(d.items[5].line, 9);
  ck_assert_str_eq(d.items[5].msg, "pattern 'a' is already defined at line 1");
  /* the text holds them all, in the same order */
  t = d.text;
  t = strstr(t, "t.hattn:1:20:");
  ck_assert_ptr_nonnull(t);
  t = strstr(t, "t.hattn:1:30:");
  ck_assert_ptr_nonnull(t);
  t = strstr(t, "t.hattn:2:");
  ck_assert_ptr_nonnull(t);
  t = strstr(t, "t.hattn:5:");
  ck_assert_ptr_nonnull(t);
  t = strstr(t, "t.hattn:6:");
  ck_assert_ptr_nonnull(t);
  t = strstr(t, "t.hattn:9:9:");
  ck_assert_ptr_nonnull(t);
  hattn__diags_clear(&d);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Hostile input                                                        */
/* ------------------------------------------------------------------ */

START_TEST(test_empty_inputs)
{
  hattn__spec *s = NULL;
  hattn__diags d;
  ck_assert_int_eq(parse("", &s, &d), HATTN_OK);
  ck_assert_int_eq(s->npatterns, 0);
  ck_assert_int_eq(s->nmodels, 0);
  ck_assert_int_eq(d.count, 0);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
  ck_assert_int_eq(parse("# only a comment", &s, &d), HATTN_OK);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
  ck_assert_int_eq(hattn__spec_parse(NULL, 0, NULL, &s, NULL), HATTN_OK);
  hattn__spec_destroy(s);
  /* DIAGS may be NULL on failure too */
  ck_assert_int_eq(hattn__spec_parse("pattern", 7, NULL, &s, NULL), HATTN_ESPEC);
  ck_assert_ptr_null(s);
  hattn__spec_destroy(NULL);
  hattn__diags_clear(NULL);
}
END_TEST

START_TEST(test_not_past_len)
{
  /* the length cuts the text: "pattern p = caus" */
  hattn__spec *s = NULL;
  hattn__diags d;
  ck_assert_int_eq(parse_n("pattern p = causal", 16, &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(first_line(&d), "t.hattn:1:13: error: unknown mask atom 'caus'; did you mean 'causal'?");
  hattn__diags_clear(&d);
  /* a number at the very end */
  ck_assert_int_eq(parse_n("pattern p = window(12", 21, &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(first_line(&d), "t.hattn:1:22: error: expected ',' or ')'");
  hattn__diags_clear(&d);
}
END_TEST

/* Line ends are LF, CR LF or a CR alone (old Mac files): each counts one
** line, and the echoed source line stops at it. */
START_TEST(test_cr_line_ends)
{
  hattn__spec *s = NULL;
  hattn__diags d;

  ck_assert_int_eq(parse("pattern a = causal\rpattern b = windw(3)\r", &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(d.text, "t.hattn:2:13: error: unknown mask atom 'windw'; did you mean 'window'?\n"
                           "  pattern b = windw(3)\n"
                           "              ^\n");
  hattn__diags_clear(&d);
  /* a comment ends at a CR */
  ck_assert_int_eq(parse("# c\rpattern a = causal # c\r\rpattern b = causal &\r\n\rwindw(3)", &s, &d),
                   HATTN_ESPEC);
  ck_assert_str_eq(first_line(&d), "t.hattn:6:1: error: unknown mask atom 'windw'; did you mean 'window'?");
  hattn__diags_clear(&d);
  ck_assert_int_eq(parse("# c\rpattern a = causal\r", &s, &d), HATTN_OK);
  ck_assert_int_eq(s->npatterns, 1);
  ck_assert_int_eq(s->patterns[0].line, 2);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
}
END_TEST

/* Model grids are bounded per file: 2000 models of 1024 x 1024 cells in
** 135 KB of spec needed 8 GB (bug); the 17th such model now goes past the
** file's 2^24 cells, and is refused before its grid is allocated. */
START_TEST(test_model_grid_limit)
{
#define ONE_MODEL "model m%04d { layers 1024 heads 1024 head_dim 64 layer 0-1023 : p }\n"
  size_t cap = 2000 * 80 + 64, len;
  char *src = malloc(cap);
  hattn__spec *s = NULL;
  hattn__diags d;
  int i;

  ck_assert_ptr_nonnull(src);
  len = (size_t)snprintf(src, cap, "pattern p = causal\n");
  for (i = 0; i < 16; i++)
    len += (size_t)snprintf(src + len, cap - len, ONE_MODEL, i);
  ck_assert_int_eq(parse(src, &s, &d), HATTN_OK);
  ck_assert_int_eq(s->nmodels, 16);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
  for (; i < 2000; i++)
    len += (size_t)snprintf(src + len, cap - len, ONE_MODEL, i);
  ck_assert_int_eq(parse(src, &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(first_line(&d), "t.hattn:18:7: error: model 'm0016' has 1048576 (layer, head) cells, and "
                                   "the models of one file may have at most 16777216 (2^24) in all");
  hattn__diags_clear(&d);
  /* Lines that cover more than 2^26 cells in all: 65 lines of 1024 x 1024. */
  len = (size_t)snprintf(src, cap, "pattern p = causal\nmodel g { layers 1024 heads 1024 head_dim 64\n");
  for (i = 0; i < 65; i++)
    len += (size_t)snprintf(src + len, cap - len, "layer 0-1023 : p\n");
  len += (size_t)snprintf(src + len, cap - len, "}\n");
  ck_assert_int_eq(parse(src, &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(first_line(&d), "t.hattn:67:7: error: this line takes the layer lines of one file past "
                                   "67108864 (2^26) (layer, head) cells in all");
  hattn__diags_clear(&d);
  free(src);
#undef ONE_MODEL
}
END_TEST

START_TEST(test_deep_nesting)
{
  size_t n = 100000, i;
  char *src = malloc(12 + 2 * n + 8);
  hattn__spec *s = NULL;
  hattn__diags d;

  ck_assert_ptr_nonnull(src);
  /* 200 levels parse, as docs/spec.md says, of ( and of ! */
  strcpy(src, "pattern p = ");
  for (i = 0; i < 200; i++)
    strcat(src, "(");
  strcat(src, "causal");
  for (i = 0; i < 200; i++)
    strcat(src, ")");
  ck_assert_int_eq(parse(src, &s, &d), HATTN_OK);
  ck_assert_str_eq(s->patterns[0].canon, "causal");
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
  strcpy(src, "pattern p = ");
  for (i = 0; i < 200; i++)
    strcat(src, "!");
  strcat(src, "causal");
  ck_assert_int_eq(parse(src, &s, &d), HATTN_OK);
  ck_assert_str_eq(s->patterns[0].canon, "causal");
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
  /* 201 do not */
  strcpy(src, "pattern p = ");
  for (i = 0; i < 201; i++)
    strcat(src, "(");
  strcat(src, "causal");
  ck_assert_int_eq(parse(src, &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(first_line(&d), "t.hattn:1:214: error: expression nested too deeply");
  ck_assert_int_eq(d.count, 1);
  hattn__diags_clear(&d);
  /* 100000 of ( and ! */
  memcpy(src, "pattern p = ", 12);
  for (i = 0; i < 2 * n; i++)
    src[12 + i] = i % 2 ? '!' : '(';
  ck_assert_int_eq(parse_n(src, 12 + 2 * n, &s, &d), HATTN_ESPEC);
  ck_assert_str_eq(d.items[0].msg, "expression nested too deeply");
  ck_assert_int_eq(d.count, 1);
  /* a long line is echoed as a window around the column */
  ck_assert_ptr_nonnull(strstr(d.text, "\n  ...!("));
  hattn__diags_clear(&d);
  free(src);
}
END_TEST

START_TEST(test_error_limit)
{
  size_t n = 0, i;
  char *src = malloc(100 * 32);
  hattn__spec *s = NULL;
  hattn__diags d;
  ck_assert_ptr_nonnull(src);
  for (i = 0; i < 100; i++)
    n += (size_t)sprintf(src + n, "pattern p%zu = window(0)\n", i);
  ck_assert_int_eq(parse_n(src, n, &s, &d), HATTN_ESPEC);
  ck_assert_int_eq(d.count, 50);
  ck_assert_int_eq(d.items[49].line, 50);
  ck_assert_ptr_nonnull(strstr(d.text, "t.hattn: note: too many errors; stopped after 50\n"));
  hattn__diags_clear(&d);
  free(src);
}
END_TEST

START_TEST(test_garbage)
{
  static const char *const words[] = {
    "pattern ", "model ", "p", " = ", "causal", "window(", "4k", ")", "(", " & ", " | ", "!",
    "{", "}", "layers 2", "layer 0-1 : p", " with ", "softcap(", ",", "\n", "#", "-", ":",
    "\x01", "\xff", "99999999999999999999", "1e400", "step", "heads", "blocks(", "random("
  };
  unsigned long long x = 88172645463325252ULL;
  char buf[600];
  int iter;

  for (iter = 0; iter < 3000; iter++) {
    size_t n = 0, len;
    hattn__spec *s = NULL;
    hattn__diags d;
    int rc;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    len = (size_t)(x % 500);
    while (n < len) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      if (iter % 2) {
        buf[n++] = (char)(x >> 24);
      } else {
        const char *w = words[(x >> 20) % (sizeof words / sizeof words[0])];
        size_t wl = strlen(w);
        if (n + wl > len)
          break;
        memcpy(buf + n, w, wl);
        n += wl;
      }
    }
    rc = parse_n(buf, n, &s, &d);
    ck_assert(rc == HATTN_OK || rc == HATTN_ESPEC);
    if (rc == HATTN_OK) {
      hattn__spec_destroy(s);
    } else {
      ck_assert_ptr_null(s);
      ck_assert(d.count >= 1 && d.count <= 50);
      ck_assert_ptr_nonnull(d.text);
    }
    hattn__diags_clear(&d);
  }
}
END_TEST

/* ------------------------------------------------------------------ */
/* hattn__expr_text and dtypes                                          */
/* ------------------------------------------------------------------ */

START_TEST(test_expr_text)
{
  hattn__expr sink = {HATTN_NODE_SINK, 4, 0, 0, NULL, 0, 0, NULL};
  hattn__expr causal = {HATTN_NODE_CAUSAL, 0, 0, 0, NULL, 0, 0, NULL};
  hattn__expr win = {HATTN_NODE_WINDOW, 2047, 0, 0, NULL, 0, 0, NULL};
  hattn__expr win2 = {HATTN_NODE_WINDOW, 3, 1024, 0, NULL, 0, 0, NULL};
  hattn__expr blk = {HATTN_NODE_BLOCKS, 0, 0, 0, NULL, 0, 0, "lay"};
  hattn__expr *or_kids[2] = {&sink, &causal};
  hattn__expr orx = {HATTN_NODE_OR, 0, 0, 2, or_kids, 0, 0, NULL};
  hattn__expr *and_kids[3] = {&win, &orx, &blk};
  hattn__expr andx = {HATTN_NODE_AND, 0, 0, 3, and_kids, 0, 0, NULL};
  hattn__expr *not_kids[1] = {&andx};
  hattn__expr notx = {HATTN_NODE_NOT, 0, 0, 1, not_kids, 0, 0, NULL};
  hattn__expr *not2_kids[1] = {&win2};
  hattn__expr not2 = {HATTN_NODE_NOT, 0, 0, 1, not2_kids, 0, 0, NULL};
  char *t;

  t = hattn__expr_text(&andx);
  ck_assert_str_eq(t, "window(2k) & (sink(4) | causal) & blocks(lay)");
  free(t);
  t = hattn__expr_text(&notx);
  ck_assert_str_eq(t, "!(window(2k) & (sink(4) | causal) & blocks(lay))");
  free(t);
  t = hattn__expr_text(&not2);
  ck_assert_str_eq(t, "!window(3, 1k)");
  free(t);
  t = hattn__expr_text(&orx);
  ck_assert_str_eq(t, "sink(4) | causal");
  free(t);
}
END_TEST

START_TEST(test_expr_text_matches_canon)
{
  hattn__spec *s = NULL;
  hattn__diags d;
  char *t;
  ck_assert_int_eq(parse("pattern p = causal & (window(1k) | sink(64)) with softcap(50)", &s, &d), HATTN_OK);
  t = hattn__expr_text(s->patterns[0].mask);
  ck_assert_str_eq(t, "causal & (window(1k) | sink(64))");
  ck_assert_str_eq(s->patterns[0].canon, "causal & (window(1k) | sink(64)) with softcap(50)");
  free(t);
  hattn__spec_destroy(s);
  hattn__diags_clear(&d);
}
END_TEST

START_TEST(test_dtype)
{
  ck_assert_str_eq(hattn__dtype_name(HATTN_DTYPE_FP32), "fp32");
  ck_assert_str_eq(hattn__dtype_name(HATTN_DTYPE_FP16), "fp16");
  ck_assert_str_eq(hattn__dtype_name(HATTN_DTYPE_BF16), "bf16");
  ck_assert_int_eq(hattn__dtype_size(HATTN_DTYPE_FP32), 4);
  ck_assert_int_eq(hattn__dtype_size(HATTN_DTYPE_FP16), 2);
  ck_assert_int_eq(hattn__dtype_size(HATTN_DTYPE_BF16), 2);
}
END_TEST

static Suite *spec_suite(void)
{
  Suite *s = suite_create("spec");
  TCase *tc = tcase_create("canon");
  tcase_add_loop_test(tc, test_canon, 0, (int)(sizeof canon_cases / sizeof canon_cases[0]));
  tcase_add_test(tc, test_comments_whitespace);
  tcase_add_test(tc, test_keys);
  tcase_add_test(tc, test_modifier_fields);
  tcase_add_test(tc, test_tree_and_needs);
  tcase_add_test(tc, test_expr_text);
  tcase_add_test(tc, test_expr_text_matches_canon);
  tcase_add_test(tc, test_dtype);
  suite_add_tcase(s, tc);

  tc = tcase_create("models");
  tcase_add_test(tc, test_model_assign);
  suite_add_tcase(s, tc);

  tc = tcase_create("errors");
  tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof err_cases / sizeof err_cases[0]));
  tcase_add_test(tc, test_caret);
  tcase_add_test(tc, test_multiple_errors);
  suite_add_tcase(s, tc);

  tc = tcase_create("hostile");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_empty_inputs);
  tcase_add_test(tc, test_not_past_len);
  tcase_add_test(tc, test_deep_nesting);
  tcase_add_test(tc, test_cr_line_ends);
  tcase_add_test(tc, test_model_grid_limit);
  tcase_add_test(tc, test_error_limit);
  tcase_add_test(tc, test_garbage);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(spec_suite());
  int failed;
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
