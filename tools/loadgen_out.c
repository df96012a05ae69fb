/*
** loadgen_out.c: hattn loadgen's output (loadgen.h): a table, JSON or CSV
** of the runs, the spec's savings over causal per offered load, and an SVG
** of throughput and p99 latencies against the load.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "loadgen.h"
#include "tools.h"

static const char *const pct_name[LOADGEN_NPCT] = {"p50", "p90", "p99"};

/* A number for JSON: NaN (nothing measured) is null. */
static void json_num(FILE *out, const char *key, double v, const char *sep) {
  if (isnan(v)) fprintf(out, "\"%s\": null%s", key, sep);
  else fprintf(out, "\"%s\": %.6g%s", key, v, sep);
}

static void json_str(FILE *out, const char *key, const char *v, const char *sep) {
  char esc[512];
  size_t i, o = 0;
  for (i = 0; v[i] && o + 8 < sizeof esc; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c == '"' || c == '\\') esc[o++] = '\\', esc[o++] = (char)c;
    else if (c < 0x20) o += (size_t)snprintf(esc + o, sizeof esc - o, "\\u%04x", c);
    else esc[o++] = (char)c;
  }
  esc[o] = '\0';
  fprintf(out, "\"%s\": \"%s\"%s", key, esc, sep);
}

static void print_json(FILE *out, const loadgen_info *in, const loadgen_result *res, int n) {
  int i, k;
  fprintf(out, "{");
  json_str(out, "model", in->model, ", ");
  json_str(out, "backend", in->backend, ", ");
  json_str(out, "device", in->device, ", ");
  json_str(out, "dtype", in->dtype, ", ");
  json_str(out, "arrivals", in->source, ", ");
  json_str(out, "prompt_len", in->prompt_dist, ", ");
  json_str(out, "output_len", in->output_dist, ", ");
  json_num(out, "duration_s", in->duration, ", ");
  fprintf(out, "\"seed\": %llu, \"kv_bytes\": %.0f, \"pool_pages\": %lld, \"page_size\": %lld, \"max_batch\": %lld, "
          "\"max_tokens\": %lld, \"chunk\": %lld, ", in->seed, in->kv_bytes, in->pool_pages, in->page_size,
          in->max_batch, in->max_tokens, in->chunk);
  json_num(out, "other_ms_per_token", in->other_ms_per_token, ",\n \"runs\": [");
  for (i = 0; i < n; i++) {
    const loadgen_result *r = &res[i];
    fprintf(out, "%s\n  {", i ? "," : "");
    json_num(out, "rate", r->rate, ", ");
    json_str(out, "model", r->arm, ", ");
    fprintf(out, "\"requests\": %d, \"done\": %d, \"unfinished\": %d, \"refused\": %d, ", r->requests, r->done,
            r->unfinished, r->refused);
    json_num(out, "span_s", r->span_s, ", ");
    json_num(out, "tokens_per_s", r->tok_s, ", ");
    json_num(out, "output_tokens_per_s", r->out_tok_s, ", ");
    for (k = 0; k < LOADGEN_NPCT; k++) {
      char key[32];
      snprintf(key, sizeof key, "ttft_ms_%s", pct_name[k]);
      json_num(out, key, r->ttft_ms[k], ", ");
    }
    for (k = 0; k < LOADGEN_NPCT; k++) {
      char key[32];
      snprintf(key, sizeof key, "tpot_ms_%s", pct_name[k]);
      json_num(out, key, r->tpot_ms[k], ", ");
    }
    json_num(out, "queue_ms_mean", r->queue_ms, ", ");
    fprintf(out, "\"running_max\": %d, ", r->running_max);
    json_num(out, "running_mean", r->running_mean, ", ");
    json_num(out, "kv_occupancy_mean", r->occupancy_mean, ", ");
    json_num(out, "kv_occupancy_max", r->occupancy_max, ", ");
    json_num(out, "kv_reserved_max", r->reserved_max, ", ");
    json_num(out, "kv_fragmentation", r->fragmentation, ", ");
    fprintf(out, "\"steps\": %d, ", r->steps);
    json_num(out, "step_tokens_mean", r->step_tokens, ", ");
    json_num(out, "kernel_s", r->kernel_s, ", ");
    json_num(out, "overhead_s", r->overhead_s, ", ");
    json_num(out, "kv_bytes_per_sequence_counted", r->kv_seq_bytes, "}");
  }
  fprintf(out, "\n]}\n");
}

