/*
** test_elf.c: the object file loader (runtime/elf_load.c).
**
** The host's kernels go through the loader in every CPU case of
** test_backend.c (the CPU backend's compile operation loads the object file
** LLVM writes, and its cases marked reload load a kernel back from its
** binary, as from the database).  Here, what is the loader's own: objects
** made by hattn__llvm_write_object for "x86-64-v3" (when the host has
** AVX2) and for the baseline "x86-64" (which calls fmaf, rintf and the half
** conversions through the loader's stubs) are loaded with hattn__elf_load,
** run through hattn__cpu_forward on odd shapes with fresh random inputs
** and poisoned outputs, and compared with the float64 reference: relative
** Frobenius error below 1e-5 for fp32 and 1e-2 for fp16/bf16.  Then a
** gcc-made fixture with what LLVM does not emit, malformed objects, each
** with its error code and message, and a few thousand random mutations of
** a real object that must fail cleanly or load.  The seed comes from the
** clock unless HATTN_TEST_SEED is set.  Where hattn was built without LLVM
** (nothing makes objects) the tests of LLVM's objects return early, saying
** why, and the gcc-made fixture is still loaded, run and mutated; off
** x86-64 everything but the HATTN_ENOTSUP check returns early and the
** program exits 77.
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hattn.h"
#include "cpu.h"
#include "cpu_config.h"
#include "elf_load.h"
#include "kernel_cache.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

static uint64_t g_seed;
static int g_vec = 8;           /* the host's, set in main */
static const char *g_skip;      /* why every test returns early, or NULL */

#include "testutil.h"

#define SKIP_IF_NEEDED()                                                     \
  do {                                                                       \
    if (g_skip) {                                                            \
      printf("SKIP %s: %s\n", __func__, g_skip);                             \
      return;                                                                \
    }                                                                        \
  } while (0)

/* ---- objects ----------------------------------------------------------- */

/* A kernel: its spec, description, configuration and object file. */
typedef struct kobj {
  hattn__spec *spec;
  hattn__kernel_desc desc;
  hattn__cpu_config cfg;
  char fn_name[64];
  void *bytes;
  size_t size;
} kobj;

static void kobj_free(kobj *k) {
  hattn__spec_destroy(k->spec);
  free(k->bytes);
  memset(k, 0, sizeof *k);
}

static int read_file(const char *path, void **bytes, size_t *size) {
  FILE *f = fopen(path, "rb");
  long n;
  int ok = 0;
  *bytes = NULL;
  if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (*bytes = malloc((size_t)n)) != NULL && fread(*bytes, 1, (size_t)n, f) == (size_t)n) {
    *size = (size_t)n;
    ok = 1;
  }
  if (f) fclose(f);
  return ok;
}

/* The object of MASK in DTYPE and D: for the host through
** hattn__kc_cpu_object when CPU is NULL, else through
** hattn__llvm_write_object for CPU with vectors of VEC floats. */
static void kobj_make(kobj *k, const char *mask, hattn__dtype dtype, int d, const char *cpu, int vec) {
  char text[512], err[1024];
  hattn__diags diags;
  int rc;

  memset(k, 0, sizeof *k);
  snprintf(text, sizeof text, "pattern p = %s\n", mask);
  memset(&diags, 0, sizeof diags);
  rc = hattn__spec_parse(text, strlen(text), "test", &k->spec, &diags);
  CHECK(rc == HATTN_OK, "spec '%s': %s", mask, diags.text ? diags.text : "?");
  hattn__diags_clear(&diags);
  k->desc.pattern = &k->spec->patterns[0];
  k->desc.dtype = dtype;
  k->desc.head_dim = d;
  hattn__cpu_config_default(d, vec, &k->cfg);
  snprintf(k->fn_name, sizeof k->fn_name, "hattn_test_%s_%d", hattn__dtype_name(dtype), d);
  if (cpu == NULL) {
    rc = hattn__kc_cpu_object(&k->desc, &k->cfg, k->fn_name, &k->bytes, &k->size, err, sizeof err);
    CHECK(rc == HATTN_OK, "object of '%s': %s", mask, err);
  } else {
    char path[] = "/tmp/hattn_test_elf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    rc = hattn__llvm_write_object(&k->desc, &k->cfg, k->fn_name, cpu, path, err, sizeof err);
    CHECK(rc == HATTN_OK, "object of '%s' for %s: %s", mask, cpu, err);
    CHECK(read_file(path, &k->bytes, &k->size), "cannot read %s back", path);
    remove(path);
  }
}

/* ---- running a loaded kernel -------------------------------------------- */

static hattn__pool *g_pool;

/* The pool is made in each test's process (Check forks; threads do not
** survive a fork). */
static void pool_setup(void) {
  if (g_skip) return;
  ck_assert_int_eq(hattn__pool_create(2, &g_pool), HATTN_OK);
}

static void pool_teardown(void) {
  hattn__pool_destroy(g_pool);
  g_pool = NULL;
}

typedef struct shape_case {
  int64_t b, h, hk, lq, lk;
} shape_case;

