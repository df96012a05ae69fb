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
#include "reach.h"
#include "tools.h"

static const char report_usage[] =
  "usage: hattn report FILE --seqlen N[,M..] [options]\n"
  "\n"
  "For each model of the spec FILE (or the one named), print per layer the\n"
  "pattern(s) its heads use, the density (visible pairs over N x N), the\n"
  "attention FLOPs of a prefill of N tokens (4 * head_dim per visible pair,\n"
  "summed over heads, batch 1), and the KV-cache bytes the layer must keep to\n"
  "decode at N tokens: per KV head, the keys that the current query or any\n"
  "later one can still see (window(W) keeps W tokens, sink(G) | window(W)\n"
  "keeps G + W), K and V, in the model's dtype.  Totals compare with the same\n"
  "model using full causal attention in every layer.  Layers whose heads use the\n"
  "same patterns are one row (their count, then the cost of one of them).\n"
  "\n"
  "options:\n"
  "  -m, --model M         the model (default: every model in FILE)\n"
  "  -s, --seqlen N[,M..]  sequence lengths: 8192, 128k, 1m; a table for each\n"
  "  -b, --block BM[,BN]   block size used to count (default 128,128)\n"
  "      --docs LEN        document patterns: documents of LEN tokens (default one)\n"
  "      --doc-lens A,B,.. document patterns: these lengths\n"
  "      --layout NAME=F   blocks(NAME): a layout file (see hattn plan --help)\n"
  "      --measure         also time the layers (below)\n"
  "      --backend B       --measure: cpu (the default) or cuda\n"
  "      --batch N         --measure: sequences a step (default 1)\n"
  "      --db PATH         --measure: the kernel database (default: the runtime's)\n"
  "  -t, --threads N       --measure, cpu: threads (default: all)\n"
  "  -f, --format F        text (the default), json or csv: one record per group of\n"
  "                        layers and length, then total and causal; density and\n"
  "                        receptive_field (total and causal only; empty or null\n"
  "                        when not counted) as fractions, flops and kv_bytes of\n"
  "                        all the group's layers\n"
  "  -h, --help            this text\n"
  "\n"
  "Patterns that depend on run-time data keep every token in the KV cache\n"
  "(document, blocks, random, topk); topk counts the K most recent eligible\n"
  "blocks.\n"
  "\n"
  "The receptive field is what full attention would see and a hybrid may not:\n"
  "the positions whose tokens can reach the last token's output through the\n"
  "layers (a layer carries key k to query q where one of its heads sees k from\n"
  "q; the residual stream keeps each position's own), as a fraction of the N\n"
  "positions; causal attention in any layer makes it 100%.  Counted exactly,\n"
  "within 2^28 steps (a block test or a predicate evaluation each); past them\n"
  "the report says it was not counted.  Run-time patterns use the documents\n"
  "and layouts given, and topk the K most recent eligible blocks.\n"
  "\n"
  "--measure times one layer of each pattern the model uses on the backend's\n"
  "device, with the kernel the runtime would take (this process, the kernel\n"
  "database, else a compile of the default configuration), inputs uniform in\n"
  "[-1, 1), median of up to 5 runs: a prefill of N tokens and one decode step\n"
  "(one query) at N, for BATCH sequences; a layer whose heads use several\n"
  "patterns counts each pattern's time by its share of the heads.  It prints\n"
  "the sums over the layers beside the same for causal attention in every\n"
  "layer, and the measured savings beside the counted ones (CSV: the columns\n"
  "prefill_ms and decode_ms of the total and causal records; JSON: measured).\n"
  "topk patterns are not timed.\n";

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
  /* tool_kept_keys evaluates up to one period of distances per key. */
  if (hattn__mask_period(p->lowered, 4096) > TOOL_MAX_KEEP_STEPS / n) {
    fprintf(stderr, "hattn report: pattern '%s': finding the keys it keeps at %lld tokens would take more "
            "than %lld (2^28) steps, the limit: use shorter sequences\n", p->name, (long long)n,
            (long long)TOOL_MAX_KEEP_STEPS);
    return -1;
  }
  if ((c->keep = malloc((size_t)n)) == NULL) {
    fprintf(stderr, "hattn report: out of memory for %lld keys\n", (long long)n);
    return -1;
  }
  tool_kept_keys(p->lowered, n, c->keep);
  for (c->kept = 0, k = 0; k < n; k++) c->kept += c->keep[k];
  return 0;
}

