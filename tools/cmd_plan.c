/*
** cmd_plan.c: hattn plan FILE --pattern P --seqlen N[,M]: lower one pattern
** to blocks and say what a kernel will do with them.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "tools.h"

static const char plan_usage[] =
  "usage: hattn plan FILE --pattern P --seqlen N[,M] [options]\n"
  "\n"
  "Lower pattern P of the spec FILE to blocks for N queries and M keys (M = N\n"
  "when absent; queries are bottom-right aligned, qpos = q + M - N) and print\n"
  "the number of FULL (no mask code), PARTIAL (mask evaluated) and EMPTY\n"
  "(skipped) blocks, the exact number of visible pairs and density, and the\n"
  "FLOPs (4 * head_dim per visible pair, one head) against dense causal.\n"
  "\n"
  "options:\n"
  "  -p, --pattern P       the pattern (optional when the file has one)\n"
  "  -s, --seqlen N[,M]    query and key lengths: 4096, 16k, 1m\n"
  "  -b, --block BM[,BN]   block size in queries and keys (default 128,128)\n"
  "  -d, --head-dim D      head dimension for FLOPs (default 128)\n"
  "      --docs LEN        document: packed documents of LEN tokens (default one)\n"
  "      --doc-lens A,B,.. document: these lengths; the last takes the rest\n"
  "      --layout NAME=F   blocks(NAME): a layout file, first line \"BM BN\", then\n"
  "                        a row of 0/1 per query block\n"
  "      --svg PATH        draw the block mask: FULL, PARTIAL, EMPTY in three colours\n"
  "  -h, --help            this text\n"
  "\n"
  "topk(K) is routed from data at run time; the plan stands in the K most\n"
  "recent eligible key blocks.\n";

/* The area of the blocks a kernel visits: FULL and PARTIAL, clipped at the edges. */
static int64_t visited_area(const hattn__plan *p, int64_t t) {
  int64_t i, j, area = 0;
  for (i = 0; i < p->nqb; i++) {
    int64_t rows = (i + 1) * p->bm < p->lq ? p->bm : p->lq - i * p->bm;
    for (j = p->full_off[t][i]; j < p->full_off[t][i + 1]; j++) {
      int64_t kb = p->full_idx[t][j];
      area += rows * ((kb + 1) * p->bn < p->lk ? p->bn : p->lk - kb * p->bn);
    }
    for (j = p->partial_off[t][i]; j < p->partial_off[t][i + 1]; j++) {
      int64_t kb = p->partial_idx[t][j];
      area += rows * ((kb + 1) * p->bn < p->lk ? p->bn : p->lk - kb * p->bn);
    }
  }
  return area;
}

static double pct(int64_t a, int64_t b) { return b > 0 ? 100.0 * (double)a / (double)b : 0.0; }