/* Run FN (the kernel of K) on SC with fresh inputs and compare with the
** reference. */
static void run_kernel(const kobj *k, hattn__cpu_fn fn, const shape_case *sc, uint64_t salt) {
  char err[1024];
  const hattn__dtype dt = k->desc.dtype;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__tensor tq, tk, tv, to, tl;
  int64_t B = sc->b, H = sc->h, HK = sc->hk, LQ = sc->lq, LK = sc->lk, D = k->desc.head_dim;
  int64_t nq = B * H * LQ * D, nk = B * HK * LK * D, nl = B * H * LQ, i, *offs = NULL;
  int esz = hattn__dtype_size(dt), rc;
  void *q, *kk, *v, *o;
  float *lse;
  double *rq, *rk, *rv, *ro, *rl, *xo, *xl, eo, el = 0, tol;
  rng r;

  r.s = g_seed ^ (salt * UINT64_C(0x2545f4914f6cdd1d));
  rng_next(&r);
  shape.batch = B;
  shape.heads = H;
  shape.kv_heads = HK;
  shape.lq = LQ;
  shape.lk = LK;
  shape.head_dim = D;
  memset(&env, 0, sizeof env);
  env.lq = LQ;
  env.lk = LK;
  env.batch = B;
  env.heads = H;
  hattn__tensor_strides(&shape, &tq, &tk, &tv, &to, &tl);

  q = malloc((size_t)nq * (size_t)esz + 1);
  o = malloc((size_t)nq * (size_t)esz + 1);
  kk = malloc((size_t)nk * (size_t)esz + 1);
  v = malloc((size_t)nk * (size_t)esz + 1);
  lse = malloc((size_t)(nl + 1) * sizeof *lse);
  rq = malloc((size_t)(nq + 1) * sizeof *rq);
  ro = malloc((size_t)(nq + 1) * sizeof *ro);
  xo = malloc((size_t)(nq + 1) * sizeof *xo);
  rk = malloc((size_t)(nk + 1) * sizeof *rk);
  rv = malloc((size_t)(nk + 1) * sizeof *rv);
  rl = malloc((size_t)(nl + 1) * sizeof *rl);
  xl = malloc((size_t)(nl + 1) * sizeof *xl);
  ck_assert(q && o && kk && v && lse && rq && ro && xo && rk && rv && rl && xl);
  for (i = 0; i < nq; i++) rq[i] = put(q, (size_t)i, dt, 2.0 * rng_unit(&r));
  for (i = 0; i < nk; i++) {
    rk[i] = put(kk, (size_t)i, dt, 2.0 * rng_unit(&r));
    rv[i] = put(v, (size_t)i, dt, rng_unit(&r));
  }
  tq.data = q;
  tk.data = kk;
  tv.data = v;
  to.data = o;
  tl.data = lse;
  if (k->desc.pattern->needs & HATTN_NEEDS_DOCUMENT) {
    int64_t pos = 0, n = 0;
    offs = malloc((size_t)(LK + 4) * sizeof *offs);
    ck_assert_ptr_nonnull(offs);
    offs[n++] = 0;
    while (pos < LK) {
      int64_t len = rng_range(&r, 0, 4) == 0 ? 1 : rng_range(&r, 1, 50);
      pos = pos + len < LK ? pos + len : LK;
      offs[n++] = pos;
    }
    env.doc_offsets = offs;
    env.ndocs = n - 1;
  }

  for (i = 0; i < nq; i++) put(o, (size_t)i, dt, NAN);
  for (i = 0; i < nl; i++) lse[i] = NAN;
  rc = hattn__cpu_forward(fn, &k->desc, &k->cfg, &shape, &env, &tq, &tk, &tv, &to, &tl, g_pool, err, sizeof err);
  CHECK(rc == HATTN_OK, "forward '%s': %s", k->desc.pattern->canon, err);
  rc = hattn__reference(k->desc.pattern, &shape, &env, 0, rq, rk, rv, ro, rl, err, sizeof err);
  CHECK(rc == HATTN_OK, "reference '%s': %s", k->desc.pattern->canon, err);
  for (i = 0; i < nq; i++) xo[i] = get(o, (size_t)i, dt);
  for (i = 0; i < nl; i++) {
    xl[i] = lse[i];
    if (isinf(rl[i])) {
      int64_t j;
      for (j = 0; j < D; j++) CHECK(xo[i * D + j] == 0.0, "'%s': empty row %lld has O %g", k->desc.pattern->canon,
                                    (long long)i, xo[i * D + j]);
      CHECK(xl[i] == -INFINITY, "'%s': empty row %lld has LSE %g", k->desc.pattern->canon, (long long)i, xl[i]);
    }
  }
  tol = dt == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2;
  eo = hattn__rel_error(xo, ro, (size_t)nq);
  CHECK(eo < tol, "'%s' (%s, d %lld, b %lld h %lld hk %lld lq %lld lk %lld): O error %g", k->desc.pattern->canon,
        hattn__dtype_name(dt), (long long)D, (long long)B, (long long)H, (long long)HK, (long long)LQ, (long long)LK,
        eo);
  el = hattn__rel_error(xl, rl, (size_t)nl);
  if (el >= tol && el < INFINITY) {
    /* As in test_cpu: LSE values near zero make the relative norm
    ** ill-conditioned; then each value must be within tol. */
    el = 0;
    for (i = 0; i < nl; i++)
      if (isfinite(rl[i])) {
        double dv = fabs(xl[i] - rl[i]) / fmax(1.0, fabs(rl[i]));
        if (dv > el) el = dv;
      }
  }
  CHECK(el < tol, "'%s' (%s, d %lld, lq %lld lk %lld): LSE error %g", k->desc.pattern->canon, hattn__dtype_name(dt),
        (long long)D, (long long)LQ, (long long)LK, el);

  free(offs);
  free(q);
  free(o);
  free(kk);
  free(v);
  free(lse);
  free(rq);
  free(ro);
  free(xo);
  free(rk);
  free(rv);
  free(rl);
  free(xl);
}

/* Load K, run it on every shape of SCS, unload. */
static void load_and_run(const kobj *k, const shape_case *scs, int n, uint64_t salt) {
  hattn__elf_image *im = NULL;
  void *fn = NULL;
  char err[1024];
  hattn__cpu_fn f;
  int rc, i;
  rc = hattn__elf_load(k->bytes, k->size, k->fn_name, &im, &fn, err, sizeof err);
  CHECK(rc == HATTN_OK, "load '%s' (%s, d %d): %s", k->desc.pattern->canon, hattn__dtype_name(k->desc.dtype),
        k->desc.head_dim, err);
  ck_assert_ptr_nonnull(im);
  ck_assert_ptr_nonnull(fn);
  memcpy(&f, &fn, sizeof f);
  for (i = 0; i < n; i++) run_kernel(k, f, &scs[i], salt * 16 + (uint64_t)i);
  hattn__elf_unload(im);
}

/* Odd shapes: Lq != Lk, not multiples of any tile, GQA. */
static const shape_case g_shapes[] = {
    {2, 4, 2, 77, 131},
    {1, 3, 1, 150, 93},
    {1, 2, 2, 1, 65},
};
#define NSHAPES ((int)(sizeof g_shapes / sizeof g_shapes[0]))

START_TEST(test_x86_64_v3) {
  kobj k;
  SKIP_IF_NEEDED();
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("bmi2")) {
    printf("SKIP test_x86_64_v3: the host has no AVX2\n");
    return;
  }
