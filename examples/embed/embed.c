/*
** embed.c: a program that embeds hattn the way an inference engine would.
** Its kernels were generated when it was built (see the Makefile); it
** links libhattnrt, which compiles nothing, registers the kernels, and runs
** every pattern of the spec in fp32 and bf16 on fresh random inputs with
** poisoned outputs, checking each against hattn's float64 reference.
**
**   ./embed model.hattn
**   ./embed --db PATH model.hattn
**
** With --db the kernels are not registered: they must come from the kernel
** database at PATH, where libhattn stored them (hattn run/verify --db), and
** libhattnrt loads their object files itself.
**
** Exits 0 when every kernel matches (relative error below 1e-5 in fp32,
** 1e-2 in bf16), 1 otherwise.  The seed comes from the clock unless
** HATTN_TEST_SEED is set; it is printed either way.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hattn.h>

#include "kernels-bf16/hattn_prebuilt.h"
#include "kernels-fp32/hattn_prebuilt.h"

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif

static uint64_t rng_state;

static double uniform(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* float to bfloat16, rounding to nearest even. */
static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n + 1)) != NULL) {
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
      free(buf);
      buf = NULL;
    } else {
      *len = (size_t)n;
    }
  }
  fclose(f);
  return buf;
}

static void tensor(DLTensor *t, void *data, int dtype, int ndim, int64_t *shape) {
  memset(t, 0, sizeof *t);
  t->data = data;
  t->device.device_type = kDLCPU;
  t->ndim = ndim;
  t->dtype.code = dtype == HATTN_BF16 ? kDLBfloat : kDLFloat;
  t->dtype.bits = dtype == HATTN_FP32 ? 32 : dtype == -1 ? 64 : 16;
  t->dtype.lanes = 1;
  t->shape = shape;
}

