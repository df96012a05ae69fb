/*
** cmd_bench.c: hattn bench: GFLOP/s of hattn's kernels on the patterns of
** the benchmark, through the backend table (compile, problem, memory, time),
** with the cold cost of turning a spec into a runnable kernel; on a backend
** whose tensors are host memory, side by side in the same run with a plain
** loop nest and the BLAS path a user would write, and as a fraction of the
** CPU's fp32 FMA peak.  A benchmark, not a test: it asserts nothing.
*/
#include <getopt.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "bench_native.h"
#include "dtype.h"
#include "kernel_cache.h"
#include "plan.h"
#include "tools.h"

static const char bench_usage[] =
  "usage: hattn bench [options]\n"
  "\n"
  "Time hattn's kernels on the backend (cpu, the default, or cuda on GPU 0) on\n"
  "dense, causal, causal & window(W), causal & (window(W) | sink(G)) and\n"
  "document & causal (documents of DOC tokens), lq = lk, [batch, heads, S, D]\n"
  "inputs.  GFLOP/s count 4 * head_dim per visible pair over the median of the\n"
  "timed runs (as many as about a second holds, at least 3, at most --reps) after\n"
  "the backend's warm-up runs: the wall clock on the cpu, device events on cuda.\n"
  "Inputs smaller than 100 MB are rotated among several copies so that no cache\n"
  "holds them.  The cold column is the wall time from spec to runnable kernel\n"
  "(emit, compile, load) the first time a kernel is needed.\n"
  "\n"
  "On a backend whose tensors are host memory (the cpu), each case also runs (a)\n"
  "a plain C loop nest built with -O3 -march=native and (b) the BLAS path (Q K^T\n"
  "with sgemm, masked softmax, then P V with sgemm), in fp32 at batch 1, and the\n"
  "rate is shown as a fraction of the host's fp32 FMA peak: cores x FMA pipes x\n"
  "fp32 lanes x 2 x clock, with the assumptions printed.\n"
  "\n"
  "options:\n"
  "      --backend B         cpu (the default) or cuda\n"
  "  -s, --seqlen N[,M..]    sequence lengths (default 4k,16k)\n"
  "  -d, --head-dim D        head dimension (default 128)\n"
  "      --dtype T           fp32 (the cpu default), fp16 or bf16 (the cuda default)\n"
  "  -H, --heads H           heads, batch 1 (default: the host's threads on the cpu)\n"
  "      --batch-heads N[,M..] batch x heads per sequence length (default 256k / S:\n"
  "                          64 at 4k, 16 at 16k); heads 16 where N is a multiple\n"
  "  -t, --threads N         threads (default: HATTN_NUM_THREADS, else all cores)\n"
  "  -r, --reps R            timed runs per case at most (default 30)\n"
  "      --baselines WHICH   all, blas or none (default all)\n"
  "      --window W          window of the window patterns (default 1k)\n"
  "      --sink G            sink tokens (default 64)\n"
  "      --doc LEN           document length (default 1k)\n"
  "  -h, --help              this text\n"
  "\n"
  "Peak assumptions may be overridden with HATTN_FMA_PIPES, HATTN_FMA_LANES and\n"
  "HATTN_CLOCK_MHZ.  HATTN_BENCH_CONFIG, a configuration as the kernel database\n"
  "writes it (\"bm=64 bn=64 warps=4 stages=2\"), replaces the default one.\n";

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* A chain of dependent 64-bit multiplies: three cycles each on every x86
** core of the last decade (a chain of adds is not safe: Golden Cove folds
** immediate adds and runs two a cycle), so the time it takes gives the
** clock the cores actually run at.  Every thread runs one chain, all at
** once: each waits until all have started. */
#define CLOCK_CHAIN 30000000L
typedef struct clock_job {
  atomic_int started;
  int threads;
  double seconds[1024];
} clock_job;

