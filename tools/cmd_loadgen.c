/*
** cmd_loadgen.c: hattn loadgen FILE: an open-loop load generator over the
** attention layers of a model spec on one device.  Requests arrive
** (Poisson, or from a trace), the scheduler (loadgen_sched.h) batches them
** continuously with chunked prefill over a paged KV pool of a fixed size,
** and every step runs every attention layer through the public API
** (hattn_plan_create once, hattn_run_varlen per layer and step, on paged K
** and V).  The same requests run again with causal attention in every
** layer; loadgen_out.c prints and draws both.
*/
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "dtype.h"
#include "loadgen.h"
#include "loadgen_sched.h"
#include "tools.h"

static const char usage_text[] =
  "usage: hattn loadgen FILE [options]\n"
  "\n"
  "Serve a stream of requests with the attention layers of a model of the spec\n"
  "FILE, and again with causal attention in every layer, on one device, and\n"
  "report throughput, latency and KV-pool use of both.\n"
  "\n"
  "Requests arrive at --rate a second (Poisson) for --duration seconds, or at\n"
  "the times of a --trace.  They are admitted first come, first served while a\n"
  "slot is free and the KV pool can hold the most pages the request will ever\n"
  "need (no request is preempted); the others queue.  Each step, every admitted\n"
  "request past its prompt decodes one token and the others get chunks of\n"
  "their prompts (continuous batching, chunked prefill), and each attention\n"
  "layer runs: one launch for the decodes (paged K and V, each at its own\n"
  "length; on a plan for the next power of two of the slots in use, since the\n"
  "decode kernels split the keys to fill the GPU for their plan's batch) and\n"
  "one per prompt chunk, through hattn_run_varlen.  A layer\n"
  "keeps only the pages of the keys later queries can see: window(W) about W\n"
  "tokens, sink(G) | window(W) G + W, other patterns every token; a layer whose\n"
  "heads differ keeps the union.\n"
  "\n"
  "The clock advances by each step's measured wall time (its kernels, the\n"
  "scheduler and the uploads of tables and lengths), plus --other-ms-per-token\n"
  "for the rest of the model, and jumps over idle time to the next arrival.\n"
  "The run ends when every request is done, or at --max-time.\n"
  "\n"
  "options:\n"
  "  -m, --model M            the model (default: the spec's only one)\n"
  "      --backend B          cpu (the default) or cuda\n"
  "      --rate R[,R..]       offered loads, requests a second (default 1)\n"
  "      --duration S         seconds of arrivals (default 10)\n"
  "      --trace F            arrivals from F instead: lines 'seconds,prompt,output'\n"
  "                           in order of arrival, '#' comments\n"
  "      --prompt-len D       prompt lengths: N (fixed), uniform:A,B or\n"
  "                           lognormal:MEDIAN,SIGMA (default 1024)\n"
  "      --output-len D       output lengths, likewise (default 128)\n"
  "      --kv-memory BYTES    the KV pool: 512m, 80g (default 1g)\n"
  "      --page-size P        keys a page, a power of two up to 256 (default 64)\n"
  "      --max-batch N        slots: requests admitted at once (default 64)\n"
  "      --max-tokens N       queries a step, decodes and chunks (default 8192)\n"
  "      --chunk N            prompt tokens of one request a step (default 2048)\n"
  "      --other-ms-per-token X  milliseconds a token for the rest of the model\n"
  "                           (default 0: attention alone)\n"
  "      --max-time S         end the run at this clock (default 4 x duration + 60)\n"
  "      --seed N             arrivals and lengths (default 1)\n"
  "      --db PATH            the kernel database (default: the runtime's)\n"
  "  -t, --threads N          cpu: threads (default: all)\n"
  "  -f, --format F           text (the default), json or csv\n"
  "      --json FILE          also write the JSON form to FILE\n"
  "      --svg FILE           draw throughput and p99 latencies against the load\n"
  "  -h, --help               this text\n"
  "\n"
  "Time to first token runs from arrival to the end of the step that ends the\n"
  "prompt; time per output token is a request's (finish - first token) /\n"
  "(output - 1).  Occupancy is pages used over the pool; fragmentation the key\n"
  "slots of used pages that hold no key a layer keeps.  Overhead is the\n"
  "scheduler's and uploads' time over the kernels'.  Patterns that need run-time\n"
  "data (document, blocks, random, topk) are refused.\n";

/* ---- request lengths and arrivals ----------------------------------------- */

typedef struct lg_rng {
  uint64_t s;
} lg_rng;

/* Uniform in [0, 1) (splitmix64). */
static double rng_uniform(lg_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  z ^= z >> 31;
  return (double)(z >> 11) / 9007199254740992.0;
}

static double rng_normal(lg_rng *r) {
  double u = rng_uniform(r), v = rng_uniform(r);
  return sqrt(-2 * log(1 - u)) * cos(6.283185307179586 * v);
}

typedef struct lg_dist {
  enum { DIST_FIXED, DIST_UNIFORM, DIST_LOGNORMAL } kind;
  int64_t a, b;                /* fixed a; uniform a..b; lognormal median a */
  double sigma;
} lg_dist;

/* Parse "N", "uniform:A,B" or "lognormal:MEDIAN,SIGMA" into *D; 0, or -1
** after printing why. */
static int parse_dist(const char *opt, const char *s, lg_dist *d) {
  char buf[64], *comma, *end;
  memset(d, 0, sizeof *d);
  if (!strncmp(s, "uniform:", 8)) {
    d->kind = DIST_UNIFORM;
    if (tool_parse_pair(opt, s + 8, 0, &d->a, &d->b)) return -1;
    if (d->b < d->a) {
      fprintf(stderr, "hattn loadgen: %s: uniform:A,B needs A <= B, got '%s'\n", opt, s);
      return -1;
    }
    return 0;
  }
  if (!strncmp(s, "lognormal:", 10)) {
    d->kind = DIST_LOGNORMAL;
    snprintf(buf, sizeof buf, "%s", s + 10);
    if ((comma = strchr(buf, ',')) == NULL) goto bad;
    *comma = '\0';
    if (tool_parse_len(opt, buf, 0, &d->a)) return -1;
    d->sigma = strtod(comma + 1, &end);
    if (end == comma + 1 || *end != '\0' || !(d->sigma >= 0 && d->sigma <= 4)) goto bad;
    return 0;
  }
  d->kind = DIST_FIXED;
  return tool_parse_len(opt, s, 0, &d->a);
bad:
  fprintf(stderr, "hattn loadgen: %s: expected N, uniform:A,B or lognormal:MEDIAN,SIGMA (sigma 0 to 4), got '%s'\n",
          opt, s);
  return -1;
}

