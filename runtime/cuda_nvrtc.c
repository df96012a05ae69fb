/*
** cuda_nvrtc.c: compiling generated CUDA source to a cubin with NVRTC.  See
** cuda.h.  The sources are self-contained (no #include), so no include path
** is passed; NVRTC needs no GPU.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "cuda.h"

#ifdef HATTN_HAVE_CUDA

#include <nvrtc.h>

/* Copy NVRTC's log of PROG after MSG into ERR. */
static void log_into(nvrtcProgram prog, const char *msg, char *err, size_t errlen) {
  size_t n = 0;
  char *log = NULL;
  if (nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) log = malloc(n);
  if (log != NULL && nvrtcGetProgramLog(prog, log) == NVRTC_SUCCESS)
    snprintf(err, errlen, "%s:\n%s", msg, log);
  else
    snprintf(err, errlen, "%s", msg);
  free(log);
}

int hattn__nvrtc_compile(const char *source, const char *name, const char *arch,
                         void **cubin, size_t *size, char *err, size_t errlen) {
  nvrtcProgram prog;
  nvrtcResult r;
  char archopt[64];
  const char *opts[3];
  size_t n = 0;
  void *bin = NULL;
  const char *c;

  *cubin = NULL;
  *size = 0;
  /* A real architecture ("sm_80", "sm_90a"): nvrtcGetCUBIN needs one. */
  if (arch == NULL || strncmp(arch, "sm_", 3) != 0 || strlen(arch) > 16 || arch[3] == 0) {
    snprintf(err, errlen, "bad CUDA architecture '%s' (expected e.g. sm_80 or sm_90a)",
             arch ? arch : "(null)");
    return HATTN_EINVAL;
  }
  for (c = arch + 3; *c; c++) {
    if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z'))) {
      snprintf(err, errlen, "bad CUDA architecture '%s' (expected e.g. sm_80 or sm_90a)", arch);
      return HATTN_EINVAL;
    }
  }
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  opts[0] = archopt;
  opts[1] = "-std=c++17";
  opts[2] = "-default-device";

  r = nvrtcCreateProgram(&prog, source, name ? name : "hattn_kernel.cu", 0, NULL, NULL);
  if (r != NVRTC_SUCCESS) {
    snprintf(err, errlen, "nvrtcCreateProgram failed: %s", nvrtcGetErrorString(r));
    return r == NVRTC_ERROR_OUT_OF_MEMORY ? HATTN_ENOMEM : HATTN_ECOMPILE;
  }
  r = nvrtcCompileProgram(prog, 3, opts);
  if (r != NVRTC_SUCCESS) {
    char msg[256];
    snprintf(msg, sizeof msg, "NVRTC could not compile %s for %s (%s)", name ? name : "the kernel",
             arch, nvrtcGetErrorString(r));
    log_into(prog, msg, err, errlen);
    nvrtcDestroyProgram(&prog);
    return HATTN_ECOMPILE;
  }
  r = nvrtcGetCUBINSize(prog, &n);
  if (r != NVRTC_SUCCESS || n == 0) {
    snprintf(err, errlen, "NVRTC produced no cubin for %s (%s)", arch,
             r != NVRTC_SUCCESS ? nvrtcGetErrorString(r) : "empty");
    nvrtcDestroyProgram(&prog);
    return HATTN_ECOMPILE;
  }
  bin = malloc(n);
  if (bin == NULL) {
    snprintf(err, errlen, "out of memory for a cubin of %zu bytes", n);
    nvrtcDestroyProgram(&prog);
    return HATTN_ENOMEM;
  }
  r = nvrtcGetCUBIN(prog, bin);
  nvrtcDestroyProgram(&prog);
  if (r != NVRTC_SUCCESS) {
    snprintf(err, errlen, "nvrtcGetCUBIN failed: %s", nvrtcGetErrorString(r));
    free(bin);
    return HATTN_ECOMPILE;
  }
  *cubin = bin;
  *size = n;
  return HATTN_OK;
}

static char version_buf[32];
static pthread_once_t version_once = PTHREAD_ONCE_INIT;

static void version_init(void) {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) == NVRTC_SUCCESS)
    snprintf(version_buf, sizeof version_buf, "%d.%d", major, minor);
}

const char *hattn__nvrtc_version(void) {
  pthread_once(&version_once, version_init);
  return version_buf[0] ? version_buf : NULL;
}

#else /* !HATTN_HAVE_CUDA */

int hattn__nvrtc_compile(const char *source, const char *name, const char *arch,
                         void **cubin, size_t *size, char *err, size_t errlen) {
  (void)source;
  (void)name;
  (void)arch;
  *cubin = NULL;
  *size = 0;
  snprintf(err, errlen, "hattn was built without NVRTC: the CUDA backend is off");
  return HATTN_ENOTSUP;
}

const char *hattn__nvrtc_version(void) { return NULL; }

#endif /* HATTN_HAVE_CUDA */