static void add_chain(void *ctx, int64_t item, int thread) {
  clock_job *job = ctx;
  long x = item, i;
  double t0;
  (void)thread;
  atomic_fetch_add(&job->started, 1);
  while (atomic_load(&job->started) < job->threads) {}
  t0 = now();
  for (i = 0; i < CLOCK_CHAIN / 10; i++) {
#if defined(__x86_64__)
    __asm__ volatile("imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\t"
                     "imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0"
                     : "+r"(x));
#else
    x += 10;
#endif
  }
  job->seconds[item] = now() - t0 + (double)(x & 0) ;
}

/* The clock in MHz with every thread of POOL busy: the slowest thread's,
** best of seven tries (other work on the machine only slows a try down). */
static double measure_clock_mhz(hattn__pool *pool) {
  clock_job job;
  double best = 0;
  int i, t;
  job.threads = hattn__pool_threads(pool) < 1024 ? hattn__pool_threads(pool) : 1024;
  for (t = 0; t < 7; t++) {
    double worst = 0;
    atomic_init(&job.started, 0);
    hattn__pool_run(pool, job.threads, NULL, add_chain, &job);
    for (i = 0; i < job.threads; i++) worst = fmax(worst, job.seconds[i]);
    best = fmax(best, 3.0 * (double)CLOCK_CHAIN / worst / 1e6);
  }
  return best;
}

/* The CPU's fp32 FMA peak in GFLOP/s, and a sentence saying how it was found. */
static double fma_peak(hattn__pool *pool, char *how, size_t n) {
  int cores = hattn__pool_threads(pool);
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[4096], model[256] = "unknown CPU", vendor[64] = "";
  double mhz = 0;
  int family = 0, avx512 = 0, avx2 = 0, pipes, lanes;
  const char *e, *clock_src = "/proc/cpuinfo's \"cpu MHz\" of cpu 0";
  while (f && fgets(line, sizeof line, f)) {
    if (!strncmp(line, "model name", 10) && model[0] == 'u') sscanf(strchr(line, ':') + 2, "%255[^\n]", model);
    else if (!strncmp(line, "vendor_id", 9) && !vendor[0]) sscanf(strchr(line, ':') + 2, "%63s", vendor);
    else if (!strncmp(line, "cpu family", 10) && !family) family = atoi(strchr(line, ':') + 2);
    else if (!strncmp(line, "cpu MHz", 7) && mhz == 0) mhz = atof(strchr(line, ':') + 2);
    else if (!strncmp(line, "flags", 5)) {
      avx512 |= strstr(line, " avx512f") != NULL;
      avx2 |= strstr(line, " avx2") != NULL;
    }
  }
  if (f) fclose(f);
#if defined(__x86_64__)
  mhz = measure_clock_mhz(pool);
  clock_src = "timing a chain of dependent multiplies on every thread at once, best of 7";
#endif
  /* Two FMA pipes on every x86 core this targets; AMD before Zen 5 runs
  ** AVX-512 on 256-bit pipes, so 8 fp32 lanes a pipe there. */
  pipes = 2;
  lanes = avx512 ? 16 : avx2 ? 8 : 4;
  if (avx512 && !strcmp(vendor, "AuthenticAMD") && family <= 25) lanes = 8;
  if ((e = getenv("HATTN_FMA_PIPES")) && atoi(e) > 0) pipes = atoi(e);
  if ((e = getenv("HATTN_FMA_LANES")) && atoi(e) > 0) lanes = atoi(e);
  if ((e = getenv("HATTN_CLOCK_MHZ")) && atof(e) > 0) mhz = atof(e), clock_src = "HATTN_CLOCK_MHZ";
  snprintf(how, n, "%s: %d cores x %d FMA pipes x %d fp32 lanes x 2 x %.0f MHz (clock from %s)", model,
           cores, pipes, lanes, mhz, clock_src);
  return cores * pipes * lanes * 2.0 * mhz / 1000.0;
}

typedef struct bench_case {
  const char *name;
  bench_mask mask;
  char text[160];
} bench_case;

/* Write S as the text of a markdown table cell: '|' escaped as "\|". */
static void put_cell(const char *s) {
  for (; *s; s++) {
    if (*s == '|') putchar('\\');
    putchar(*s);
  }
}