/* A length drawn from D, at least 1 and at most CAP. */
static int64_t draw_len(const lg_dist *d, lg_rng *r, int64_t cap) {
  double x = d->kind == DIST_FIXED     ? (double)d->a
             : d->kind == DIST_UNIFORM ? (double)d->a + floor(rng_uniform(r) * (double)(d->b - d->a + 1))
                                       : (double)d->a * exp(d->sigma * rng_normal(r));
  if (!(x >= 1)) x = 1;
  if (x > (double)cap) x = (double)cap;
  return (int64_t)llround(x);
}

/* The longest request: prompt and output together. */
#define LG_MAX_LEN (INT64_C(1) << 24)
/* The most requests one run makes. */
#define LG_MAX_REQUESTS 1000000

/* Poisson arrivals at RATE a second over [0, DURATION). */
static int make_requests(double rate, double duration, const lg_dist *pd, const lg_dist *od, uint64_t seed,
                         loadgen_request **out, int *n) {
  lg_rng r = {seed};
  loadgen_request *q = NULL;
  double t = 0;
  int cap = 0, k = 0;
  for (;;) {
    t += -log(1 - rng_uniform(&r)) / rate;
    if (t >= duration) break;
    if (k == LG_MAX_REQUESTS) {
      fprintf(stderr, "hattn loadgen: --rate %g for --duration %g makes more than %d requests\n", rate, duration,
              LG_MAX_REQUESTS);
      free(q);
      return -1;
    }
    if (k == cap) {
      loadgen_request *g = realloc(q, (size_t)(cap = cap ? 2 * cap : 256) * sizeof *q);
      if (g == NULL) {
        fprintf(stderr, "hattn loadgen: out of memory for %d requests\n", cap);
        free(q);
        return -1;
      }
      q = g;
    }
    memset(&q[k], 0, sizeof q[k]);
    q[k].arrival = t;
    q[k].prompt = draw_len(pd, &r, LG_MAX_LEN / 2);
    q[k].output = draw_len(od, &r, LG_MAX_LEN / 2);
    k++;
  }
  *out = q, *n = k;
  return 0;
}