static void print_flops(double flops, double unit) { printf("%12.3f", flops / unit); }

/* Output formats of hattn report. */
enum { FMT_TEXT = 0, FMT_JSON, FMT_CSV };

/* One group of equal layers (the same pattern for every head): its layers,
** and the cost of one of them. */
typedef struct layer_group {
  int *layers, count;
  char patterns[256], layer_text[1024];
  double visible;      /* visible pairs summed over the heads */
  double kv_tokens;    /* tokens kept, summed over the KV heads */
} layer_group;

/* The tokens the KV heads of layer L of M keep, from the patterns' costs
** (UNI: scratch of N bytes): a KV head keeps what any of its query heads
** can see. */
static double layer_kv_tokens(const hattn__model *m, int l, int64_t n, const pattern_cost *cost, uint8_t *uni) {
  const int *row = m->assign + (size_t)l * m->heads;
  int group = m->heads / m->kv_heads, g, j;
  double kv = 0;
  int64_t k;
  for (g = 0; g < m->kv_heads; g++) {
    int mixed = 0;
    for (j = 1; j < group; j++) mixed |= row[g * group + j] != row[g * group];
    if (!mixed) {
      kv += (double)cost[row[g * group]].kept;
      continue;
    }
    memset(uni, 0, (size_t)n);
    for (j = 0; j < group; j++)
      for (k = 0; k < n; k++) uni[k] |= cost[row[g * group + j]].keep[k];
    for (k = 0; k < n; k++) kv += uni[k];
  }
  return kv;
}

/* Group the layers of M whose heads use the same patterns, in the order of
** their first layers: *GROUPS (malloc'd, with their LAYERS; free with
** free_groups) and *NGROUPS.  Returns 0, or -1 when memory runs out. */
static int group_layers(const hattn__spec *spec, const hattn__model *m, int64_t n, const pattern_cost *cost,
                        layer_group **groups, int *ngroups) {
  layer_group *g = calloc((size_t)m->layers, sizeof *g);
  uint8_t *uni = malloc((size_t)n);
  int l, i, ng = 0, rc = -1;
  size_t row = (size_t)m->heads * sizeof *m->assign;
  if (g == NULL || uni == NULL) goto done;
  for (l = 0; l < m->layers; l++) {
    for (i = 0; i < ng; i++)
      if (!memcmp(m->assign + (size_t)g[i].layers[0] * m->heads, m->assign + (size_t)l * m->heads, row)) break;
    if (i == ng) {
      FILE *mem;
      int h;
      if ((g[ng].layers = malloc((size_t)m->layers * sizeof *g[ng].layers)) == NULL) goto done;
      for (h = 0; h < m->heads; h++) g[ng].visible += (double)cost[m->assign[(size_t)l * m->heads + h]].visible;
      g[ng].kv_tokens = layer_kv_tokens(m, l, n, cost, uni);
      if ((mem = fmemopen(g[ng].patterns, sizeof g[ng].patterns, "w")) != NULL) {
        tool_print_layer_heads(mem, spec, m, l);
        fclose(mem);
      } else {
        snprintf(g[ng].patterns, sizeof g[ng].patterns, "?");
      }
      ng++;
    }
    g[i].layers[g[i].count++] = l;
  }
  for (i = 0; i < ng; i++) {
    FILE *mem = fmemopen(g[i].layer_text, sizeof g[i].layer_text, "w");
    if (mem == NULL) continue;
    tool_print_layers(mem, g[i].layers, g[i].count);
    fclose(mem);
  }
  rc = 0;
done:
  free(uni);
  *groups = g;
  *ngroups = ng;
  return rc;
}

static void free_groups(layer_group *g, int n) {
  int i;
  for (i = 0; g && i < n; i++) free(g[i].layers);
  free(g);
}

