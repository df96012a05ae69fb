/*
** cmd_bench.c: hattn bench: GFLOP/s of hattn's CPU kernels on the patterns
** of the benchmark, side by side in the same run with a plain loop nest and
** the BLAS path a user would write, and each as a fraction of the CPU's
** fp32 FMA peak; with --backend cuda, TFLOP/s of the CUDA kernels on GPU 0
** and the cold cost of turning a spec into a runnable kernel.  A benchmark,
** not a test: it asserts nothing.
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
#include "cuda.h"
#include "cpu_config.h"
#include "tools.h"

static const char bench_usage[] =
  "usage: hattn bench [options]\n"
  "\n"
  "Time hattn's CPU kernels (fp32, batch 1, lq = lk) on dense, causal,\n"
  "causal & window(W), causal & (window(W) | sink(G)) and document & causal\n"
  "(documents of DOC tokens), beside (a) a plain C loop nest built with\n"
  "-O3 -march=native and (b) the BLAS path (Q K^T with sgemm, masked softmax,\n"
  "then P V with sgemm), in the same run.  GFLOP/s count 4 * head_dim per\n"
  "visible pair; the median of the timed runs after one warm-up.  Peak is\n"
  "cores x FMA pipes x fp32 lanes x 2 x clock, with the assumptions printed.\n"
  "\n"
  "options:\n"
  "      --backend B         cpu (the default) or cuda (see below)\n"
  "  -s, --seqlen N[,M..]    sequence lengths (default 4k,16k)\n"
  "  -d, --head-dim D        head dimension (default 128)\n"
  "  -H, --heads H           heads (default: the thread count)\n"
  "  -t, --threads N         threads (default: HATTN_NUM_THREADS, else all cores)\n"
  "  -r, --reps R            timed runs per case (default 3; cuda 30)\n"
  "      --baselines WHICH   all, blas or none (default all)\n"
  "      --window W          window of the window patterns (default 1k)\n"
  "      --sink G            sink tokens (default 64)\n"
  "      --doc LEN           document length (default 1k)\n"
  "  -h, --help              this text\n"
  "\n"
  "Peak assumptions may be overridden with HATTN_FMA_PIPES, HATTN_FMA_LANES\n"
  "and HATTN_CLOCK_MHZ.\n"
  "\n"
  "With --backend cuda: the same patterns on GPU 0 in bf16 (or --dtype fp16), lq = lk,\n"
  "[batch, heads, S, D] inputs; TFLOP/s count 4 * head_dim per visible pair over the\n"
  "median of the timed runs (device events) after 3 warm-up runs.  Inputs smaller\n"
  "than 100 MB are rotated among several copies so that the 50 MB L2 holds none\n"
  "of them.  The cold column is the wall time from spec to runnable kernel (emit,\n"
  "NVRTC, module load) the first time a kernel is needed.\n"
  "      --batch-heads N[,M..] batch x heads per sequence length (default 256k / S:\n"
  "                          64 at 4k, 16 at 16k); heads 16 where N is a multiple\n"
  "      --dtype T           bf16 (default) or fp16\n";

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

/* ---- the CUDA benchmark ---------------------------------------------------- */

/* The options of the CUDA benchmark. */
typedef struct cuda_bench_opts {
  const char *seqlens, *batch_heads;
  int64_t head_dim, reps, window, sink, doc;
  hattn__dtype dtype;
} cuda_bench_opts;

/* Inputs under this size are rotated among copies (twice the H100's L2). */
#define ROTATE_BYTES ((size_t)100 << 20)

/* One set of device tensors of a case. */
typedef struct cuda_set {
  void *q, *k, *v, *o;
} cuda_set;

/* Float F as a bf16 or fp16 word (round to nearest even; finite inputs). */
static uint16_t half_bits(float f, hattn__dtype t) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if (t == HATTN_DTYPE_BF16) return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
  {
    _Float16 h = (_Float16)f;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
  }
}