/* Read a trace: lines "seconds,prompt,output", arrivals nondecreasing. */
static int read_trace(const char *path, loadgen_request **out, int *n) {
  size_t len = 0, i = 0;
  char *text = tool_read_text(path, &len);
  loadgen_request *q = NULL;
  int cap = 0, k = 0, line = 0, rc = -1;
  if (text == NULL) return -1;
  while (i < len) {
    char row[256], *end, *p;
    size_t j = 0;
    double t;
    long long pr, ou;
    line++;
    while (i < len && text[i] != '\n') {
      if (j + 1 < sizeof row) row[j++] = text[i];
      i++;
    }
    i++;
    row[j] = '\0';
    if ((p = strchr(row, '#')) != NULL) *p = '\0';
    for (p = row; *p == ' ' || *p == '\t' || *p == '\r'; p++) {
    }
    if (*p == '\0') continue;
    t = strtod(p, &end);
    if (end == p || *end != ',' || !(t >= 0 && t < 1e9)) goto bad;
    p = end + 1, pr = strtoll(p, &end, 10);
    if (end == p || *end != ',' || pr < 1 || pr > LG_MAX_LEN / 2) goto bad;
    p = end + 1, ou = strtoll(p, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\r') end++;
    if (end == p || *end != '\0' || ou < 1 || ou > LG_MAX_LEN / 2) goto bad;
    if (k > 0 && t < q[k - 1].arrival) {
      fprintf(stderr, "hattn loadgen: %s:%d: arrival %g before the previous line's %g: a trace is in order of "
              "arrival\n", path, line, t, q[k - 1].arrival);
      goto done;
    }
    if (k == LG_MAX_REQUESTS) {
      fprintf(stderr, "hattn loadgen: %s: more than %d requests\n", path, LG_MAX_REQUESTS);
      goto done;
    }
    if (k == cap) {
      loadgen_request *g = realloc(q, (size_t)(cap = cap ? 2 * cap : 256) * sizeof *q);
      if (g == NULL) goto done;
      q = g;
    }
    memset(&q[k], 0, sizeof q[k]);
    q[k].arrival = t, q[k].prompt = pr, q[k].output = ou;
    k++;
  }
  if (k == 0) {
    fprintf(stderr, "hattn loadgen: %s: no requests\n", path);
    goto done;
  }
  *out = q, *n = k, q = NULL;
  rc = 0;
  goto done;
bad:
  fprintf(stderr, "hattn loadgen: %s:%d: expected 'seconds,prompt,output' (seconds >= 0, lengths 1 to %lld)\n", path,
          line, (long long)(LG_MAX_LEN / 2));
done:
  free(q);
  free(text);
  return rc;
}

/* ---- the model's layers ----------------------------------------------------- */

/* A run of query heads of a layer that use one pattern. */
typedef struct lg_group {
  int kind;                    /* into lg_arm.kinds */
  int h0, kh0;                 /* first query head, first KV head */
} lg_group;

/* Decode plans for the first 1, 2, 4, .. slots, up to every slot: the
** decode kernels split the keys to fill the GPU for the batch of their
** plan, so that a plan for 64 slots run with one request would leave most
** SMs idle. */
#define LG_NBUCKETS 13

/* The kernels of one pattern for a number of heads: decode (the first
** slots, one query each; a plan a bucket) and prefill (one request, a
** chunk of queries). */
typedef struct lg_kind {
  int pattern;                 /* index in the spec */
  int heads, kv_heads;
  hattn_kernel *kdecode[LG_NBUCKETS], *kprefill;
  hattn_plan *pdecode[LG_NBUCKETS], *pprefill;
} lg_kind;

/* One model to serve: the spec's, or causal in every layer. */
typedef struct lg_arm {
  const char *name;
  hattn_specfile *spec;        /* the public spec its kernels come from */
  const hattn__spec *ispec;    /* the same, parsed by the tools */
  int nlayers;
  int *ngroups;                /* [nlayers] */
  lg_group *groups;            /* [nlayers][heads] */
  loadgen_keep *keep;          /* [nlayers] */
  lg_kind kinds[64];
  int nkinds;
} lg_arm;

/* How pattern P keeps keys at length N: the first sink and the last window
** keys, or every key.  Returns 0, or -1 after printing why. */
static int pattern_keep(const hattn__pattern *p, int64_t n, loadgen_keep *out) {
  uint8_t *keep;
  int64_t k, g = 0, w = 0, kept = 0;
  out->sink = 0, out->window = -1;
  if (p->needs) return 0;
  if (hattn__mask_period(p->lowered, 4096) > TOOL_MAX_KEEP_STEPS / n) {
    fprintf(stderr, "hattn loadgen: pattern '%s': finding the keys it keeps at %lld tokens would take more than "
            "2^28 steps, the limit: use shorter requests\n", p->name, (long long)n);
    return -1;
  }
  if ((keep = malloc((size_t)n)) == NULL) {
    fprintf(stderr, "hattn loadgen: out of memory for %lld keys\n", (long long)n);
    return -1;
  }
  tool_kept_keys(p->lowered, n, keep);
  for (k = 0; k < n; k++) kept += keep[k];
  while (g < n && keep[g]) g++;
  while (w < n - g && keep[n - 1 - w]) w++;
  /* A first run and a last run that hold every kept key, and not all of
  ** them: sink and window; anything else keeps every key. */
  if (g + w == kept && kept < n) out->sink = g, out->window = w;
  free(keep);
  return 0;
}

/* Fill ARM's layers from model M (patterns of ISPEC), keeping keys as at
** length N.  Returns 0, or -1 after printing why. */
static int arm_layers(lg_arm *a, const hattn__model *m, int64_t n) {
  loadgen_keep pk[256];
  int l, h, i, ratio = m->heads / m->kv_heads;
  if (a->ispec->npatterns > 256) {
    fprintf(stderr, "hattn loadgen: more than 256 patterns\n");
    return -1;
  }
  for (i = 0; i < a->ispec->npatterns; i++) pk[i].sink = -2;
  a->nlayers = m->layers;
  if ((a->ngroups = calloc((size_t)m->layers, sizeof *a->ngroups)) == NULL ||
      (a->groups = calloc((size_t)m->layers * (size_t)m->heads, sizeof *a->groups)) == NULL ||
      (a->keep = calloc((size_t)m->layers, sizeof *a->keep)) == NULL) {
    fprintf(stderr, "hattn loadgen: out of memory for %d layers\n", m->layers);
    return -1;
  }
  for (l = 0; l < m->layers; l++) {
    const int *row = m->assign + (size_t)l * m->heads;
    int first = 1;
    for (h = 0; h < m->heads;) {
      const hattn__pattern *p = &a->ispec->patterns[row[h]];
      int e = h, k;
      while (e < m->heads && row[e] == row[h]) e++;
      if (p->needs) {
        fprintf(stderr, "hattn loadgen: pattern '%s' (layer %d) reads run-time data (document, blocks, random or "
                "topk), which a load generator has no stand-in for\n", p->name, l);
        return -1;
      }
      if (h % ratio || (e - h) % ratio) {
        fprintf(stderr, "hattn loadgen: layer %d: heads %d-%d use '%s' and split a group of %d query heads that "
                "share a KV head\n", l, h, e - 1, p->name, ratio);
        return -1;
      }
      if (pk[row[h]].sink == -2 && pattern_keep(p, n, &pk[row[h]])) return -1;
      /* The layer keeps the union of its groups' keys. */
      if (first) a->keep[l] = pk[row[h]];
      else if (a->keep[l].window < 0 || pk[row[h]].window < 0) a->keep[l].window = -1, a->keep[l].sink = 0;
      else {
        if (pk[row[h]].sink > a->keep[l].sink) a->keep[l].sink = pk[row[h]].sink;
        if (pk[row[h]].window > a->keep[l].window) a->keep[l].window = pk[row[h]].window;
      }
      first = 0;
      for (k = 0; k < a->nkinds; k++)
        if (a->kinds[k].pattern == row[h] && a->kinds[k].heads == e - h) break;
      if (k == a->nkinds) {
        if (a->nkinds == (int)(sizeof a->kinds / sizeof a->kinds[0])) {
          fprintf(stderr, "hattn loadgen: more than 64 distinct (pattern, heads) groups\n");
          return -1;
        }
        a->kinds[k].pattern = row[h];
        a->kinds[k].heads = e - h;
        a->kinds[k].kv_heads = (e - h) / ratio;
        a->nkinds++;
      }
      a->groups[(size_t)l * m->heads + a->ngroups[l]++] = (lg_group){k, h, h / ratio};
      h = e;
    }
  }
  return 0;
}

static void arm_free_kernels(lg_arm *a) {
  int k, b;
  for (k = 0; k < a->nkinds; k++) {
    for (b = 0; b < LG_NBUCKETS; b++) {
      hattn_plan_destroy(a->kinds[k].pdecode[b]);
      hattn_kernel_destroy(a->kinds[k].kdecode[b]);
      a->kinds[k].pdecode[b] = NULL, a->kinds[k].kdecode[b] = NULL;
    }
    hattn_plan_destroy(a->kinds[k].pprefill);
    hattn_kernel_destroy(a->kinds[k].kprefill);
    a->kinds[k].pprefill = NULL, a->kinds[k].kprefill = NULL;
  }
}

static void arm_free(lg_arm *a) {
  arm_free_kernels(a);
  free(a->ngroups);
  free(a->groups);
  free(a->keep);
}

/* ---- running the steps ------------------------------------------------------ */

typedef struct lg_options {
  const char *backend, *db, *format, *svg, *json, *trace, *model;
  double duration, max_time, other_ms;
  double rates[16];
  int nrates, threads;
  int64_t kv_bytes, page_size, max_batch, max_tokens, chunk;
  uint64_t seed;
  lg_dist prompt, output;
  const char *prompt_text, *output_text;
} lg_options;

/* The device side of one run: the public context its kernels come from,
** and the backend's device (the same GPU, its primary context) for memory. */
typedef struct lg_exec {
  hattn_ctx *ctx;
  const hattn__backend_i *be;
  void *dev;
  const hattn__model *m;
  const lg_options *o;
  size_t esz;
  int64_t pool_pages, cols;
  /* device memory */
  void *kpool, *vpool, *q, *out, *tables, *lens, *sync;
  int32_t *host_lens;          /* [3 * max_batch]: decode k, prefill q, prefill k */
  char err[4096];
} lg_exec;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static DLTensor tensor(const lg_exec *x, void *data, uint64_t byte_offset, int ndim, int64_t *shape,
                       int64_t *strides, int eltype) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = (DLDeviceType)x->be->dl_device;
  t.device.device_id = 0;
  t.ndim = ndim;
  t.dtype.code = eltype < 0 ? kDLInt : eltype == HATTN_FP32 ? kDLFloat : eltype == HATTN_FP16 ? kDLFloat : kDLBfloat;
  t.dtype.bits = eltype < 0 || eltype == HATTN_FP32 ? 32 : 16;
  t.dtype.lanes = 1;
  t.shape = shape;
  t.strides = strides;
  t.byte_offset = byte_offset;
  return t;
}

