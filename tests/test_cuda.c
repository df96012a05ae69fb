/*
** test_cuda.c: what is the CUDA backend's own (runtime/cuda_driver.c): its
** error paths on the GPU, each with its code and message (launch checks,
** plans, a plan and a kernel that do not match, a device that does not
** exist).  The kernels' numbers against the float64 reference, for every
** pattern, shape and dtype, are in test_backend.c, the conformance suite
** of every backend.  Exits 77 (skip) when there is no driver or device, or
** when hattn was built without NVRTC.
**
** The tests run in one process (CK_NOFORK): a CUDA context does not survive
** fork(), and the module cache of the one device handle is shared by all
** tests.
*/
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "cuda.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

static hattn__cuda *g_cu;

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
  return hattn__cuda_launch(f->kern, f->plan, &f->shape, &f->q, &f->k, &f->v, &f->o, &f->l, NULL, err, errlen);
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

static Suite *cuda_suite(void) {
  Suite *s = suite_create("cuda");
  TCase *tc = tcase_create("failures");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_fail_launch);
  tcase_add_test(tc, test_fail_plan);
  tcase_add_test(tc, test_fail_mismatch);
  tcase_add_test(tc, test_fail_open);
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