/* Time one pattern at one length; prints its row.  Returns 0, or -1 after
** printing why (the row then says error). */
static int cuda_bench_case(hattn__cuda *cu, const cuda_bench_opts *o, const char *name, const char *text,
                           int64_t S, int64_t BH, char *kseen, double *cold_ms) {
  int64_t H = BH % 16 == 0 ? 16 : BH, B = BH / H, ndocs = (S + o->doc - 1) / o->doc, r;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__spec *spec = NULL;
  hattn__diags diags = {0};
  hattn__kernel_desc desc;
  hattn__cuda_config cfg;
  hattn__cuda_kernel *kern = NULL;
  hattn__cuda_plan *plan = NULL;
  hattn__plan *hplan = NULL;
  hattn__tensor tq, tk, tv, to, tl = {NULL, {0, 0, 0, 0}};
  cuda_set sets[64];
  size_t n = (size_t)(BH * S * o->head_dim), esz = 2, set_bytes = 4 * n * esz, i;
  int nsets, ns = 0, rc = -1, bad = 0;
  int64_t *offsets = NULL;
  uint16_t *host = NULL;
  double *times = NULL, flops, t0, plan_ms, ms = 0, cold = -1;
  char err[16384];

  memset(sets, 0, sizeof sets);
  nsets = set_bytes >= ROTATE_BYTES ? 1 : (int)((ROTATE_BYTES + set_bytes - 1) / set_bytes);
  if (nsets > 64) nsets = 64;
  shape.batch = B, shape.heads = H, shape.kv_heads = H, shape.lq = S, shape.lk = S, shape.head_dim = o->head_dim;
  offsets = malloc((size_t)(ndocs + 1) * sizeof *offsets);
  times = malloc((size_t)o->reps * sizeof *times);
  host = malloc(n * esz + 1);
  if (offsets == NULL || times == NULL || host == NULL) {
    snprintf(err, sizeof err, "out of memory");
    goto done;
  }
  for (r = 0; r <= ndocs; r++) offsets[r] = r * o->doc < S ? r * o->doc : S;
  memset(&env, 0, sizeof env);
  env.batch = B, env.heads = H, env.lq = env.lk = S, env.doc_offsets = offsets, env.ndocs = ndocs;
  if (hattn__spec_parse(text, strlen(text), "bench", &spec, &diags) != HATTN_OK) {
    snprintf(err, sizeof err, "%s", diags.text ? diags.text : "parse failed");
    goto done;
  }
  desc.pattern = &spec->patterns[0];
  desc.dtype = o->dtype;
  desc.head_dim = (int)o->head_dim;
  hattn__cuda_config_default(&desc, hattn__cuda_sm(cu), &cfg);
  /* HATTN_CUDA_CONFIG="BLOCK_M,BLOCK_N,WARPS,STAGES[,WGMMA]" overrides the
  ** default, to compare configurations by hand (WGMMA 1: the warpgroup
  ** kernel; 0 or absent: the mma.sync kernel). */
  if (getenv("HATTN_CUDA_CONFIG")) {
    int nf;
    cfg.wgmma = 0;
    nf = sscanf(getenv("HATTN_CUDA_CONFIG"), "%d,%d,%d,%d,%d", &cfg.block_m, &cfg.block_n, &cfg.warps,
                &cfg.stages, &cfg.wgmma);
    if (nf != 4 && nf != 5) {
      snprintf(err, sizeof err, "HATTN_CUDA_CONFIG must be BLOCK_M,BLOCK_N,WARPS,STAGES[,WGMMA]");
      goto done;
    }
  }

  /* Spec to runnable kernel, cold the first time this run needs it. */
  t0 = now();
  if (hattn__cuda_kernel_get(cu, &desc, &cfg, &kern, err, sizeof err) != HATTN_OK) goto done;
  if (!*kseen) {
    cold = (now() - t0) * 1e3;
    *kseen = 1;
    *cold_ms = cold;
  }
  t0 = now();
  if (hattn__cuda_plan_create(cu, &desc, &cfg, &shape, &env, &plan, err, sizeof err) != HATTN_OK) goto done;
  plan_ms = (now() - t0) * 1e3;

  /* FLOPs: 4 * head_dim per visible pair, counted from a plan. */
  if (hattn__plan_build(desc.pattern->lowered, &env, 128, 128, &hplan, err, sizeof err) != HATTN_OK) goto done;
  {
    /* Past the counting limit (plan.h) the FLOPs are unknown: NaN. */
    int64_t vis = hattn__plan_count_visible(hplan, desc.pattern->lowered, 0, &env);
    flops = vis < 0 ? NAN : 4.0 * (double)o->head_dim * (double)vis * (double)BH;
  }

  /* Inputs uniform in [-1, 1), the same values in every set. */
  {
    uint64_t state = 12345;
    for (i = 0; i < n; i++) {
      state = state * 6364136223846793005u + 1442695040888963407u;
      host[i] = half_bits((float)((double)(state >> 40) / (double)(1 << 24) * 2 - 1), o->dtype);
    }
  }
  for (ns = 0; ns < nsets; ns++) {
    cuda_set *st = &sets[ns];
    if (hattn__cuda_alloc(cu, n * esz, &st->q, err, sizeof err) != HATTN_OK ||
        hattn__cuda_alloc(cu, n * esz, &st->k, err, sizeof err) != HATTN_OK ||
        hattn__cuda_alloc(cu, n * esz, &st->v, err, sizeof err) != HATTN_OK ||
        hattn__cuda_alloc(cu, n * esz, &st->o, err, sizeof err) != HATTN_OK) {
      ns++;
      goto done;
    }
    if (hattn__cuda_upload(cu, st->q, host, n * esz, err, sizeof err) != HATTN_OK ||
        hattn__cuda_upload(cu, st->k, host, n * esz, err, sizeof err) != HATTN_OK ||
        hattn__cuda_upload(cu, st->v, host, n * esz, err, sizeof err) != HATTN_OK ||
        hattn__cuda_memset(cu, st->o, 0xff, n * esz, err, sizeof err) != HATTN_OK) {
      ns++;
      goto done;
    }
  }
  tq.stride[0] = tk.stride[0] = tv.stride[0] = to.stride[0] = H * S * o->head_dim;
  tq.stride[1] = tk.stride[1] = tv.stride[1] = to.stride[1] = S * o->head_dim;
  tq.stride[2] = tk.stride[2] = tv.stride[2] = to.stride[2] = o->head_dim;
  tq.stride[3] = tk.stride[3] = tv.stride[3] = to.stride[3] = 1;
#define USE_SET(j) (tq.data = sets[j].q, tk.data = sets[j].k, tv.data = sets[j].v, to.data = sets[j].o)
  if (nsets == 1) {
    USE_SET(0);
    if (hattn__cuda_time(kern, plan, &shape, &tq, &tk, &tv, &to, &tl, 3, (int)o->reps, &ms, err, sizeof err) !=
        HATTN_OK)
      goto done;
  } else {
    /* One timed launch per call, each on another set than the last. */
    for (r = 0; r < nsets; r++) {
      USE_SET(r);
      if (hattn__cuda_time(kern, plan, &shape, &tq, &tk, &tv, &to, &tl, r == 0 ? 2 : 0, 1, &ms, err,
                           sizeof err) != HATTN_OK)
        goto done;
    }
    for (r = 0; r < o->reps; r++) {
      USE_SET(r % nsets);
      if (hattn__cuda_time(kern, plan, &shape, &tq, &tk, &tv, &to, &tl, 0, 1, &times[r], err, sizeof err) !=
          HATTN_OK)
        goto done;
    }
    ms = median_time(times, (int)o->reps);
  }
#undef USE_SET
  /* Every output element written and finite (checks O of the first set). */
  if (hattn__cuda_download(cu, host, sets[0].o, n * esz, err, sizeof err) != HATTN_OK) goto done;
  for (i = 0; i < n; i++)
    if ((host[i] & 0x7fffu) >= (o->dtype == HATTN_DTYPE_BF16 ? 0x7f80u : 0x7c00u)) bad++;

  printf("| %s | %lld | %lldx%lld | %.3f | %.1f | ", name, (long long)S, (long long)B, (long long)H, ms,
         flops / (ms * 1e-3) / 1e12);
  if (cold >= 0) printf("%.0f | ", cold); else printf("(cached) | ");
  printf("%.1f | %d | %s |\n", plan_ms, nsets, bad ? "NaN/inf in O!" : "ok");
  fflush(stdout);
  rc = 0;
done:
  if (rc != 0) {
    char *nl;
    while ((nl = strchr(err, '\n')) != NULL) *nl = ' ';
    printf("| %s | %lld | %lldx%lld | error: %.300s | | | | | |\n", name, (long long)S, (long long)B, (long long)H, err);
    fflush(stdout);
  }
  for (r = 0; r < ns; r++) {
    hattn__cuda_free(cu, sets[r].q);
    hattn__cuda_free(cu, sets[r].k);
    hattn__cuda_free(cu, sets[r].v);
    hattn__cuda_free(cu, sets[r].o);
  }
  hattn__cuda_plan_destroy(plan);
  hattn__plan_destroy(hplan);
  hattn__spec_destroy(spec);
  hattn__diags_clear(&diags);
  free(offsets);
  free(times);
  free(host);
  return rc;
}