/* The slots of decode bucket B: 2^B, at most every slot. */
static int64_t bucket_slots(const lg_options *o, int b) {
  return b < LG_NBUCKETS - 1 && (INT64_C(1) << b) < o->max_batch ? INT64_C(1) << b : o->max_batch;
}

/* The kernels and plans of ARM for requests up to MAX_LEN keys. */
static int arm_kernels(lg_exec *x, lg_arm *a, int64_t max_len) {
  const hattn__model *m = x->m;
  hattn_paged_kv paged = {x->o->page_size, HATTN_PAGED_NHD, NULL};
  hattn_inputs in;
  int k, b;
  memset(&in, 0, sizeof in);
  in.paged = &paged;
  for (k = 0; k < a->nkinds; k++) {
    lg_kind *kd = &a->kinds[k];
    const char *name = a->ispec->patterns[kd->pattern].name;
    hattn_problem pre = {1, kd->heads, kd->kv_heads, x->o->chunk, max_len, m->head_dim, (int)m->dtype};
    if (hattn_kernel_get(x->ctx, a->spec, name, &pre, &kd->kprefill) != HATTN_OK ||
        hattn_plan_create(kd->kprefill, &in, &kd->pprefill) != HATTN_OK)
      goto fail;
    for (b = 0; b < LG_NBUCKETS && (b == 0 || bucket_slots(x->o, b - 1) < x->o->max_batch); b++) {
      hattn_problem dec = {bucket_slots(x->o, b), kd->heads, kd->kv_heads, 1, max_len, m->head_dim, (int)m->dtype};
      if (hattn_kernel_get(x->ctx, a->spec, name, &dec, &kd->kdecode[b]) != HATTN_OK ||
          hattn_plan_create(kd->kdecode[b], &in, &kd->pdecode[b]) != HATTN_OK)
        goto fail;
    }
  }
  return 0;
fail:
  fprintf(stderr, "hattn loadgen: the kernels of '%s' for %d heads: %s\n", a->ispec->patterns[a->kinds[k].pattern].name,
          a->kinds[k].heads, hattn_errmsg(x->ctx));
  return -1;
}

/* Run STEP's batch through every layer of ARM: uploads, then launches, then
** one synchronisation.  *PREP_S and *KERNEL_S get the two times. */
static int exec_step(lg_exec *x, const lg_arm *a, loadgen_sched *s, const loadgen_step *st, double *prep_s,
                     double *kernel_s) {
  const lg_options *o = x->o;
  const hattn__model *m = x->m;
  int64_t B = o->max_batch, H = m->heads, HK = m->kv_heads, D = m->head_dim, P = o->page_size, C = x->cols;
  size_t tbytes = (size_t)B * (size_t)C * sizeof(int32_t);
  double t0 = now_s(), t1;
  int l, g, i, lo, hi, bucket = 0;
  int64_t used = 0;
  char one[4];
  for (l = 0; l < a->nlayers; l++) {
    loadgen_sched_take_dirty(s, l, &lo, &hi);
    if (lo <= hi &&
        x->be->mem_upload(x->dev, (char *)x->tables + (size_t)l * tbytes + (size_t)lo * C * sizeof(int32_t),
                          loadgen_sched_table(s, l) + (size_t)lo * C, (size_t)(hi - lo + 1) * C * sizeof(int32_t),
                          x->err, sizeof x->err) != HATTN_OK)
      goto fail;
  }
  memset(x->host_lens, 0, 3 * (size_t)B * sizeof(int32_t));
  for (i = 0; i < st->ndecode; i++) {
    x->host_lens[st->decode[i].slot] = (int32_t)st->decode[i].k_len;
    if (st->decode[i].slot + 1 > used) used = st->decode[i].slot + 1;
  }
  /* The decodes run on the plan of the fewest slots that covers them. */
  while (bucket_slots(o, bucket) < used) bucket++;
  for (i = 0; i < st->nprefill; i++) {
    x->host_lens[B + i] = (int32_t)st->prefill[i].q_len;
    x->host_lens[2 * B + i] = (int32_t)st->prefill[i].k_len;
  }
  if (x->be->mem_upload(x->dev, x->lens, x->host_lens, 3 * (size_t)B * sizeof(int32_t), x->err, sizeof x->err) !=
      HATTN_OK)
    goto fail;
  t1 = now_s();
  for (l = 0; l < a->nlayers; l++) {
    for (g = 0; g < a->ngroups[l]; g++) {
      const lg_group *gr = &a->groups[(size_t)l * H + g];
      const lg_kind *kd = &a->kinds[gr->kind];
      int64_t Hg = kd->heads, HKg = kd->kv_heads;
      int64_t pshape[4] = {x->pool_pages, P, HKg, D}, pstr[4] = {P * HK * D, HK * D, D, 1};
      uint64_t poff = (uint64_t)gr->kh0 * (uint64_t)D * x->esz;
      DLTensor kp = tensor(x, x->kpool, poff, 4, pshape, pstr, (int)m->dtype);
      DLTensor vp = tensor(x, x->vpool, poff, 4, pshape, pstr, (int)m->dtype);
      if (st->ndecode > 0) {
        int64_t Bb = bucket_slots(o, bucket);
        int64_t qshape[4] = {Bb, Hg, 1, D}, qstr[4] = {H * D, D, D, 1}, tshape[2] = {Bb, C}, lshape[1] = {Bb};
        uint64_t qoff = (uint64_t)gr->h0 * (uint64_t)D * x->esz;
        DLTensor q = tensor(x, x->q, qoff, 4, qshape, qstr, (int)m->dtype);
        DLTensor out = tensor(x, x->out, qoff, 4, qshape, qstr, (int)m->dtype);
        DLTensor table = tensor(x, x->tables, (uint64_t)l * tbytes, 2, tshape, NULL, -1);
        DLTensor klens = tensor(x, x->lens, 0, 1, lshape, NULL, -1);
        hattn_varlen lens = {NULL, &klens, NULL, NULL};
        if (hattn_run_varlen(kd->pdecode[bucket], &q, &kp, &vp, &table, &lens, &out, NULL, NULL) != HATTN_OK) {
          snprintf(x->err, sizeof x->err, "layer %d, decode: %s", l, hattn_plan_errmsg(kd->pdecode[bucket]));
          goto fail;
        }
      }
      for (i = 0; i < st->nprefill; i++) {
        int64_t qshape[4] = {1, Hg, o->chunk, D}, qstr[4] = {H * o->chunk * D, o->chunk * D, D, 1};
        int64_t tshape[2] = {1, C}, lshape[1] = {1};
        uint64_t qoff = (uint64_t)gr->h0 * (uint64_t)(o->chunk * D) * x->esz;
        DLTensor q = tensor(x, x->q, qoff, 4, qshape, qstr, (int)m->dtype);
        DLTensor out = tensor(x, x->out, qoff, 4, qshape, qstr, (int)m->dtype);
        DLTensor table = tensor(x, x->tables, (uint64_t)l * tbytes + (uint64_t)st->prefill[i].slot * C * 4, 2,
                                tshape, NULL, -1);
        DLTensor qlens = tensor(x, x->lens, (uint64_t)(B + i) * 4, 1, lshape, NULL, -1);
        DLTensor klens = tensor(x, x->lens, (uint64_t)(2 * B + i) * 4, 1, lshape, NULL, -1);
        hattn_varlen lens = {&qlens, &klens, NULL, NULL};
        if (hattn_run_varlen(kd->pprefill, &q, &kp, &vp, &table, &lens, &out, NULL, NULL) != HATTN_OK) {
          snprintf(x->err, sizeof x->err, "layer %d, prompt chunk: %s", l, hattn_plan_errmsg(kd->pprefill));
          goto fail;
        }
      }
    }
  }
  /* A download waits for the launches before it on the default stream. */
  if (x->be->mem_download(x->dev, one, x->sync, sizeof one, x->err, sizeof x->err) != HATTN_OK) goto fail;
  *prep_s = t1 - t0;
  *kernel_s = now_s() - t1;
  return 0;
fail:
  fprintf(stderr, "hattn loadgen: %s\n", x->err);
  return -1;
}

