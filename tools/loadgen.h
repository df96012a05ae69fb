/*
** loadgen.h: what hattn loadgen's runner (cmd_loadgen.c) hands to its
** output (loadgen_out.c).  Internal to the hattn command.
*/
#ifndef HATTN_LOADGEN_H
#define HATTN_LOADGEN_H

#include <stdio.h>

/* Percentiles reported: p50, p90, p99. */
#define LOADGEN_NPCT 3

/* One run: one offered load, one model (the spec's, or causal everywhere). */
typedef struct loadgen_result {
  double rate;                 /* offered requests a second (0: a trace) */
  const char *arm;             /* "spec" or "causal" */
  int requests, done, unfinished, refused;
  double span_s;               /* the clock when the run ended */
  double tok_s, out_tok_s;     /* prompt and output tokens a second, output only */
  double ttft_ms[LOADGEN_NPCT];/* time to first token: arrival to the end of its prompt */
  double tpot_ms[LOADGEN_NPCT];/* time per output token after the first, per request */
  double queue_ms;             /* mean wait from arrival to admission */
  int running_max;
  double running_mean;         /* requests admitted at once, time-weighted */
  double occupancy_mean, occupancy_max;   /* pages used over the pool */
  double reserved_max;         /* pages reserved over the pool */
  double fragmentation;        /* key slots of used pages that hold no kept key,
                               ** time-weighted mean */
  int steps;
  double step_tokens;          /* mean queries a step */
  double kernel_s, overhead_s; /* summed over the steps: attention kernels
                               ** (launch to synchronisation), and the
                               ** scheduler with its table and length uploads */
  double kv_seq_bytes;         /* counted: KV bytes one request of mean length keeps */
} loadgen_result;

/* What the whole call ran, for the headers. */
typedef struct loadgen_info {
  const char *model, *backend, *device, *dtype, *source;
  double kv_bytes;             /* the pool */
  long long pool_pages, page_size, max_batch, max_tokens, chunk;
  double other_ms_per_token;
  const char *prompt_dist, *output_dist;
  double duration;
  unsigned long long seed;
} loadgen_info;

/* Print RES (N runs, spec and causal alternating per rate) as text, json
** or csv to OUT. */
void loadgen_print(FILE *out, const char *format, const loadgen_info *info, const loadgen_result *res, int n);

/* Draw throughput, p99 time to first token and p99 time per output token
** against the offered load, spec beside causal, as an SVG file at PATH.
** Returns 0, or -1 after printing why. */
int loadgen_svg(const char *path, const loadgen_info *info, const loadgen_result *res, int n);

#endif /* HATTN_LOADGEN_H */
