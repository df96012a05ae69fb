/*
** cmd_report.c: hattn report FILE --seqlen N: what a hybrid model's
** attention costs per layer, in compute and in KV cache, against the same
** model with full causal attention everywhere.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "tools.h"

static const char report_usage[] =
  "usage: hattn report FILE --seqlen N [options]\n"
  "\n"
  "For each model of the spec FILE (or the one named), print per layer the\n"
  "pattern(s) its heads use, the density (visible pairs over N x N), the\n"
  "attention FLOPs of a prefill of N tokens (4 * head_dim per visible pair,\n"
  "summed over heads, batch 1), and the KV-cache bytes the layer must keep to\n"
  "decode at N tokens: per KV head, the keys that the current query or any\n"
  "later one can still see (window(W) keeps W tokens, sink(G) | window(W)\n"
  "keeps G + W), K and V, in the model's dtype.  Totals compare with the same\n"
  "model using full causal attention in every layer.\n"
  "\n"
  "options:\n"
  "  -m, --model M         the model (default: every model in FILE)\n"
  "  -s, --seqlen N        sequence length: 8192, 128k, 1m\n"
  "  -b, --block BM[,BN]   block size used to count (default 128,128)\n"
  "      --docs LEN        document patterns: documents of LEN tokens (default one)\n"
  "      --doc-lens A,B,.. document patterns: these lengths\n"
  "      --layout NAME=F   blocks(NAME): a layout file (see hattn plan --help)\n"
  "  -h, --help            this text\n"
  "\n"
  "Patterns that depend on run-time data keep every token in the KV cache\n"
  "(document, blocks, random, topk); topk counts the K most recent eligible\n"
  "blocks.\n";

/* KEEP[k] = 1 for each key k < n that the query at n - 1, or one of the next
** ones, may see: the tokens the KV cache must hold to decode at length n. */
/* The most mask evaluations kept_keys may take (docs/spec.md, Limits). */
#define REPORT_MAX_KEEP_STEPS ((int64_t)1 << 28)

static void kept_keys(const hattn__mask *mask, int64_t n, uint8_t *keep) {
  int64_t period = hattn__mask_period(mask, 4096), k, t;
  for (k = 0; k < n; k++) {
    keep[k] = 0;
    for (t = 0; t < period && !keep[k]; t++) keep[k] = hattn__mask_eval3(mask, n - 1 + t, k) != HATTN_TRI_FALSE;
  }
}

typedef struct pattern_cost {
  int used;
  int64_t visible;      /* visible pairs at n x n */
  int64_t kept;         /* tokens kept per KV head */
  uint8_t *keep;        /* [n] */
} pattern_cost;