static int cmp_double(const void *p, const void *q) {
  double a = *(const double *)p, b = *(const double *)q;
  return (a > b) - (a < b);
}

/* The P-th percentile of the N sorted values V (linear between ranks); NaN
** for none. */
static double percentile(const double *v, int n, double p) {
  double r;
  int i;
  if (n == 0) return NAN;
  r = p / 100 * (n - 1), i = (int)r;
  return i + 1 < n ? v[i] + (r - i) * (v[i + 1] - v[i]) : v[n - 1];
}

/* Serve REQS (N) with ARM and fill *RES.  Returns 0, or -1 after printing why. */
static int serve(lg_exec *x, lg_arm *a, loadgen_request *reqs, int n, loadgen_result *res) {
  const lg_options *o = x->o;
  const hattn__model *m = x->m;
  loadgen_config cfg = {(int)o->max_batch, o->max_tokens, o->chunk, o->page_size, x->pool_pages, a->nlayers,
                        a->keep};
  loadgen_sched *s = NULL;
  loadgen_step st;
  loadgen_usage u;
  double clock = 0, next, wsum = 0, *v = NULL, prompt_mean = 0, sched_s, prep_s, kernel_s, t0;
  int64_t tokens = 0, out_tokens = 0, step_tokens = 0;
  int i, l, k, rc = -1;
  char err[512];

  memset(res, 0, sizeof *res);
  if (loadgen_sched_create(&cfg, reqs, n, &s, err, sizeof err)) {
    fprintf(stderr, "hattn loadgen: %s\n", err);
    return -1;
  }
  x->cols = loadgen_sched_table_cols(s);
  if (arm_kernels(x, a, loadgen_sched_max_len(s))) goto done;
  {
    size_t tbytes = (size_t)a->nlayers * (size_t)o->max_batch * (size_t)x->cols * sizeof(int32_t);
    if (x->be->mem_alloc(x->dev, tbytes, &x->tables, x->err, sizeof x->err) != HATTN_OK ||
        x->be->mem_set(x->dev, x->tables, 0, tbytes, x->err, sizeof x->err) != HATTN_OK) {
      fprintf(stderr, "hattn loadgen: block tables: %s\n", x->err);
      goto done;
    }
  }
  res->requests = n;
  for (;;) {
    t0 = now_s();
    loadgen_sched_begin(s, clock, &st, &next);
    loadgen_sched_usage(s, &u);
    sched_s = now_s() - t0;
    if (st.ndecode + st.nprefill == 0) {
      if (next < 0 || next > o->max_time) break;
      clock = next;
      continue;
    }
    if (exec_step(x, a, s, &st, &prep_s, &kernel_s)) goto done;
    t0 = now_s();
    /* Usage during the step, weighted by its length. */
    {
      double dt = sched_s + prep_s + kernel_s + o->other_ms * 1e-3 * (double)st.tokens;
      double used = (double)u.pages_used;
      wsum += dt;
      res->running_mean += dt * u.running;
      res->occupancy_mean += dt * used / (double)x->pool_pages;
      res->fragmentation += used > 0 ? dt * (1 - (double)u.slots_kept / (used * (double)o->page_size)) : 0;
      if (used / (double)x->pool_pages > res->occupancy_max) res->occupancy_max = used / (double)x->pool_pages;
      if ((double)u.pages_reserved / (double)x->pool_pages > res->reserved_max)
        res->reserved_max = (double)u.pages_reserved / (double)x->pool_pages;
      if (u.running > res->running_max) res->running_max = u.running;
      clock += dt;
    }
    step_tokens += st.tokens;
    res->steps++;
    res->kernel_s += kernel_s;
    loadgen_sched_end(s, clock);
    res->overhead_s += sched_s + prep_s + (now_s() - t0);
    clock += now_s() - t0;
    if (clock > o->max_time) break;
  }
  loadgen_sched_usage(s, &u);
  res->refused = u.refused;
  res->span_s = clock;
  if (wsum > 0) {
    res->running_mean /= wsum;
    res->occupancy_mean /= wsum;
    res->fragmentation /= wsum;
  }
  res->step_tokens = res->steps ? (double)step_tokens / res->steps : 0;
  if ((v = malloc(((size_t)n + 1) * sizeof *v)) == NULL) goto done;
  for (k = 0; k < 2; k++) {
    int nv = 0;
    for (i = 0; i < n; i++) {
      const loadgen_request *r = &reqs[i];
      if (k == 0 && r->first_token >= 0) v[nv++] = (r->first_token - r->arrival) * 1e3;
      if (k == 1 && r->finished >= 0 && r->output > 1)
        v[nv++] = (r->finished - r->first_token) / (double)(r->output - 1) * 1e3;
    }
    qsort(v, (size_t)nv, sizeof *v, cmp_double);
    for (i = 0; i < LOADGEN_NPCT; i++)
      (k == 0 ? res->ttft_ms : res->tpot_ms)[i] = percentile(v, nv, i == 0 ? 50 : i == 1 ? 90 : 99);
  }
  for (i = 0; i < n; i++) {
    const loadgen_request *r = &reqs[i];
    if (r->refused) continue;
    if (r->finished >= 0) {
      res->done++;
      tokens += r->prompt + r->output;
      out_tokens += r->output;
      res->queue_ms += (r->admitted - r->arrival) * 1e3;
    } else {
      res->unfinished++;
    }
    prompt_mean += (double)(r->prompt + r->output);
  }
  if (res->done) res->queue_ms /= res->done;
  if (res->span_s > 0) res->tok_s = (double)tokens / res->span_s, res->out_tok_s = (double)out_tokens / res->span_s;
  /* Counted: the keys a request of mean length keeps, K and V, all layers. */
  if (n - res->refused > 0) {
    int64_t len = (int64_t)llround(prompt_mean / (n - res->refused));
    for (l = 0; l < a->nlayers; l++) {
      const loadgen_keep *kp = &a->keep[l];
      int64_t kept = kp->window < 0 || kp->sink + kp->window >= len ? len : kp->sink + kp->window;
      res->kv_seq_bytes += 2.0 * (double)kept * (double)m->kv_heads * (double)m->head_dim * (double)x->esz;
    }
  }
  rc = 0;
done:
  free(v);
  arm_free_kernels(a);
  x->be->mem_free(x->dev, x->tables);
  x->tables = NULL;
  loadgen_sched_destroy(s);
  return rc;
}