/* The median of the N times T, sorted in place. */
static double median_time(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* Take the next length of the comma list *LIST (option OPT) into *OUT:
** returns 1, 0 at the end of the list, or -1 after printing why not. */
static int next_len(const char **list, const char *opt, int64_t *out) {
  char tok[32];
  size_t t = strcspn(*list, ",");
  if (**list == '\0') return 0;
  if (t == 0 || t >= sizeof tok) {
    fprintf(stderr, "hattn bench: %s: expected lengths separated by commas\n", opt);
    return -1;
  }
  memcpy(tok, *list, t);
  tok[t] = '\0';
  *list += t + ((*list)[t] == ',');
  return tool_parse_len(opt, tok, 0, out) ? -1 : 1;
}

/* ---- one benchmark through the backend table ------------------------------- */

/* The options of a benchmark. */
typedef struct bench_opts {
  const char *seqlens, *batch_heads, *baselines;
  int64_t head_dim, heads, reps, window, sink, doc;
  int threads;             /* --threads, 0: the default */
  hattn__dtype dtype;
  hattn__pool *host;       /* the host's pool for the baselines; NULL: none */
  double peak;             /* the host's fp32 FMA peak in GFLOP/s; 0: not measured */
} bench_opts;

/* Inputs under this size are rotated among copies (twice the H100's L2). */
#define ROTATE_BYTES ((size_t)100 << 20)

/* How many timed runs a case makes: as many as about a second holds at
** SAMPLE_S seconds each, at least 3, at most the --reps in CTX. */
static int bench_reps(void *ctx, double sample_s) {
  int64_t max = *(const int64_t *)ctx, r = sample_s > 0 && sample_s < 1 ? (int64_t)(1.0 / sample_s) : 1;
  if (r < 3) r = 3;
  return (int)(r > max ? max : r);
}

/* The largest |A[i] - B[i]| of N floats. */
static double max_diff(const float *a, const float *b, size_t n) {
  double d = 0;
  size_t i;
  for (i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - (double)b[i]));
  return d;
}

/* Print a rate in GFLOP/s to a tenth below 1000, whole above. */
static void put_gflops(double g) { printf(g >= 1000 ? "%.0f" : "%.1f", g); }