/* Relative Frobenius error of N values of X (fp32 or bf16) against REF. */
static double rel_error(const void *x, int dtype, const double *ref, size_t n) {
  double num = 0, den = 0;
  size_t i;
  for (i = 0; i < n; i++) {
    double v;
    if (dtype == HATTN_FP32) {
      v = ((const float *)x)[i];
    } else {
      uint32_t u = (uint32_t)((const uint16_t *)x)[i] << 16;
      float f;
      memcpy(&f, &u, 4);
      v = f;
    }
    if (isnan(v)) return INFINITY;
    num += (v - ref[i]) * (v - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Run pattern NAME of SPEC in DTYPE with a kernel from ORIGIN ("prebuilt"
** or "db"); 0 when it matches the reference. */
static int run(hattn_ctx *ctx, hattn_specfile *spec, const char *name, int dtype, const char *origin) {
  const int64_t B = 2, H = 4, HK = 2, L = 333, D = HEAD_DIM;
  int64_t qshape[4] = {B, H, L, D}, kshape[4] = {B, HK, L, D}, lshape[3] = {B, H, L};
  int64_t docs[4] = {0, 100, 250, L};
  size_t nq = (size_t)(B * H * L * D), nk = (size_t)(B * HK * L * D), nl = (size_t)(B * H * L), i;
  size_t esz = dtype == HATTN_FP32 ? 4 : 2;
  hattn_problem prob = {B, H, HK, L, L, D, dtype};
  hattn_inputs in;
  hattn_kernel *kern = NULL;
  DLTensor tq, tk, tv, to, tl, rq, rl;
  unsigned char *q = malloc(nq * esz), *k = malloc(nk * esz), *v = malloc(nk * esz), *o = malloc(nq * esz);
  float *lse = malloc(nl * sizeof *lse);
  double *ro = malloc(nq * sizeof *ro), *rlse = malloc(nl * sizeof *rlse), eo, el, tol;
  int st, bad = 1;

  if (!q || !k || !v || !o || !lse || !ro || !rlse) {
    fprintf(stderr, "embed: out of memory\n");
    goto done;
  }
  for (i = 0; i < nq + 2 * nk; i++) {
    float f = (float)uniform();
    unsigned char *dst = i < nq ? q + i * esz : i < nq + nk ? k + (i - nq) * esz : v + (i - nq - nk) * esz;
    if (dtype == HATTN_FP32) memcpy(dst, &f, 4);
    else {
      uint16_t h = to_bf16(f);
      memcpy(dst, &h, 2);
    }
  }
  memset(o, 0xff, nq * esz);   /* NaN in fp32 and bf16 */
  memset(lse, 0xff, nl * sizeof *lse);
  memset(&in, 0, sizeof in);
  in.doc_offsets = docs;
  in.ndocs = 3;

  if ((st = hattn_kernel_get(ctx, spec, name, &prob, &kern)) != HATTN_OK) {
    fprintf(stderr, "embed: %s: %s\n", name, hattn_errmsg(ctx));
    goto done;
  }
  if (strcmp(hattn_kernel_origin(kern), origin) != 0) {
    fprintf(stderr, "embed: %s: the kernel came from '%s', not '%s'\n", name, hattn_kernel_origin(kern), origin);
    goto done;
  }
  tensor(&tq, q, dtype, 4, qshape);
  tensor(&tk, k, dtype, 4, kshape);
  tensor(&tv, v, dtype, 4, kshape);
  tensor(&to, o, dtype, 4, qshape);
  tensor(&tl, lse, HATTN_FP32, 3, lshape);
  if ((st = hattn_forward(kern, &tq, &tk, &tv, &to, &tl, &in, NULL)) != HATTN_OK) {
    fprintf(stderr, "embed: %s: forward: %s\n", name, hattn_errmsg(ctx));
    goto done;
  }
  tensor(&rq, ro, -1, 4, qshape);
  tensor(&rl, rlse, -1, 3, lshape);
  if ((st = hattn_reference(kern, &tq, &tk, &tv, &rq, &rl, &in)) != HATTN_OK) {
    fprintf(stderr, "embed: %s: reference: %s\n", name, hattn_errmsg(ctx));
    goto done;
  }
  eo = rel_error(o, dtype, ro, nq);
  el = rel_error(lse, HATTN_FP32, rlse, nl);
  tol = dtype == HATTN_FP32 ? 1e-5 : 1e-2;
  bad = !(eo < tol && el < tol);
  printf("%-7s %-4s %-8s %-26s O %.2e  LSE %.2e  %s\n", name, dtype == HATTN_FP32 ? "fp32" : "bf16", origin,
         hattn_kernel_config(kern), eo, el, bad ? "FAIL" : "ok");
done:
  hattn_kernel_destroy(kern);
  free(q), free(k), free(v), free(o), free(lse), free(ro), free(rlse);
  return bad;
}

int main(int argc, char **argv) {
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_specfile *spec = NULL;
  const char *seed = getenv("HATTN_TEST_SEED"), *db = NULL, *origin = "prebuilt";
  char *text = NULL;
  size_t len = 0;
  int i, fails = 0, rc = 1;

  if (argc == 4 && !strcmp(argv[1], "--db")) {
    db = argv[2];
    origin = "db";
    argv += 2;
  } else if (argc != 2) {
    fprintf(stderr, "usage: embed [--db PATH] SPEC\n");
    return 2;
  }
  rng_state = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL);
  printf("embed: hattn %s, seed %llu\n", hattn_version(), (unsigned long long)rng_state);
  hattn_options_init(&opt);
  opt.db = db ? db : "";       /* the registered kernels only, or the database only */
  if (hattn_open(&opt, &ctx) != HATTN_OK) {
    fprintf(stderr, "embed: hattn_open: %s\n", hattn_errmsg(ctx));
    goto done;
  }
  if (db == NULL && (model_fp32_register(ctx) != HATTN_OK || model_bf16_register(ctx) != HATTN_OK)) {
    fprintf(stderr, "embed: registering the kernels: %s\n", hattn_errmsg(ctx));
    goto done;
  }
  if ((text = read_file(argv[1], &len)) == NULL) {
    fprintf(stderr, "embed: cannot read %s\n", argv[1]);
    goto done;
  }
  if (hattn_specfile_parse(ctx, text, len, argv[1], &spec) != HATTN_OK) {
    fprintf(stderr, "%s\n", hattn_errmsg(ctx));
    goto done;
  }
  for (i = 0; i < hattn_specfile_npatterns(spec); i++) {
    fails += run(ctx, spec, hattn_specfile_pattern_name(spec, i), HATTN_FP32, origin);
    fails += run(ctx, spec, hattn_specfile_pattern_name(spec, i), HATTN_BF16, origin);
  }
  printf("embed: %d of %d kernels match the reference\n", 2 * hattn_specfile_npatterns(spec) - fails,
         2 * hattn_specfile_npatterns(spec));
  rc = fails ? 1 : 0;
done:
  hattn_specfile_destroy(spec);
  hattn_close(ctx);
  free(text);
  return rc;
}
