/*
** bench_decode_cpu.c: a benchmark, not a test (built by make check, never
** run by it).  CPU decode through the public API, lq 1, lk 32k, GQA 32
** query heads over 8 KV heads, head dim 128, fp32 and bf16, batch 1 and 8,
** with the decode kernel and with HATTN_CPU_DECODE=0 (the forward kernel),
** side by side, and in the same run the machine's copy bandwidth: memcpy
** of a buffer larger than the caches by the same number of threads.  It
** prints the K and V bytes read per second and their ratio to the copy
** bandwidth, counted both ways: bytes copied per second, and bytes moved
** (read + written, as STREAM counts a copy).
**
**   tests/bench_decode_cpu [lk [reps]]      HATTN_NUM_THREADS sets threads
*/
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hattn.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One thread's part of a copy. */
typedef struct copy_part {
  char *dst;
  const char *src;
  size_t n;
} copy_part;

static void *copy_run(void *arg) {
  copy_part *c = arg;
  memcpy(c->dst, c->src, c->n);
  return NULL;
}

/* Seconds of the best of REPS copies of N bytes by NT threads. */
static double copy_seconds(char *dst, const char *src, size_t n, int nt, int reps) {
  pthread_t th[64];
  copy_part parts[64];
  double best = 1e30;
  int r, i;
  for (r = 0; r < reps; r++) {
    double t0 = now(), t;
    for (i = 0; i < nt; i++) {
      parts[i].dst = dst + n / (size_t)nt * (size_t)i;
      parts[i].src = src + n / (size_t)nt * (size_t)i;
      parts[i].n = n / (size_t)nt;
      if (i > 0) pthread_create(&th[i], NULL, copy_run, &parts[i]);
    }
    copy_run(&parts[0]);
    for (i = 1; i < nt; i++) pthread_join(th[i], NULL);
    t = now() - t0;
    if (t < best) best = t;
  }
  return best;
}

/* Milliseconds of the best of REPS runs of a plan of KERN on the tensors. */
static double run_ms(hattn_ctx *ctx, hattn_kernel *kern, DLTensor *q, DLTensor *k, DLTensor *v, DLTensor *o,
                     int reps) {
  hattn_plan *plan = NULL;
  double best = 1e30;
  int r;
  if (hattn_plan_create(kern, NULL, &plan) != HATTN_OK) {
    fprintf(stderr, "plan: %s\n", hattn_errmsg(ctx));
    exit(1);
  }
  for (r = 0; r < reps + 1; r++) {
    double t0 = now(), t;
    if (hattn_run(plan, q, k, v, o, NULL, NULL) != HATTN_OK) {
      fprintf(stderr, "run: %s\n", hattn_plan_errmsg(plan));
      exit(1);
    }
    t = now() - t0;
    if (r > 0 && t < best) best = t; /* the first run warms up */
  }
  hattn_plan_destroy(plan);
  return best * 1e3;
}