#endif
  kobj_make(&k, "causal & window(40) with softcap(20)", HATTN_DTYPE_FP32, 64, "x86-64-v3", 8);
  load_and_run(&k, g_shapes, NSHAPES, 100);
  kobj_free(&k);
  kobj_make(&k, "sink(4) | window(30)", HATTN_DTYPE_BF16, 128, "x86-64-v3", 8);
  load_and_run(&k, g_shapes, NSHAPES, 101);
  kobj_free(&k);
  kobj_make(&k, "document & causal", HATTN_DTYPE_FP16, 64, "x86-64-v3", 8);
  load_and_run(&k, g_shapes, NSHAPES, 102);
  kobj_free(&k);
}
END_TEST

/* The baseline CPU has no FMA, SSE4.1 or F16C: its kernels call fmaf,
** rintf, __extendhfsf2 and __truncsfhf2, which the loader resolves. */
START_TEST(test_x86_64_baseline) {
  kobj k;
  SKIP_IF_NEEDED();
  kobj_make(&k, "causal & window(40) with alibi", HATTN_DTYPE_FP16, 64, "x86-64", 8);
  ck_assert_ptr_nonnull(memmem(k.bytes, k.size, "__truncsfhf2", 13));
  ck_assert_ptr_nonnull(memmem(k.bytes, k.size, "__extendhfsf2", 14));
  load_and_run(&k, g_shapes, NSHAPES, 200);
  kobj_free(&k);
  kobj_make(&k, "sink(4) | window(30) with softcap(5)", HATTN_DTYPE_FP32, 128, "x86-64", 8);
  load_and_run(&k, g_shapes, NSHAPES, 201);
  kobj_free(&k);
}
END_TEST