static int cuda_bench(const cuda_bench_opts *o) {
  const char *names[5], *texts[5];
  char nbuf[3][96], tbuf[5][160], err[1024], seen[5] = {0, 0, 0, 0, 0};
  double cold[5] = {0, 0, 0, 0, 0};
  hattn__cuda *cu = NULL;
  const char *sl = o->seqlens, *bl = o->batch_heads;
  int ci, got, errors = 0;
  int64_t S, BH;

  snprintf(nbuf[0], sizeof nbuf[0], "causal & window(%lld)", (long long)o->window);
  snprintf(nbuf[1], sizeof nbuf[1], "causal & (window(%lld) | sink(%lld))", (long long)o->window, (long long)o->sink);
  snprintf(nbuf[2], sizeof nbuf[2], "document & causal, docs of %lld", (long long)o->doc);
  names[0] = "dense", names[1] = "causal", names[2] = nbuf[0], names[3] = nbuf[1], names[4] = nbuf[2];
  snprintf(tbuf[0], sizeof tbuf[0], "pattern p = full");
  snprintf(tbuf[1], sizeof tbuf[1], "pattern p = causal");
  snprintf(tbuf[2], sizeof tbuf[2], "pattern p = causal & window(%lld)", (long long)o->window);
  snprintf(tbuf[3], sizeof tbuf[3], "pattern p = causal & (window(%lld) | sink(%lld))", (long long)o->window,
           (long long)o->sink);
  snprintf(tbuf[4], sizeof tbuf[4], "pattern p = document & causal");
  for (ci = 0; ci < 5; ci++) texts[ci] = tbuf[ci];

  if (hattn__cuda_open(0, &cu, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn bench: %s\n", err);
    return TOOL_USAGE;
  }
  printf("hattn bench: CUDA backend on %s (%s, %d SMs), NVRTC %s, %s, head_dim %lld, lq = lk, "
         "median of %lld runs after 3 warm-up runs\n\n",
         hattn__cuda_name(cu), hattn__cuda_arch(cu), hattn__cuda_sm_count(cu),
         hattn__nvrtc_version() ? hattn__nvrtc_version() : "?", hattn__dtype_name(o->dtype), (long long)o->head_dim,
         (long long)o->reps);
  printf("| pattern | S | B x H | hattn ms | TFLOP/s | cold ms (emit + NVRTC + load) | plan ms | input sets | O |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  fflush(stdout);
  while ((got = next_len(&sl, "--seqlen", &S)) > 0) {
    BH = 0;
    if (bl != NULL && *bl) {
      if (next_len(&bl, "--batch-heads", &BH) < 0) goto fail;
    }
    if (BH == 0) BH = (int64_t)262144 / S > 0 ? (int64_t)262144 / S : 1;
    for (ci = 0; ci < 5; ci++)
      if (cuda_bench_case(cu, o, names[ci], texts[ci], S, BH, &seen[ci], &cold[ci]) != 0) errors++;
  }
  if (got < 0) goto fail;
  printf("\nTFLOP/s count 4 * head_dim per visible (query, key) pair.  Cold is the wall time of the first\n"
         "hattn__cuda_kernel_get of each pattern in this process (NVRTC's own caches aside); plan is the\n"
         "host plan build and its upload.\n");
  hattn__cuda_close(cu);
  return errors ? TOOL_FAIL : TOOL_OK;
fail:
  hattn__cuda_close(cu);
  return TOOL_USAGE;
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
  const char *seqlens = "4k,16k", *baselines = "all", *batch_heads = NULL;
  int64_t hd = 128, heads = 0, threads = 0, reps = 0, window = 1024, sink = 64, doc = 1024;
  hattn__dtype dtype = HATTN_DTYPE_BF16;
  int cuda = 0;
  bench_case cases[5] = {{"dense", BENCH_DENSE, ""}, {"causal", BENCH_CAUSAL, ""},
                         {"", BENCH_WINDOW, ""}, {"", BENCH_WINDOW_SINK, ""}, {"", BENCH_DOCUMENT, ""}};
  char names[3][96], how[512], err[1024];
  hattn__jit *jit = NULL;
  hattn__pool *pool = NULL;
  int c, rc = TOOL_USAGE, ci;
  double peak;
  const char *sl;

  optind = 1;
  while ((c = getopt_long(argc, argv, "s:d:H:t:r:h", opts, NULL)) != -1) {
    switch (c) {
    case 'B':
      if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
        fprintf(stderr, "hattn bench: --backend: unknown backend '%s' (expected cpu or cuda)\n", optarg);
        return TOOL_USAGE;
      }
      cuda = !strcmp(optarg, "cuda");
      break;
    case 'N': batch_heads = optarg; break;
    case 'T':
      if (tool_parse_dtype("--dtype", optarg, &dtype)) return TOOL_USAGE;
      break;
    case 's': seqlens = optarg; break;
    case 'd': if (tool_parse_len("--head-dim", optarg, 0, &hd)) return TOOL_USAGE; break;
    case 'H': if (tool_parse_len("--heads", optarg, 0, &heads)) return TOOL_USAGE; break;
    case 't': if (tool_parse_len("--threads", optarg, 0, &threads)) return TOOL_USAGE; break;
    case 'r': if (tool_parse_len("--reps", optarg, 0, &reps)) return TOOL_USAGE; break;
    case 'A':
      if (strcmp(optarg, "all") && strcmp(optarg, "blas") && strcmp(optarg, "none")) {
        fprintf(stderr, "hattn bench: --baselines: expected all, blas or none, got '%s'\n", optarg);
        return TOOL_USAGE;
      }
      baselines = optarg;
      break;
    case 'W': if (tool_parse_len("--window", optarg, 0, &window)) return TOOL_USAGE; break;
    case 'G': if (tool_parse_len("--sink", optarg, 0, &sink)) return TOOL_USAGE; break;
    case 'C': if (tool_parse_len("--doc", optarg, 0, &doc)) return TOOL_USAGE; break;
    case 'h': fputs(bench_usage, stdout); return TOOL_OK;
    default: fputs(bench_usage, stderr); return TOOL_USAGE;
    }
  }
  if (optind != argc) {
    fputs(bench_usage, stderr);
    return TOOL_USAGE;
  }
  if (cuda) {
    cuda_bench_opts o;
    if (dtype == HATTN_DTYPE_FP32) {
      fprintf(stderr, "hattn bench: the cuda backend runs bf16 and fp16, not fp32\n");
      return TOOL_USAGE;
    }
    o.seqlens = seqlens, o.batch_heads = batch_heads, o.head_dim = hd, o.reps = reps ? reps : 30;
    o.window = window, o.sink = sink, o.doc = doc, o.dtype = dtype;
    return cuda_bench(&o);
  }
  if (reps == 0) reps = 3;
  snprintf(names[0], sizeof names[0], "causal & window(%lld)", (long long)window);
  snprintf(names[1], sizeof names[1], "causal & (window(%lld) | sink(%lld))", (long long)window, (long long)sink);
  snprintf(names[2], sizeof names[2], "document & causal, docs of %lld", (long long)doc);
  cases[2].name = names[0];
  cases[3].name = names[1];
  cases[4].name = names[2];
  snprintf(cases[0].text, sizeof cases[0].text, "pattern p = full");
  snprintf(cases[1].text, sizeof cases[1].text, "pattern p = causal");
  snprintf(cases[2].text, sizeof cases[2].text, "pattern p = causal & window(%lld)", (long long)window);
  snprintf(cases[3].text, sizeof cases[3].text, "pattern p = causal & (window(%lld) | sink(%lld))",
           (long long)window, (long long)sink);
  snprintf(cases[4].text, sizeof cases[4].text, "pattern p = document & causal");

  if (hattn__jit_create(&jit, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn bench: %s\n", err);
    goto done;
  }
  if (hattn__pool_create((int)threads, &pool) != HATTN_OK) {
    fprintf(stderr, "hattn bench: cannot start the thread pool\n");
    goto done;
  }
  if (heads == 0) heads = hattn__pool_threads(pool);
  peak = fma_peak(pool, how, sizeof how);
  printf("hattn bench: CPU backend, fp32, head_dim %lld, batch 1, %lld heads, %d threads, host CPU %s, vectors of %d floats\n",
         (long long)hd, (long long)heads, hattn__pool_threads(pool), hattn__jit_cpu_name(jit), hattn__jit_vec(jit));
  printf("peak %.1f GFLOP/s = %s\n\n", peak, how);
  printf("| pattern | S | hattn GFLOP/s | %% of peak | loop nest GFLOP/s | BLAS GFLOP/s | hattn / BLAS | max |O - O_blas| |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  fflush(stdout);

  for (sl = seqlens; *sl;) {
    int64_t S;
    if (next_len(&sl, "--seqlen", &S) < 0) goto done;
    for (ci = 0; ci < 5; ci++) {
      bench_case *bc = &cases[ci];
      size_t n = (size_t)(heads * S * hd), i;
      float *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
      float *o = malloc(n * sizeof *o), *ob = malloc(n * sizeof *ob);
      int64_t *offsets = NULL, ndocs = (S + doc - 1) / doc, r;
      hattn__spec *spec = NULL;
      hattn__diags diags = {0};
      hattn__kernel_desc desc;
      hattn__cpu_config cfg;
      hattn__cpu_fn fn;
      hattn__mask_env env;
      hattn__shape shape = {1, heads, heads, S, S, hd};
      hattn__tensor tq, tk, tv, to, tl = {NULL, {0, 0, 0, 0}};
      hattn__plan *plan = NULL;
      double *times = malloc((size_t)reps * sizeof *times), flops, g_hattn, g_loop = 0, g_blas = 0, diff = -1;
      int ok = 0;
      uint64_t state = 12345;

      if (!q || !k || !v || !o || !ob || !times || !(offsets = malloc((size_t)(ndocs + 1) * sizeof *offsets))) {
        fprintf(stderr, "hattn bench: out of memory at S = %lld\n", (long long)S);
        goto case_done;
      }
      for (i = 0; i < n; i++) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        q[i] = (float)((double)(state >> 40) / (double)(1 << 24) * 2 - 1);
        state = state * 6364136223846793005u + 1442695040888963407u;
        k[i] = (float)((double)(state >> 40) / (double)(1 << 24) * 2 - 1);
        state = state * 6364136223846793005u + 1442695040888963407u;
        v[i] = (float)((double)(state >> 40) / (double)(1 << 24) * 2 - 1);
      }
      for (r = 0; r <= ndocs; r++) offsets[r] = r * doc < S ? r * doc : S;
      memset(&env, 0, sizeof env);
      env.batch = 1;
      env.heads = heads;
      env.lq = env.lk = S;
      env.doc_offsets = offsets;
      env.ndocs = ndocs;
      if (hattn__spec_parse(bc->text, strlen(bc->text), "bench", &spec, &diags) != HATTN_OK) {
        fprintf(stderr, "hattn bench: %s", diags.text ? diags.text : "parse failed\n");
        goto case_done;
      }
      desc.pattern = &spec->patterns[0];
      desc.dtype = HATTN_DTYPE_FP32;
      desc.head_dim = (int)hd;
      hattn__cpu_config_default((int)hd, hattn__jit_vec(jit), &cfg);
      if (hattn__jit_compile(jit, &desc, &cfg, &fn, err, sizeof err) != HATTN_OK) {
        fprintf(stderr, "hattn bench: %s\n", err);
        goto case_done;
      }
      /* FLOPs: 4 * head_dim per visible pair, counted from a plan. */
      if (hattn__plan_build(desc.pattern->lowered, &env, 128, 128, &plan, err, sizeof err) != HATTN_OK) {
        fprintf(stderr, "hattn bench: %s\n", err);
        goto case_done;
      }
      {
        /* Past the counting limit (plan.h) the FLOPs are unknown: NaN. */
        int64_t vis = hattn__plan_count_visible(plan, desc.pattern->lowered, 0, &env);
        flops = vis < 0 ? NAN : 4.0 * (double)hd * (double)vis * (double)heads;
      }
      tq.data = q, tk.data = k, tv.data = v, to.data = o;
      tq.stride[0] = tk.stride[0] = tv.stride[0] = to.stride[0] = heads * S * hd;
      tq.stride[1] = tk.stride[1] = tv.stride[1] = to.stride[1] = S * hd;
      tq.stride[2] = tk.stride[2] = tv.stride[2] = to.stride[2] = hd;
      tq.stride[3] = tk.stride[3] = tv.stride[3] = to.stride[3] = 1;
      for (r = -1; r < reps; r++) {
        double t0 = now();
        if (hattn__cpu_forward(fn, &desc, &cfg, &shape, &env, &tq, &tk, &tv, &to, &tl, pool, err, sizeof err) != HATTN_OK) {
          fprintf(stderr, "hattn bench: %s\n", err);
          goto case_done;
        }
        if (r >= 0) times[r] = now() - t0;
      }
      g_hattn = flops / median_time(times, (int)reps) / 1e9;
      {
        bench_problem bp = {bc->mask, heads, S, hd, window, sink, doc, q, k, v, ob};
        if (strcmp(baselines, "none")) {
          double t0 = now();
          if (bench_blas(&bp) == 0) {
            g_blas = flops / (now() - t0) / 1e9;
            diff = 0;
            for (i = 0; i < n; i++) diff = fmax(diff, fabs((double)o[i] - (double)ob[i]));
          }
        }
        if (!strcmp(baselines, "all")) {
          double t0 = now();
          bench_loop_nest(&bp, pool);
          g_loop = flops / (now() - t0) / 1e9;
          if (diff < 0) {
            diff = 0;
            for (i = 0; i < n; i++) diff = fmax(diff, fabs((double)o[i] - (double)ob[i]));
          }
        }
      }
      printf("| %s | %lld | %.1f | %.1f%% | ", bc->name, (long long)S, g_hattn, 100.0 * g_hattn / peak);
      if (g_loop > 0) printf("%.1f | ", g_loop); else printf("- | ");
      if (g_blas > 0) printf("%.1f | %.2fx | ", g_blas, g_hattn / g_blas); else printf("- | - | ");
      if (diff >= 0) printf("%.1e |\n", diff); else printf("- |\n");
      fflush(stdout);
      ok = 1;
    case_done:
      hattn__plan_destroy(plan);
      hattn__spec_destroy(spec);
      hattn__diags_clear(&diags);
      free(q), free(k), free(v), free(o), free(ob), free(times), free(offsets);
      if (!ok) goto done;
    }
  }
  printf("\nThe loop nest and BLAS columns run once per case; the BLAS path computes every pair and\n"
         "masks afterwards, as a user of a dense library would.  The last column compares hattn's output\n"
         "with a baseline's (the BLAS path where built).\n");
  rc = TOOL_OK;
done:
  hattn__pool_destroy(pool);
  hattn__jit_destroy(jit);
  return rc;
}