/* ---- the command ------------------------------------------------------------ */

static int parse_bytes(const char *opt, const char *s, int64_t *out) {
  char *end;
  double v = strtod(s, &end), mul = 1;
  if (*end == 'k' || *end == 'K') mul = 1024.0, end++;
  else if (*end == 'm' || *end == 'M') mul = 1048576.0, end++;
  else if (*end == 'g' || *end == 'G') mul = 1073741824.0, end++;
  if (end == s || *end != '\0' || !(v > 0) || v * mul > 1e15) {
    fprintf(stderr, "hattn loadgen: %s: expected a size such as 512m or 80g, got '%s'\n", opt, s);
    return -1;
  }
  *out = (int64_t)(v * mul);
  return 0;
}

static int parse_seconds(const char *opt, const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end != '\0' || !(v > 0 && v <= 1e6)) {
    fprintf(stderr, "hattn loadgen: %s: expected seconds above 0 (at most 1e6), got '%s'\n", opt, s);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_rates(const char *s, lg_options *o) {
  const char *p = s;
  o->nrates = 0;
  for (;;) {
    char *end;
    double r = strtod(p, &end);
    if (end == p || (*end != ',' && *end != '\0') || !(r > 0 && r <= 1e6) || o->nrates == 16) {
      fprintf(stderr, "hattn loadgen: --rate: expected up to 16 rates above 0 (requests a second), comma "
              "separated, got '%s'\n", s);
      return -1;
    }
    o->rates[o->nrates++] = r;
    if (*end == '\0') return 0;
    p = end + 1;
  }
}

static int parse_options(int argc, char **argv, lg_options *o, const char **file) {
  enum { O_BACKEND = 256, O_RATE, O_DURATION, O_TRACE, O_PROMPT, O_OUTPUT, O_KV, O_PAGE, O_BATCH, O_TOKENS,
         O_CHUNK, O_OTHER, O_MAXTIME, O_SEED, O_DB, O_SVG, O_JSON };
  static const struct option longopts[] = {
    {"model", required_argument, NULL, 'm'}, {"backend", required_argument, NULL, O_BACKEND},
    {"rate", required_argument, NULL, O_RATE}, {"duration", required_argument, NULL, O_DURATION},
    {"trace", required_argument, NULL, O_TRACE}, {"prompt-len", required_argument, NULL, O_PROMPT},
    {"output-len", required_argument, NULL, O_OUTPUT}, {"kv-memory", required_argument, NULL, O_KV},
    {"page-size", required_argument, NULL, O_PAGE}, {"max-batch", required_argument, NULL, O_BATCH},
    {"max-tokens", required_argument, NULL, O_TOKENS}, {"chunk", required_argument, NULL, O_CHUNK},
    {"other-ms-per-token", required_argument, NULL, O_OTHER}, {"max-time", required_argument, NULL, O_MAXTIME},
    {"seed", required_argument, NULL, O_SEED}, {"db", required_argument, NULL, O_DB},
    {"threads", required_argument, NULL, 't'}, {"format", required_argument, NULL, 'f'},
    {"svg", required_argument, NULL, O_SVG}, {"json", required_argument, NULL, O_JSON}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  int c, max_time_set = 0;
  int64_t v;
  char *end;
  o->format = "text";
  o->duration = 10, o->rates[0] = 1, o->nrates = 1;
  o->kv_bytes = (int64_t)1 << 30, o->page_size = 64, o->max_batch = 64, o->max_tokens = 8192, o->chunk = 2048;
  o->seed = 1;
  o->prompt_text = "1024", o->output_text = "128";
  o->prompt = (lg_dist){DIST_FIXED, 1024, 0, 0};
  o->output = (lg_dist){DIST_FIXED, 128, 0, 0};
  optind = 1;
  while ((c = getopt_long(argc, argv, "m:t:f:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'm': o->model = optarg; break;
    case O_BACKEND: o->backend = optarg; break;
    case O_RATE: if (parse_rates(optarg, o)) return TOOL_USAGE; break;
    case O_DURATION: if (parse_seconds("--duration", optarg, &o->duration)) return TOOL_USAGE; break;
    case O_TRACE: o->trace = optarg; break;
    case O_PROMPT:
      if (parse_dist("--prompt-len", optarg, &o->prompt)) return TOOL_USAGE;
      o->prompt_text = optarg;
      break;
    case O_OUTPUT:
      if (parse_dist("--output-len", optarg, &o->output)) return TOOL_USAGE;
      o->output_text = optarg;
      break;
    case O_KV: if (parse_bytes("--kv-memory", optarg, &o->kv_bytes)) return TOOL_USAGE; break;
    case O_PAGE:
      if (tool_parse_len("--page-size", optarg, 0, &o->page_size)) return TOOL_USAGE;
      if (o->page_size > HATTN_MAX_PAGE_SIZE || (o->page_size & (o->page_size - 1))) {
        fprintf(stderr, "hattn loadgen: --page-size: expected a power of two up to %d, got '%s'\n",
                HATTN_MAX_PAGE_SIZE, optarg);
        return TOOL_USAGE;
      }
      break;
    case O_BATCH:
      if (tool_parse_len("--max-batch", optarg, 0, &o->max_batch)) return TOOL_USAGE;
      if (o->max_batch > 4096) {
        fprintf(stderr, "hattn loadgen: --max-batch: at most 4096 slots, got '%s'\n", optarg);
        return TOOL_USAGE;
      }
      break;
    case O_TOKENS: if (tool_parse_len("--max-tokens", optarg, 0, &o->max_tokens)) return TOOL_USAGE; break;
    case O_CHUNK: if (tool_parse_len("--chunk", optarg, 0, &o->chunk)) return TOOL_USAGE; break;
    case O_OTHER:
      o->other_ms = strtod(optarg, &end);
      if (end == optarg || *end != '\0' || !(o->other_ms >= 0 && o->other_ms <= 1e3)) {
        fprintf(stderr, "hattn loadgen: --other-ms-per-token: expected milliseconds from 0 to 1000, got '%s'\n",
                optarg);
        return TOOL_USAGE;
      }
      break;
    case O_MAXTIME:
      if (parse_seconds("--max-time", optarg, &o->max_time)) return TOOL_USAGE;
      max_time_set = 1;
      break;
    case O_SEED:
      o->seed = strtoull(optarg, &end, 10);
      if (end == optarg || *end != '\0') {
        fprintf(stderr, "hattn loadgen: --seed: expected a non-negative integer, got '%s'\n", optarg);
        return TOOL_USAGE;
      }
      break;
    case O_DB: if (tool_parse_db(optarg, &o->db)) return TOOL_USAGE; break;
    case 't':
      if (tool_parse_len("--threads", optarg, 0, &v)) return TOOL_USAGE;
      o->threads = (int)v;
      break;
    case 'f':
      if (strcmp(optarg, "text") && strcmp(optarg, "json") && strcmp(optarg, "csv")) {
        fprintf(stderr, "hattn loadgen: --format: expected text, json or csv, got '%s'\n", optarg);
        return TOOL_USAGE;
      }
      o->format = optarg;
      break;
    case O_SVG: o->svg = optarg; break;
    case O_JSON: o->json = optarg; break;
    case 'h': fputs(usage_text, stdout); return -1;
    default: fputs(usage_text, stderr); return TOOL_USAGE;
    }
  }
  if (optind != argc - 1) {
    fprintf(stderr, "hattn loadgen: expected one spec FILE\n\n%s", usage_text);
    return TOOL_USAGE;
  }
  if (o->max_tokens < o->max_batch) {
    fprintf(stderr, "hattn loadgen: --max-tokens (%lld) must be at least --max-batch (%lld): every admitted "
            "request decodes each step\n", (long long)o->max_tokens, (long long)o->max_batch);
    return TOOL_USAGE;
  }
  if (o->chunk > o->max_tokens) o->chunk = o->max_tokens;
  if (o->trace) o->nrates = 1, o->rates[0] = 0;
  if (!max_time_set) o->max_time = 4 * o->duration + 60;
  *file = argv[optind];
  return TOOL_OK;
}

static const char causal_text[] = "pattern causal = causal\n";

int hattn__cmd_loadgen(int argc, char **argv) {
  lg_options o;
  lg_exec x;
  lg_arm arms[2];
  loadgen_result res[32];
  loadgen_info info;
  hattn__spec *ispec = NULL, *icausal = NULL;
  hattn__diags diags = {0};
  const hattn__model *m = NULL;
  hattn__model cm;
  hattn_options opt;
  hattn__ident id;
  loadgen_request *reqs = NULL;
  char *text = NULL, src[64];
  const char *file;
  size_t len = 0;
  int nreqs = 0, i, a, nres = 0, rc;
  int *cassign = NULL;
  int64_t max_len = 1;

  memset(&o, 0, sizeof o);
  memset(&x, 0, sizeof x);
  memset(arms, 0, sizeof arms);
  memset(&cm, 0, sizeof cm);
  if ((rc = parse_options(argc, argv, &o, &file)) != TOOL_OK) return rc < 0 ? TOOL_OK : rc;
  rc = TOOL_USAGE;
  x.o = &o;
  if ((ispec = tool_load_spec(file)) == NULL) goto done;
  for (i = 0; i < ispec->nmodels; i++)
    if (o.model == NULL || !strcmp(ispec->models[i].name, o.model)) {
      if (m != NULL) {
        fprintf(stderr, "hattn loadgen: %s has several models: name one with --model\n", file);
        goto done;
      }
      m = &ispec->models[i];
    }
  if (m == NULL) {
    fprintf(stderr, o.model ? "hattn loadgen: %s has no model '%s'\n" : "hattn loadgen: %s has no model%s\n", file,
            o.model ? o.model : "");
    goto done;
  }
  x.m = m;
  if ((x.be = tool_backend("loadgen", o.backend)) == NULL) goto done;
  if (!(x.be->dtypes & 1u << m->dtype)) {
    fprintf(stderr, "hattn loadgen: the %s backend does not run %s, the dtype of model %s\n", x.be->name,
            hattn__dtype_name(m->dtype), m->name);
    goto done;
  }
  x.esz = (size_t)hattn__dtype_size(m->dtype);
  /* The requests of every rate, to size the keys' rules by the longest. */
  if (o.trace) {
    if (read_trace(o.trace, &reqs, &nreqs)) goto done;
    for (i = 0; i < nreqs; i++)
      if (reqs[i].prompt + reqs[i].output > max_len) max_len = reqs[i].prompt + reqs[i].output;
  } else {
    for (i = 0; i < o.nrates; i++) {
      loadgen_request *q;
      int n, j;
      if (make_requests(o.rates[i], o.duration, &o.prompt, &o.output, o.seed, &q, &n)) goto done;
      for (j = 0; j < n; j++)
        if (q[j].prompt + q[j].output > max_len) max_len = q[j].prompt + q[j].output;
      free(q);
    }
  }
  /* The two models: the spec's, and causal everywhere. */
  if (hattn__spec_parse(causal_text, sizeof causal_text - 1, "<causal>", &icausal, &diags) != HATTN_OK) goto done;
  cm = *m;
  if ((cassign = calloc((size_t)m->layers * (size_t)m->heads, sizeof *cassign)) == NULL) goto done;
  cm.assign = cassign;
  arms[0].name = "spec", arms[0].ispec = ispec;
  arms[1].name = "causal", arms[1].ispec = icausal;
  if (arm_layers(&arms[0], m, max_len) || arm_layers(&arms[1], &cm, max_len)) goto done;
  /* The device: the public context for kernels, the backend's for memory. */
  hattn_options_init(&opt);
  opt.backend = x.be->id == HATTN__BACKEND_CUDA ? HATTN_BACKEND_CUDA : HATTN_BACKEND_CPU;
  opt.db = o.db;
  opt.threads = o.threads;
  opt.quiet = 1;
  if (hattn_open(&opt, &x.ctx) != HATTN_OK) {
    fprintf(stderr, "hattn loadgen: %s\n", hattn_errmsg(x.ctx));
    goto done;
  }
  if ((text = tool_read_text(file, &len)) == NULL) goto done;
  if (hattn_specfile_parse(x.ctx, text, len, file, &arms[0].spec) != HATTN_OK ||
      hattn_specfile_parse(x.ctx, causal_text, sizeof causal_text - 1, "<causal>", &arms[1].spec) != HATTN_OK) {
    fprintf(stderr, "hattn loadgen: %s\n", hattn_errmsg(x.ctx));
    goto done;
  }
  if (x.be->dev_open(0, -1, &x.dev, x.err, sizeof x.err) != HATTN_OK) {
    fprintf(stderr, "hattn loadgen: %s\n", x.err);
    goto done;
  }
  x.be->ident(x.dev, &id);
  {
    int64_t page_bytes = o.page_size * m->kv_heads * m->head_dim * (int64_t)x.esz;
    size_t qbytes = (size_t)((o.max_batch > o.chunk ? o.max_batch : o.chunk) * m->heads * m->head_dim) * x.esz;
    x.pool_pages = o.kv_bytes / (2 * page_bytes);
    if (x.pool_pages < 1 || x.pool_pages > INT32_MAX) {
      fprintf(stderr, "hattn loadgen: --kv-memory: %lld bytes make %lld pages of %lld bytes (K and V), expected 1 "
              "to 2^31 - 1\n", (long long)o.kv_bytes, (long long)x.pool_pages, (long long)(2 * page_bytes));
      goto done;
    }
    if (x.be->mem_alloc(x.dev, (size_t)(x.pool_pages * page_bytes), &x.kpool, x.err, sizeof x.err) != HATTN_OK ||
        x.be->mem_alloc(x.dev, (size_t)(x.pool_pages * page_bytes), &x.vpool, x.err, sizeof x.err) != HATTN_OK ||
        x.be->mem_alloc(x.dev, qbytes, &x.q, x.err, sizeof x.err) != HATTN_OK ||
        x.be->mem_alloc(x.dev, qbytes, &x.out, x.err, sizeof x.err) != HATTN_OK ||
        x.be->mem_alloc(x.dev, 3 * (size_t)o.max_batch * sizeof(int32_t), &x.lens, x.err, sizeof x.err) !=
            HATTN_OK ||
        x.be->mem_alloc(x.dev, 16, &x.sync, x.err, sizeof x.err) != HATTN_OK ||
        /* Small finite values (0x3c3c...: about 0.0115 in every dtype). */
        x.be->mem_set(x.dev, x.kpool, 0x3c, (size_t)(x.pool_pages * page_bytes), x.err, sizeof x.err) != HATTN_OK ||
        x.be->mem_set(x.dev, x.vpool, 0x3c, (size_t)(x.pool_pages * page_bytes), x.err, sizeof x.err) != HATTN_OK ||
        x.be->mem_set(x.dev, x.q, 0x3c, qbytes, x.err, sizeof x.err) != HATTN_OK) {
      fprintf(stderr, "hattn loadgen: the KV pool of %lld pages: %s\n", (long long)x.pool_pages, x.err);
      goto done;
    }
    if ((x.host_lens = malloc(3 * (size_t)o.max_batch * sizeof(int32_t))) == NULL) goto done;
  }
  /* Each rate: the same requests for both models. */
  for (i = 0; i < o.nrates; i++) {
    if (!o.trace && make_requests(o.rates[i], o.duration, &o.prompt, &o.output, o.seed, &reqs, &nreqs)) goto done;
    for (a = 0; a < 2; a++) {
      if (serve(&x, &arms[a], reqs, nreqs, &res[nres])) goto done;
      res[nres].rate = o.rates[i];
      res[nres].arm = arms[a].name;
      nres++;
    }
    if (!o.trace) free(reqs), reqs = NULL;
  }
  snprintf(src, sizeof src, "%s", o.trace ? o.trace : "poisson");
  info = (loadgen_info){m->name, x.be->name, id.name, hattn__dtype_name(m->dtype), src,
                        (double)o.kv_bytes, (long long)x.pool_pages, (long long)o.page_size,
                        (long long)o.max_batch, (long long)o.max_tokens, (long long)o.chunk, o.other_ms,
                        o.trace ? "from the trace" : o.prompt_text, o.trace ? "from the trace" : o.output_text,
                        o.duration, (unsigned long long)o.seed};
  loadgen_print(stdout, o.format, &info, res, nres);
  if (o.svg && loadgen_svg(o.svg, &info, res, nres)) goto done;
  if (o.json) {
    FILE *f = fopen(o.json, "w");
    if (f != NULL) loadgen_print(f, "json", &info, res, nres);
    if (f == NULL || fclose(f) != 0) {
      fprintf(stderr, "hattn loadgen: --json: cannot write %s\n", o.json);
      goto done;
    }
  }
  rc = TOOL_OK;
done:
  if (x.dev != NULL) {
    x.be->mem_free(x.dev, x.kpool);
    x.be->mem_free(x.dev, x.vpool);
    x.be->mem_free(x.dev, x.q);
    x.be->mem_free(x.dev, x.out);
    x.be->mem_free(x.dev, x.lens);
    x.be->mem_free(x.dev, x.sync);
  }
  for (a = 0; a < 2; a++) {
    arm_free(&arms[a]);
    hattn_specfile_destroy(arms[a].spec);
  }
  if (x.dev != NULL) x.be->dev_close(x.dev);
  hattn_close(x.ctx);
  free(x.host_lens);
  free(reqs);
  free(text);
  free(cassign);
  hattn__diags_clear(&diags);
  hattn__spec_destroy(icausal);
  hattn__spec_destroy(ispec);
  return rc;
}
