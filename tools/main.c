/*
** main.c: the hattn command: dispatch to subcommands, and the helpers they
** share (tools.h).
*/
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "tools.h"

static const char usage[] =
  "usage: hattn COMMAND [OPTIONS] FILE\n"
  "\n"
  "Generate, inspect and measure attention kernels for the hybrid and sparse\n"
  "patterns of a spec file (docs/spec.md).\n"
  "\n"
  "commands:\n"
  "  check FILE     validate a spec; print every pattern's canonical form and key\n"
  "                 and every model's layer assignment\n"
  "  plan FILE      lower one pattern to blocks: FULL / PARTIAL / EMPTY counts,\n"
  "                 density, FLOPs against dense causal, and an SVG of the mask\n"
  "  report FILE    for a model: per layer the patterns, density, attention FLOPs\n"
  "                 and KV-cache bytes, with totals against full causal attention\n"
  "  run FILE       run one pattern's kernel on random inputs (or --in DIR) and\n"
  "                 write q, k, v, o and lse as .npy files (--out DIR)\n"
  "  verify FILE    run, then compare with the float64 reference: exit 0 within\n"
  "                 the dtype's tolerance, 1 outside it\n"
  "  gen FILE       write object files and a header of kernels for a named CPU,\n"
  "                 for programs that run them without LLVM\n"
  "  bench          GFLOP/s of the CPU kernels beside a plain loop nest and the\n"
  "                 BLAS path, as a fraction of the CPU's FMA peak\n"
  "  db ACTION      the kernel database: list, show KEY, export FILE, import FILE,\n"
  "                 prune, verify\n"
  "  tune FILE      tune a pattern's (or a model's) kernels for problem shapes on\n"
  "                 the CPU or GPU 0 and store the winners in the database\n"
  "\n"
  "Run 'hattn COMMAND --help' for a command's options.\n"
  "  --version      print the version\n";

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return TOOL_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(usage, stdout);
    return TOOL_OK;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("hattn %s\n", hattn_version());
    return TOOL_OK;
  }
  if (!strcmp(argv[1], "check")) return hattn_cmd_check(argc - 1, argv + 1);
  if (!strcmp(argv[1], "plan")) return hattn_cmd_plan(argc - 1, argv + 1);
  if (!strcmp(argv[1], "report")) return hattn_cmd_report(argc - 1, argv + 1);
  if (!strcmp(argv[1], "run")) return hattn_cmd_run(argc - 1, argv + 1);
  if (!strcmp(argv[1], "bench")) return hattn_cmd_bench(argc - 1, argv + 1);
  if (!strcmp(argv[1], "verify")) return hattn_cmd_verify(argc - 1, argv + 1);
  if (!strcmp(argv[1], "gen")) return hattn_cmd_gen(argc - 1, argv + 1);
  if (!strcmp(argv[1], "db")) return hattn_cmd_db(argc - 1, argv + 1);
  if (!strcmp(argv[1], "tune")) return hattn_cmd_tune(argc - 1, argv + 1);
  fprintf(stderr, "hattn: unknown command '%s'\n\n%s", argv[1], usage);
  return TOOL_USAGE;
}

hattn_spec *tool_load_spec(const char *path) {
  FILE *f = fopen(path, "rb");
  char *text = NULL;
  size_t len = 0, cap = 0, n;
  hattn_spec *spec = NULL;
  hattn__diags diags = {0};
  int rc;

  if (f == NULL) {
    fprintf(stderr, "hattn: cannot open %s: %s\n", path, strerror(errno));
    return NULL;
  }
  do {
    if (len == cap) {
      char *t;
      cap = cap ? cap * 2 : 65536;
      if (cap > (size_t)64 << 20 || (t = realloc(text, cap)) == NULL) {
        fprintf(stderr, "hattn: %s is too large for a spec\n", path);
        goto done;
      }
      text = t;
    }
    n = fread(text + len, 1, cap - len, f);
    len += n;
  } while (n > 0);
  if (ferror(f)) {
    fprintf(stderr, "hattn: cannot read %s: %s\n", path, strerror(errno));
    goto done;
  }
  rc = hattn__spec_parse(text, len, path, &spec, &diags);
  if (rc != HATTN_OK) {
    if (diags.text) fputs(diags.text, stderr);
    fprintf(stderr, "hattn: %s: %s\n", path, hattn_strerror(rc));
  }
done:
  hattn__diags_clear(&diags);
  free(text);
  fclose(f);
  return spec;
}