/* Write S as a JSON string. */
static void put_json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') putchar('\\');
    if ((unsigned char)*s < 0x20) printf("\\u%04x", (unsigned char)*s);
    else putchar(*s);
  }
  putchar('"');
}

/* Write S as a CSV field: quoted (quotes doubled) when it holds a comma, a
** quote or a line break. */
static void put_csv_field(const char *s) {
  if (strpbrk(s, ",\"\n\r") == NULL) {
    fputs(s, stdout);
    return;
  }
  putchar('"');
  for (; *s; s++) {
    if (*s == '"') putchar('"');
    putchar(*s);
  }
  putchar('"');
}

/* The steps hattn__reach may take for the receptive field of one model at
** one length. */
#define REPORT_MAX_REACH_STEPS ((int64_t)1 << 28)

/* The positions of [0, N) in the receptive field of M's last token into
** *REACHED (reach.h), or -1 there when counting them takes more than
** REPORT_MAX_REACH_STEPS.  Returns 0, or -1 after printing why. */
static int receptive_field(const hattn__spec *spec, const hattn__model *m, int64_t n, tool_rtdata *rt,
                           int64_t *reached) {
  const hattn__mask **masks = calloc((size_t)spec->npatterns + 1, sizeof *masks);
  hattn__mask_env *envs = calloc((size_t)spec->npatterns + 1, sizeof *envs);
  int32_t **topk = calloc((size_t)spec->npatterns + 1, sizeof *topk);  /* each pattern's own table */
  uint8_t *reach = malloc((size_t)n);
  int64_t steps, k;
  int i, r, rc = -1;
  *reached = -1;
  if (masks == NULL || envs == NULL || topk == NULL || reach == NULL) goto nomem;
  /* The environments of the patterns M uses.  tool_rtdata_env remakes its
  ** tables at each call: the document offsets are the same for every
  ** pattern at one length (the last call's serve all), the routed tables
  ** depend on K and are copied. */
  for (i = 0; i < m->layers * m->heads; i++) {
    int p = m->assign[i];
    if (masks[p] != NULL) continue;
    masks[p] = spec->patterns[p].lowered;
    if (tool_rtdata_env(rt, spec, &spec->patterns[p], n, n, &envs[p])) goto done;
    if (envs[p].topk_blocks != NULL) {
      size_t bytes = (size_t)(hattn__nblocks64(n) * envs[p].topk_k + 1) * sizeof **topk;
      if ((topk[p] = malloc(bytes)) == NULL) goto nomem;
      memcpy(topk[p], envs[p].topk_blocks, bytes);
      envs[p].topk_blocks = topk[p];
    }
  }
  for (i = 0; i < spec->npatterns; i++)
    if (envs[i].doc_offsets != NULL) envs[i].doc_offsets = rt->offsets;
  r = hattn__reach(m->layers, m->heads, m->assign, masks, envs, n, 128, REPORT_MAX_REACH_STEPS, reach, &steps);
  if (r == HATTN_ENOMEM) goto nomem;
  if (r == HATTN_OK)
    for (*reached = 0, k = 0; k < n; k++) *reached += reach[k];
  rc = 0;
  goto done;
nomem:
  fprintf(stderr, "hattn report: out of memory for the receptive field at %lld tokens\n", (long long)n);
done:
  for (i = 0; topk != NULL && i < spec->npatterns; i++) free(topk[i]);
  free(topk);
  free(masks);
  free(envs);
  free(reach);
  return rc;
}

/* What --measure found for one model at one length: sums over the layers,
** in ms. */
typedef struct measured {
  int on;
  double prefill, decode;                /* this model */
  double causal_prefill, causal_decode;  /* causal attention in every layer */
} measured;

/* The options of --measure. */
typedef struct measure_opts {
  tool_measure *mm;            /* NULL: no --measure */
  const hattn__spec *causal;   /* one pattern, causal */
  int64_t batch;
} measure_opts;

