/*
** engine.c: the smallest engine that embeds hattn.  Its kernels were
** written by hattn gen when it was built; it links libhattnrt (the runtime
** without LLVM and NVRTC), registers them, and runs every pattern of the
** spec once, in bf16 on random inputs, against hattn's float64 reference.
** From this folder, with hattn installed (the README's commands):
**
**   hattn gen model.hattn --cpu x86-64-v3 --dtype bf16 --head-dim 64 --name model --out kernels
**   cc engine.c kernels/hattn_prebuilt.c kernels/*.o `pkg-config --cflags --libs hattnrt` -o engine
**   ./engine model.hattn
**
** Exits 0 when every pattern's output is within 2e-2 of the reference, 1
** otherwise.  embed.c beside it is the fuller check (fp32 and bf16, the
** kernel database) that hattn's own make check runs.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hattn.h>

#include "kernels/hattn_prebuilt.h"   /* int model_register(hattn_ctx *) */

enum { B = 1, H = 4, HK = 2, L = 256, D = 64 };

/* A DLTensor over host memory: bf16, float32 or float64 (BITS 16, 32, 64). */
static DLTensor tensor(void *data, int bits, int ndim, int64_t *shape) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.ndim = ndim;
  t.dtype.code = bits == 16 ? kDLBfloat : kDLFloat;
  t.dtype.bits = (uint8_t)bits;
  t.dtype.lanes = 1;
  t.shape = shape;
  return t;
}

/* A random bf16 in [-1, 1): the upper half of a float32. */
static uint16_t random_bf16(void) {
  float f = (float)rand() / ((float)RAND_MAX + 1.0f) * 2.0f - 1.0f;
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Run pattern NAME of SPEC; 0 when it matches the reference. */
static int run(hattn_ctx *ctx, hattn_specfile *spec, const char *name) {
  static uint16_t q[B * H * L * D], k[B * HK * L * D], v[B * HK * L * D], o[B * H * L * D];
  static double ref[B * H * L * D];
  int64_t qshape[4] = {B, H, L, D}, kshape[4] = {B, HK, L, D};
  int64_t docs[3] = {0, 100, L};     /* two packed documents, for patterns that ask */
  hattn_problem prob = {B, H, HK, L, L, D, HATTN_BF16};
  hattn_inputs in;
  hattn_kernel *kern = NULL;
  DLTensor tq = tensor(q, 16, 4, qshape), tk = tensor(k, 16, 4, kshape), tv = tensor(v, 16, 4, kshape);
  DLTensor to = tensor(o, 16, 4, qshape), tr = tensor(ref, 64, 4, qshape);
  double worst = 0;
  size_t i;
  int bad = 1;

  for (i = 0; i < sizeof q / 2; i++) q[i] = random_bf16();
  for (i = 0; i < sizeof k / 2; i++) k[i] = random_bf16(), v[i] = random_bf16();
  memset(&in, 0, sizeof in);
  in.doc_offsets = docs;
  in.ndocs = 2;
  if (hattn_kernel_get(ctx, spec, name, &prob, &kern) != HATTN_OK ||
      hattn_forward(kern, &tq, &tk, &tv, &to, NULL, &in, NULL) != HATTN_OK ||
      hattn_reference(kern, &tq, &tk, &tv, &tr, NULL, &in) != HATTN_OK) {
    fprintf(stderr, "engine: %s: %s\n", name, hattn_errmsg(ctx));
    goto done;
  }
  for (i = 0; i < sizeof o / 2; i++) {
    double d = from_bf16(o[i]) - ref[i];
    if (d < 0) d = -d;
    if (!(d <= worst)) worst = d;    /* NaN included */
  }
  bad = !(worst < 2e-2);
  printf("%-8s kernel from %-8s (%s)  max |O - reference| %.1e  %s\n", name, hattn_kernel_origin(kern),
         hattn_kernel_config(kern), worst, bad ? "FAIL" : "ok");
done:
  hattn_kernel_destroy(kern);
  return bad;
}

int main(int argc, char **argv) {
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_specfile *spec = NULL;
  static char text[1 << 16];
  size_t len = 0;
  FILE *f;
  int i, fails = 0;

  if (argc != 2 || (f = fopen(argv[1], "rb")) == NULL) {
    fprintf(stderr, "usage: engine SPEC (a file that can be read)\n");
    return 2;
  }
  len = fread(text, 1, sizeof text, f);
  fclose(f);
  hattn_options_init(&opt);
  opt.db = "";                       /* no kernel database: the registered kernels only */
  if (hattn_open(&opt, &ctx) != HATTN_OK || model_register(ctx) != HATTN_OK ||
      hattn_specfile_parse(ctx, text, len, argv[1], &spec) != HATTN_OK) {
    fprintf(stderr, "engine: %s\n", hattn_errmsg(ctx));
    fails = 1;
  }
  for (i = 0; spec != NULL && i < hattn_specfile_npatterns(spec); i++)
    fails += run(ctx, spec, hattn_specfile_pattern_name(spec, i));
  hattn_specfile_destroy(spec);
  hattn_close(ctx);
  return fails ? 1 : 0;
}