int tool_parse_len(const char *opt, const char *s, int allow_zero, int64_t *out) {
  char *end;
  long long v;
  int64_t mul = 1;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (end == s || errno || v < 0) goto bad;
  if (*end == 'k' || *end == 'K') mul = 1024, end++;
  else if (*end == 'm' || *end == 'M') mul = 1048576, end++;
  if (*end != '\0' || v > (long long)(INT32_MAX / mul)) goto bad;
  if (v == 0 && !allow_zero) goto bad;
  *out = (int64_t)v * mul;
  return 0;
bad:
  fprintf(stderr, "hattn: %s: expected a %s length such as 4096 or 128k (below 2^31), got '%s'\n",
          opt, allow_zero ? "non-negative" : "positive", s);
  return -1;
}

int tool_parse_pair(const char *opt, const char *s, int allow_zero, int64_t *a, int64_t *b) {
  const char *comma = strchr(s, ',');
  char first[64];
  if (comma == NULL) {
    if (tool_parse_len(opt, s, allow_zero, a)) return -1;
    *b = *a;
    return 0;
  }
  if ((size_t)(comma - s) >= sizeof first) return tool_parse_len(opt, s, allow_zero, a);
  memcpy(first, s, (size_t)(comma - s));
  first[comma - s] = '\0';
  if (tool_parse_len(opt, first, allow_zero, a)) return -1;
  return tool_parse_len(opt, comma + 1, allow_zero, b);
}