/* Time the layers of M at length N into *OUT (see the usage).  Returns 0,
** or -1 after printing why. */
static int measure_model(const measure_opts *mo, const hattn__spec *spec, const hattn__model *m, int64_t n,
                         tool_rtdata *rt, measured *out) {
  double *tp = malloc(((size_t)spec->npatterns + 1) * 2 * sizeof *tp), *td;
  int i, rc = -1;
  memset(out, 0, sizeof *out);
  if (tp == NULL) {
    fprintf(stderr, "hattn report: out of memory\n");
    return -1;
  }
  td = tp + spec->npatterns + 1;
  for (i = 0; i < spec->npatterns; i++) tp[i] = -1;
  for (i = 0; i < m->layers * m->heads; i++) {
    int p = m->assign[i];
    if (tp[p] < 0 &&
        (tool_measure_layer(mo->mm, spec, &spec->patterns[p], rt, m, mo->batch, n, n, &tp[p]) ||
         tool_measure_layer(mo->mm, spec, &spec->patterns[p], rt, m, mo->batch, 1, n, &td[p])))
      goto done;
    out->prefill += tp[p] / m->heads;
    out->decode += td[p] / m->heads;
  }
  if (tool_measure_layer(mo->mm, mo->causal, &mo->causal->patterns[0], rt, m, mo->batch, n, n, &out->causal_prefill) ||
      tool_measure_layer(mo->mm, mo->causal, &mo->causal->patterns[0], rt, m, mo->batch, 1, n, &out->causal_decode))
    goto done;
  out->causal_prefill *= m->layers;
  out->causal_decode *= m->layers;
  out->on = 1;
  rc = 0;
done:
  free(tp);
  return rc;
}