static void print_csv(FILE *out, const loadgen_result *res, int n) {
  int i;
  fprintf(out, "rate,model,requests,done,unfinished,refused,span_s,tokens_per_s,output_tokens_per_s,"
               "ttft_ms_p50,ttft_ms_p90,ttft_ms_p99,tpot_ms_p50,tpot_ms_p90,tpot_ms_p99,queue_ms_mean,running_max,"
               "running_mean,kv_occupancy_mean,kv_occupancy_max,kv_reserved_max,kv_fragmentation,steps,"
               "step_tokens_mean,kernel_s,overhead_s,kv_bytes_per_sequence_counted\n");
  for (i = 0; i < n; i++) {
    const loadgen_result *r = &res[i];
    fprintf(out, "%g,%s,%d,%d,%d,%d,%.4f,%.1f,%.1f,%.3f,%.3f,%.3f,%.4f,%.4f,%.4f,%.3f,%d,%.2f,%.4f,%.4f,%.4f,%.4f,"
            "%d,%.1f,%.4f,%.4f,%.0f\n", r->rate, r->arm, r->requests, r->done, r->unfinished, r->refused,
            r->span_s, r->tok_s, r->out_tok_s, r->ttft_ms[0], r->ttft_ms[1], r->ttft_ms[2], r->tpot_ms[0],
            r->tpot_ms[1], r->tpot_ms[2], r->queue_ms, r->running_max, r->running_mean, r->occupancy_mean,
            r->occupancy_max, r->reserved_max, r->fragmentation, r->steps, r->step_tokens, r->kernel_s,
            r->overhead_s, r->kv_seq_bytes);
  }
}

/* "1.23x", or "-" when either side is not a number or zero. */
static const char *ratio(double a, double b, char buf[32]) {
  if (isnan(a) || isnan(b) || a <= 0 || b <= 0) return "-";
  snprintf(buf, 32, "%.2fx", a / b);
  return buf;
}

static void print_text(FILE *out, const loadgen_info *in, const loadgen_result *res, int n) {
  int i;
  fprintf(out, "hattn loadgen: model %s, %s %s, %s\n", in->model, in->backend, in->device, in->dtype);
  fprintf(out, "  KV pool %.2f %s: %lld pages of %lld keys; %lld slots, %lld tokens a step, prompt chunks of %lld\n",
          in->kv_bytes >= 1073741824.0 ? in->kv_bytes / 1073741824.0 : in->kv_bytes / 1048576.0,
          in->kv_bytes >= 1073741824.0 ? "GiB" : "MiB", in->pool_pages, in->page_size, in->max_batch, in->max_tokens, in->chunk);
  if (strcmp(in->source, "poisson") == 0)
    fprintf(out, "  requests: Poisson arrivals for %g s, prompts %s, outputs %s, seed %llu", in->duration,
            in->prompt_dist, in->output_dist, in->seed);
  else
    fprintf(out, "  requests: the trace %s", in->source);
  fprintf(out, "; the rest of the model %g ms a token\n\n", in->other_ms_per_token);
  fprintf(out, "%7s %-6s %5s %5s %5s %5s %10s %9s %26s %23s %9s %9s %13s %5s %6s\n", "rate/s", "model", "reqs", "done",
          "unfin", "refus", "tok/s", "out tok/s", "TTFT ms p50 / p90 / p99", "TPOT ms p50 / p90 / p99",
          "queue ms", "running", "KV occ mean", "frag", "ovh");
  for (i = 0; i < n; i++) {
    const loadgen_result *r = &res[i];
    char rate[16], ttft[64], tpot[64], run[32], occ[32];
    if (r->rate > 0) snprintf(rate, sizeof rate, "%g", r->rate);
    else snprintf(rate, sizeof rate, "trace");
    snprintf(ttft, sizeof ttft, "%.1f / %.1f / %.1f", r->ttft_ms[0], r->ttft_ms[1], r->ttft_ms[2]);
    snprintf(tpot, sizeof tpot, "%.2f / %.2f / %.2f", r->tpot_ms[0], r->tpot_ms[1], r->tpot_ms[2]);
    snprintf(run, sizeof run, "%d / %.1f", r->running_max, r->running_mean);
    snprintf(occ, sizeof occ, "%.0f%% / %.0f%%", 100 * r->occupancy_mean, 100 * r->occupancy_max);
    fprintf(out, "%7s %-6s %5d %5d %5d %5d %10.0f %9.1f %26s %23s %9.1f %9s %13s %4.0f%% %5.1f%%\n", rate, r->arm,
            r->requests, r->done, r->unfinished, r->refused, r->tok_s, r->out_tok_s, ttft, tpot, r->queue_ms, run,
            occ, 100 * r->fragmentation, r->kernel_s > 0 ? 100 * r->overhead_s / r->kernel_s : 0.0);
  }
  fprintf(out, "\n");
  for (i = 0; i + 1 < n; i += 2) {
    const loadgen_result *s = &res[i], *c = &res[i + 1];
    char b[4][32], rate[16];
    if (s->rate > 0) snprintf(rate, sizeof rate, "%g/s", s->rate);
    else snprintf(rate, sizeof rate, "the trace");
    fprintf(out, "at %s, spec over causal: throughput %s, p99 TTFT %s, p99 TPOT %s; KV a sequence of mean length "
            "(counted) %.1f MiB vs %.1f MiB (%s)\n", rate, ratio(s->tok_s, c->tok_s, b[0]),
            ratio(s->ttft_ms[2], c->ttft_ms[2], b[1]), ratio(s->tpot_ms[2], c->tpot_ms[2], b[2]),
            s->kv_seq_bytes / 1048576.0, c->kv_seq_bytes / 1048576.0, ratio(s->kv_seq_bytes, c->kv_seq_bytes, b[3]));
  }
  fprintf(out, "\nreqs: requests offered; unfin: admitted or queued when the run ended; refus: larger than the pool.\n"
               "running: requests admitted at once, max / time-weighted mean; KV occ: pages used over the pool;\n"
               "frag: key slots of used pages holding no kept key; ovh: scheduler and uploads over kernel time.\n");
}