/* Time case BC (NAME and spec TEXT) at length S with BH batch x heads on
** DEV of backend BE; prints its row.  *KSEEN says whether its kernel was
** compiled before in this run.  Returns 0, or -1 after printing why (the
** row then says error). */
static int bench_one(const hattn__backend_i *be, void *dev, const bench_opts *o, const bench_case *bc, int64_t S,
                      int64_t BH, char *kseen) {
  int64_t H = o->heads ? o->heads : BH % 16 == 0 ? 16 : BH, B = BH / H, ndocs = (S + o->doc - 1) / o->doc, r;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__spec *spec = NULL;
  hattn__diags diags = {0};
  hattn__kernel_desc desc;
  hattn__config cfg;
  hattn__ident id;
  hattn__plan *hplan = NULL;
  hattn__tensor_set sets[64];
  void *kern = NULL, *prob = NULL;
  size_t n = (size_t)(BH * S * o->head_dim), esz = (size_t)hattn__dtype_size(o->dtype), set_bytes = 4 * n * esz, i;
  int nsets, ns = 0, rc = -1, bad = 0, nt = 0;
  int64_t *offsets = NULL;
  unsigned char *host[4] = {NULL, NULL, NULL, NULL};   /* Q, K, V, and O read back */
  double *times = NULL, flops, t0, plan_ms, ms = 0, cold = -1, g_loop = 0, g_blas = 0, diff = -1;
  char err[16384], text[128], key[HATTN__KC_KEY_LEN];

  memset(sets, 0, sizeof sets);
  memset(&cfg, 0, sizeof cfg);
  nsets = set_bytes >= ROTATE_BYTES ? 1 : (int)((ROTATE_BYTES + set_bytes - 1) / set_bytes);
  if (nsets > 64) nsets = 64;
  shape.batch = B, shape.heads = H, shape.kv_heads = H, shape.lq = S, shape.lk = S, shape.head_dim = o->head_dim;
  offsets = malloc((size_t)(ndocs + 1) * sizeof *offsets);
  times = malloc((size_t)o->reps * sizeof *times);
  for (i = 0; i < 4; i++) host[i] = malloc(n * esz + 1);
  if (offsets == NULL || times == NULL || !host[0] || !host[1] || !host[2] || !host[3]) {
    snprintf(err, sizeof err, "out of memory");
    goto done;
  }
  for (r = 0; r <= ndocs; r++) offsets[r] = r * o->doc < S ? r * o->doc : S;
  memset(&env, 0, sizeof env);
  env.batch = B, env.heads = H, env.lq = env.lk = S, env.doc_offsets = offsets, env.ndocs = ndocs;
  if (hattn__spec_parse(bc->text, strlen(bc->text), "bench", &spec, &diags) != HATTN_OK) {
    snprintf(err, sizeof err, "%s", diags.text ? diags.text : "parse failed");
    goto done;
  }
  desc.pattern = &spec->patterns[0];
  desc.dtype = o->dtype;
  desc.head_dim = (int)o->head_dim;
  be->config_default(dev, &desc, &cfg);
  /* HATTN_BENCH_CONFIG, a configuration in the database's text form,
  ** overrides the default, to compare configurations by hand. */
  if (getenv("HATTN_BENCH_CONFIG") && be->config_parse(getenv("HATTN_BENCH_CONFIG"), &cfg) != HATTN_OK) {
    snprintf(err, sizeof err, "HATTN_BENCH_CONFIG: not a %s configuration: '%s'", be->name,
             getenv("HATTN_BENCH_CONFIG"));
    goto done;
  }
  if (be->config_check(&desc, &cfg, err, sizeof err) != HATTN_OK) goto done;
  cfg.threads = o->threads;

  /* Spec to runnable kernel, cold the first time this run needs it. */
  be->ident(dev, &id);
  be->config_text(&cfg, 0, text, sizeof text);
  hattn__kc_key(desc.pattern->canon, o->dtype, (int)o->head_dim, be->id, id.target, text, key);
  t0 = now();
  if (be->compile == NULL) snprintf(err, sizeof err, "this hattn compiles no %s kernels", be->name);
  if (be->compile == NULL || be->compile(dev, &desc, &cfg, key, &kern, err, sizeof err) != HATTN_OK) goto done;
  if (!*kseen) cold = (now() - t0) * 1e3, *kseen = 1;
  t0 = now();
  if (be->problem_create(dev, &desc, &cfg, &shape, &env, &prob, err, sizeof err) != HATTN_OK) goto done;
  plan_ms = (now() - t0) * 1e3;

  /* FLOPs: 4 * head_dim per visible pair, counted from a plan. */
  if (hattn__plan_build(desc.pattern->lowered, &env, 128, 128, &hplan, err, sizeof err) != HATTN_OK) goto done;
  {
    /* Past the counting limit (plan.h) the FLOPs are unknown: NaN. */
    int64_t vis = hattn__plan_count_visible(hplan, desc.pattern->lowered, 0, &env);
    flops = vis < 0 ? NAN : 4.0 * (double)o->head_dim * (double)vis * (double)BH;
  }

  /* Inputs uniform in [-1, 1), Q, K and V drawn in turn; the same values
  ** in every set. */
  {
    uint64_t state = 12345;
    for (i = 0; i < 3 * n; i++) {
      state = state * 6364136223846793005u + 1442695040888963407u;
      hattn__elem_set(host[i % 3], o->dtype, i / 3, (float)((double)(state >> 40) / (double)(1 << 24) * 2 - 1));
    }
  }
  for (ns = 0; ns < nsets; ns++) {
    hattn__tensor_set *st = &sets[ns];
    if (be->mem_alloc(dev, n * esz, &st->q.data, err, sizeof err) != HATTN_OK ||
        be->mem_alloc(dev, n * esz, &st->k.data, err, sizeof err) != HATTN_OK ||
        be->mem_alloc(dev, n * esz, &st->v.data, err, sizeof err) != HATTN_OK ||
        be->mem_alloc(dev, n * esz, &st->o.data, err, sizeof err) != HATTN_OK ||
        be->mem_upload(dev, st->q.data, host[0], n * esz, err, sizeof err) != HATTN_OK ||
        be->mem_upload(dev, st->k.data, host[1], n * esz, err, sizeof err) != HATTN_OK ||
        be->mem_upload(dev, st->v.data, host[2], n * esz, err, sizeof err) != HATTN_OK ||
        be->mem_set(dev, st->o.data, 0xff, n * esz, err, sizeof err) != HATTN_OK) {
      ns++;
      goto done;
    }
    st->lse.data = NULL;
    hattn__tensor_strides(&shape, &st->q, &st->k, &st->v, &st->o, &st->lse);
  }
  if (be->time(dev, kern, prob, &desc, &cfg, sets, nsets, 0, bench_reps, (void *)&o->reps, (int)o->reps, times, &nt,
               err, sizeof err) != HATTN_OK)
    goto done;
  ms = median_time(times, nt) / 1e3;
  /* Every output element written and finite (checks O of the first set). */
  if (be->mem_download(dev, host[3], sets[0].o.data, n * esz, err, sizeof err) != HATTN_OK) goto done;
  for (i = 0; i < n; i++)
    if (!isfinite(hattn__elem_get(host[3], o->dtype, i))) bad++;

  /* The host's baselines, on the same fp32 inputs (batch 1). */
  if (o->host != NULL && o->dtype == HATTN_DTYPE_FP32 && B == 1 && strcmp(o->baselines, "none")) {
    float *ob = malloc(n * sizeof *ob + 1);
    bench_problem bp = {bc->mask, H, S, o->head_dim, o->window, o->sink, o->doc, (const float *)host[0],
                        (const float *)host[1], (const float *)host[2], ob};
    if (ob != NULL) {
      t0 = now();
      if (bench_blas(&bp) == 0) {
        g_blas = flops / (now() - t0) / 1e9;
        diff = max_diff((const float *)host[3], ob, n);
      }
      if (!strcmp(o->baselines, "all")) {
        t0 = now();
        bench_loop_nest(&bp, o->host);
        g_loop = flops / (now() - t0) / 1e9;
        if (diff < 0) diff = max_diff((const float *)host[3], ob, n);
      }
    }
    free(ob);
  }

  fputs("| ", stdout);
  put_cell(bc->name);
  printf(" | %lld | %lldx%lld | %.3f | ", (long long)S, (long long)B, (long long)H, ms);
  put_gflops(flops / (ms * 1e-3) / 1e9);
  printf(" | ");
  if (cold >= 0) printf("%.0f | ", cold);
  else printf("(cached) | ");
  printf("%.1f | %d | %s |", plan_ms, nsets, bad ? "NaN/inf in O!" : "ok");
  if (o->host != NULL) {
    if (o->peak > 0) printf(" %.1f%% |", 100.0 * flops / (ms * 1e-3) / 1e9 / o->peak);
    else printf(" - |");
    if (g_loop > 0) printf(" %.1f |", g_loop);
    else printf(" - |");
    if (g_blas > 0) printf(" %.1f | %.2fx |", g_blas, flops / (ms * 1e-3) / 1e9 / g_blas);
    else printf(" - | - |");
    if (diff >= 0) printf(" %.1e |", diff);
    else printf(" - |");
  }
  printf("\n");
  fflush(stdout);
  rc = 0;
done:
  if (rc != 0) {
    char *nl;
    while ((nl = strchr(err, '\n')) != NULL) *nl = ' ';
    fputs("| ", stdout);
    put_cell(bc->name);
    printf(" | %lld | %lldx%lld | error: %.300s | | | | | |\n", (long long)S, (long long)B, (long long)H, err);
    fflush(stdout);
  }
  for (r = 0; r < ns; r++) {
    be->mem_free(dev, sets[r].q.data);
    be->mem_free(dev, sets[r].k.data);
    be->mem_free(dev, sets[r].v.data);
    be->mem_free(dev, sets[r].o.data);
  }
  be->problem_destroy(prob);
  hattn__plan_destroy(hplan);
  hattn__spec_destroy(spec);
  hattn__diags_clear(&diags);
  free(offsets);
  free(times);
  for (i = 0; i < 4; i++) free(host[i]);
  return rc;
}

