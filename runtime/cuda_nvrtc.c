/*
** cuda_nvrtc.c: compiling generated CUDA source to a cubin with NVRTC.  See
** cuda.h.  The sources are self-contained (no #include), so no include path
** is passed; NVRTC needs no GPU.
**
** NVRTC is reached through dlopen, as the driver is (cuda_driver.c), and
** one list of entry points (nvrtc_functions.h): libhattn has no NEEDED
** entry for libnvrtc, so it loads on machines without the CUDA toolkit and
** runs its CPU backend there; only the CUDA backend says why it is off.
** The library tried is HATTN_NVRTC_LIBRARY when that is set (that file
** alone), else the soname of the toolkit that hattn was built with
** (HATTN_NVRTC_SONAME, "libnvrtc.so.13"), the same in that toolkit's
** directory (HATTN_NVRTC_DIR), then "libnvrtc.so".  NVRTC loads its own
** builtins library (libnvrtc-builtins) itself.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "cuda.h"

#ifdef HATTN_HAVE_CUDA

#include <dlfcn.h>
#include <nvrtc.h>

#ifndef HATTN_NVRTC_SONAME
#define HATTN_NVRTC_SONAME "libnvrtc.so"
#endif

/* NVRTC's entry points, one pointer each. */
typedef struct nvrtc_fns {
#define HATTN_NVRTC_FN(ret, name, params) ret(*name) params;
#include "nvrtc_functions.h"
#undef HATTN_NVRTC_FN
} nvrtc_fns;

/* Each pointer has the type of the function nvrtc.h declares (checked at
** compile time; sizeof does not evaluate, so nothing refers to libnvrtc). */
static inline void nvrtc_fns_typecheck(nvrtc_fns *f) {
#define HATTN_NVRTC_FN(ret, name, params) (void)sizeof(f->name = name);
#include "nvrtc_functions.h"
#undef HATTN_NVRTC_FN
}

static nvrtc_fns nv;                 /* every entry resolved, when loaded */
static int nv_loaded;                /* 1 once NVRTC is loaded */
static char nv_why[1024];            /* why it is not, otherwise */
static pthread_once_t nv_once = PTHREAD_ONCE_INIT;

/* Load NVRTC once per process into nv, else say why in nv_why.  The
** handle stays open for the life of the process. */
static void nv_load(void) {
  const char *env = getenv("HATTN_NVRTC_LIBRARY");
  const char *names[3];
  char indir[4096], first[768] = "";
  void *lib = NULL;
  const char *missing = NULL;
  int n = 0, i;

  (void)nvrtc_fns_typecheck;
  if (env != NULL && *env) {
    names[n++] = env;
  } else {
    names[n++] = HATTN_NVRTC_SONAME;
#ifdef HATTN_NVRTC_DIR
    snprintf(indir, sizeof indir, "%s/%s", HATTN_NVRTC_DIR, HATTN_NVRTC_SONAME);
    names[n++] = indir;
#else
    (void)indir;
#endif
    if (strcmp(HATTN_NVRTC_SONAME, "libnvrtc.so") != 0) names[n++] = "libnvrtc.so";
  }
  for (i = 0; i < n && lib == NULL; i++) {
    lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL && i == 0) {
      const char *why = dlerror();
      snprintf(first, sizeof first, "%s", why ? why : "dlopen failed");
    }
  }
  if (lib == NULL) {
    snprintf(nv_why, sizeof nv_why, "NVRTC (%s%s) could not be loaded: %s", names[0],
             env != NULL && *env ? ", named by HATTN_NVRTC_LIBRARY" : "", first);
    return;
  }
#define HATTN_NVRTC_FN(ret, name, params)                                     \
  {                                                                            \
    void *p_ = dlsym(lib, #name);                                              \
    if (p_ == NULL && missing == NULL) missing = #name;                        \
    memcpy(&nv.name, &p_, sizeof p_);                                          \
  }
#include "nvrtc_functions.h"
#undef HATTN_NVRTC_FN
  if (missing != NULL) {
    snprintf(nv_why, sizeof nv_why, "NVRTC (%s) could not be loaded: it lacks %s (NVRTC 11.1 or later is needed)",
             names[i - 1], missing);
    memset(&nv, 0, sizeof nv);
    dlclose(lib);
    return;
  }
  nv_loaded = 1;
}