/* A small object of gcc's, to cover what LLVM does not emit for the
** kernels: GOTPCRELX and REX_GOTPCRELX loads, R_X86_64_64 in a writable
** section, .bss (writable, 32-aligned), .eh_frame relocations, and
** _GLOBAL_OFFSET_TABLE_.  Made by gcc 12.2 -O1 -fPIC -fno-ident -c from:
**
**   #include <math.h>
**   #include <string.h>
**   extern float logf(float) __attribute__((noplt));
**   int counter;
**   static float scratch[64];
**   static const float table[4] = {1.5f, 2.5f, 3.5f, 4.5f};
**   static float twice(float x) { return 2 * x; }
**   static float (*const fns[2])(float) = {expf, twice};
**   float elf_fixture(int i, float x) {
**     counter += 1;
**     memset(scratch, 0, sizeof scratch);
**     scratch[i & 63] = x;
**     return fns[i & 1](x) + table[i & 3] + logf(x) + tanhf(x) * (float)counter + scratch[(i + 1) & 63];
**   }
*/
static const unsigned char g_fixture[] = {
    0x7f,0x45,0x4c,0x46,0x02,0x01,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x01,0x00,0x3e,0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0xc8,0x04,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x40,0x00,0x00,0x00,0x00,0x00,0x40,0x00,0x0e,0x00,0x0d,0x00,
    0xf3,0x0f,0x58,0xc0,0xc3,0x41,0x55,0x41,0x54,0x55,0x53,0x48,0x83,0xec,0x18,0x89,
    0xfb,0x66,0x0f,0x7e,0xc5,0x4c,0x8b,0x2d,0x00,0x00,0x00,0x00,0x41,0x83,0x45,0x00,
    0x01,0x4c,0x8d,0x25,0x00,0x00,0x00,0x00,0xb9,0x20,0x00,0x00,0x00,0xb8,0x00,0x00,
    0x00,0x00,0x4c,0x89,0xe7,0xf3,0x48,0xab,0x89,0xd8,0x83,0xe0,0x3f,0xf3,0x41,0x0f,
    0x11,0x04,0x84,0x89,0xda,0x83,0xe2,0x01,0x48,0x8d,0x05,0x00,0x00,0x00,0x00,0xff,
    0x14,0xd0,0x89,0xda,0x83,0xe2,0x03,0x48,0x8d,0x05,0x00,0x00,0x00,0x00,0xf3,0x0f,
    0x58,0x04,0x90,0xf3,0x0f,0x11,0x44,0x24,0x08,0x66,0x0f,0x6e,0xc5,0xff,0x15,0x00,
    0x00,0x00,0x00,0xf3,0x0f,0x11,0x44,0x24,0x0c,0x66,0x0f,0x6e,0xc5,0xe8,0x00,0x00,
    0x00,0x00,0x0f,0x28,0xc8,0x66,0x0f,0xef,0xc0,0xf3,0x41,0x0f,0x2a,0x45,0x00,0xf3,
    0x0f,0x59,0xc1,0xf3,0x0f,0x10,0x4c,0x24,0x08,0xf3,0x0f,0x58,0x4c,0x24,0x0c,0xf3,
    0x0f,0x58,0xc1,0x83,0xc3,0x01,0x83,0xe3,0x3f,0xf3,0x41,0x0f,0x58,0x04,0x9c,0x48,
    0x83,0xc4,0x18,0x5b,0x5d,0x41,0x5c,0x41,0x5d,0xc3,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0xc0,0x3f,0x00,0x00,0x20,0x40,0x00,0x00,0x60,0x40,0x00,0x00,0x90,0x40,
    0x14,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x7a,0x52,0x00,0x01,0x78,0x10,0x01,
    0x1b,0x0c,0x07,0x08,0x90,0x01,0x00,0x00,0x10,0x00,0x00,0x00,0x1c,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x05,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x38,0x00,0x00,0x00,
    0x30,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0xb5,0x00,0x00,0x00,0x00,0x42,0x0e,0x10,
    0x8d,0x02,0x42,0x0e,0x18,0x8c,0x03,0x41,0x0e,0x20,0x86,0x04,0x41,0x0e,0x28,0x83,
    0x05,0x44,0x0e,0x40,0x02,0xa4,0x0e,0x28,0x41,0x0e,0x20,0x41,0x0e,0x18,0x42,0x0e,
    0x10,0x42,0x0e,0x08,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x01,0x00,0x00,0x00,0x04,0x00,0xf1,0xff,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x03,0x00,0x01,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x03,0x00,0x04,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x0b,0x00,0x00,0x00,0x02,0x00,0x01,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x05,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x11,0x00,0x00,0x00,0x01,0x00,0x04,0x00,0x20,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x19,0x00,0x00,0x00,0x01,0x00,0x05,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x1d,0x00,0x00,0x00,0x01,0x00,0x07,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x03,0x00,0x05,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x03,0x00,0x07,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x23,0x00,0x00,0x00,0x12,0x00,0x01,0x00,
    0x05,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0xb5,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x2f,0x00,0x00,0x00,0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x45,0x00,0x00,0x00,0x11,0x00,0x04,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x04,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x4d,0x00,0x00,0x00,0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x52,0x00,0x00,0x00,0x10,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x58,0x00,0x00,0x00,0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x66,0x69,0x78,0x74,0x75,0x72,0x65,
    0x2e,0x63,0x00,0x74,0x77,0x69,0x63,0x65,0x00,0x73,0x63,0x72,0x61,0x74,0x63,0x68,
    0x00,0x66,0x6e,0x73,0x00,0x74,0x61,0x62,0x6c,0x65,0x00,0x65,0x6c,0x66,0x5f,0x66,
    0x69,0x78,0x74,0x75,0x72,0x65,0x00,0x5f,0x47,0x4c,0x4f,0x42,0x41,0x4c,0x5f,0x4f,
    0x46,0x46,0x53,0x45,0x54,0x5f,0x54,0x41,0x42,0x4c,0x45,0x5f,0x00,0x63,0x6f,0x75,
    0x6e,0x74,0x65,0x72,0x00,0x6c,0x6f,0x67,0x66,0x00,0x74,0x61,0x6e,0x68,0x66,0x00,
    0x65,0x78,0x70,0x66,0x00,0x00,0x00,0x00,0x18,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x2a,0x00,0x00,0x00,0x0c,0x00,0x00,0x00,0xfc,0xff,0xff,0xff,0xff,0xff,0xff,0xff,
    0x24,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x02,0x00,0x00,0x00,0x03,0x00,0x00,0x00,
    0x1c,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x4b,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x02,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0xfc,0xff,0xff,0xff,0xff,0xff,0xff,0xff,
    0x5a,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x02,0x00,0x00,0x00,0x09,0x00,0x00,0x00,
    0xfc,0xff,0xff,0xff,0xff,0xff,0xff,0xff,0x6f,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x29,0x00,0x00,0x00,0x0d,0x00,0x00,0x00,0xfc,0xff,0xff,0xff,0xff,0xff,0xff,0xff,
    0x7e,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x04,0x00,0x00,0x00,0x0e,0x00,0x00,0x00,
    0xfc,0xff,0xff,0xff,0xff,0xff,0xff,0xff,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x01,0x00,0x00,0x00,0x0f,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x08,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x00,0x00,0x00,0x02,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x20,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x02,0x00,0x00,0x00,0x02,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x34,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x02,0x00,0x00,0x00,0x02,0x00,0x00,0x00,
    0x05,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x2e,0x73,0x79,0x6d,0x74,0x61,0x62,
    0x00,0x2e,0x73,0x74,0x72,0x74,0x61,0x62,0x00,0x2e,0x73,0x68,0x73,0x74,0x72,0x74,
    0x61,0x62,0x00,0x2e,0x72,0x65,0x6c,0x61,0x2e,0x74,0x65,0x78,0x74,0x00,0x2e,0x64,
    0x61,0x74,0x61,0x00,0x2e,0x62,0x73,0x73,0x00,0x2e,0x72,0x65,0x6c,0x61,0x2e,0x64,
    0x61,0x74,0x61,0x2e,0x72,0x65,0x6c,0x2e,0x72,0x6f,0x00,0x2e,0x72,0x6f,0x64,0x61,
    0x74,0x61,0x00,0x2e,0x6e,0x6f,0x74,0x65,0x2e,0x47,0x4e,0x55,0x2d,0x73,0x74,0x61,
    0x63,0x6b,0x00,0x2e,0x72,0x65,0x6c,0x61,0x2e,0x65,0x68,0x5f,0x66,0x72,0x61,0x6d,
    0x65,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x20,0x00,0x00,0x00,0x01,0x00,0x00,0x00,
    0x06,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x40,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0xba,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x1b,0x00,0x00,0x00,0x04,0x00,0x00,0x00,
    0x40,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x68,0x03,0x00,0x00,0x00,0x00,0x00,0x00,0x90,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x0b,0x00,0x00,0x00,0x01,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x18,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x26,0x00,0x00,0x00,0x01,0x00,0x00,0x00,
    0x03,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0xfa,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x2c,0x00,0x00,0x00,0x08,0x00,0x00,0x00,
    0x03,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x20,0x01,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x20,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x36,0x00,0x00,0x00,0x01,0x00,0x00,0x00,
    0x03,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x31,0x00,0x00,0x00,0x04,0x00,0x00,0x00,
    0x40,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0xf8,0x03,0x00,0x00,0x00,0x00,0x00,0x00,0x30,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x0b,0x00,0x00,0x00,0x05,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x18,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x43,0x00,0x00,0x00,0x01,0x00,0x00,0x00,
    0x02,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x10,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x10,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x4b,0x00,0x00,0x00,0x01,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x20,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x60,0x00,0x00,0x00,0x01,0x00,0x00,0x00,
    0x02,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x20,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x68,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x5b,0x00,0x00,0x00,0x04,0x00,0x00,0x00,
    0x40,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x28,0x04,0x00,0x00,0x00,0x00,0x00,0x00,0x30,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x0b,0x00,0x00,0x00,0x09,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x18,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x00,0x00,0x00,0x02,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x88,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x80,0x01,0x00,0x00,0x00,0x00,0x00,0x00,
    0x0c,0x00,0x00,0x00,0x0a,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x18,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x09,0x00,0x00,0x00,0x03,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x08,0x03,0x00,0x00,0x00,0x00,0x00,0x00,0x5d,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x11,0x00,0x00,0x00,0x03,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x58,0x04,0x00,0x00,0x00,0x00,0x00,0x00,0x6a,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x01,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
    0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,
};

/* The protection of the mapping that holds ADDR, from /proc/self/maps
** ("r-xp"), or "" when it cannot be read. */
static void maps_perms(const void *addr, char perms[8]) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  perms[0] = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char p[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, p) == 3 && (uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
      snprintf(perms, 8, "%s", p);
      break;
    }
  }
  if (f) fclose(f);
}