int hattn__cmd_plan(int argc, char **argv) {
  static const struct option opts[] = {
    {"pattern", required_argument, 0, 'p'}, {"seqlen", required_argument, 0, 's'},
    {"block", required_argument, 0, 'b'},   {"head-dim", required_argument, 0, 'd'},
    {"docs", required_argument, 0, 'D'},    {"doc-lens", required_argument, 0, 'L'},
    {"layout", required_argument, 0, 'Y'},  {"svg", required_argument, 0, 'S'},
    {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  const char *pattern = NULL, *svg = NULL;
  int64_t lq = 0, lk = 0, bm = 128, bn = 128, hd = 128;
  tool_rtdata rt = {0};
  hattn__spec *spec = NULL;
  hattn__plan *plan = NULL;
  hattn__mask_env env;
  const hattn__pattern *p;
  char err[512], b1[32], b2[32], b3[32];
  int c, rc = TOOL_USAGE, pi;

  optind = 1;
  while ((c = getopt_long(argc, argv, "p:s:b:d:h", opts, NULL)) != -1) {
    int r = tool_rtdata_option(&rt, c, optarg);
    if (r < 0) goto done;
    if (r > 0) continue;
    switch (c) {
    case 'p': pattern = optarg; break;
    case 's': if (tool_parse_pair("--seqlen", optarg, 0, &lq, &lk)) goto done; break;
    case 'b': if (tool_parse_pair("--block", optarg, 0, &bm, &bn)) goto done; break;
    case 'd': if (tool_parse_len("--head-dim", optarg, 0, &hd)) goto done; break;
    case 'S': svg = optarg; break;
    case 'h': fputs(plan_usage, stdout); rc = TOOL_OK; goto done;
    default: fputs(plan_usage, stderr); goto done;
    }
  }
  if (optind != argc - 1 || lq == 0) {
    fprintf(stderr, "hattn plan: %s\n\n%s", lq == 0 ? "--seqlen is required" : "expected one spec FILE",
            plan_usage);
    goto done;
  }
  if ((spec = tool_load_spec(argv[optind])) == NULL) goto done;
  if (pattern == NULL && spec->npatterns != 1) {
    fprintf(stderr, "hattn plan: %s has %d patterns: name one with --pattern\n", argv[optind],
            spec->npatterns);
    goto done;
  }
  pi = pattern ? hattn__spec_find_pattern(spec, pattern) : 0;
  if (pi < 0) {
    fprintf(stderr, "hattn plan: no pattern '%s' in %s\n", pattern, argv[optind]);
    goto done;
  }
  p = &spec->patterns[pi];
  if (tool_rtdata_env(&rt, spec, p, lq, lk, &env)) goto done;
  if (hattn__plan_build(p->lowered, &env, bm, bn, &plan, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn plan: %s\n", err);
    goto done;
  }
  {
    int64_t total = plan->nqb * plan->nkb, vis = hattn__plan_count_visible(plan, p->lowered, 0, &env);
    if (vis < 0) {
      fprintf(stderr, "hattn plan: counting the visible pairs of pattern '%s' at %lld x %lld exactly would take "
              "more than %lld (2^24) steps, the limit: use larger tiles or shorter sequences\n", p->name,
              (long long)lq, (long long)lk, (long long)HATTN_PLAN_MAX_COUNT_STEPS);
      goto done;
    }
    int64_t causal = tool_causal_pairs(lq, lk), area = visited_area(plan, 0);
    double gf = 4.0 * (double)hd * (double)vis / 1e9, gc = 4.0 * (double)hd * (double)causal / 1e9;
    printf("pattern %s = %s\n", p->name, p->canon);
    printf("shape    %lld queries x %lld keys, blocks of %lld x %lld: %lld x %lld = %s blocks\n",
           (long long)lq, (long long)lk, (long long)bm, (long long)bn, (long long)plan->nqb,
           (long long)plan->nkb, tool_commas(total, b1));
    printf("blocks   FULL %lld (%.2f%%), PARTIAL %lld (%.2f%%), EMPTY %lld (%.2f%%)\n",
           (long long)plan->nfull, pct(plan->nfull, total), (long long)plan->npartial,
           pct(plan->npartial, total), (long long)plan->nempty, pct(plan->nempty, total));
    printf("pairs    %s visible of %s: density %.4f%% (dense causal: %s, %.4f%%)\n",
           tool_commas(vis, b1), tool_commas(lq * lk, b2), pct(vis, lq * lk),
           tool_commas(causal, b3), pct(causal, lq * lk));
    printf("FLOPs    %.3f GFLOP per head at head_dim %lld; dense causal %.3f GFLOP: %.4fx\n", gf,
           (long long)hd, gc, causal > 0 ? (double)vis / (double)causal : 0.0);
    printf("kernel   visits %s pairs in FULL and PARTIAL blocks: %.2f%% of them visible\n",
           tool_commas(area, b1), pct(vis, area));
    if (p->needs & HATTN_NEEDS_TOPK)
      printf("note     topk is routed at run time: counted as the %lld most recent eligible blocks\n",
             (long long)env.topk_k);
  }
  if (svg) {
    char title[600];
    snprintf(title, sizeof title, "%s: %s, %lld x %lld, blocks %lld x %lld", p->name, p->canon,
             (long long)lq, (long long)lk, (long long)bm, (long long)bn);
    if (tool_svg_write(svg, plan, title)) goto done;
    printf("svg      %s\n", svg);
  }
  rc = TOOL_OK;
done:
  hattn__plan_destroy(plan);
  hattn__spec_destroy(spec);
  tool_rtdata_free(&rt);
  return rc;
}
