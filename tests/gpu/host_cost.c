/*
** host_cost.c: what a forward costs the host, back to back, through the
** public API on the CUDA backend: hattn_forward (plan, launch, synchronise,
** free on every call) against hattn_run on a plan made once (launch only,
** on a stream, one synchronisation at the end).  A benchmark, run by
** tests/gpu/run-on-device.sh (phase host-cost) on the GPU machine:
**
**   host_cost [CALLS]
**
** For each problem it prints the wall time per call of each path (CLOCK_
** MONOTONIC around CALLS calls after 20 warm-up calls) and, for hattn_run,
** the wall time of the whole queue including the final synchronisation.
** Built against the tree's libhattn and the driver (-l:libcuda.so.1).
*/
#define _POSIX_C_SOURCE 200809L
#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"

typedef struct problem {
  const char *name;
  const char *spec;
  hattn_problem p;
} problem;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* A DLTensor of SHAPE (4 dims, contiguous) over device memory DATA. */
static DLTensor tensor(void *data, int64_t *shape, int bf16) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCUDA;
  t.device.device_id = 0;
  t.ndim = bf16 ? 4 : 3;
  t.dtype.code = bf16 ? kDLBfloat : kDLFloat;
  t.dtype.bits = bf16 ? 16 : 32;
  t.dtype.lanes = 1;
  t.shape = shape;
  t.strides = NULL;
  return t;
}

/* One problem: both paths, CALLS calls each.  Returns 0 or 1. */
static int run_problem(hattn_ctx *ctx, const problem *pr, int calls) {
  const hattn_problem *p = &pr->p;
  hattn_specfile *spec = NULL;
  hattn_kernel *kern = NULL;
  hattn_plan *plan = NULL;
  CUdeviceptr dq = 0, dk = 0, dv = 0, dout = 0, dl = 0;
  CUstream stream = NULL;
  int64_t sq[4] = {p->batch, p->heads, p->lq, p->head_dim};
  int64_t skv[4] = {p->batch, p->kv_heads, p->lk, p->head_dim};
  int64_t sl[3] = {p->batch, p->heads, p->lq};
  DLTensor q, k, v, o, lse;
  size_t nq = (size_t)(p->batch * p->heads * p->lq * p->head_dim) * 2;
  size_t nkv = (size_t)(p->batch * p->kv_heads * p->lk * p->head_dim) * 2;
  size_t nl = (size_t)(p->batch * p->heads * p->lq) * 4;
  double t0, t_fwd, t_run, t_all;
  int i, rc = 1;

  if (hattn_specfile_parse(ctx, pr->spec, strlen(pr->spec), "host_cost", &spec) != HATTN_OK ||
      hattn_kernel_get(ctx, spec, "p", p, &kern) != HATTN_OK) {
    fprintf(stderr, "%s: %s\n", pr->name, hattn_errmsg(ctx));
    goto done;
  }
  if (cuMemAlloc(&dq, nq) != CUDA_SUCCESS || cuMemAlloc(&dk, nkv) != CUDA_SUCCESS ||
      cuMemAlloc(&dv, nkv) != CUDA_SUCCESS || cuMemAlloc(&dout, nq) != CUDA_SUCCESS ||
      cuMemAlloc(&dl, nl) != CUDA_SUCCESS || cuMemsetD8(dq, 0, nq) != CUDA_SUCCESS ||
      cuMemsetD8(dk, 0, nkv) != CUDA_SUCCESS || cuMemsetD8(dv, 0, nkv) != CUDA_SUCCESS ||
      cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
    fprintf(stderr, "%s: device memory or stream\n", pr->name);
    goto done;
  }
  q = tensor((void *)dq, sq, 1), k = tensor((void *)dk, skv, 1), v = tensor((void *)dv, skv, 1);
  o = tensor((void *)dout, sq, 1), lse = tensor((void *)dl, sl, 0);

  for (i = 0; i < 20; i++)
    if (hattn_forward(kern, &q, &k, &v, &o, &lse, NULL, stream) != HATTN_OK) goto fail;
  t0 = now_us();
  for (i = 0; i < calls; i++)
    if (hattn_forward(kern, &q, &k, &v, &o, &lse, NULL, stream) != HATTN_OK) goto fail;
  t_fwd = (now_us() - t0) / calls;

  if (hattn_plan_create(kern, NULL, &plan) != HATTN_OK) goto fail;
  for (i = 0; i < 20; i++)
    if (hattn_run(plan, &q, &k, &v, &o, &lse, stream) != HATTN_OK) goto fail_plan;
  cuStreamSynchronize(stream);
  t0 = now_us();
  for (i = 0; i < calls; i++)
    if (hattn_run(plan, &q, &k, &v, &o, &lse, stream) != HATTN_OK) goto fail_plan;
  t_run = (now_us() - t0) / calls;
  cuStreamSynchronize(stream);
  t_all = (now_us() - t0) / calls;
  printf("| %s | %.1f | %.1f | %.1f |\n", pr->name, t_fwd, t_run, t_all);
  rc = 0;
  goto done;
fail_plan:
  fprintf(stderr, "%s: %s\n", pr->name, hattn_plan_errmsg(plan));
  goto done;
fail:
  fprintf(stderr, "%s: %s\n", pr->name, hattn_kernel_errmsg(kern));
done:
  if (stream) cuStreamSynchronize(stream);
  hattn_plan_destroy(plan);
  if (stream) cuStreamDestroy(stream);
  if (dq) cuMemFree(dq);
  if (dk) cuMemFree(dk);
  if (dv) cuMemFree(dv);
  if (dout) cuMemFree(dout);
  if (dl) cuMemFree(dl);
  hattn_kernel_destroy(kern);
  hattn_specfile_destroy(spec);
  return rc;
}