START_TEST(test_gcc_fixture) {
  hattn__elf_image *im = NULL, *im2 = NULL;
  void *fn = NULL, *fn2 = NULL;
  float (*f)(int, float), (*f2)(int, float), y, want;
  char err[512], perms[8];
  int rc;
#if !defined(__x86_64__)
  printf("SKIP test_gcc_fixture: the loader is implemented for x86-64 only\n");
  return;
#endif
  rc = hattn__elf_load(g_fixture, sizeof g_fixture, "elf_fixture", &im, &fn, err, sizeof err);
  CHECK(rc == HATTN_OK, "load: %s", err);
  memcpy(&f, &fn, sizeof f);
  maps_perms(fn, perms);
  if (perms[0]) ck_assert_str_eq(perms, "r-xp");
  /* expf through a pointer table, the constant table, logf through the
  ** GOT, tanhf through a stub, the counter in .bss. */
  y = f(0, 0.5f);
  want = expf(0.5f) + 1.5f + logf(0.5f) + tanhf(0.5f) * 1.0f;
  CHECK(fabsf(y - want) <= 1e-5f * fabsf(want), "call 1: %g, expected %g", y, want);
  y = f(1, 2.0f);
  want = 4.0f + 2.5f + logf(2.0f) + tanhf(2.0f) * 2.0f;
  CHECK(fabsf(y - want) <= 1e-5f * fabsf(want), "call 2: %g, expected %g", y, want);
  y = f(6, 3.0f);
  want = expf(3.0f) + 3.5f + logf(3.0f) + tanhf(3.0f) * 3.0f;
  CHECK(fabsf(y - want) <= 1e-5f * fabsf(want), "call 3: %g, expected %g", y, want);
  /* A second image has its own counter. */
  rc = hattn__elf_load(g_fixture, sizeof g_fixture, "elf_fixture", &im2, &fn2, err, sizeof err);
  CHECK(rc == HATTN_OK, "load: %s", err);
  ck_assert_ptr_ne(fn, fn2);
  memcpy(&f2, &fn2, sizeof f2);
  y = f2(0, 0.5f);
  want = expf(0.5f) + 1.5f + logf(0.5f) + tanhf(0.5f) * 1.0f;
  CHECK(fabsf(y - want) <= 1e-5f * fabsf(want), "second image: %g, expected %g", y, want);
  hattn__elf_unload(im2);
  hattn__elf_unload(im);
  rc = hattn__elf_load(g_fixture, sizeof g_fixture, "twice", &im, &fn, err, sizeof err);
  ck_assert_int_eq(rc, HATTN_ECOMPILE);
  ck_assert_str_eq(err, "no function 'twice' in the object file");
  rc = hattn__elf_load(g_fixture, sizeof g_fixture, "counter", &im, &fn, err, sizeof err);
  ck_assert_int_eq(rc, HATTN_ECOMPILE);
  ck_assert_str_eq(err, "'counter' in the object file is not a global function of an executable section");
}
END_TEST

/* ---- malformed objects --------------------------------------------------- */

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}
static void wr32(unsigned char *p, uint32_t v) {
  wr16(p, (uint16_t)v);
  wr16(p + 2, (uint16_t)(v >> 16));
}
static void wr64(unsigned char *p, uint64_t v) {
  wr32(p, (uint32_t)v);
  wr32(p + 4, (uint32_t)(v >> 32));
}

/* The header of section I of the (well-formed) object B. */
static unsigned char *shdr_at(unsigned char *b, int i) { return b + rd64(b + 40) + (size_t)i * 64; }

/* The first section of type TYPE, or -1. */
static int find_section(unsigned char *b, uint32_t type) {
  int i, n = rd16(b + 60);
  for (i = 1; i < n; i++)
    if (rd32(shdr_at(b, i) + 4) == type) return i;
  return -1;
}

static kobj g_small;   /* one real object for the failure tests */

static void small_setup(void) {
  if (g_skip) return;
  kobj_make(&g_small, "causal", HATTN_DTYPE_FP32, 64, NULL, g_vec);
}

static void small_teardown(void) {
  if (g_small.spec) kobj_free(&g_small);
}

/* Load a copy of the small object after EDIT changed it (CUT bytes kept,
** 0: all); return the status and the message. */
static int load_edited(void (*edit)(unsigned char *b), size_t cut, const char *fn_name, char *err,
                       size_t errlen) {
  unsigned char *b = malloc(g_small.size);
  hattn__elf_image *im = (hattn__elf_image *)1;
  void *fn = (void *)1;
  int rc;
  ck_assert_ptr_nonnull(b);
  memcpy(b, g_small.bytes, g_small.size);
  if (edit) edit(b);
  err[0] = 0;
  rc = hattn__elf_load(b, cut ? cut : g_small.size, fn_name ? fn_name : g_small.fn_name, &im, &fn, err, errlen);
  if (rc != HATTN_OK) {
    ck_assert_ptr_null(im);
    ck_assert_ptr_null(fn);
    ck_assert_msg(err[0] != 0, "no message for status %d", rc);
  }
  hattn__elf_unload(rc == HATTN_OK ? im : NULL);
  free(b);
  return rc;
}