/* Print the cost of model M at length N in FMT (the JSON object of one
** length, FIRST: the first of its model).  Costs each pattern the model
** uses once into COST (reset by the caller for each length).  Returns 0, or
** -1 after printing why. */
static int report_model(const hattn__spec *spec, const hattn__model *m, int64_t n, int64_t bm, int64_t bn,
                        tool_rtdata *rt, pattern_cost *cost, int fmt, int first, const measure_opts *mo) {
  int64_t causal = tool_causal_pairs(n, n);
  double esize = hattn__dtype_size(m->dtype), d = m->head_dim;
  double causal_flops = 4.0 * d * (double)causal * m->heads;
  double causal_kv = 2.0 * d * esize * (double)n * m->kv_heads;
  double tot_flops = 0, tot_kv = 0, funit, kunit = 1048576, all = (double)n * (double)n * m->heads;
  layer_group *g = NULL;
  const char *fname;
  char b1[32];
  int64_t reached;      /* positions in the receptive field, or -1: not counted */
  measured me;
  int i, j, ng = 0, rc = -1;

  funit = causal_flops * m->layers >= 1e12 ? 1e12 : 1e9;
  fname = funit == 1e12 ? "TFLOP" : "GFLOP";
  /* Cost each pattern the model uses once. */
  for (i = 0; i < m->layers * m->heads; i++) {
    int pi = m->assign[i];
    if (!cost[pi].used) {
      cost[pi].used = 1;
      if (cost_pattern(spec, pi, n, bm, bn, rt, &cost[pi])) return -1;
    }
  }
  if (group_layers(spec, m, n, cost, &g, &ng)) {
    fprintf(stderr, "hattn report: out of memory\n");
    goto done;
  }
  if (receptive_field(spec, m, n, rt, &reached) < 0) goto done;
  memset(&me, 0, sizeof me);
  if (mo->mm != NULL && measure_model(mo, spec, m, n, rt, &me)) goto done;
  for (i = 0; i < ng; i++) {
    tot_flops += 4.0 * d * g[i].visible * g[i].count;
    tot_kv += 2.0 * d * esize * g[i].kv_tokens * g[i].count;
  }
  if (fmt == FMT_TEXT) {
    printf("model %s: %d layers, %d heads, %d kv heads, head_dim %d, %s\n", m->name, m->layers, m->heads,
           m->kv_heads, m->head_dim, hattn__dtype_name(m->dtype));
    printf("prefill of %s tokens (batch 1); KV cache to decode at %s tokens\n\n", tool_commas(n, b1), b1);
    printf("%-7s %9s %12s %12s  %s\n", "layers", "density", fname, "KV MiB", "patterns (layers); per layer");
    for (i = 0; i < ng; i++) {
      printf("%5d   %8.3f%% ", g[i].count, 100.0 * g[i].visible / all);
      print_flops(4.0 * d * g[i].visible, funit);
      printf(" %12.2f  %s  (layers %s)\n", 2.0 * d * esize * g[i].kv_tokens / kunit, g[i].patterns, g[i].layer_text);
    }
    printf("\n%-7s %8.3f%% ", "total", 100.0 * tot_flops / (4.0 * d * all * m->layers));
    print_flops(tot_flops, funit);
    printf(" %12.2f  this model\n", tot_kv / kunit);
    printf("%-7s %8.3f%% ", "causal", 100.0 * (double)causal / ((double)n * (double)n));
    print_flops(causal_flops * m->layers, funit);
    printf(" %12.2f  the same model with full causal attention in every layer\n", causal_kv * m->layers / kunit);
    printf("%-7s %9s %11.2fx %11.2fx  less than causal: %.1f%% of the FLOPs and %.1f%% of the KV cache saved\n",
           "saving", "", tot_flops > 0 ? causal_flops * m->layers / tot_flops : 0.0,
           tot_kv > 0 ? causal_kv * m->layers / tot_kv : 0.0, 100.0 * (1 - tot_flops / (causal_flops * m->layers)),
           100.0 * (1 - tot_kv / (causal_kv * m->layers)));
    if (reached >= 0)
      printf("%-7s %8.3f%%  of the %s positions reach the last token through the layers (causal: 100%%)\n",
             "reach", 100.0 * (double)reached / (double)n, b1);
    else
      printf("%-7s not counted: the receptive field at %s tokens takes more than 2^28 steps\n", "reach", b1);
    if (me.on) {
      printf("\nmeasured on %s (%s), batch %lld, the runtime's kernels, median of up to 5 runs:\n",
             tool_measure_backend(mo->mm), tool_measure_device(mo->mm), (long long)mo->batch);
      printf("%-7s %12.3f ms, causal everywhere %12.3f ms: saving %.2fx measured, %.2fx counted (FLOPs)\n",
             "prefill", me.prefill, me.causal_prefill, me.prefill > 0 ? me.causal_prefill / me.prefill : 0.0,
             tot_flops > 0 ? causal_flops * m->layers / tot_flops : 0.0);
      printf("%-7s %12.3f ms, causal everywhere %12.3f ms: saving %.2fx measured, %.2fx counted (KV bytes); "
             "one step at %s\n", "decode", me.decode, me.causal_decode,
             me.decode > 0 ? me.causal_decode / me.decode : 0.0, tot_kv > 0 ? causal_kv * m->layers / tot_kv : 0.0,
             b1);
    }
  } else if (fmt == FMT_CSV) {
    for (i = 0; i < ng; i++) {
      printf("%s,%lld,", m->name, (long long)n);
      put_csv_field(g[i].layer_text);
      printf(",%d,", g[i].count);
      put_csv_field(g[i].patterns);
      printf(",%.6g,%.0f,%.0f,%s\n", g[i].visible / all, 4.0 * d * g[i].visible * g[i].count,
             2.0 * d * esize * g[i].kv_tokens * g[i].count, me.on ? ",," : "");
    }
    printf("%s,%lld,total,%d,,%.6g,%.0f,%.0f,", m->name, (long long)n, m->layers,
           tot_flops / (4.0 * d * all * m->layers), tot_flops, tot_kv);
    if (reached >= 0) printf("%.6g", (double)reached / (double)n);
    if (me.on) printf(",%.6g,%.6g", me.prefill, me.decode);
    printf("\n%s,%lld,causal,%d,,%.6g,%.0f,%.0f,1", m->name, (long long)n, m->layers,
           (double)causal / ((double)n * (double)n), causal_flops * m->layers, causal_kv * m->layers);
    if (me.on) printf(",%.6g,%.6g", me.causal_prefill, me.causal_decode);
    printf("\n");
  } else {
    printf("%s\n        {\"seqlen\": %lld, \"groups\": [", first ? "" : ",", (long long)n);
    for (i = 0; i < ng; i++) {
      printf("%s\n          {\"layers\": [", i ? "," : "");
      for (j = 0; j < g[i].count; j++) printf("%s%d", j ? ", " : "", g[i].layers[j]);
      printf("], \"layer_ranges\": ");
      put_json_string(g[i].layer_text);
      printf(", \"count\": %d, \"patterns\": ", g[i].count);
      put_json_string(g[i].patterns);
      printf(", \"density\": %.6g, \"flops_per_layer\": %.0f, \"kv_bytes_per_layer\": %.0f, \"flops\": %.0f, "
             "\"kv_bytes\": %.0f}",
             g[i].visible / all, 4.0 * d * g[i].visible, 2.0 * d * esize * g[i].kv_tokens,
             4.0 * d * g[i].visible * g[i].count, 2.0 * d * esize * g[i].kv_tokens * g[i].count);
    }
    printf("],\n         \"total\": {\"density\": %.6g, \"flops\": %.0f, \"kv_bytes\": %.0f, \"receptive_field\": ",
           tot_flops / (4.0 * d * all * m->layers), tot_flops, tot_kv);
    if (reached >= 0) printf("%.6g},\n", (double)reached / (double)n);
    else printf("null},\n");
    printf("         \"causal\": {\"density\": %.6g, \"flops\": %.0f, \"kv_bytes\": %.0f, \"receptive_field\": 1}",
           (double)causal / ((double)n * (double)n), causal_flops * m->layers, causal_kv * m->layers);
    if (me.on) {
      printf(",\n         \"measured\": {\"backend\": ");
      put_json_string(tool_measure_backend(mo->mm));
      printf(", \"device\": ");
      put_json_string(tool_measure_device(mo->mm));
      printf(", \"batch\": %lld, \"prefill_ms\": %.6g, \"decode_ms\": %.6g, \"causal_prefill_ms\": %.6g, "
             "\"causal_decode_ms\": %.6g}",
             (long long)mo->batch, me.prefill, me.decode, me.causal_prefill, me.causal_decode);
    }
    printf("}");
  }
  rc = 0;
done:
  free_groups(g, ng);
  return rc;
}