int hattn__nvrtc_load(char *err, size_t errlen) {
  pthread_once(&nv_once, nv_load);
  if (nv_loaded) return HATTN_OK;
  snprintf(err, errlen,
           "%s; hattn needs it to compile CUDA kernels (install the CUDA toolkit's NVRTC, or name the library "
           "in HATTN_NVRTC_LIBRARY); the CPU backend works without it",
           nv_why);
  return HATTN_ENOTSUP;
}

/* Copy NVRTC's log of PROG after MSG into ERR. */
static void log_into(nvrtcProgram prog, const char *msg, char *err, size_t errlen) {
  size_t n = 0;
  char *log = NULL;
  if (nv.nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) log = malloc(n);
  if (log != NULL && nv.nvrtcGetProgramLog(prog, log) == NVRTC_SUCCESS)
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
  char *bin = NULL;
  const char *c;
  int rc;

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
  if ((rc = hattn__nvrtc_load(err, errlen)) != HATTN_OK) return rc;
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  opts[0] = archopt;
  opts[1] = "-std=c++17";
  opts[2] = "-default-device";

  r = nv.nvrtcCreateProgram(&prog, source, name ? name : "hattn_kernel.cu", 0, NULL, NULL);
  if (r != NVRTC_SUCCESS) {
    snprintf(err, errlen, "nvrtcCreateProgram failed: %s", nv.nvrtcGetErrorString(r));
    return r == NVRTC_ERROR_OUT_OF_MEMORY ? HATTN_ENOMEM : HATTN_ECOMPILE;
  }
  r = nv.nvrtcCompileProgram(prog, 3, opts);
  if (r != NVRTC_SUCCESS) {
    char msg[256];
    snprintf(msg, sizeof msg, "NVRTC could not compile %s for %s (%s)", name ? name : "the kernel",
             arch, nv.nvrtcGetErrorString(r));
    log_into(prog, msg, err, errlen);
    nv.nvrtcDestroyProgram(&prog);
    return HATTN_ECOMPILE;
  }
  r = nv.nvrtcGetCUBINSize(prog, &n);
  if (r != NVRTC_SUCCESS || n == 0) {
    snprintf(err, errlen, "NVRTC produced no cubin for %s (%s)", arch,
             r != NVRTC_SUCCESS ? nv.nvrtcGetErrorString(r) : "empty");
    nv.nvrtcDestroyProgram(&prog);
    return HATTN_ECOMPILE;
  }
  bin = malloc(n);
  if (bin == NULL) {
    snprintf(err, errlen, "out of memory for a cubin of %zu bytes", n);
    nv.nvrtcDestroyProgram(&prog);
    return HATTN_ENOMEM;
  }
  r = nv.nvrtcGetCUBIN(prog, bin);
  nv.nvrtcDestroyProgram(&prog);
  if (r != NVRTC_SUCCESS) {
    snprintf(err, errlen, "nvrtcGetCUBIN failed: %s", nv.nvrtcGetErrorString(r));
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
  pthread_once(&nv_once, nv_load);
  if (nv_loaded && nv.nvrtcVersion(&major, &minor) == NVRTC_SUCCESS)
    snprintf(version_buf, sizeof version_buf, "%d.%d", major, minor);
}

const char *hattn__nvrtc_version(void) {
  pthread_once(&version_once, version_init);
  return version_buf[0] ? version_buf : NULL;
}

#else /* !HATTN_HAVE_CUDA */

int hattn__nvrtc_load(char *err, size_t errlen) {
  snprintf(err, errlen, "hattn was built without NVRTC: the CUDA backend is off");
  return HATTN_ENOTSUP;
}

int hattn__nvrtc_compile(const char *source, const char *name, const char *arch,
                         void **cubin, size_t *size, char *err, size_t errlen) {
  (void)source;
  (void)name;
  (void)arch;
  *cubin = NULL;
  *size = 0;
  return hattn__nvrtc_load(err, errlen);
}

const char *hattn__nvrtc_version(void) { return NULL; }

#endif /* HATTN_HAVE_CUDA */