int hattn__cmd_bench(int argc, char **argv) {
  static const struct option opts[] = {
    {"backend", required_argument, 0, 'B'}, {"seqlen", required_argument, 0, 's'},
    {"head-dim", required_argument, 0, 'd'}, {"heads", required_argument, 0, 'H'},
    {"threads", required_argument, 0, 't'}, {"reps", required_argument, 0, 'r'},
    {"baselines", required_argument, 0, 'A'}, {"window", required_argument, 0, 'W'},
    {"sink", required_argument, 0, 'G'},    {"doc", required_argument, 0, 'C'},
    {"batch-heads", required_argument, 0, 'N'}, {"dtype", required_argument, 0, 'T'},
    {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  const char *backend = NULL, *sl, *bl;
  const hattn__backend_i *be;
  int64_t threads = 0, S, BH;
  bench_opts o;
  bench_case cases[5] = {{"dense", BENCH_DENSE, ""}, {"causal", BENCH_CAUSAL, ""},
                         {"", BENCH_WINDOW, ""}, {"", BENCH_WINDOW_SINK, ""}, {"", BENCH_DOCUMENT, ""}};
  char names[3][96], how[512], err[1024], seen[5] = {0, 0, 0, 0, 0};
  hattn__ident id;
  void *dev = NULL;
  int c, rc = TOOL_USAGE, ci, got, errors = 0, dtype_given = 0;

  memset(&o, 0, sizeof o);
  o.seqlens = "4k,16k", o.baselines = "all", o.head_dim = 128, o.window = 1024, o.sink = 64, o.doc = 1024;
  optind = 1;
  while ((c = getopt_long(argc, argv, "s:d:H:t:r:h", opts, NULL)) != -1) {
    switch (c) {
    case 'B': backend = optarg; break;
    case 'N': o.batch_heads = optarg; break;
    case 'T':
      if (tool_parse_dtype("--dtype", optarg, &o.dtype)) return TOOL_USAGE;
      dtype_given = 1;
      break;
    case 's': o.seqlens = optarg; break;
    case 'd': if (tool_parse_len("--head-dim", optarg, 0, &o.head_dim)) return TOOL_USAGE; break;
    case 'H': if (tool_parse_len("--heads", optarg, 0, &o.heads)) return TOOL_USAGE; break;
    case 't': if (tool_parse_len("--threads", optarg, 0, &threads)) return TOOL_USAGE; break;
    case 'r': if (tool_parse_len("--reps", optarg, 0, &o.reps)) return TOOL_USAGE; break;
    case 'A':
      if (strcmp(optarg, "all") && strcmp(optarg, "blas") && strcmp(optarg, "none")) {
        fprintf(stderr, "hattn bench: --baselines: expected all, blas or none, got '%s'\n", optarg);
        return TOOL_USAGE;
      }
      o.baselines = optarg;
      break;
    case 'W': if (tool_parse_len("--window", optarg, 0, &o.window)) return TOOL_USAGE; break;
    case 'G': if (tool_parse_len("--sink", optarg, 0, &o.sink)) return TOOL_USAGE; break;
    case 'C': if (tool_parse_len("--doc", optarg, 0, &o.doc)) return TOOL_USAGE; break;
    case 'h': fputs(bench_usage, stdout); return TOOL_OK;
    default: fputs(bench_usage, stderr); return TOOL_USAGE;
    }
  }
  if (optind != argc) {
    fputs(bench_usage, stderr);
    return TOOL_USAGE;
  }
  if ((be = tool_backend("bench", backend)) == NULL) return TOOL_USAGE;
  if (!dtype_given) o.dtype = be->dtype_default;
  if (tool_backend_dtype("bench", be, o.dtype)) return TOOL_USAGE;
  if (o.reps == 0) o.reps = 30;
  o.threads = (int)threads;
  snprintf(names[0], sizeof names[0], "causal & window(%lld)", (long long)o.window);
  snprintf(names[1], sizeof names[1], "causal & (window(%lld) | sink(%lld))", (long long)o.window, (long long)o.sink);
  snprintf(names[2], sizeof names[2], "document & causal, docs of %lld", (long long)o.doc);
  cases[2].name = names[0];
  cases[3].name = names[1];
  cases[4].name = names[2];
  snprintf(cases[0].text, sizeof cases[0].text, "pattern p = full");
  snprintf(cases[1].text, sizeof cases[1].text, "pattern p = causal");
  snprintf(cases[2].text, sizeof cases[2].text, "pattern p = causal & window(%lld)", (long long)o.window);
  snprintf(cases[3].text, sizeof cases[3].text, "pattern p = causal & (window(%lld) | sink(%lld))",
           (long long)o.window, (long long)o.sink);
  snprintf(cases[4].text, sizeof cases[4].text, "pattern p = document & causal");

  if (be->dev_open(0, (int)threads, &dev, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn bench: %s\n", err);
    goto done;
  }
  be->ident(dev, &id);
  /* A backend whose tensors are host memory runs beside the host's
  ** baselines (host code), on the host's threads, against its FMA peak. */
  if (be->dl_device == kDLCPU) {
    if (hattn__pool_create((int)threads, &o.host) != HATTN_OK) {
      fprintf(stderr, "hattn bench: cannot start the thread pool\n");
      goto done;
    }
    if (o.heads == 0) o.heads = hattn__pool_threads(o.host);
    o.peak = fma_peak(o.host, how, sizeof how);
  }
  printf("hattn bench: %s backend on %s (%s), compiler %s, %s, head_dim %lld, lq = lk, median of up to %lld timed "
         "runs after the backend's warm-up runs\n",
         be->name, id.name, id.target, id.compiler[0] ? id.compiler : "none", hattn__dtype_name(o.dtype),
         (long long)o.head_dim, (long long)o.reps);
  if (o.host) printf("peak %.1f GFLOP/s = %s\n", o.peak, how);
  printf("\n| pattern | S | B x H | hattn ms | GFLOP/s | cold ms (compile + load) | plan ms | input sets | O |%s\n",
         o.host ? " % of peak | loop nest GFLOP/s | BLAS GFLOP/s | hattn / BLAS | max \\|O - O_blas\\| |" : "");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |%s\n", o.host ? " --- | --- | --- | --- | --- |" : "");
  fflush(stdout);
  sl = o.seqlens, bl = o.batch_heads;
  while ((got = next_len(&sl, "--seqlen", &S)) > 0) {
    BH = 0;
    if (bl != NULL && *bl && next_len(&bl, "--batch-heads", &BH) < 0) goto done;
    if (BH == 0) BH = o.heads ? o.heads : (int64_t)262144 / S > 0 ? (int64_t)262144 / S : 1;
    for (ci = 0; ci < 5; ci++)
      if (bench_one(be, dev, &o, &cases[ci], S, BH, &seen[ci]) != 0) errors++;
  }
  if (got < 0) goto done;
  printf("\nGFLOP/s count 4 * head_dim per visible (query, key) pair over the median time.  Inputs smaller than\n"
         "100 MB are rotated among several copies.  Cold is the wall time of the first compile of each pattern\n"
         "in this process (emit, compile, load); plan is the problem's plan and run-time tables, made once.\n");
  if (o.host)
    printf("The loop nest and BLAS columns (fp32, batch 1) run once per case; the BLAS path computes every pair\n"
           "and masks afterwards, as a user of a dense library would.  The last column compares hattn's output\n"
           "with a baseline's (the BLAS path where built).\n");
  rc = errors ? TOOL_FAIL : TOOL_OK;
done:
  hattn__pool_destroy(o.host);
  if (dev != NULL) be->dev_close(dev);
  return rc;
}
