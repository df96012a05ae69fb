/*
** test_cuda.c: what is the CUDA backend's own (runtime/cuda_driver.c): its
** error paths on the GPU, each with its code and message (launch checks,
** plans, a plan and a kernel that do not match, a device that does not
** exist), and hattn_run through the public API: on a non-blocking stream,
** many runs then one synchronisation, and captured into a CUDA graph,
** each against hattn_reference; hattn_merge on a stream, in a graph, and
** end to end over key slices.  The kernels' numbers against the float64
** reference, for every
** pattern, shape and dtype, are in test_backend.c, the conformance suite
** of every backend.  Exits 77 (skip) when there is no driver or device, or
** when hattn was built without NVRTC.
**
** The tests run in one process (CK_NOFORK): a CUDA context does not survive
** fork(), and the module cache of the one device handle is shared by all
** tests.
*/
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "cuda.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

static hattn__cuda *g_cu;
static uint64_t g_seed;          /* the hattn_run tests' inputs: HATTN_TEST_SEED, else the clock */

#include "testutil.h"

/* A device buffer of BYTES, or the test fails. */
static void *dev_alloc(size_t bytes) {
  char err[512];
  void *p = NULL;
  int rc = hattn__cuda_alloc(g_cu, bytes, &p, err, sizeof err);
  CHECK(rc == HATTN_OK, "alloc: %s", err);
  return p;
}

static hattn__spec *parse(const char *mask) {
  char text[512];
  hattn__spec *spec = NULL;
  hattn__diags diags;
  int rc;
  snprintf(text, sizeof text, "pattern p = %s\n", mask);
  memset(&diags, 0, sizeof diags);
  rc = hattn__spec_parse(text, strlen(text), "test", &spec, &diags);
  CHECK(rc == HATTN_OK, "spec '%s': %s", mask, diags.text ? diags.text : "?");
  hattn__diags_clear(&diags);
  return spec;
}

/* ---- failure paths ----------------------------------------------------- */

typedef struct fail_fixture {
  hattn__spec *spec;
  hattn__kernel_desc desc;
  hattn__cuda_config cfg;
  hattn__cuda_kernel *kern;
  hattn__cuda_plan *plan;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__tensor q, k, v, o, l;
  void *buf, *lbuf;
} fail_fixture;

/* Batch 1, 2 heads sharing one KV head, 128 x 128, head dim 64, bf16. */
static void fail_setup(fail_fixture *f, const char *mask) {
  char err[16384];
  int rc;
  memset(f, 0, sizeof *f);
  f->spec = parse(mask);
  f->desc.pattern = &f->spec->patterns[0];
  f->desc.dtype = HATTN_DTYPE_BF16;
  f->desc.head_dim = 64;
  hattn__cuda_config_default(&f->desc, hattn__cuda_sm(g_cu), &f->cfg);
  rc = hattn__cuda_kernel_get(g_cu, &f->desc, &f->cfg, &f->kern, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s", err);
  f->shape.batch = 1;
  f->shape.heads = 2;
  f->shape.kv_heads = 1;
  f->shape.lq = 128;
  f->shape.lk = 128;
  f->shape.head_dim = 64;
  f->env.lq = 128;
  f->env.lk = 128;
  f->env.batch = 1;
  f->env.heads = 2;
  f->buf = dev_alloc(2 * 128 * 64 * 2 + 64);
  f->lbuf = dev_alloc(2 * 128 * 4 + 64);
  f->q.data = f->k.data = f->v.data = f->o.data = f->buf;
  strides_of(0, 2, 128, 64, f->q.stride);
  strides_of(0, 1, 128, 64, f->k.stride);
  memcpy(f->v.stride, f->k.stride, sizeof f->k.stride);
  memcpy(f->o.stride, f->q.stride, sizeof f->q.stride);
  f->l.data = f->lbuf;
  f->l.stride[0] = 256;
  f->l.stride[1] = 128;
  f->l.stride[2] = 1;
}

static void fail_teardown(fail_fixture *f) {
  hattn__cuda_plan_destroy(f->plan);
  hattn__cuda_free(g_cu, f->buf);
  hattn__cuda_free(g_cu, f->lbuf);
  hattn__spec_destroy(f->spec);
}

static int fail_run(fail_fixture *f, char *err, size_t errlen) {
  return hattn__cuda_launch(f->kern, f->plan, &f->shape, &f->q, &f->k, &f->v, NULL, NULL, &f->o, &f->l, NULL, err, errlen);
}

START_TEST(test_fail_launch) {
  fail_fixture f;
  char err[1024];
  int rc;
  fail_setup(&f, "causal");
  rc = hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s", err);
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_sync(g_cu, err, sizeof err), HATTN_OK);

  f.k.stride[3] = 2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "tensor K must be contiguous in the head dimension (stride 3 is 1), got 2");
  f.k.stride[3] = 1;

  f.q.stride[2] = 60;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "tensor Q: stride 2 is 60 elements (120 bytes); rows must start on 16-byte boundaries, "
                        "so strides 0-2 must be multiples of 8 elements");
  f.q.stride[2] = 64;

  f.v.data = (char *)f.buf + 2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_msg(strncmp(err, "tensor V must start on a 16-byte boundary in device memory", 58) == 0, "%s", err);
  f.v.data = f.buf;

  f.o.data = NULL;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "tensor O has no data");
  f.o.data = f.buf;

  f.l.data = (char *)f.lbuf + 2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_msg(strncmp(err, "tensor LSE must start on a 4-byte boundary", 42) == 0, "%s", err);
  f.l.data = f.lbuf;

  f.shape.lq = 64;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: the plan was made for batch 1, heads 2, kv_heads 1, lq 128, lk 128, head_dim 64");
  f.shape.lq = 128;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_sync(g_cu, err, sizeof err), HATTN_OK);
  fail_teardown(&f);
}
END_TEST

START_TEST(test_fail_plan) {
  fail_fixture f;
  char err[1024];
  fail_setup(&f, "document & causal");
  ck_assert_int_eq(hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err),
                   HATTN_EINPUT);
  ck_assert_str_eq(err, "the pattern uses document, but no document offsets were given");
  ck_assert_ptr_null(f.plan);
  f.shape.heads = 3;
  f.shape.kv_heads = 2;
  ck_assert_int_eq(hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err),
                   HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: batch 1, heads 3, kv_heads 2 (all positive, heads a multiple of kv_heads)");
  f.shape.heads = 2;
  f.shape.kv_heads = 1;
  f.shape.head_dim = 128;
  ck_assert_int_eq(hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err),
                   HATTN_ESHAPE);
  ck_assert_str_eq(err, "bad shape: head_dim 128, but the kernel is for 64");
  f.shape.head_dim = 64;
  f.env.lk = 127;
  ck_assert_int_eq(hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err),
                   HATTN_EINPUT);
  ck_assert_str_eq(err, "the run-time data was made for another shape (lq 128, lk 127, batch 1, heads 2)");
  fail_teardown(&f);
}
END_TEST

