/*
** installed_program.c: a program as a user of an installed hattn writes
** it, built by `make installcheck` with nothing but `pkg-config hattn`.
** With q = 0 every visible key scores the same, so each row of causal
** attention is the mean of the values it sees: checked exactly.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hattn.h>

#define L 5
#define D 4

static DLTensor tensor(float *data, int64_t *shape) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.ndim = 4;
  t.dtype.code = kDLFloat;
  t.dtype.bits = 32;
  t.dtype.lanes = 1;
  t.shape = shape;
  return t;
}

int main(void) {
  static const char text[] = "pattern p = causal\n";
  float q[L * D] = {0}, k[L * D], v[L * D], o[L * D];
  int64_t shape[4] = {1, 1, L, D};
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_specfile *spec = NULL;
  hattn_kernel *kern = NULL;
  hattn_problem prob = {1, 1, 1, L, L, D, HATTN_FP32};
  DLTensor tq = tensor(q, shape), tk = tensor(k, shape), tv = tensor(v, shape), to = tensor(o, shape);
  int i, j, c, rc = 1;

  for (i = 0; i < L * D; i++) k[i] = (float)((i * 7) % 11) / 11.0f, v[i] = (float)((i * 5) % 13) - 6.0f, o[i] = NAN;
  hattn_options_init(&opt);
  opt.db = "";
  if (hattn_open(&opt, &ctx) != HATTN_OK ||
      hattn_specfile_parse(ctx, text, strlen(text), "program", &spec) != HATTN_OK ||
      hattn_kernel_get(ctx, spec, "p", &prob, &kern) != HATTN_OK ||
      hattn_forward(kern, &tq, &tk, &tv, &to, NULL, NULL, NULL) != HATTN_OK) {
    fprintf(stderr, "installed_program: %s\n", hattn_errmsg(ctx));
    goto done;
  }
  for (i = 0; i < L; i++)
    for (c = 0; c < D; c++) {
      double mean = 0;
      for (j = 0; j <= i; j++) mean += v[j * D + c] / (i + 1);
      if (!(fabs(o[i * D + c] - mean) < 1e-5)) {
        fprintf(stderr, "installed_program: row %d col %d: %g, expected %g\n", i, c, o[i * D + c], mean);
        goto done;
      }
    }
  printf("installed_program: hattn %s from the installed library: causal rows are the means they should be\n",
         hattn_version());
  rc = 0;
done:
  hattn_kernel_destroy(kern);
  hattn_specfile_destroy(spec);
  hattn_close(ctx);
  return rc;
}