const char *tool_commas(int64_t n, char buf[32]) {
  char digits[24];
  int len, i, o = 0;
  len = snprintf(digits, sizeof digits, "%lld", (long long)(n < 0 ? -n : n));
  if (n < 0) buf[o++] = '-';
  for (i = 0; i < len; i++) {
    if (i > 0 && (len - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
  return buf;
}

/* ---- run-time data ------------------------------------------------------- */

int tool_rtdata_option(tool_rtdata *rt, int opt, const char *arg) {
  switch (opt) {
  case 'D':
    return tool_parse_len("--docs", arg, 0, &rt->doc_len) == 0 ? 1 : -1;
  case 'L':
    rt->doc_lens = arg;
    return 1;
  case 'Y':
    if (rt->nlayout_args == (int)(sizeof rt->layout_args / sizeof rt->layout_args[0])) {
      fprintf(stderr, "hattn: --layout: too many layouts\n");
      return -1;
    }
    rt->layout_args[rt->nlayout_args++] = arg;
    return 1;
  default:
    return 0;
  }
}

/* Document offsets for lk keys: from --doc-lens (the last document takes
** what is left), else documents of --docs tokens, else one document. */
static int make_offsets(tool_rtdata *rt, int64_t lk, hattn__mask_env *env) {
  int64_t n = 0, cap = 16, pos = 0;
  const char *s = rt->doc_lens;
  free(rt->offsets);
  if ((rt->offsets = malloc((size_t)cap * sizeof *rt->offsets)) == NULL) return -1;
  rt->offsets[n++] = 0;
  while (pos < lk) {
    int64_t len = lk;
    if (s && *s) {
      char tok[32];
      size_t t = strcspn(s, ",");
      if (t == 0 || t >= sizeof tok) {
        fprintf(stderr, "hattn: --doc-lens: expected lengths separated by commas\n");
        return -1;
      }
      memcpy(tok, s, t);
      tok[t] = '\0';
      if (tool_parse_len("--doc-lens", tok, 1, &len)) return -1;
      s += t + (s[t] == ',');
    } else if (rt->doc_len > 0) {
      len = rt->doc_len;
    }
    pos = pos + len < lk ? pos + len : lk;
    if (n == cap) {
      int64_t *t2 = realloc(rt->offsets, (size_t)(cap *= 2) * sizeof *t2);
      if (t2 == NULL) return -1;
      rt->offsets = t2;
    }
    rt->offsets[n++] = pos;
  }
  env->doc_offsets = rt->offsets;
  env->ndocs = n - 1;
  return 0;
}

/* Read a layout file: a line "BM BN", then one line of 0/1 (or . and #) per
** query block. */
static int read_layout(const char *path, hattn__layout *l, uint8_t **bits) {
  FILE *f = fopen(path, "r");
  char line[65536];
  long long bm, bn;
  int64_t rows = 0, cols = -1, cap = 0;
  uint8_t *b = NULL;
  int rc = -1;
  if (f == NULL) {
    fprintf(stderr, "hattn: --layout: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  if (!fgets(line, sizeof line, f) || sscanf(line, "%lld %lld", &bm, &bn) != 2 || bm <= 0 ||
      bn <= 0 || bm > INT32_MAX || bn > INT32_MAX) {
    fprintf(stderr, "hattn: --layout: %s:1: expected the block size \"BM BN\"\n", path);
    goto done;
  }
  while (fgets(line, sizeof line, f)) {
    int64_t n = (int64_t)strcspn(line, "\r\n"), i;
    if (n == 0) continue;
    if (cols < 0) cols = n;
    if (n != cols) {
      fprintf(stderr, "hattn: --layout: %s:%lld: every row must have %lld blocks\n", path,
              (long long)(rows + 2), (long long)cols);
      goto done;
    }
    if ((rows + 1) * cols > cap) {
      uint8_t *t;
      cap = cap ? cap * 2 : cols * 64;
      if ((t = realloc(b, (size_t)cap)) == NULL) goto done;
      b = t;
    }
    for (i = 0; i < n; i++) {
      char c = line[i];
      if (c != '0' && c != '1' && c != '.' && c != '#') {
        fprintf(stderr, "hattn: --layout: %s:%lld: blocks are 0/1 or ./#\n", path,
                (long long)(rows + 2));
        goto done;
      }
      b[rows * cols + i] = (c == '1' || c == '#');
    }
    rows++;
  }
  l->bm = bm;
  l->bn = bn;
  l->nqb = rows;
  l->nkb = cols < 0 ? 0 : cols;
  l->bits = b;
  *bits = b;
  b = NULL;
  rc = 0;
done:
  free(b);
  fclose(f);
  return rc;
}

int tool_rtdata_env(tool_rtdata *rt, const hattn_spec *spec, const hattn__pattern *p,
                    int64_t lq, int64_t lk, hattn__mask_env *env) {
  int i, j;
  memset(env, 0, sizeof *env);
  env->lq = lq;
  env->lk = lk;
  env->batch = env->heads = 1;
  if ((p->needs & HATTN_NEEDS_DOCUMENT) && make_offsets(rt, lk, env)) return -1;
  if (p->needs & HATTN_NEEDS_BLOCKS) {
    if (rt->layouts == NULL) {
      rt->nlayouts = spec->nlayouts;
      rt->layouts = calloc((size_t)spec->nlayouts + 1, sizeof *rt->layouts);
      rt->layout_bits = calloc((size_t)spec->nlayouts + 1, sizeof *rt->layout_bits);
      if (!rt->layouts || !rt->layout_bits) return -1;
      for (i = 0; i < spec->nlayouts; i++) {
        const char *name = spec->layouts[i];
        size_t n = strlen(name);
        for (j = 0; j < rt->nlayout_args; j++) {
          const char *a = rt->layout_args[j];
          if (!strncmp(a, name, n) && a[n] == '=') {
            if (read_layout(a + n + 1, &rt->layouts[i], &rt->layout_bits[i])) return -1;
            break;
          }
        }
        if (j == rt->nlayout_args && hattn__expr_count(p->mask, HATTN_NODE_BLOCKS)) {
          fprintf(stderr, "hattn: pattern '%s' uses blocks(%s): give its layout with --layout %s=FILE\n",
                  p->name, name, name);
          return -1;
        }
      }
    }
    env->layouts = rt->layouts;
    env->nlayouts = rt->nlayouts;
  }
  if (p->needs & HATTN_NEEDS_TOPK) {
    int64_t k = hattn__expr_find(p->mask, HATTN_NODE_TOPK)->a, nb = hattn__nblocks64(lk), b, t;
    free(rt->topk);
    if ((rt->topk = malloc((size_t)(nb * k + 1) * sizeof *rt->topk)) == NULL) return -1;
    /* A stand-in for data-dependent routing: the K most recent eligible blocks. */
    for (b = 0; b < nb; b++)
      for (t = 0; t < k; t++) rt->topk[b * k + t] = b - (k - 1) + t >= 0 ? (int32_t)(b - (k - 1) + t) : -1;
    env->topk_blocks = rt->topk;
    env->topk_k = k;
  }
  return 0;
}

void tool_rtdata_free(tool_rtdata *rt) {
  int i;
  free(rt->offsets);
  for (i = 0; rt->layout_bits && i < rt->nlayouts; i++) free(rt->layout_bits[i]);
  free(rt->layout_bits);
  free(rt->layouts);
  free(rt->topk);
  memset(rt, 0, sizeof *rt);
}