START_TEST(test_fail_mismatch) {
  /* A plan for one configuration, a kernel of another dtype. */
  fail_fixture f;
  hattn__kernel_desc d2;
  hattn__cuda_kernel *k2 = NULL;
  char err[16384];
  int rc;
  fail_setup(&f, "causal");
  rc = hattn__cuda_plan_create(g_cu, &f.desc, &f.cfg, &f.shape, &f.env, &f.plan, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s", err);
  d2 = f.desc;
  d2.dtype = HATTN_DTYPE_FP16;
  rc = hattn__cuda_kernel_get(g_cu, &d2, &f.cfg, &k2, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s", err);
  f.kern = k2;
  ck_assert_int_eq(fail_run(&f, err, sizeof err), HATTN_EINPUT);
  ck_assert_msg(strstr(err, "the plan was made for") != NULL, "%s", err);
  fail_teardown(&f);
}
END_TEST

START_TEST(test_fail_open) {
  hattn__cuda *cu = NULL;
  char err[1024];
  ck_assert_int_eq(hattn__cuda_open(1000, &cu, err, sizeof err), HATTN_ENODEV);
  ck_assert_ptr_null(cu);
  ck_assert_msg(strncmp(err, "no CUDA device: device 1000 was asked for", 41) == 0, "%s", err);
}
END_TEST

/* ---- hattn_run: streams, many runs, graph capture (the public API) ------ */

/* Device tensors of one run of a bf16 problem, [B, H, L, D] Q and O, [B,
** HK, L, D] K and V, [B, H, L] LSE, with host copies for the reference.
** Not moved once made: the DLTensors point at its shape arrays. */
typedef struct run_io {
  int64_t sq[4], sk[4], sl[3];
  size_t nq, nk, nl;
  uint16_t *q, *k, *v, *o;
  float *lse;
  void *dq, *dk, *dv, *dout, *dl;
  DLTensor tq, tk, tv, to, tl;
} run_io;

static void dl_tensor(DLTensor *t, void *data, int device, int bf16, int ndim, int64_t *shape) {
  memset(t, 0, sizeof *t);
  t->data = data;
  t->device.device_type = device;
  t->ndim = ndim;
  t->shape = shape;
  t->dtype.code = bf16 ? kDLBfloat : kDLFloat;
  t->dtype.bits = bf16 ? 16 : 32;
  t->dtype.lanes = 1;
}

/* As io_init with LQ queries and LK keys. */
static void io_init2(run_io *io, int64_t B, int64_t H, int64_t HK, int64_t LQ, int64_t LK, int64_t D) {
  memset(io, 0, sizeof *io);
  io->sq[0] = io->sk[0] = io->sl[0] = B;
  io->sq[1] = io->sl[1] = H, io->sk[1] = HK;
  io->sq[2] = io->sl[2] = LQ, io->sk[2] = LK;
  io->sq[3] = io->sk[3] = D;
  io->nq = (size_t)(B * H * LQ * D), io->nk = (size_t)(B * HK * LK * D), io->nl = (size_t)(B * H * LQ);
  io->q = malloc(io->nq * 2), io->o = malloc(io->nq * 2), io->k = malloc(io->nk * 2), io->v = malloc(io->nk * 2);
  io->lse = malloc(io->nl * 4);
  ck_assert(io->q && io->o && io->k && io->v && io->lse);
  io->dq = dev_alloc(io->nq * 2), io->dout = dev_alloc(io->nq * 2);
  io->dk = dev_alloc(io->nk * 2), io->dv = dev_alloc(io->nk * 2), io->dl = dev_alloc(io->nl * 4);
  dl_tensor(&io->tq, io->dq, kDLCUDA, 1, 4, io->sq), dl_tensor(&io->tk, io->dk, kDLCUDA, 1, 4, io->sk);
  dl_tensor(&io->tv, io->dv, kDLCUDA, 1, 4, io->sk), dl_tensor(&io->to, io->dout, kDLCUDA, 1, 4, io->sq);
  dl_tensor(&io->tl, io->dl, kDLCUDA, 0, 3, io->sl);
}

static void io_init(run_io *io, int64_t B, int64_t H, int64_t HK, int64_t L, int64_t D) {
  io_init2(io, B, H, HK, L, L, D);
}

/* Poison O and LSE on the device (NaN), finished before the next launch
** on any stream. */
static void io_poison(run_io *io) {
  char err[512];
  ck_assert_int_eq(hattn__cuda_memset(g_cu, io->dout, 0xff, io->nq * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_memset(g_cu, io->dl, 0xff, io->nl * 4, err, sizeof err), HATTN_OK);
  CHECK(hattn__cuda_sync(g_cu, err, sizeof err) == HATTN_OK, "%s", err);
}

/* Fresh random Q, K, V, uploaded; O and LSE poisoned. */
static void io_fresh(run_io *io, rng *r) {
  char err[512];
  size_t i;
  for (i = 0; i < io->nq; i++) put(io->q, i, HATTN_DTYPE_BF16, 2 * rng_unit(r));
  for (i = 0; i < io->nk; i++) put(io->k, i, HATTN_DTYPE_BF16, 2 * rng_unit(r)), put(io->v, i, HATTN_DTYPE_BF16, rng_unit(r));
  ck_assert_int_eq(hattn__cuda_upload(g_cu, io->dq, io->q, io->nq * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_upload(g_cu, io->dk, io->k, io->nk * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_upload(g_cu, io->dv, io->v, io->nk * 2, err, sizeof err),
                   HATTN_OK);
  io_poison(io);
}

/* Download O and LSE and compare them with hattn_reference of KERN and IN
** on the host copies of Q, K, V; WHAT names the run in messages. */
static void io_check(run_io *io, hattn_kernel *kern, const hattn_inputs *in, const char *what) {
  char err[512];
  DLTensor hq, hk, hv, ro, rl;
  double *o64 = malloc(io->nq * sizeof *o64), *l64 = malloc(io->nl * sizeof *l64);
  double *xo = malloc(io->nq * sizeof *xo), *xl = malloc(io->nl * sizeof *xl), eo, el;
  size_t i;
  int rc;
  ck_assert(o64 && l64 && xo && xl);
  ck_assert_int_eq(hattn__cuda_download(g_cu, io->o, io->dout, io->nq * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_download(g_cu, io->lse, io->dl, io->nl * 4, err, sizeof err), HATTN_OK);
  dl_tensor(&hq, io->q, kDLCPU, 1, 4, io->sq), dl_tensor(&hk, io->k, kDLCPU, 1, 4, io->sk);
  dl_tensor(&hv, io->v, kDLCPU, 1, 4, io->sk);
  dl_tensor(&ro, o64, kDLCPU, 0, 4, io->sq), dl_tensor(&rl, l64, kDLCPU, 0, 3, io->sl);
  ro.dtype.bits = rl.dtype.bits = 64;
  rc = hattn_reference(kern, &hq, &hk, &hv, &ro, &rl, in);
  CHECK(rc == HATTN_OK, "reference: %s", hattn_kernel_errmsg(kern));
  for (i = 0; i < io->nq; i++) xo[i] = get(io->o, i, HATTN_DTYPE_BF16);
  for (i = 0; i < io->nl; i++) xl[i] = io->lse[i];
  eo = hattn__rel_error(xo, o64, io->nq);
  el = hattn__rel_error(xl, l64, io->nl);
  CHECK(eo < 1e-2 && el < 1e-2, "%s: error O %g LSE %g (tolerance 1e-2)", what, eo, el);
  free(o64), free(l64), free(xo), free(xl);
}

static void io_free(run_io *io) {
  hattn__cuda_free(g_cu, io->dq), hattn__cuda_free(g_cu, io->dk), hattn__cuda_free(g_cu, io->dv);
  hattn__cuda_free(g_cu, io->dout), hattn__cuda_free(g_cu, io->dl);
  free(io->q), free(io->k), free(io->v), free(io->o), free(io->lse);
}

/* A CUDA context of the public API, a document-masked bf16 kernel (GQA,
** 300 x 300, head dim 128; or the decode problem of serve_setup_decode),
** its plan (the document offsets in device memory) and a non-blocking
** stream of the same (primary) context. */
typedef struct serve_fixture {
  hattn_ctx *ctx;
  hattn_specfile *spec;
  hattn_kernel *kern;
  hattn_plan *plan;
  hattn_inputs in;
  int64_t offs[4];
  void *stream;
} serve_fixture;

/* A plan of "causal & document" (three documents) for PROB, or with
** WINDOW of "causal & window(1000)" (which variable-length runs take). */
static void serve_setup_problem(serve_fixture *f, const hattn_problem *prob, int window) {
  const char *text = window ? "pattern p = causal & window(1000)\n" : "pattern p = causal & document\n";
  hattn_options opt;
  hattn_problem pr = *prob;
  char err[512];
  int rc;
  memset(f, 0, sizeof *f);
  hattn_options_init(&opt);
  opt.backend = HATTN_BACKEND_CUDA;
  opt.db = "";
  opt.quiet = 1;
  rc = hattn_open(&opt, &f->ctx);
  CHECK(rc == HATTN_OK, "hattn_open: %s", hattn_errmsg(f->ctx));
  ck_assert_int_eq(hattn_specfile_parse(f->ctx, text, strlen(text), "serve", &f->spec), HATTN_OK);
  rc = hattn_kernel_get(f->ctx, f->spec, "p", &pr, &f->kern);
  CHECK(rc == HATTN_OK, "kernel: %s", hattn_errmsg(f->ctx));
  f->offs[0] = 0, f->offs[1] = pr.lk / 3, f->offs[2] = pr.lk / 2, f->offs[3] = pr.lk;
  if (!window) f->in.doc_offsets = f->offs, f->in.ndocs = 3;
  rc = hattn_plan_create(f->kern, &f->in, &f->plan);
  CHECK(rc == HATTN_OK, "plan: %s", hattn_kernel_errmsg(f->kern));
  rc = hattn__cuda_stream_create(g_cu, &f->stream, err, sizeof err);
  CHECK(rc == HATTN_OK, "stream: %s", err);
}

static void serve_setup(serve_fixture *f) {
  const hattn_problem pr = {2, 4, 2, 300, 300, 128, HATTN_BF16};
  serve_setup_problem(f, &pr, 0);
}

/* Decode: 4 queries of 8 heads on 2 KV heads against 6000 keys, batch 1,
** so that the keys are cut into splits merged by a second kernel. */
#define DECODE_LQ 4
#define DECODE_LK 6000
static void serve_setup_decode(serve_fixture *f) {
  const hattn_problem pr = {1, 8, 2, DECODE_LQ, DECODE_LK, 128, HATTN_BF16};
  serve_setup_problem(f, &pr, 0);
}

static void serve_teardown(serve_fixture *f) {
  char err[512];
  CHECK(hattn__cuda_sync(g_cu, err, sizeof err) == HATTN_OK, "%s", err);
  hattn_plan_destroy(f->plan);
  hattn__cuda_stream_destroy(g_cu, f->stream);
  hattn_kernel_destroy(f->kern);
  hattn_specfile_destroy(f->spec);
  hattn_close(f->ctx);
}

/* hattn_run on a non-blocking stream: queued there, correct once the
** stream is synchronised. */
START_TEST(test_run_stream) {
  serve_fixture f;
  run_io io;
  rng r = {g_seed ^ 0x5e41};
  char err[512];
  serve_setup(&f);
  io_init(&io, 2, 4, 2, 300, 128);
  io_fresh(&io, &r);
  ck_assert_int_eq(hattn_run(f.plan, &io.tq, &io.tk, &io.tv, &io.to, &io.tl, f.stream), HATTN_OK);
  ck_assert_str_eq(hattn_plan_errmsg(f.plan), "");
  CHECK(hattn__cuda_stream_sync(g_cu, f.stream, err, sizeof err) == HATTN_OK, "%s", err);
  io_check(&io, f.kern, &f.in, "hattn_run on a stream");
  /* A shape that is not the plan's is refused before anything is queued. */
  io.sq[2] = 299;
  ck_assert_int_eq(hattn_run(f.plan, &io.tq, &io.tk, &io.tv, &io.to, &io.tl, f.stream), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_plan_errmsg(f.plan), "q: shape [2, 4, 299, 128], expected [2, 4, 300, 128]") != NULL,
                "%s", hattn_plan_errmsg(f.plan));
  io.sq[2] = 300;
  io_free(&io);
  serve_teardown(&f);
}
END_TEST

/* Many runs of one plan back to back on a stream, on different tensors,
** then one synchronisation: every output is right. */
#define NRUNS 8
START_TEST(test_run_many) {
  serve_fixture f;
  run_io *io = calloc(NRUNS, sizeof *io);
  rng r = {g_seed ^ 0x5e42};
  char err[512], what[64];
  int i;
  ck_assert_ptr_nonnull(io);
  serve_setup(&f);
  for (i = 0; i < NRUNS; i++) io_init(&io[i], 2, 4, 2, 300, 128), io_fresh(&io[i], &r);
  for (i = 0; i < NRUNS; i++)
    ck_assert_int_eq(hattn_run(f.plan, &io[i].tq, &io[i].tk, &io[i].tv, &io[i].to, &io[i].tl, f.stream), HATTN_OK);
  CHECK(hattn__cuda_stream_sync(g_cu, f.stream, err, sizeof err) == HATTN_OK, "%s", err);
  for (i = 0; i < NRUNS; i++) {
    snprintf(what, sizeof what, "run %d of %d", i, NRUNS);
    io_check(&io[i], f.kern, &f.in, what);
  }
  for (i = 0; i < NRUNS; i++) io_free(&io[i]);
  free(io);
  serve_teardown(&f);
}
END_TEST

/* hattn_run captured into a CUDA graph (global capture mode: an
** allocation, copy or synchronisation inside it would invalidate the
** capture); the capture itself writes nothing; each replay, on fresh
** inputs in the same buffers with O and LSE poisoned, matches the
** reference. */
/* MODE 0: a forward plan; 1: a decode plan; 2: the decode plan run with key
** lengths in device memory (hattn_run_varlen), new lengths uploaded before
** each replay, which the graph's kernels read. */
static void run_graph(int mode) {
  serve_fixture f;
  run_io io;
  rng r = {g_seed ^ (0x5e43 + (uint64_t)mode)};
  char err[512], what[64];
  void *exec = NULL, *dkl = NULL;
  int32_t kl[1] = {DECODE_LK};
  int64_t sb[1] = {1};
  DLTensor tkl;
  hattn_varlen lens;
  size_t i;
  int rep, rc;
  if (mode == 2) {
    const hattn_problem pr = {1, 8, 2, DECODE_LQ, DECODE_LK, 128, HATTN_BF16};
    serve_setup_problem(&f, &pr, 1);
  } else if (mode == 1) {
    serve_setup_decode(&f);
  } else {
    serve_setup(&f);
  }
  if (mode) io_init2(&io, 1, 8, 2, DECODE_LQ, DECODE_LK, 128);
  else io_init(&io, 2, 4, 2, 300, 128);
  memset(&lens, 0, sizeof lens);
  if (mode == 2) {
    dkl = dev_alloc(sizeof kl);
    ck_assert_int_eq(hattn__cuda_upload(g_cu, dkl, kl, sizeof kl, err, sizeof err), HATTN_OK);
    dl_tensor(&tkl, dkl, kDLCUDA, 0, 1, sb);
    tkl.dtype.code = kDLInt;
    lens.k_lens = &tkl;
  }
  io_fresh(&io, &r);
  rc = hattn__cuda_capture_begin(g_cu, f.stream, err, sizeof err);
  CHECK(rc == HATTN_OK, "capture: %s", err);
  if (mode == 2) rc = hattn_run_varlen(f.plan, &io.tq, &io.tk, &io.tv, NULL, &lens, &io.to, &io.tl, f.stream);
  else rc = hattn_run(f.plan, &io.tq, &io.tk, &io.tv, &io.to, &io.tl, f.stream);
  /* The capture ends before any assertion, so that a failure leaves the
  ** stream usable for the tests after this one. */
  CHECK(hattn__cuda_capture_end(g_cu, f.stream, &exec, err, sizeof err) == HATTN_OK && rc == HATTN_OK,
        "run %d / end of capture: %s / %s", rc, hattn_plan_errmsg(f.plan), err);
  CHECK(hattn__cuda_sync(g_cu, err, sizeof err) == HATTN_OK, "%s", err);
  ck_assert_int_eq(hattn__cuda_download(g_cu, io.o, io.dout, io.nq * 2, err, sizeof err), HATTN_OK);
  for (i = 0; i < io.nq; i++) CHECK(io.o[i] == 0xffff, "the capture wrote O[%zu]", i);
  for (rep = 0; rep < 3; rep++) {
    io_fresh(&io, &r);
    if (mode == 2) {
      kl[0] = (int32_t)rng_range(&r, DECODE_LQ, DECODE_LK);
      ck_assert_int_eq(hattn__cuda_upload(g_cu, dkl, kl, sizeof kl, err, sizeof err), HATTN_OK);
      f.in.k_lens = kl;
    }
    rc = hattn__cuda_graph_launch(g_cu, exec, f.stream, err, sizeof err);
    CHECK(rc == HATTN_OK, "graph launch: %s", err);
    CHECK(hattn__cuda_stream_sync(g_cu, f.stream, err, sizeof err) == HATTN_OK, "%s", err);
    snprintf(what, sizeof what, "%sgraph replay %d (k_len %d)", mode ? "decode " : "", rep, (int)kl[0]);
    io_check(&io, f.kern, &f.in, what);
  }
  f.in.k_lens = NULL;
  hattn__cuda_free(g_cu, dkl);
  hattn__cuda_graph_destroy(g_cu, exec);
  io_free(&io);
  serve_teardown(&f);
}

START_TEST(test_run_graph) { run_graph(0); }
END_TEST

/* The same for a decode plan: the decode kernel and the merge of its
** splits, both captured. */
START_TEST(test_run_graph_decode) { run_graph(1); }
END_TEST

/* The decode plan with key lengths read from device memory at each replay. */
START_TEST(test_run_graph_varlen) { run_graph(2); }
END_TEST

/* ---- hattn_merge on the GPU ------------------------------------------------ */

/* A CUDA context of the public API. */
static hattn_ctx *merge_ctx(void) {
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  int rc;
  hattn_options_init(&opt);
  opt.backend = HATTN_BACKEND_CUDA;
  opt.db = "";
  opt.quiet = 1;
  rc = hattn_open(&opt, &ctx);
  CHECK(rc == HATTN_OK, "hattn_open: %s", hattn_errmsg(ctx));
  return ctx;
}

static size_t esize(hattn__dtype dt) { return dt == HATTN_DTYPE_FP32 ? 4 : 2; }

static void dl_tensor_dt(DLTensor *t, void *data, int device, hattn__dtype dt, int ndim, int64_t *shape) {
  dl_tensor(t, data, device, dt == HATTN_DTYPE_BF16, ndim, shape);
  if (dt == HATTN_DTYPE_FP16) t->dtype.bits = 16;
}

/* NP random parts of [dims] in DT on the host (O[i], LSE[i] row-major [B*H*L],
** part 1 in [B, L, H, D] memory: strides ST[i]); about one LSE in six -inf
** (its O row NaN: it must add nothing), every third row of the first
** (b, h) -inf in every part.  RO, RL: their float64 merge, row-major. */
typedef struct merge_io {
  int np;
  hattn__dtype dt;
  int64_t dims[4], sl[3], st[HATTN_MERGE_MAX_PARTS][4];
  size_t no, nl;
  void *o[HATTN_MERGE_MAX_PARTS], *out, *d_o[HATTN_MERGE_MAX_PARTS], *d_out;
  float *lse[HATTN_MERGE_MAX_PARTS], *lout, *d_lse[HATTN_MERGE_MAX_PARTS], *d_lout;
  double *ro, *rl;
  DLTensor to[HATTN_MERGE_MAX_PARTS], tl[HATTN_MERGE_MAX_PARTS], tout, tlout;
  const DLTensor *po[HATTN_MERGE_MAX_PARTS], *pl[HATTN_MERGE_MAX_PARTS];
} merge_io;

static void merge_io_init(merge_io *m, int np, hattn__dtype dt, int64_t B, int64_t H, int64_t L, int64_t D) {
  int i;
  memset(m, 0, sizeof *m);
  m->np = np, m->dt = dt;
  m->dims[0] = m->sl[0] = B, m->dims[1] = m->sl[1] = H, m->dims[2] = m->sl[2] = L, m->dims[3] = D;
  m->no = (size_t)(B * H * L * D), m->nl = (size_t)(B * H * L);
  m->out = malloc(m->no * esize(dt)), m->lout = malloc(m->nl * 4);
  m->ro = malloc(m->no * 8), m->rl = malloc(m->nl * 8);
  ck_assert(m->out && m->lout && m->ro && m->rl);
  m->d_out = dev_alloc(m->no * esize(dt)), m->d_lout = dev_alloc(m->nl * 4);
  for (i = 0; i < np; i++) {
    m->o[i] = malloc(m->no * esize(dt)), m->lse[i] = malloc(m->nl * 4);
    ck_assert(m->o[i] && m->lse[i]);
    m->d_o[i] = dev_alloc(m->no * esize(dt)), m->d_lse[i] = dev_alloc(m->nl * 4);
    strides_of(i == 1, H, L, D, m->st[i]);
    dl_tensor_dt(&m->to[i], m->d_o[i], kDLCUDA, dt, 4, m->dims), m->to[i].strides = m->st[i];
    dl_tensor(&m->tl[i], m->d_lse[i], kDLCUDA, 0, 3, m->sl);
    m->po[i] = &m->to[i], m->pl[i] = &m->tl[i];
  }
  dl_tensor_dt(&m->tout, m->d_out, kDLCUDA, dt, 4, m->dims);
  dl_tensor(&m->tlout, m->d_lout, kDLCUDA, 0, 3, m->sl);
}

/* Fresh parts, uploaded, their merge in RO and RL; outputs poisoned. */
static void merge_io_fresh(merge_io *m, rng *r) {
  char err[512];
  int64_t row, d, b, h, l, *dims = m->dims;
  int i;
  for (i = 0; i < m->np; i++)
    for (row = 0; row < (int64_t)m->nl; row++) {
      int none = rng_range(r, 0, 5) == 0 || (row < dims[2] && row % 3 == 0);
      m->lse[i][row] = none ? -INFINITY : (float)(6 * rng_unit(r));
      b = row / (dims[1] * dims[2]), h = row / dims[2] % dims[1], l = row % dims[2];
      for (d = 0; d < dims[3]; d++)
        put(m->o[i], (size_t)(b * m->st[i][0] + h * m->st[i][1] + l * m->st[i][2] + d), m->dt,
            none ? NAN : rng_unit(r));
    }
  for (row = 0; row < (int64_t)m->nl; row++) {
    double mx = -INFINITY, s = 0, w[HATTN_MERGE_MAX_PARTS];
    b = row / (dims[1] * dims[2]), h = row / dims[2] % dims[1], l = row % dims[2];
    for (i = 0; i < m->np; i++)
      if (m->lse[i][row] > mx) mx = m->lse[i][row];
    for (i = 0; i < m->np; i++) s += (w[i] = m->lse[i][row] == -INFINITY ? 0 : exp(m->lse[i][row] - mx));
    m->rl[row] = mx == -INFINITY ? -INFINITY : mx + log(s);
    for (d = 0; d < dims[3]; d++) {
      double acc = 0;
      for (i = 0; i < m->np; i++)
        if (w[i] != 0)
          acc += w[i] * get(m->o[i], (size_t)(b * m->st[i][0] + h * m->st[i][1] + l * m->st[i][2] + d), m->dt);
      m->ro[row * dims[3] + d] = mx == -INFINITY ? 0 : acc / s;
    }
  }
  for (i = 0; i < m->np; i++) {
    ck_assert_int_eq(hattn__cuda_upload(g_cu, m->d_o[i], m->o[i], m->no * esize(m->dt), err, sizeof err), HATTN_OK);
    ck_assert_int_eq(hattn__cuda_upload(g_cu, m->d_lse[i], m->lse[i], m->nl * 4, err, sizeof err), HATTN_OK);
  }
  ck_assert_int_eq(hattn__cuda_memset(g_cu, m->d_out, 0xff, m->no * esize(m->dt), err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_memset(g_cu, m->d_lout, 0xff, m->nl * 4, err, sizeof err), HATTN_OK);
  CHECK(hattn__cuda_sync(g_cu, err, sizeof err) == HATTN_OK, "%s", err);
}

/* Download the outputs and compare them with the float64 merge. */
static void merge_io_check(merge_io *m, const char *what) {
  char err[512];
  double *xo = malloc(m->no * 8), *xl = malloc(m->nl * 8), *rl = malloc(m->nl * 8);
  double tol = m->dt == HATTN_DTYPE_FP32 ? 1e-5 : m->dt == HATTN_DTYPE_FP16 ? 2e-3 : 1.5e-2;
  size_t row, d;
  ck_assert(xo && xl && rl);
  ck_assert_int_eq(hattn__cuda_download(g_cu, m->out, m->d_out, m->no * esize(m->dt), err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_download(g_cu, m->lout, m->d_lout, m->nl * 4, err, sizeof err), HATTN_OK);
  for (row = 0; row < m->nl; row++) {
    xl[row] = m->lout[row], rl[row] = m->rl[row];
    for (d = 0; d < (size_t)m->dims[3]; d++) xo[row * m->dims[3] + d] = get(m->out, row * m->dims[3] + d, m->dt);
    if (rl[row] == -INFINITY) {
      CHECK(xl[row] == -INFINITY, "%s: row %zu: LSE %g, expected -inf", what, row, xl[row]);
      for (d = 0; d < (size_t)m->dims[3]; d++) CHECK(xo[row * m->dims[3] + d] == 0, "%s: row %zu: O not 0", what, row);
      xl[row] = rl[row] = 0;
    }
  }
  CHECK(hattn__rel_error(xo, m->ro, m->no) < tol, "%s: O error %g", what, hattn__rel_error(xo, m->ro, m->no));
  CHECK(hattn__rel_error(xl, rl, m->nl) < 1e-5, "%s: LSE error %g", what, hattn__rel_error(xl, rl, m->nl));
  free(xo), free(xl), free(rl);
}

static void merge_io_free(merge_io *m) {
  int i;
  for (i = 0; i < m->np; i++) {
    hattn__cuda_free(g_cu, m->d_o[i]), hattn__cuda_free(g_cu, m->d_lse[i]);
    free(m->o[i]), free(m->lse[i]);
  }
  hattn__cuda_free(g_cu, m->d_out), hattn__cuda_free(g_cu, m->d_lout);
  free(m->out), free(m->lout), free(m->ro), free(m->rl);
}

/* hattn_merge on a non-blocking stream, 1, 2, 3 and 16 parts in each
** dtype, against the float64 merge; a host tensor is refused. */
START_TEST(test_merge_stream) {
  static const int nps[] = {1, 2, 3, 16};
  hattn_ctx *ctx = merge_ctx();
  const hattn__dtype dt = (hattn__dtype)(_i / 4);
  merge_io m;
  rng r = {g_seed ^ (0x3e00 + (uint64_t)_i)};
  char err[512], what[64];
  void *stream = NULL;
  DLTensor host;
  CHECK(hattn__cuda_stream_create(g_cu, &stream, err, sizeof err) == HATTN_OK, "stream: %s", err);
  merge_io_init(&m, nps[_i % 4], dt, 2, 5, 77, 72);
  merge_io_fresh(&m, &r);
  ck_assert_msg(hattn_merge(ctx, m.np, m.po, m.pl, &m.tout, &m.tlout, stream) == HATTN_OK, "merge: %s",
                hattn_errmsg(ctx));
  ck_assert_str_eq(hattn_errmsg(ctx), "");
  CHECK(hattn__cuda_stream_sync(g_cu, stream, err, sizeof err) == HATTN_OK, "%s", err);
  snprintf(what, sizeof what, "%d parts, dtype %d", m.np, (int)dt);
  merge_io_check(&m, what);
  host = m.tout, host.device.device_type = kDLCPU, host.data = m.out;
  ck_assert_int_eq(hattn_merge(ctx, m.np, m.po, m.pl, &host, &m.tlout, stream), HATTN_ESHAPE);
  ck_assert_msg(strstr(hattn_errmsg(ctx), "hattn_merge: o: on device type 1 id 0; this context runs on kDLCUDA 0"),
                "%s", hattn_errmsg(ctx));
  merge_io_free(&m);
  hattn__cuda_stream_destroy(g_cu, stream);
  hattn_close(ctx);
}
END_TEST

/* hattn_merge captured into a CUDA graph (after a first merge compiled the
** kernel): the capture writes nothing, each replay on fresh parts is
** right; so the merge allocates, copies and synchronises nothing. */
START_TEST(test_merge_graph) {
  hattn_ctx *ctx = merge_ctx();
  merge_io m;
  rng r = {g_seed ^ 0x3e99};
  char err[512], what[64];
  void *stream = NULL, *exec = NULL;
  size_t i;
  int rep, rc;
  CHECK(hattn__cuda_stream_create(g_cu, &stream, err, sizeof err) == HATTN_OK, "stream: %s", err);
  merge_io_init(&m, 3, HATTN_DTYPE_BF16, 1, 8, 200, 128);
  merge_io_fresh(&m, &r);
  ck_assert_int_eq(hattn_merge(ctx, m.np, m.po, m.pl, &m.tout, &m.tlout, stream), HATTN_OK);
  CHECK(hattn__cuda_stream_sync(g_cu, stream, err, sizeof err) == HATTN_OK, "%s", err);
  merge_io_fresh(&m, &r);
  rc = hattn__cuda_capture_begin(g_cu, stream, err, sizeof err);
  CHECK(rc == HATTN_OK, "capture: %s", err);
  ck_assert_int_eq(hattn_merge(ctx, m.np, m.po, m.pl, &m.tout, &m.tlout, stream), HATTN_OK);
  rc = hattn__cuda_capture_end(g_cu, stream, &exec, err, sizeof err);
  CHECK(rc == HATTN_OK, "end of capture: %s", err);
  CHECK(hattn__cuda_sync(g_cu, err, sizeof err) == HATTN_OK, "%s", err);
  ck_assert_int_eq(hattn__cuda_download(g_cu, m.out, m.d_out, m.no * 2, err, sizeof err), HATTN_OK);
  for (i = 0; i < m.no; i++) CHECK(((uint16_t *)m.out)[i] == 0xffff, "the capture wrote O[%zu]", i);
  for (rep = 0; rep < 3; rep++) {
    merge_io_fresh(&m, &r);
    CHECK(hattn__cuda_graph_launch(g_cu, exec, stream, err, sizeof err) == HATTN_OK, "graph launch: %s", err);
    CHECK(hattn__cuda_stream_sync(g_cu, stream, err, sizeof err) == HATTN_OK, "%s", err);
    snprintf(what, sizeof what, "merge graph replay %d", rep);
    merge_io_check(&m, what);
  }
  hattn__cuda_graph_destroy(g_cu, exec);
  merge_io_free(&m);
  hattn__cuda_stream_destroy(g_cu, stream);
  hattn_close(ctx);
}
END_TEST

/* End to end on the GPU: bf16 attention with the full pattern over
** K = [K1; K2] (300 keys cut at 112) is the merge of attention over each
** slice (views into K and V at a byte offset), against hattn_reference of
** the whole problem. */
START_TEST(test_merge_split_keys) {
  static const char text[] = "pattern p = full\n";
  hattn_ctx *ctx = merge_ctx();
  hattn_specfile *spec = NULL;
  hattn_kernel *kfull = NULL, *kp[2] = {NULL, NULL};
  hattn_problem pr = {2, 4, 2, 300, 300, 128, HATTN_BF16};
  const int64_t cut[3] = {0, 112, 300};
  run_io io;
  rng r = {g_seed ^ 0x3e5b};
  int64_t skp[2][4], stk[4];
  void *dop[2], *dlp[2];
  DLTensor tkp[2], tvp[2], top[2], tlp[2];
  const DLTensor *po[2], *pl[2];
  char err[512];
  int i, rc;
  ck_assert_int_eq(hattn_specfile_parse(ctx, text, strlen(text), "merge", &spec), HATTN_OK);
  rc = hattn_kernel_get(ctx, spec, "p", &pr, &kfull);
  CHECK(rc == HATTN_OK, "kernel: %s", hattn_errmsg(ctx));
  io_init(&io, 2, 4, 2, 300, 128);
  io_fresh(&io, &r);
  strides_of(0, 2, 300, 128, stk);
  for (i = 0; i < 2; i++) {
    hattn_problem pp = pr;
    pp.lk = cut[i + 1] - cut[i];
    rc = hattn_kernel_get(ctx, spec, "p", &pp, &kp[i]);
    CHECK(rc == HATTN_OK, "kernel: %s", hattn_errmsg(ctx));
    skp[i][0] = 2, skp[i][1] = 2, skp[i][2] = pp.lk, skp[i][3] = 128;
    dl_tensor(&tkp[i], io.dk, kDLCUDA, 1, 4, skp[i]), tkp[i].strides = stk;
    dl_tensor(&tvp[i], io.dv, kDLCUDA, 1, 4, skp[i]), tvp[i].strides = stk;
    tkp[i].byte_offset = tvp[i].byte_offset = (uint64_t)(cut[i] * 128 * 2);
    dop[i] = dev_alloc(io.nq * 2), dlp[i] = dev_alloc(io.nl * 4);
    dl_tensor(&top[i], dop[i], kDLCUDA, 1, 4, io.sq), dl_tensor(&tlp[i], dlp[i], kDLCUDA, 0, 3, io.sl);
    rc = hattn_forward(kp[i], &io.tq, &tkp[i], &tvp[i], &top[i], &tlp[i], NULL, NULL);
    CHECK(rc == HATTN_OK, "forward part %d: %s", i, hattn_errmsg(ctx));
    po[i] = &top[i], pl[i] = &tlp[i];
  }
  ck_assert_msg(hattn_merge(ctx, 2, po, pl, &io.to, &io.tl, NULL) == HATTN_OK, "merge: %s", hattn_errmsg(ctx));
  CHECK(hattn__cuda_sync(g_cu, err, sizeof err) == HATTN_OK, "%s", err);
  io_check(&io, kfull, NULL, "merge of two key slices");
  for (i = 0; i < 2; i++) hattn_kernel_destroy(kp[i]), hattn__cuda_free(g_cu, dop[i]), hattn__cuda_free(g_cu, dlp[i]);
  io_free(&io);
  hattn_kernel_destroy(kfull);
  hattn_specfile_destroy(spec);
  hattn_close(ctx);
}
END_TEST

/* ---- query and key offsets -------------------------------------------- */

/* A CUDA context of the public API and the bf16 kernel of MASK for B x H
** (HK kv heads) x LQ x LK x D. */
static hattn_kernel *offsets_kernel(hattn_ctx *ctx, const char *mask, int64_t B, int64_t H, int64_t HK,
                                    int64_t LQ, int64_t LK, int64_t D) {
  char text[256];
  hattn_specfile *spec = NULL;
  hattn_kernel *kern = NULL;
  hattn_problem pr;
  int rc;
  snprintf(text, sizeof text, "pattern p = %s\n", mask);
  ck_assert_int_eq(hattn_specfile_parse(ctx, text, strlen(text), "offsets", &spec), HATTN_OK);
  pr.batch = B, pr.heads = H, pr.kv_heads = HK, pr.lq = LQ, pr.lk = LK, pr.head_dim = D, pr.dtype = HATTN_BF16;
  rc = hattn_kernel_get(ctx, spec, "p", &pr, &kern);
  CHECK(rc == HATTN_OK, "kernel '%s': %s", mask, hattn_errmsg(ctx));
  hattn_specfile_destroy(spec);
  return kern;
}

typedef struct ocase {
  const char *mask;
  int64_t lq, lk, q_offset, k_offset;
  int docs;
} ocase;

/* Band masks take the closed-form key blocks (templates/cuda_common.cuh),
** the others the plan's lists. */
static const ocase g_ocases[] = {
  {"causal", 200, 300, 57, 0, 0},            /* a chunk of queries in the middle */
  {"causal", 300, 170, 10, 130, 0},          /* a slice of keys */
  {"causal", 150, 300, -70, 5, 0},           /* negative query positions see nothing */
  {"window(64)", 200, 256, 400, 300, 0},
  {"window(16, 16)", 190, 260, 3, 41, 0},
  {"sink(4) | window(32)", 160, 230, 500, 420, 0},
  {"chunk(48)", 200, 260, 30, 17, 0},
  {"causal & document", 130, 300, 100, 0, 1},
  {"document", 200, 260, 180, 0, 1},         /* queries past the keys are in no document */
  {"dilated(4, 3)", 150, 200, 170, 33, 0},
  {"causal with alibi", 130, 270, 190, 95, 0},
};

/* The bf16 kernel under offsets against hattn_reference. */
START_TEST(test_offsets_vs_reference) {
  const ocase *tc = &g_ocases[_i];
  hattn_ctx *ctx = merge_ctx();
  hattn_kernel *kern = offsets_kernel(ctx, tc->mask, 2, 4, 2, tc->lq, tc->lk, 128);
  hattn_inputs in;
  int64_t offs[4] = {0, tc->lk / 3, tc->lk / 3 + 40, tc->lk};
  run_io io;
  rng r = {g_seed ^ (0x0ff5 + (uint64_t)_i)};
  char what[256];
  int rc;
  memset(&in, 0, sizeof in);
  in.offsets_set = 1, in.q_offset = tc->q_offset, in.k_offset = tc->k_offset;
  if (tc->docs) in.doc_offsets = offs, in.ndocs = 3;
  io_init2(&io, 2, 4, 2, tc->lq, tc->lk, 128);
  io_fresh(&io, &r);
  rc = hattn_forward(kern, &io.tq, &io.tk, &io.tv, &io.to, &io.tl, &in, NULL);
  CHECK(rc == HATTN_OK, "forward '%s': %s", tc->mask, hattn_errmsg(ctx));
  snprintf(what, sizeof what, "'%s' lq %lld lk %lld q_offset %lld k_offset %lld", tc->mask, (long long)tc->lq,
           (long long)tc->lk, (long long)tc->q_offset, (long long)tc->k_offset);
  io_check(&io, kern, &in, what);
  io_free(&io);
  hattn_kernel_destroy(kern);
  hattn_close(ctx);
}
END_TEST

/* MASK over 300 x 300 with the keys cut at 112 and 207: each slice at its
** key offset (queries at q_offset 0), merged with hattn_merge, is the
** float64 reference of the whole problem. */
static void offsets_split_keys(const char *mask) {
  hattn_ctx *ctx = merge_ctx();
  hattn_kernel *kfull = offsets_kernel(ctx, mask, 2, 4, 2, 300, 300, 128), *kp[3];
  const int64_t cut[4] = {0, 112, 207, 300};
  run_io io;
  rng r = {g_seed ^ 0x0ff7};
  int64_t skp[3][4], stk[4];
  void *dop[3], *dlp[3];
  DLTensor tkp[3], tvp[3], top[3], tlp[3];
  const DLTensor *po[3], *pl[3];
  hattn_inputs in;
  char err[512], what[128];
  int i, rc;
  io_init(&io, 2, 4, 2, 300, 128);
  io_fresh(&io, &r);
  strides_of(0, 2, 300, 128, stk);
  for (i = 0; i < 3; i++) {
    kp[i] = offsets_kernel(ctx, mask, 2, 4, 2, 300, cut[i + 1] - cut[i], 128);
    skp[i][0] = 2, skp[i][1] = 2, skp[i][2] = cut[i + 1] - cut[i], skp[i][3] = 128;
    dl_tensor(&tkp[i], io.dk, kDLCUDA, 1, 4, skp[i]), tkp[i].strides = stk;
    dl_tensor(&tvp[i], io.dv, kDLCUDA, 1, 4, skp[i]), tvp[i].strides = stk;
    tkp[i].byte_offset = tvp[i].byte_offset = (uint64_t)(cut[i] * 128 * 2);
    dop[i] = dev_alloc(io.nq * 2), dlp[i] = dev_alloc(io.nl * 4);
    ck_assert_int_eq(hattn__cuda_memset(g_cu, dop[i], 0xff, io.nq * 2, err, sizeof err), HATTN_OK);
    ck_assert_int_eq(hattn__cuda_memset(g_cu, dlp[i], 0xff, io.nl * 4, err, sizeof err), HATTN_OK);
    dl_tensor(&top[i], dop[i], kDLCUDA, 1, 4, io.sq), dl_tensor(&tlp[i], dlp[i], kDLCUDA, 0, 3, io.sl);
    memset(&in, 0, sizeof in);
    in.offsets_set = 1, in.q_offset = 0, in.k_offset = cut[i];
    rc = hattn_forward(kp[i], &io.tq, &tkp[i], &tvp[i], &top[i], &tlp[i], &in, NULL);
    CHECK(rc == HATTN_OK, "forward '%s' part %d: %s", mask, i, hattn_errmsg(ctx));
    po[i] = &top[i], pl[i] = &tlp[i];
  }
  ck_assert_msg(hattn_merge(ctx, 3, po, pl, &io.to, &io.tl, NULL) == HATTN_OK, "merge: %s", hattn_errmsg(ctx));
  CHECK(hattn__cuda_sync(g_cu, err, sizeof err) == HATTN_OK, "%s", err);
  snprintf(what, sizeof what, "'%s': merge of three key slices at their offsets", mask);
  io_check(&io, kfull, NULL, what);
  for (i = 0; i < 3; i++) hattn_kernel_destroy(kp[i]), hattn__cuda_free(g_cu, dop[i]), hattn__cuda_free(g_cu, dlp[i]);
  io_free(&io);
  hattn_kernel_destroy(kfull);
  hattn_close(ctx);
}

START_TEST(test_offsets_split_keys) {
  offsets_split_keys("causal");
  offsets_split_keys("window(100)");
  offsets_split_keys("sink(4) | window(64)");
}
END_TEST

/* Query rows [S, S + N) of a 300 x 300 problem run alone at q_offset S over
** keys [0, KEND) are those rows of the float64 reference of the whole. */
static void offsets_query_chunk(const char *mask, int64_t s, int64_t n, int64_t kend) {
  hattn_ctx *ctx = merge_ctx();
  hattn_kernel *kfull = offsets_kernel(ctx, mask, 2, 4, 2, 300, 300, 128);
  hattn_kernel *kern = offsets_kernel(ctx, mask, 2, 4, 2, n, kend, 128);
  run_io io;
  rng r = {g_seed ^ 0x0ff9};
  int64_t sq[4] = {2, 4, n, 128}, sl[3] = {2, 4, n}, sk[4] = {2, 2, kend, 128}, stq[4], stk[4];
  DLTensor tq, tk, tv, to, tl, hq, hk, hv, ro, rl;
  void *dout, *dl;
  uint16_t *o = malloc((size_t)(2 * 4 * n * 128) * 2);
  float *lse = malloc((size_t)(2 * 4 * n) * 4);
  double *o64 = malloc((size_t)(2 * 4 * 300 * 128) * sizeof *o64), *l64 = malloc((size_t)(2 * 4 * 300) * sizeof *l64);
  double *xo = malloc((size_t)(2 * 4 * n * 128) * sizeof *xo), *xl = malloc((size_t)(2 * 4 * n) * sizeof *xl);
  double *wo = malloc((size_t)(2 * 4 * n * 128) * sizeof *wo), *wl = malloc((size_t)(2 * 4 * n) * sizeof *wl);
  hattn_inputs in;
  char err[512];
  int64_t bh, i, c;
  int rc;
  ck_assert(o && lse && o64 && l64 && xo && xl && wo && wl);
  io_init(&io, 2, 4, 2, 300, 128);
  io_fresh(&io, &r);
  strides_of(0, 4, 300, 128, stq);
  strides_of(0, 2, 300, 128, stk);
  dl_tensor(&tq, io.dq, kDLCUDA, 1, 4, sq), tq.strides = stq, tq.byte_offset = (uint64_t)(s * 128 * 2);
  dl_tensor(&tk, io.dk, kDLCUDA, 1, 4, sk), tk.strides = stk;
  dl_tensor(&tv, io.dv, kDLCUDA, 1, 4, sk), tv.strides = stk;
  dout = dev_alloc((size_t)(2 * 4 * n * 128) * 2), dl = dev_alloc((size_t)(2 * 4 * n) * 4);
  ck_assert_int_eq(hattn__cuda_memset(g_cu, dout, 0xff, (size_t)(2 * 4 * n * 128) * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_memset(g_cu, dl, 0xff, (size_t)(2 * 4 * n) * 4, err, sizeof err), HATTN_OK);
  dl_tensor(&to, dout, kDLCUDA, 1, 4, sq), dl_tensor(&tl, dl, kDLCUDA, 0, 3, sl);
  memset(&in, 0, sizeof in);
  in.offsets_set = 1, in.q_offset = s, in.k_offset = 0;
  rc = hattn_forward(kern, &tq, &tk, &tv, &to, &tl, &in, NULL);
  CHECK(rc == HATTN_OK, "forward '%s' chunk: %s", mask, hattn_errmsg(ctx));
  ck_assert_int_eq(hattn__cuda_download(g_cu, o, dout, (size_t)(2 * 4 * n * 128) * 2, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(hattn__cuda_download(g_cu, lse, dl, (size_t)(2 * 4 * n) * 4, err, sizeof err), HATTN_OK);
  dl_tensor(&hq, io.q, kDLCPU, 1, 4, io.sq), dl_tensor(&hk, io.k, kDLCPU, 1, 4, io.sk);
  dl_tensor(&hv, io.v, kDLCPU, 1, 4, io.sk);
  dl_tensor(&ro, o64, kDLCPU, 0, 4, io.sq), dl_tensor(&rl, l64, kDLCPU, 0, 3, io.sl);
  ro.dtype.bits = rl.dtype.bits = 64;
  rc = hattn_reference(kfull, &hq, &hk, &hv, &ro, &rl, NULL);
  CHECK(rc == HATTN_OK, "reference: %s", hattn_errmsg(ctx));
  for (bh = 0; bh < 8; bh++)
    for (i = 0; i < n; i++) {
      for (c = 0; c < 128; c++) {
        xo[(bh * n + i) * 128 + c] = get(o, (size_t)((bh * n + i) * 128 + c), HATTN_DTYPE_BF16);
        wo[(bh * n + i) * 128 + c] = o64[(bh * 300 + s + i) * 128 + c];
      }
      xl[bh * n + i] = lse[bh * n + i], wl[bh * n + i] = l64[bh * 300 + s + i];
    }
  {
    double eo = hattn__rel_error(xo, wo, (size_t)(8 * n * 128)), el = hattn__rel_error(xl, wl, (size_t)(8 * n));
    CHECK(eo < 1e-2 && el < 1e-2, "'%s' rows %lld..%lld alone: error O %g LSE %g (tolerance 1e-2)", mask,
          (long long)s, (long long)(s + n), eo, el);
  }
  hattn__cuda_free(g_cu, dout), hattn__cuda_free(g_cu, dl);
  free(o), free(lse), free(o64), free(l64), free(xo), free(xl), free(wo), free(wl);
  io_free(&io);
  hattn_kernel_destroy(kern);
  hattn_kernel_destroy(kfull);
  hattn_close(ctx);
}

START_TEST(test_offsets_query_chunk) {
  offsets_query_chunk("causal", 128, 100, 228);
  offsets_query_chunk("window(50)", 77, 90, 167);
  offsets_query_chunk("sink(4) | window(32)", 150, 64, 214);
  offsets_query_chunk("chunk(64)", 40, 130, 300);
}
END_TEST

static Suite *cuda_suite(void) {
  Suite *s = suite_create("cuda");
  TCase *tc = tcase_create("failures");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_fail_launch);
  tcase_add_test(tc, test_fail_plan);
  tcase_add_test(tc, test_fail_mismatch);
  tcase_add_test(tc, test_fail_open);
  tcase_add_test(tc, test_run_stream);
  tcase_add_test(tc, test_run_many);
  tcase_add_test(tc, test_run_graph);
  tcase_add_test(tc, test_run_graph_decode);
  tcase_add_test(tc, test_run_graph_varlen);
  tcase_add_loop_test(tc, test_merge_stream, 0, 12);
  tcase_add_test(tc, test_merge_graph);
  tcase_add_test(tc, test_merge_split_keys);
  tcase_add_loop_test(tc, test_offsets_vs_reference, 0, (int)(sizeof g_ocases / sizeof g_ocases[0]));
  tcase_add_test(tc, test_offsets_split_keys);
  tcase_add_test(tc, test_offsets_query_chunk);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  char err[1024];
  SRunner *sr;
  int failed, rc;

  rc = hattn__cuda_open(0, &g_cu, err, sizeof err);
  if (rc == HATTN_ENODEV || rc == HATTN_ENOTSUP) {
    printf("SKIP: %s\n", err);
    return 77;
  }
  if (rc != HATTN_OK) {
    printf("FAIL: hattn__cuda_open: %s\n", err);
    return 1;
  }
  g_seed = getenv("HATTN_TEST_SEED") ? strtoull(getenv("HATTN_TEST_SEED"), NULL, 0) : (uint64_t)time(NULL);
  printf("seed: %llu (set HATTN_TEST_SEED to replay)\n", (unsigned long long)g_seed);
  printf("device %s (%s, %d SMs), NVRTC %s\n", hattn__cuda_name(g_cu), hattn__cuda_arch(g_cu),
         hattn__cuda_sm_count(g_cu), hattn__nvrtc_version() ? hattn__nvrtc_version() : "?");
  fflush(stdout);

  sr = srunner_create(cuda_suite());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  hattn__cuda_close(g_cu);
  return failed == 0 ? 0 : 1;
}
