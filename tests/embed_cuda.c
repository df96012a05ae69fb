/*
** embed_cuda.c: the CUDA kernels that `hattn gen --backend cuda` wrote into
** hattn_prebuilt.c, registered with libhattnrt and looked up.  Built by
** tests/embed.sh against libhattnrt alone.  Where no GPU answers, hattn_open
** must fail with HATTN_ENODEV and say so (exit 77 after that check); with a
** GPU, every pattern of the spec must come back as a loaded "prebuilt"
** kernel for this device's arch, and a head dim that was not generated must
** be refused with HATTN_ENOTSUP, since libhattnrt compiles nothing.
**
**   embed_cuda SPEC HEAD_DIM
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hattn.h>

#include "hattn_prebuilt.h"

int main(int argc, char **argv) {
  hattn_options opt;
  hattn_ctx *ctx = NULL;
  hattn_specfile *spec = NULL;
  hattn_kernel *kern = NULL;
  hattn_problem pr = {1, 8, 8, 1000, 1000, 64, HATTN_BF16};
  char text[4096];
  size_t len;
  FILE *f;
  int i, st, nused = 0, rc = 1;

  if (argc != 3 || (f = fopen(argv[1], "rb")) == NULL) {
    fprintf(stderr, "usage: embed_cuda SPEC HEAD_DIM\n");
    return 2;
  }
  len = fread(text, 1, sizeof text, f);
  fclose(f);
  pr.head_dim = atoi(argv[2]);
  hattn_options_init(&opt);
  opt.backend = HATTN_BACKEND_CUDA;
  opt.db = "";
  st = hattn_open(&opt, &ctx);
  if (st == HATTN_ENODEV) {
    int ok = strstr(hattn_errmsg(ctx), "no CUDA") != NULL;
    printf("embed_cuda: %s\n", hattn_errmsg(ctx));
    hattn_close(ctx);
    return ok ? 77 : 1;
  }
  if (st != HATTN_OK) {
    fprintf(stderr, "embed_cuda: hattn_open: %s\n", hattn_errmsg(ctx));
    goto done;
  }
  if (hattn_add_prebuilt(ctx, model_gpu_kernels, model_gpu_NKERNELS, &nused) != HATTN_OK || nused == 0) {
    fprintf(stderr, "embed_cuda: registering: %s (%d kept)\n", hattn_errmsg(ctx), nused);
    goto done;
  }
  if (hattn_specfile_parse(ctx, text, len, argv[1], &spec) != HATTN_OK) {
    fprintf(stderr, "%s\n", hattn_errmsg(ctx));
    goto done;
  }
  for (i = 0; i < hattn_specfile_npatterns(spec); i++) {
    const char *name = hattn_specfile_pattern_name(spec, i);
    if ((st = hattn_kernel_get(ctx, spec, name, &pr, &kern)) != HATTN_OK) {
      fprintf(stderr, "embed_cuda: %s: %s\n", name, hattn_errmsg(ctx));
      goto done;
    }
    printf("embed_cuda: %-8s %s  %s\n", name, hattn_kernel_origin(kern), hattn_kernel_config(kern));
    if (strcmp(hattn_kernel_origin(kern), "prebuilt") != 0) goto done;
    hattn_kernel_destroy(kern);
    kern = NULL;
  }
  pr.head_dim += 64;
  st = hattn_kernel_get(ctx, spec, hattn_specfile_pattern_name(spec, 0), &pr, &kern);
  if (st != HATTN_ENOTSUP || strstr(hattn_errmsg(ctx), "libhattnrt does not compile") == NULL) {
    fprintf(stderr, "embed_cuda: an unregistered head dim gave %d: %s\n", st, hattn_errmsg(ctx));
    goto done;
  }
  rc = 0;
done:
  hattn_kernel_destroy(kern);
  hattn_specfile_destroy(spec);
  hattn_close(ctx);
  return rc;
}