int main(int argc, char **argv) {
  static const char *spec_text = "pattern causal = causal\n";
  int64_t lk = argc > 1 ? atoll(argv[1]) : 32768, H = 32, HK = 8, D = 128;
  int reps = argc > 2 ? atoi(argv[2]) : 10, nt, bi, di;
  const char *env = getenv("HATTN_NUM_THREADS");
  size_t cbytes = (size_t)1 << 30;
  char *src, *dst;
  double copy_s;
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_specfile *spec = NULL;

  nt = env ? atoi(env) : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (nt < 1) nt = 1;
  if (nt > 64) nt = 64;
  src = malloc(cbytes), dst = malloc(cbytes);
  if (!src || !dst) return 1;
  memset(src, 1, cbytes), memset(dst, 2, cbytes);
  copy_s = copy_seconds(dst, src, cbytes, nt, 5);
  printf("copy: %d threads, %.0f MiB: %.2f GB/s copied (%.2f GB/s read + written)\n", nt,
         (double)cbytes / (1 << 20), (double)cbytes / copy_s * 1e-9, 2.0 * (double)cbytes / copy_s * 1e-9);
  free(src), free(dst);

  hattn_options_init(&opt);
  opt.db = "";
  opt.quiet = 1;
  opt.threads = nt;
  if (hattn_open(&opt, &ctx) != HATTN_OK ||
      hattn_specfile_parse(ctx, spec_text, strlen(spec_text), "bench", &spec) != HATTN_OK) {
    fprintf(stderr, "open: %s\n", hattn_errmsg(ctx));
    return 1;
  }
  printf("decode: lq 1, lk %lld, heads %lld / kv_heads %lld, head_dim %lld, causal; best of %d runs\n",
         (long long)lk, (long long)H, (long long)HK, (long long)D, reps);
  printf("%-5s %5s  %10s %9s %7s %7s  %10s %9s\n", "dtype", "batch", "decode ms", "KV GB/s", "/copy", "/r+w",
         "fwd ms", "KV GB/s");
  for (di = 0; di < 2; di++)
    for (bi = 0; bi < 2; bi++) {
      int64_t B = bi ? 8 : 1, sq[4] = {B, H, 1, D}, sk[4] = {B, HK, lk, D};
      int bf = di == 1;
      size_t es = bf ? 2 : 4, nq = (size_t)(B * H * D), nk = (size_t)(B * HK * lk * D), i;
      DLDataType dt = {bf ? kDLBfloat : kDLFloat, (uint8_t)(8 * es), 1};
      DLTensor tq, tk, tv, to;
      hattn_problem pr;
      hattn_kernel *kern = NULL;
      void *q = malloc(nq * es), *k = malloc(nk * es), *v = malloc(nk * es), *o = malloc(nq * es);
      double dms, fms, kv = 2.0 * (double)nk * (double)es;
      if (!q || !k || !v || !o) return 1;
      for (i = 0; i < nq * es / 2; i++) ((uint16_t *)q)[i] = (uint16_t)(0x3c00 + (i * 7 % 256));
      for (i = 0; i < nk * es / 2; i++) {
        ((uint16_t *)k)[i] = (uint16_t)(0x3c00 + (i * 13 % 256));
        ((uint16_t *)v)[i] = (uint16_t)(0x3c00 + (i * 5 % 256));
      }
      memset(&tq, 0, sizeof tq);
      tq.device.device_type = kDLCPU, tq.ndim = 4, tq.dtype = dt;
      tk = tv = to = tq;
      tq.data = q, tq.shape = sq, tk.data = k, tk.shape = sk, tv.data = v, tv.shape = sk, to.data = o, to.shape = sq;
      pr.batch = B, pr.heads = H, pr.kv_heads = HK, pr.lq = 1, pr.lk = lk, pr.head_dim = D;
      pr.dtype = bf ? HATTN_BF16 : HATTN_FP32;
      if (hattn_kernel_get(ctx, spec, "causal", &pr, &kern) != HATTN_OK) {
        fprintf(stderr, "kernel: %s\n", hattn_errmsg(ctx));
        return 1;
      }
      unsetenv("HATTN_CPU_DECODE");
      dms = run_ms(ctx, kern, &tq, &tk, &tv, &to, reps);
      setenv("HATTN_CPU_DECODE", "0", 1);
      fms = run_ms(ctx, kern, &tq, &tk, &tv, &to, reps < 3 ? reps : 3);
      unsetenv("HATTN_CPU_DECODE");
      printf("%-5s %5lld  %10.2f %9.2f %6.0f%% %6.0f%%  %10.2f %9.2f\n", bf ? "bf16" : "fp32", (long long)B, dms,
             kv / dms * 1e-6, 100 * (kv / dms * 1e-6) / ((double)cbytes / copy_s * 1e-9),
             100 * (kv / dms * 1e-6) / (2.0 * (double)cbytes / copy_s * 1e-9), fms, kv / fms * 1e-6);
      fflush(stdout);
      hattn_kernel_destroy(kern);
      free(q), free(k), free(v), free(o);
    }
  hattn_specfile_destroy(spec);
  hattn_close(ctx);
  return 0;
}