#define EXPECT(call, code, text)                                                               \
  do {                                                                                         \
    char err_[1024];                                                                           \
    int rc_ = load_edited call;                                                                \
    (void)err_;                                                                                \
    ck_assert_msg(rc_ == (code), "%s: status %d, expected %d (%s)", #call, rc_, (code), err_); \
    ck_assert_msg(strstr(err_, (text)) != NULL, "%s: message '%s' lacks '%s'", #call, err_, (text)); \
  } while (0)

#define ERR err_, sizeof err_

static void ed_magic(unsigned char *b) { b[1] = 'X'; }
static void ed_elf32(unsigned char *b) { b[4] = 1; }
static void ed_big_endian(unsigned char *b) { b[5] = 2; }
static void ed_machine(unsigned char *b) { wr16(b + 18, 183); }
static void ed_exec(unsigned char *b) { wr16(b + 16, 2); }
static void ed_shoff(unsigned char *b) { wr64(b + 40, (uint64_t)g_small.size + 100); }
static void ed_shoff_huge(unsigned char *b) { wr64(b + 40, UINT64_MAX - 10); }
static void ed_shnum(unsigned char *b) { wr16(b + 60, 0xfff0); }
static void ed_section_size(unsigned char *b) {
  int t = find_section(b, 1); /* .text, the first PROGBITS */
  wr64(shdr_at(b, t) + 32, (uint64_t)g_small.size);
}
static void ed_section_offset(unsigned char *b) {
  int t = find_section(b, 1);
  wr64(shdr_at(b, t) + 24, UINT64_MAX - 4);
}
static void ed_align(unsigned char *b) {
  int t = find_section(b, 1);
  wr64(shdr_at(b, t) + 48, 24);
}
static void ed_align_big(unsigned char *b) {
  int t = find_section(b, 1);
  wr64(shdr_at(b, t) + 48, 8192);
}
static void ed_sym_name(unsigned char *b) {
  unsigned char *st = shdr_at(b, find_section(b, 2));
  wr32(b + rd64(st + 24) + 24, 0x7fffffff); /* symbol 1's name */
}
static void ed_sym_shndx(unsigned char *b) {
  unsigned char *st = shdr_at(b, find_section(b, 2));
  wr16(b + rd64(st + 24) + 24 + 6, 0x7000); /* symbol 1's section */
}
static void ed_no_symtab(unsigned char *b) { wr32(shdr_at(b, find_section(b, 2)) + 4, 0x12345678); }
static unsigned char *first_rela(unsigned char *b) {
  unsigned char *rs = shdr_at(b, find_section(b, 4));
  return b + rd64(rs + 24);
}
static void ed_reloc_type(unsigned char *b) { wr32(first_rela(b) + 8, 16); }
static void ed_reloc_sym(unsigned char *b) { wr32(first_rela(b) + 12, 99999); }
static void ed_reloc_offset(unsigned char *b) { wr64(first_rela(b), UINT64_MAX - 1); }
static void ed_reloc_32(unsigned char *b) {
  /* R_X86_64_32 against a constant: the image lies above 4 GiB. */
  unsigned char *r = first_rela(b);
  wr32(r + 8, 10);
}
static void ed_rel(unsigned char *b) { wr32(shdr_at(b, find_section(b, 4)) + 4, 9); }
static void ed_rela_target(unsigned char *b) { wr32(shdr_at(b, find_section(b, 4)) + 44, 999); }
static void ed_rela_entsize(unsigned char *b) { wr64(shdr_at(b, find_section(b, 4)) + 56, 16); }
/* .rela.text pointed at the symbol table, a section that is not loaded:
** its relocations would be skipped, the code left unpatched. */
static void ed_rela_unloaded_target(unsigned char *b) {
  wr32(shdr_at(b, find_section(b, 4)) + 44, (uint32_t)find_section(b, 2));
}
/* The symbol the loader hands out (global, in a section; a file symbol may
** share its name), or NULL. */
static unsigned char *entry_sym(unsigned char *b) {
  unsigned char *st = shdr_at(b, find_section(b, 2));
  unsigned char *str = shdr_at(b, (int)rd32(st + 40));
  size_t i, n = (size_t)(rd64(st + 32) / 24);
  for (i = 1; i < n; i++) {
    unsigned char *s = b + rd64(st + 24) + i * 24;
    if ((s[4] >> 4) == 1 && rd16(s + 6) != 0 && rd16(s + 6) < 0xff00 &&
        !strcmp((const char *)b + rd64(str + 24) + rd32(s), g_small.fn_name))
      return s;
  }
  return NULL;
}
/* The entry function moved to the end of its section: a jump past the code. */
static void ed_entry_at_end(unsigned char *b) {
  unsigned char *s = entry_sym(b);
  ck_assert_ptr_nonnull(s);
  wr64(s + 8, rd64(shdr_at(b, rd16(s + 6)) + 32));
}
static void ed_undefined(unsigned char *b) {
  unsigned char *p = memmem(b, g_small.size, "memset", 7);
  ck_assert_ptr_nonnull(p);
  memcpy(p, "mxmset", 6);
}
static void ed_tls(unsigned char *b) {
  unsigned char *s = shdr_at(b, find_section(b, 1));
  wr64(s + 8, rd64(s + 8) | 0x400);
}
static void ed_wx(unsigned char *b) {
  unsigned char *s = shdr_at(b, find_section(b, 1));
  wr64(s + 8, rd64(s + 8) | 0x1);
}
static void ed_init_array(unsigned char *b) {
  int i, ns = rd16(b + 60);
  for (i = ns - 1; i > 0; i--) /* a read-only data section */
    if (rd32(shdr_at(b, i) + 4) == 1 && (rd64(shdr_at(b, i) + 8) & 0x6) == 0x2) break;
  ck_assert_int_gt(i, 0);
  wr32(shdr_at(b, i) + 4, 14);
}
static void ed_strtab_unterminated(unsigned char *b) {
  /* The symbol string table's last byte, so that the last name runs out. */
  unsigned char *st = shdr_at(b, find_section(b, 2));
  unsigned char *str = shdr_at(b, (int)rd32(st + 40));
  b[rd64(str + 24) + rd64(str + 32) - 1] = 'x';
}

START_TEST(test_fail_inputs) {
  hattn__elf_image *im = (hattn__elf_image *)1;
  void *fn = (void *)1;
  char err[512];
#if !defined(__x86_64__)
  ck_assert_int_eq(hattn__elf_load("\177ELF", 4, "f", &im, &fn, err, sizeof err), HATTN_ENOTSUP);
  ck_assert_str_eq(err, "loading object files is implemented for x86-64 only");
  ck_assert_ptr_null(im);
  ck_assert_ptr_null(fn);
  return;
#endif
  ck_assert_int_eq(hattn__elf_load(NULL, 100, "f", &im, &fn, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "the object file is empty");
  ck_assert_ptr_null(im);
  ck_assert_ptr_null(fn);
  ck_assert_int_eq(hattn__elf_load(g_fixture, 0, "f", &im, &fn, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "the object file is empty");
  ck_assert_int_eq(hattn__elf_load(g_fixture, sizeof g_fixture, NULL, &im, &fn, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "no function name was given");
  hattn__elf_unload(NULL);
  /* A message cut to fit a small buffer. */
  ck_assert_int_eq(hattn__elf_load(g_fixture, 10, "f", &im, &fn, err, 8), HATTN_ECOMPILE);
  ck_assert_str_eq(err, "the obj");
}
END_TEST

START_TEST(test_fail_truncated) {
  size_t n = g_small.size;
  SKIP_IF_NEEDED();
  EXPECT((NULL, 10, NULL, ERR), HATTN_ECOMPILE,
         "the object file is truncated (10 bytes, shorter than the 64-byte ELF header)");
  EXPECT((NULL, 63, NULL, ERR), HATTN_ECOMPILE, "the object file is truncated (63 bytes");
  EXPECT((NULL, 64, NULL, ERR), HATTN_ECOMPILE,
         "the object file is truncated (the section header table ends at byte");
  EXPECT((NULL, n / 2, NULL, ERR), HATTN_ECOMPILE, "the object file is truncated (the section header table");
  EXPECT((NULL, n - 1, NULL, ERR), HATTN_ECOMPILE, "the object file is truncated (the section header table");
  EXPECT((ed_section_size, 0, NULL, ERR), HATTN_ECOMPILE, "the object file is truncated (section ");
  EXPECT((ed_section_offset, 0, NULL, ERR), HATTN_ECOMPILE, "ends at byte 18446744073709551615 of");
}
END_TEST

START_TEST(test_fail_headers) {
  SKIP_IF_NEEDED();
  EXPECT((ed_magic, 0, NULL, ERR), HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (no ELF magic number)");
  EXPECT((ed_elf32, 0, NULL, ERR), HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (ELF class 1, not ELF64)");
  EXPECT((ed_big_endian, 0, NULL, ERR), HATTN_ECOMPILE, "(not little-endian)");
  EXPECT((ed_machine, 0, NULL, ERR), HATTN_ECOMPILE,
         "not an x86-64 ELF64 relocatable object (machine 183, not x86-64)");
  EXPECT((ed_exec, 0, NULL, ERR), HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (file type 2, not ET_REL)");
  EXPECT((ed_shoff, 0, NULL, ERR), HATTN_ECOMPILE,
         "the object file is truncated (the section header table ends at byte");
  EXPECT((ed_shoff_huge, 0, NULL, ERR), HATTN_ECOMPILE, "the section header table ends at byte 18446744073709551615");
  EXPECT((ed_shnum, 0, NULL, ERR), HATTN_ECOMPILE, "the section header table ends at byte");
  EXPECT((ed_align, 0, NULL, ERR), HATTN_ECOMPILE, "has alignment 24, which is not a power of two");
  EXPECT((ed_align_big, 0, NULL, ERR), HATTN_ECOMPILE,
         "section .text asks for alignment 8192, more than the loader's 4096");
  EXPECT((ed_tls, 0, NULL, ERR), HATTN_ECOMPILE, "section .text holds thread-local data");
  EXPECT((ed_wx, 0, NULL, ERR), HATTN_ECOMPILE, "section .text is both writable and executable");
  EXPECT((ed_init_array, 0, NULL, ERR), HATTN_ECOMPILE, "holds constructors or destructors");
  EXPECT((ed_no_symtab, 0, NULL, ERR), HATTN_ECOMPILE, "the object file has no symbol table");
}
END_TEST

START_TEST(test_fail_symbols) {
  SKIP_IF_NEEDED();
  EXPECT((ed_sym_name, 0, NULL, ERR), HATTN_ECOMPILE,
         "symbol 1 has its name at byte 2147483647, outside the string table of");
  EXPECT((ed_strtab_unterminated, 0, NULL, ERR), HATTN_ECOMPILE, "outside the ");
  EXPECT((ed_sym_shndx, 0, NULL, ERR), HATTN_ECOMPILE, "is in section 28672, but there are");
  EXPECT((ed_undefined, 0, NULL, ERR), HATTN_ECOMPILE,
         "undefined symbol 'mxmset' (the loader resolves only memset, memcpy, memmove");
  EXPECT((NULL, 0, "hattn_no_such_kernel", ERR), HATTN_ECOMPILE,
         "no function 'hattn_no_such_kernel' in the object file");
  EXPECT((NULL, 0, "", ERR), HATTN_ECOMPILE, "no function '' in the object file");
  EXPECT((NULL, 0, "memset", ERR), HATTN_ECOMPILE, "no function 'memset' in the object file");
  /* Local symbols are not functions to hand out. */
  EXPECT((NULL, 0, ".LCPI0_0", ERR), HATTN_ECOMPILE, "no function '.LCPI0_0' in the object file");
}
END_TEST

START_TEST(test_fail_relocations) {
  SKIP_IF_NEEDED();
  EXPECT((ed_reloc_type, 0, NULL, ERR), HATTN_ECOMPILE,
         "unsupported relocation type 16 in .rela.text (relocation 0)");
  EXPECT((ed_reloc_sym, 0, NULL, ERR), HATTN_ECOMPILE,
         "relocation 0 in .rela.text names symbol 99999, but the symbol table has");
  EXPECT((ed_reloc_offset, 0, NULL, ERR), HATTN_ECOMPILE,
         "relocation 0 in .rela.text patches bytes 18446744073709551614 to "
         "18446744073709551615 of .text");
  EXPECT((ed_reloc_32, 0, NULL, ERR), HATTN_ECOMPILE, "relocation 0 in .rela.text (R_X86_64_32 against");
  EXPECT((ed_reloc_32, 0, NULL, ERR), HATTN_ECOMPILE, ") does not fit in 32 bits");
  EXPECT((ed_rel, 0, NULL, ERR), HATTN_ECOMPILE,
         "section .rela.text holds SHT_REL relocations; the loader supports SHT_RELA only");
  EXPECT((ed_rela_target, 0, NULL, ERR), HATTN_ECOMPILE,
         "relocation section .rela.text applies to section 999, which does not exist");
  EXPECT((ed_rela_entsize, 0, NULL, ERR), HATTN_ECOMPILE, "relocation section .rela.text has entries of 16 bytes");
}
END_TEST

/* Issue 12: a relocation section for a section that is not loaded was
** skipped, and an entry point at its section's end was accepted. */
START_TEST(test_fail_unloaded_reloc_target_and_entry_at_end) {
  SKIP_IF_NEEDED();
  EXPECT((ed_rela_unloaded_target, 0, NULL, ERR), HATTN_ECOMPILE,
         "relocation section .rela.text applies to .symtab, a section the loader does not load");
  EXPECT((ed_entry_at_end, 0, NULL, ERR), HATTN_ECOMPILE, "' is at the end of section .text");
  EXPECT((ed_entry_at_end, 0, NULL, ERR), HATTN_ECOMPILE, "not inside it");
}
END_TEST

/* ITERS random byte changes and truncations of the object ORIG of N bytes
** whose function is FN_NAME: each load fails with a message or succeeds
** (and is unloaded, never run).  Half the changes go to the parts that
** steer the loader: the ELF header, the section headers, the symbols and
** the relocations. */
static void mutate(const unsigned char *orig, size_t n, const char *fn_name, int iters, uint64_t salt) {
  size_t shoff, symoff, symsize, relaoff, relasize;
  unsigned char *b = malloc(n);
  int iter, ok = 0, failed = 0, st, rs;
  rng r;
  r.s = g_seed ^ salt;
  ck_assert_ptr_nonnull(b);
  memcpy(b, orig, n);
  shoff = (size_t)rd64(b + 40);
  st = find_section(b, 2);
  rs = find_section(b, 4);
  ck_assert(st > 0 && rs > 0);
  symoff = (size_t)rd64(shdr_at(b, st) + 24);
  symsize = (size_t)rd64(shdr_at(b, st) + 32);
  relaoff = (size_t)rd64(shdr_at(b, rs) + 24);
  relasize = (size_t)rd64(shdr_at(b, rs) + 32);
  for (iter = 0; iter < iters; iter++) {
    hattn__elf_image *im = NULL;
    void *fn = NULL;
    char err[512];
    size_t len = n;
    int j, nmut = (int)rng_range(&r, 1, 8), rc;
    memcpy(b, orig, n);
    for (j = 0; j < nmut; j++) {
      size_t at;
      switch (rng_range(&r, 0, 7)) {
      case 0: case 1: case 2: case 3: at = (size_t)rng_range(&r, 0, (int64_t)n - 1); break;
      case 4: at = (size_t)rng_range(&r, 0, 63); break;
      case 5: at = shoff + (size_t)rng_range(&r, 0, (int64_t)(n - shoff) - 1); break;
      case 6: at = symoff + (size_t)rng_range(&r, 0, (int64_t)symsize - 1); break;
      default: at = relaoff + (size_t)rng_range(&r, 0, (int64_t)relasize - 1); break;
      }
      switch (rng_range(&r, 0, 3)) {
      case 0: b[at] ^= (unsigned char)(1u << rng_range(&r, 0, 7)); break;
      case 1: b[at] = (unsigned char)rng_next(&r); break;
      case 2: b[at] = rng_range(&r, 0, 1) ? 0xff : 0; break;
      default: b[at] = (unsigned char)(b[at] + rng_range(&r, -2, 2)); break;
      }
    }
    if (rng_range(&r, 0, 9) == 0) len = (size_t)rng_range(&r, 1, (int64_t)n);
    rc = hattn__elf_load(b, len, fn_name, &im, &fn, err, sizeof err);
    if (rc == HATTN_OK) {
      ck_assert_ptr_nonnull(im);
      ck_assert_ptr_nonnull(fn);
      hattn__elf_unload(im);
      ok++;
    } else {
      CHECK(rc == HATTN_ECOMPILE || rc == HATTN_ENOMEM, "mutation %d: status %d (%s)", iter, rc, err);
      CHECK(im == NULL && fn == NULL && err[0], "mutation %d: status %d without a clean failure", iter, rc);
      failed++;
    }
  }
  printf("mutations of %s: %d loaded, %d failed cleanly\n", fn_name, ok, failed);
  free(b);
}

/* HATTN_TEST_MUTATIONS sets the count per object (default 3000). */
START_TEST(test_mutations) {
  int iters = getenv("HATTN_TEST_MUTATIONS") ? atoi(getenv("HATTN_TEST_MUTATIONS")) : 3000;
#if !defined(__x86_64__)
  printf("SKIP test_mutations: the loader is implemented for x86-64 only\n");
  return;
#endif
  mutate(g_fixture, sizeof g_fixture, "elf_fixture", iters, 0x5eed);
  SKIP_IF_NEEDED();
  mutate(g_small.bytes, g_small.size, g_small.fn_name, iters, 0x5eee);
}
END_TEST

static Suite *elf_suite(void) {
  Suite *s = suite_create("elf");
  TCase *tc = tcase_create("kernels"), *tf = tcase_create("failures");
  tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_x86_64_v3);
  tcase_add_test(tc, test_x86_64_baseline);
  tcase_add_test(tc, test_gcc_fixture);
  suite_add_tcase(s, tc);
  tcase_add_checked_fixture(tf, small_setup, small_teardown);
  tcase_set_timeout(tf, 600);
  tcase_add_test(tf, test_fail_inputs);
  tcase_add_test(tf, test_fail_truncated);
  tcase_add_test(tf, test_fail_headers);
  tcase_add_test(tf, test_fail_symbols);
  tcase_add_test(tf, test_fail_relocations);
  tcase_add_test(tf, test_fail_unloaded_reloc_target_and_entry_at_end);
  tcase_add_test(tf, test_mutations);
  suite_add_tcase(s, tf);
  return s;
}

int main(void) {
  const char *env = getenv("HATTN_TEST_SEED");
  const hattn__kc_host *host = NULL;
  char err[512];
  SRunner *sr;
  int failed;

  g_seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
  printf("seed: %" PRIu64 " (set HATTN_TEST_SEED to replay)\n", g_seed);
#if !defined(__x86_64__)
  g_skip = "the loader is implemented for x86-64 only";
#else
  if (hattn__llvm_version() == NULL) g_skip = "hattn was built without LLVM, so nothing makes object files";
#endif
  if (!g_skip) {
    if (hattn__kc_host_cpu(&host, err, sizeof err) != HATTN_OK) {
      printf("FAIL: hattn__kc_host_cpu: %s\n", err);
      return 1;
    }
    g_vec = host->vec;
    printf("host CPU %s, %d floats per vector\n", host->cpu, g_vec);
  }
  fflush(stdout);
  sr = srunner_create(elf_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
#if !defined(__x86_64__)
  if (failed == 0) return 77; /* nothing ran but the ENOTSUP check */
#endif
  return failed == 0 ? 0 : 1;
}