/* Forget the costs of the patterns (of another length). */
static void reset_costs(pattern_cost *cost, int n) {
  int i;
  for (i = 0; i < n; i++) {
    free(cost[i].keep);
    memset(&cost[i], 0, sizeof cost[i]);
  }
}

enum { MAX_LENGTHS = 16 };

/* Parse the comma list S of lengths into LENS (*N of them).  Returns 0, or
** prints why not and returns -1. */
static int parse_lengths(const char *s, int64_t *lens, int *n) {
  char tok[64];
  *n = 0;
  for (;;) {
    size_t t = strcspn(s, ",");
    if (*n == MAX_LENGTHS) {
      fprintf(stderr, "hattn report: --seqlen: at most %d lengths\n", MAX_LENGTHS);
      return -1;
    }
    snprintf(tok, sizeof tok, "%.*s", (int)(t < sizeof tok - 1 ? t : sizeof tok - 1), s);
    if (tool_parse_len("--seqlen", tok, 0, &lens[*n])) return -1;
    (*n)++;
    if (s[t] == '\0') return 0;
    s += t + 1;
  }
}

int hattn__cmd_report(int argc, char **argv) {
  enum { O_MEASURE = 1000, O_BACKEND, O_BATCH, O_DB };
  static const struct option opts[] = {
    {"model", required_argument, 0, 'm'},  {"seqlen", required_argument, 0, 's'},
    {"block", required_argument, 0, 'b'},  {"docs", required_argument, 0, 'D'},
    {"doc-lens", required_argument, 0, 'L'}, {"layout", required_argument, 0, 'Y'},
    {"format", required_argument, 0, 'f'}, {"measure", no_argument, 0, O_MEASURE},
    {"backend", required_argument, 0, O_BACKEND}, {"batch", required_argument, 0, O_BATCH},
    {"db", required_argument, 0, O_DB},    {"threads", required_argument, 0, 't'},
    {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  const char *model = NULL, *backend = NULL, *db = NULL;
  int64_t lens[MAX_LENGTHS], bm = 128, bn = 128, threads = 0;
  tool_rtdata rt = {0};
  hattn__spec *spec = NULL, *causal = NULL;
  pattern_cost *cost = NULL;
  measure_opts mo = {NULL, NULL, 1};
  int c, rc = TOOL_USAGE, mi, li, nlens = 0, printed = 0, fmt = FMT_TEXT, measure = 0;

  optind = 1;
  while ((c = getopt_long(argc, argv, "m:s:b:f:t:h", opts, NULL)) != -1) {
    int r = tool_rtdata_option(&rt, c, optarg);
    if (r < 0) goto done;
    if (r > 0) continue;
    switch (c) {
    case 'm': model = optarg; break;
    case 's': if (parse_lengths(optarg, lens, &nlens)) goto done; break;
    case 'b': if (tool_parse_pair("--block", optarg, 0, &bm, &bn)) goto done; break;
    case O_MEASURE: measure = 1; break;
    case O_BACKEND: backend = optarg; break;
    case O_BATCH: if (tool_parse_len("--batch", optarg, 0, &mo.batch)) goto done; break;
    case O_DB: if (tool_parse_db(optarg, &db)) goto done; break;
    case 't': if (tool_parse_len("--threads", optarg, 0, &threads)) goto done; break;
    case 'f':
      if (!strcmp(optarg, "text")) fmt = FMT_TEXT;
      else if (!strcmp(optarg, "json")) fmt = FMT_JSON;
      else if (!strcmp(optarg, "csv")) fmt = FMT_CSV;
      else {
        fprintf(stderr, "hattn report: --format: expected text, json or csv, got '%s'\n", optarg);
        goto done;
      }
      break;
    case 'h': fputs(report_usage, stdout); rc = TOOL_OK; goto done;
    default: fputs(report_usage, stderr); goto done;
    }
  }
  if (optind != argc - 1 || nlens == 0) {
    fprintf(stderr, "hattn report: %s\n\n%s", nlens == 0 ? "--seqlen is required" : "expected one spec FILE",
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
  if (!measure && (backend || db || threads || mo.batch != 1)) {
    fprintf(stderr, "hattn report: --backend, --batch, --db and --threads go with --measure\n");
    goto done;
  }
  if (measure) {
    static const char causal_text[] = "pattern causal = causal";
    if (hattn__spec_parse(causal_text, strlen(causal_text), "report", &causal, NULL) != HATTN_OK ||
        tool_measure_open(backend, db, (int)threads, &mo.mm))
      goto done;
    mo.causal = causal;
  }
  if ((cost = calloc((size_t)spec->npatterns + 1, sizeof *cost)) == NULL) goto done;
  if (fmt == FMT_CSV)
    printf("model,seqlen,layers,count,patterns,density,flops,kv_bytes,receptive_field%s\n",
           measure ? ",prefill_ms,decode_ms" : "");
  if (fmt == FMT_JSON) printf("{\"models\": [");
  for (mi = 0; mi < spec->nmodels; mi++) {
    const hattn__model *m = &spec->models[mi];
    if (model && strcmp(m->name, model)) continue;
    if (fmt == FMT_JSON) {
      printf("%s\n  {\"name\": ", printed ? "," : "");
      put_json_string(m->name);
      printf(", \"layers\": %d, \"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, \"dtype\": \"%s\",\n"
             "   \"lengths\": [",
             m->layers, m->heads, m->kv_heads, m->head_dim, hattn__dtype_name(m->dtype));
    }
    for (li = 0; li < nlens; li++) {
      if (fmt == FMT_TEXT && printed) fputc('\n', stdout);
      reset_costs(cost, spec->npatterns);
      if (mo.mm != NULL && tool_measure_dtype(mo.mm, m)) goto done;
      if (report_model(spec, m, lens[li], bm, bn, &rt, cost, fmt, li == 0, &mo)) goto done;
      printed++;
    }
    if (fmt == FMT_JSON) printf("]}");
  }
  if (fmt == FMT_JSON) printf("\n]}\n");
  rc = TOOL_OK;
done:
  if (cost) reset_costs(cost, spec->npatterns);
  free(cost);
  tool_measure_close(mo.mm);
  hattn__spec_destroy(causal);
  hattn__spec_destroy(spec);
  tool_rtdata_free(&rt);
  return rc;
}
