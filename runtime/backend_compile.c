/*
** backend_compile.c: the compile operations of the backend tables
** (backend.h), linked into libhattn only: CPU kernels as object files
** through LLVM (cpu_jit.c), CUDA kernels through the emitter and NVRTC.
** libhattnrt links backend_nocompile.c instead.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cuda.h"
#include "emit_cuda.h"
#include "kernel_cache.h"

/* ---- CPU ------------------------------------------------------------------------- */

int hattn__kc_cpu_object(const hattn__kernel_desc *desc, const hattn__cpu_config *cfg,
                         const char *fn_name, void **bytes, size_t *size, char *err, size_t errlen) {
  const char *tmp = getenv("TMPDIR");
  char path[4096];
  FILE *f = NULL;
  long n;
  int fd, rc;
  void *data = NULL;

  *bytes = NULL;
  *size = 0;
  snprintf(path, sizeof path, "%s/hattn-obj-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if ((fd = mkstemp(path)) < 0) {
    snprintf(err, errlen, "cannot create a temporary file in %s: %s", tmp && *tmp ? tmp : "/tmp",
             strerror(errno));
    return HATTN_EIO;
  }
  close(fd);
  rc = hattn__llvm_write_object(desc, cfg, fn_name, NULL, path, err, errlen);
  if (rc != HATTN_OK) goto done;
  rc = HATTN_EIO;
  if ((f = fopen(path, "rb")) == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 ||
      fseek(f, 0, SEEK_SET) != 0) {
    snprintf(err, errlen, "cannot read the object file %s back", path);
    goto done;
  }
  if ((data = malloc((size_t)n)) == NULL) {
    snprintf(err, errlen, "out of memory");
    rc = HATTN_ENOMEM;
    goto done;
  }
  if (fread(data, 1, (size_t)n, f) != (size_t)n) {
    snprintf(err, errlen, "cannot read the object file %s back", path);
    free(data);
    goto done;
  }
  *bytes = data;
  *size = (size_t)n;
  rc = HATTN_OK;
done:
  if (f) fclose(f);
  unlink(path);
  return rc;
}

/* The object file of the kernel, named after KEY, loaded as the table loads
** one from the database. */
static int cpu_compile(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, const char *key,
                       void **kern, char *err, size_t errlen) {
  char fn_name[64];
  void *obj = NULL;
  size_t size = 0;
  int rc;
  *kern = NULL;
  hattn__kc_cpu_fn_name(key, fn_name, sizeof fn_name);
  if ((rc = hattn__kc_cpu_object(desc, &cfg->cpu, fn_name, &obj, &size, err, errlen)) != HATTN_OK) return rc;
  rc = hattn__backend_cpu.load(dev, desc, cfg, key, obj, size, kern, err, errlen);
  free(obj);
  return rc;
}

/* ---- CUDA ------------------------------------------------------------------------ */

static int emit_nvrtc(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg, const char *name,
                      const char *arch, void **cubin, size_t *size, char *err, size_t errlen) {
  char *source = NULL;
  int rc = hattn__emit_cuda(desc, cfg, name, &source, err, errlen);
  if (rc != HATTN_OK) return rc;
  rc = hattn__nvrtc_compile(source, name, arch, cubin, size, err, errlen);
  free(source);
  return rc;
}

int hattn__cuda_kernel_get(hattn__cuda *cu, const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                           hattn__cuda_kernel **out, char *err, size_t errlen) {
  return hattn__cuda_kernel_build(cu, desc, cfg, emit_nvrtc, out, err, errlen);
}

static int cuda_compile(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, const char *key,
                        void **kern, char *err, size_t errlen) {
  (void)key;
  return hattn__cuda_kernel_get(dev, desc, &cfg->cuda, (hattn__cuda_kernel **)kern, err, errlen);
}

/* The merge kernel of DTYPE, emitted and compiled by NVRTC. */
static int merge_compile(hattn__dtype dtype, const char *name, const char *arch, void **cubin, size_t *size,
                         char *err, size_t errlen) {
  char *source = NULL;
  int rc = hattn__emit_cuda_merge(dtype, name, &source, err, errlen);
  if (rc != HATTN_OK) return rc;
  rc = hattn__nvrtc_compile(source, name, arch, cubin, size, err, errlen);
  free(source);
  return rc;
}

/* The CUDA table's merge operation (backend.h). */
static int cuda_merge(void *dev, int nparts, const hattn__tensor *o_parts, const hattn__tensor *lse_parts,
                      hattn__tensor *o, hattn__tensor *lse, hattn__dtype dtype, const int64_t dims[4], void *stream,
                      char *err, size_t errlen) {
  return hattn__cuda_merge(dev, merge_compile, nparts, o_parts, lse_parts, o, lse->data != NULL ? lse : NULL,
                           dtype, dims, stream, err, errlen);
}

/* The driver's device_open, kept when the CUDA table's entry is replaced. */
static int (*cuda_driver_open)(int ordinal, int threads, void **dev, char *err, size_t errlen);

/* Without NVRTC (built without it, or libnvrtc not loadable) libhattn opens
** no GPU at all and says why: HATTN_ENOTSUP with hattn__nvrtc_load's
** message.  libhattnrt, which compiles nothing either way, does open one. */
static int cuda_open(int ordinal, int threads, void **dev, char *err, size_t errlen) {
  int rc;
  *dev = NULL;
  if ((rc = hattn__nvrtc_load(err, errlen)) != HATTN_OK) return rc;
  return cuda_driver_open(ordinal, threads, dev, err, errlen);
}

void hattn__backend_register_compilers(void) {
  hattn__backend_cpu.compile = cpu_compile;
  hattn__backend_cpu.compiler_version = hattn__llvm_version;
  hattn__backend_cuda.compile = cuda_compile;
  hattn__backend_cuda.compiler_version = hattn__nvrtc_version;
  cuda_driver_open = hattn__backend_cuda.dev_open;
  hattn__backend_cuda.dev_open = cuda_open;
  hattn__backend_cpu.gen = hattn__backend_gen_cpu;
  hattn__backend_cuda.gen = hattn__backend_gen_cuda;
  hattn__backend_cuda.merge = cuda_merge;
}