void loadgen_print(FILE *out, const char *format, const loadgen_info *info, const loadgen_result *res, int n) {
  if (!strcmp(format, "json")) print_json(out, info, res, n);
  else if (!strcmp(format, "csv")) print_csv(out, res, n);
  else print_text(out, info, res, n);
}

/* ---- SVG -------------------------------------------------------------------- */

#define PANEL_W 320
#define PANEL_H 240
#define MARGIN 50

/* One panel at x offset X0: the value VAL(r) of the spec's runs and the
** causal runs against the offered rate. */
static void svg_panel(FILE *f, int x0, const char *title, const loadgen_result *res, int n, int which) {
  double xmax = 0, ymax = 0;
  int i, a, t;
  for (i = 0; i < n; i++) {
    double v = which == 0 ? res[i].tok_s : which == 1 ? res[i].ttft_ms[2] : res[i].tpot_ms[2];
    if (res[i].rate > xmax) xmax = res[i].rate;
    if (!isnan(v) && v > ymax) ymax = v;
  }
  if (xmax <= 0) xmax = 1;
  if (ymax <= 0) ymax = 1;
  xmax *= 1.1, ymax *= 1.1;
  fprintf(f, "<g transform=\"translate(%d,30)\">\n", x0);
  fprintf(f, "<text x=\"%d\" y=\"-10\" font-size=\"13\" text-anchor=\"middle\">%s</text>\n", MARGIN + PANEL_W / 2,
          title);
  fprintf(f, "<rect x=\"%d\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", MARGIN, PANEL_W,
          PANEL_H);
  for (t = 0; t <= 4; t++) {
    double yv = ymax * t / 4, xv = xmax * t / 4;
    int y = PANEL_H - PANEL_H * t / 4, x = MARGIN + PANEL_W * t / 4;
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">%.3g</text>\n", MARGIN - 4, y + 3, yv);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%.3g</text>\n", x, PANEL_H + 14, xv);
  }
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">offered load (requests/s)</text>\n",
          MARGIN + PANEL_W / 2, PANEL_H + 30);
  for (a = 0; a < 2; a++) {
    const char *colour = a == 0 ? "#2060c0" : "#c04020";
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour);
    for (i = a; i < n; i += 2) {
      double v = which == 0 ? res[i].tok_s : which == 1 ? res[i].ttft_ms[2] : res[i].tpot_ms[2];
      if (isnan(v)) continue;
      fprintf(f, "%.1f,%.1f ", MARGIN + PANEL_W * res[i].rate / xmax, PANEL_H - PANEL_H * v / ymax);
    }
    fprintf(f, "\"/>\n");
    for (i = a; i < n; i += 2) {
      double v = which == 0 ? res[i].tok_s : which == 1 ? res[i].ttft_ms[2] : res[i].tpot_ms[2];
      if (isnan(v)) continue;
      fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", MARGIN + PANEL_W * res[i].rate / xmax,
              PANEL_H - PANEL_H * v / ymax, colour);
    }
  }
  fprintf(f, "</g>\n");
}

int loadgen_svg(const char *path, const loadgen_info *info, const loadgen_result *res, int n) {
  FILE *f = fopen(path, "w");
  char title[512], esc[1024];
  int w = 3 * (PANEL_W + MARGIN + 20) + 20, h = PANEL_H + 110;
  if (f == NULL) {
    fprintf(stderr, "hattn loadgen: --svg: cannot write %s\n", path);
    return -1;
  }
  snprintf(title, sizeof title, "%s on %s %s: the spec (blue) and causal everywhere (red); prompts %s, outputs %s",
           info->model, info->backend, info->device, info->prompt_dist, info->output_dist);
  tool_xml_escape(title, esc, sizeof esc);
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\">\n",
          w, h);
  fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  fprintf(f, "<text x=\"10\" y=\"%d\" font-size=\"12\">%s</text>\n", h - 12, esc);
  svg_panel(f, 0, "throughput (tokens/s)", res, n, 0);
  svg_panel(f, PANEL_W + MARGIN + 20, "p99 time to first token (ms)", res, n, 1);
  svg_panel(f, 2 * (PANEL_W + MARGIN + 20), "p99 time per output token (ms)", res, n, 2);
  fprintf(f, "</svg>\n");
  if (fclose(f) != 0) {
    fprintf(stderr, "hattn loadgen: --svg: cannot write %s\n", path);
    return -1;
  }
  return 0;
}