int main(int argc, char **argv) {
  static const problem problems[] = {
      {"causal, B 1, H 1, 64 x 64, d 128", "pattern p = causal\n", {1, 1, 1, 64, 64, 128, HATTN_BF16}},
      {"decode step: B 8, GQA 32/8, 1 x 8k, d 128", "pattern p = full\n", {8, 32, 8, 1, 8192, 128, HATTN_BF16}},
      {"causal & window(1k), B 1, H 16, 4k, d 128", "pattern p = causal & window(1024)\n",
       {1, 16, 16, 4096, 4096, 128, HATTN_BF16}},
  };
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  CUcontext cuctx;
  CUdevice dev;
  int calls = argc > 1 ? atoi(argv[1]) : 1000, i, bad = 0;

  hattn_options_init(&opt);
  opt.backend = HATTN_BACKEND_CUDA;
  opt.db = "";
  if (hattn_open(&opt, &ctx) != HATTN_OK) {
    fprintf(stderr, "hattn_open: %s\n", hattn_errmsg(ctx));
    hattn_close(ctx);
    return 1;
  }
  /* hattn runs on the device's primary context: allocate in it too. */
  if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS ||
      cuDevicePrimaryCtxRetain(&cuctx, dev) != CUDA_SUCCESS || cuCtxSetCurrent(cuctx) != CUDA_SUCCESS) {
    fprintf(stderr, "no CUDA primary context\n");
    hattn_close(ctx);
    return 1;
  }
  printf("host cost per call, %d calls back to back after 20 warm-up calls, hattn %s\n\n", calls,
         hattn_version());
  printf("| problem | hattn_forward us | hattn_run us (queueing) | hattn_run us (incl. final sync) |\n");
  printf("| --- | --- | --- | --- |\n");
  for (i = 0; i < (int)(sizeof problems / sizeof problems[0]); i++) bad |= run_problem(ctx, &problems[i], calls);
  hattn_close(ctx);
  cuDevicePrimaryCtxRelease(dev);
  return bad;
}