static int cost_pattern(const hattn__spec *spec, int pi, int64_t n, int64_t bm, int64_t bn,
                        tool_rtdata *rt, pattern_cost *c) {
  const hattn__pattern *p = &spec->patterns[pi];
  hattn__mask_env env;
  hattn__plan *plan = NULL;
  char err[512];
  int64_t k;
  if (tool_rtdata_env(rt, spec, p, n, n, &env)) return -1;
  if (hattn__plan_build(p->lowered, &env, bm, bn, &plan, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn report: pattern '%s': %s\n", p->name, err);
    return -1;
  }
  c->visible = hattn__plan_count_visible(plan, p->lowered, 0, &env);
  hattn__plan_destroy(plan);
  if (c->visible < 0) {
    fprintf(stderr, "hattn report: pattern '%s': counting its visible pairs at %lld x %lld exactly would take "
            "more than %lld (2^24) steps, the limit: use larger tiles or shorter sequences\n", p->name,
            (long long)n, (long long)n, (long long)HATTN_PLAN_MAX_COUNT_STEPS);
    return -1;
  }
  /* kept_keys evaluates up to one period of distances per key. */
  if (hattn__mask_period(p->lowered, 4096) > REPORT_MAX_KEEP_STEPS / n) {
    fprintf(stderr, "hattn report: pattern '%s': finding the keys it keeps at %lld tokens would take more "
            "than %lld (2^28) steps, the limit: use shorter sequences\n", p->name, (long long)n,
            (long long)REPORT_MAX_KEEP_STEPS);
    return -1;
  }
  if ((c->keep = malloc((size_t)n)) == NULL) {
    fprintf(stderr, "hattn report: out of memory for %lld keys\n", (long long)n);
    return -1;
  }
  kept_keys(p->lowered, n, c->keep);
  for (c->kept = 0, k = 0; k < n; k++) c->kept += c->keep[k];
  return 0;
}

static void print_flops(double flops, double unit) { printf("%12.3f", flops / unit); }

static int report_model(const hattn__spec *spec, const hattn__model *m, int64_t n, int64_t bm,
                        int64_t bn, tool_rtdata *rt, pattern_cost *cost) {
  int group = m->heads / m->kv_heads, l, h, g, i, j;
  int64_t causal = tool_causal_pairs(n, n), k;
  double esize = hattn__dtype_size(m->dtype), d = m->head_dim;
  double causal_flops = 4.0 * d * (double)causal * m->heads;
  double causal_kv = 2.0 * d * esize * (double)n * m->kv_heads;
  double tot_flops = 0, tot_kv = 0, funit, kunit = 1048576;
  const char *fname;
  uint8_t *uni = malloc((size_t)n);
  char b1[32];

  if (uni == NULL) return -1;
  funit = causal_flops * m->layers >= 1e12 ? 1e12 : 1e9;
  fname = funit == 1e12 ? "TFLOP" : "GFLOP";

  /* Cost each pattern the model uses once. */
  for (i = 0; i < m->layers * m->heads; i++) {
    int pi = m->assign[i];
    if (!cost[pi].used) {
      cost[pi].used = 1;
      if (cost_pattern(spec, pi, n, bm, bn, rt, &cost[pi])) {
        free(uni);
        return -1;
      }
    }
  }
  printf("model %s: %d layers, %d heads, %d kv heads, head_dim %d, %s\n", m->name, m->layers,
         m->heads, m->kv_heads, m->head_dim, hattn__dtype_name(m->dtype));
  printf("prefill of %s tokens (batch 1); KV cache to decode at %s tokens\n\n", tool_commas(n, b1), b1);
  printf("%-7s %9s %12s %12s  %s\n", "layer", "density", fname, "KV MiB", "patterns");
  for (l = 0; l < m->layers; l++) {
    const int *row = m->assign + (size_t)l * m->heads;
    double vis = 0, kv_tokens = 0;
    char pats[256];
    FILE *mem;
    for (h = 0; h < m->heads; h++) vis += (double)cost[row[h]].visible;
    /* A KV head keeps what any of its query heads can see. */
    for (g = 0; g < m->kv_heads; g++) {
      int mixed = 0;
      for (j = 1; j < group; j++) mixed |= row[g * group + j] != row[g * group];
      if (!mixed) {
        kv_tokens += (double)cost[row[g * group]].kept;
        continue;
      }
      memset(uni, 0, (size_t)n);
      for (j = 0; j < group; j++)
        for (k = 0; k < n; k++) uni[k] |= cost[row[g * group + j]].keep[k];
      for (k = 0; k < n; k++) kv_tokens += uni[k];
    }
    mem = fmemopen(pats, sizeof pats, "w");
    if (mem) {
      tool_print_layer_heads(mem, spec, m, l);
      fclose(mem);
    } else {
      snprintf(pats, sizeof pats, "?");
    }
    printf("%5d   %8.3f%% ", l, 100.0 * vis / ((double)n * (double)n * m->heads));
    print_flops(4.0 * d * vis, funit);
    printf(" %12.2f  %s\n", 2.0 * d * esize * kv_tokens / kunit, pats);
    tot_flops += 4.0 * d * vis;
    tot_kv += 2.0 * d * esize * kv_tokens;
  }
  printf("\n%-7s %8.3f%% ", "total",
         100.0 * tot_flops / (4.0 * d * (double)n * (double)n * m->heads * m->layers));
  print_flops(tot_flops, funit);
  printf(" %12.2f  this model\n", tot_kv / kunit);
  printf("%-7s %8.3f%% ", "causal", 100.0 * (double)causal / ((double)n * (double)n));
  print_flops(causal_flops * m->layers, funit);
  printf(" %12.2f  the same model with full causal attention in every layer\n",
         causal_kv * m->layers / kunit);
  printf("%-7s %9s %11.2fx %11.2fx  less than causal: %.1f%% of the FLOPs and %.1f%% of the KV cache saved\n",
         "saving", "", tot_flops > 0 ? causal_flops * m->layers / tot_flops : 0.0,
         tot_kv > 0 ? causal_kv * m->layers / tot_kv : 0.0,
         100.0 * (1 - tot_flops / (causal_flops * m->layers)),
         100.0 * (1 - tot_kv / (causal_kv * m->layers)));
  free(uni);
  return 0;
}

int hattn__cmd_report(int argc, char **argv) {
  static const struct option opts[] = {
    {"model", required_argument, 0, 'm'},  {"seqlen", required_argument, 0, 's'},
    {"block", required_argument, 0, 'b'},  {"docs", required_argument, 0, 'D'},
    {"doc-lens", required_argument, 0, 'L'}, {"layout", required_argument, 0, 'Y'},
    {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  const char *model = NULL;
  int64_t n = 0, bm = 128, bn = 128;
  tool_rtdata rt = {0};
  hattn__spec *spec = NULL;
  pattern_cost *cost = NULL;
  int c, rc = TOOL_USAGE, mi, printed = 0, i;

  optind = 1;
  while ((c = getopt_long(argc, argv, "m:s:b:h", opts, NULL)) != -1) {
    int r = tool_rtdata_option(&rt, c, optarg);
    if (r < 0) goto done;
    if (r > 0) continue;
    switch (c) {
    case 'm': model = optarg; break;
    case 's': if (tool_parse_len("--seqlen", optarg, 0, &n)) goto done; break;
    case 'b': if (tool_parse_pair("--block", optarg, 0, &bm, &bn)) goto done; break;
    case 'h': fputs(report_usage, stdout); rc = TOOL_OK; goto done;
    default: fputs(report_usage, stderr); goto done;
    }
  }
  if (optind != argc - 1 || n == 0) {
    fprintf(stderr, "hattn report: %s\n\n%s", n == 0 ? "--seqlen is required" : "expected one spec FILE",
            report_usage);
    goto done;
  }
  if ((spec = tool_load_spec(argv[optind])) == NULL) goto done;
  if (spec->nmodels == 0) {
    fprintf(stderr, "hattn report: %s has no model block\n", argv[optind]);
    goto done;
  }
  if (model && hattn__spec_find_model(spec, model) < 0) {
    fprintf(stderr, "hattn report: no model '%s' in %s\n", model, argv[optind]);
    goto done;
  }
  if ((cost = calloc((size_t)spec->npatterns + 1, sizeof *cost)) == NULL) goto done;
  for (mi = 0; mi < spec->nmodels; mi++) {
    if (model && strcmp(spec->models[mi].name, model)) continue;
    if (printed++) fputc('\n', stdout);
    if (report_model(spec, &spec->models[mi], n, bm, bn, &rt, cost)) goto done;
  }
  rc = TOOL_OK;
done:
  for (i = 0; cost && i < spec->npatterns; i++) free(cost[i].keep);
  free(cost);
  hattn__spec_destroy(spec);
  tool_rtdata_free(&rt);
  return rc;
}
