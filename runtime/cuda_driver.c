/*
** cuda_driver.c: the CUDA backend's driver side (runtime/cuda.h): the
** driver API through dlopen("libcuda.so.1"), the per-device module cache,
** device memory, the plan and run-time tables in device memory, the launch
** and its timing.
**
** The driver's types are declared here, mirroring cuda.h's ABI (the
** toolkit's cuda.h cannot be included: runtime/cuda.h shadows it on the
** include path, and nothing here needs more than these few types).
*/
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "cuda.h"
#include "cuda_abi.h"
#include "plan.h"
#include "tables.h"

#include <dlfcn.h>

/* ---- the driver's ABI (cuda.h, CUDA 13; stable since CUDA 4) ------------ */

typedef int CUresult;                       /* CUDA_SUCCESS is 0 */
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;     /* CUdeviceptr_v2 on 64-bit hosts */
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUevent_st *CUevent;
typedef struct CUstream_st *CUstream;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;
typedef int CUdevice_attribute;
typedef int CUfunction_attribute;

enum {
  CUDA_SUCCESS = 0,
  CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8,
  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
  CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
  CU_EVENT_DEFAULT = 0,
  CU_STREAM_NON_BLOCKING = 1,
  CU_STREAM_CAPTURE_MODE_GLOBAL = 0,
  /* cuTensorMapEncodeTiled's enumerations (CUtensorMapDataType, ...) */
  CU_TENSOR_MAP_DATA_TYPE_FLOAT16 = 6,
  CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9,
  CU_TENSOR_MAP_INTERLEAVE_NONE = 0,
  CU_TENSOR_MAP_SWIZZLE_128B = 3,
  CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3,
  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0
};

/* Dynamic shared memory a kernel may use without opting in. */
#define SMEM_DEFAULT_LIMIT (48 * 1024)

/* Positions are 32-bit integers inside the kernels. */
#define MAX_LEN (INT64_C(1) << 30)

/* The driver's entry points, one pointer each. */
typedef struct cuda_fns {
#define HATTN_CUDA_FN(name, symbol, fallback, params) CUresult (*name) params;
#define HATTN_CUDA_FN_OPTIONAL(name, symbol, params) CUresult (*name) params;
#include "cuda_functions.h"
#undef HATTN_CUDA_FN_OPTIONAL
#undef HATTN_CUDA_FN
} cuda_fns;

struct hattn__cuda_kernel {
  struct hattn__cuda_kernel *next;   /* the device's cache, newest first */
  hattn__cuda *cu;
  char name[128];                    /* the entry point, the key of the cache */
  CUmodule module;
  CUfunction fn;
  CUfunction paged_fn;               /* NAME_paged: FN on paged K and V */
  CUfunction decode_fn, combine_fn;  /* NAME_decode and NAME_combine, or NULL in a module without them */
  hattn__dtype dtype;
  int head_dim;
  hattn__cuda_config cfg;
  size_t smem;                       /* dynamic shared memory per launch */
  void *cubin;                       /* what was loaded, for the database */
  size_t cubin_size;
};

struct hattn__cuda {
  void *lib;                         /* dlopen handle of libcuda.so.1 */
  cuda_fns f;
  CUdevice dev;
  CUcontext ctx;                     /* the primary context, retained */
  int ordinal, sm, sm_count, smem_optin, driver_version;
  char name[256];
  char arch[16];
  hattn__cuda_kernel *kernels;       /* owned: freed by hattn__cuda_close */
  CUmodule merge_module[3];          /* the merge kernel per dtype, once compiled; NULL before */
  CUfunction merge_fn[3];
};

struct hattn__cuda_plan {
  hattn__cuda *cu;
  hattn__shape shape;
  hattn__dtype dtype;
  int head_dim, block_m, block_n;
  int64_t nqb;
  /* Decode (1 <= lq <= HATTN_CUDA_DECODE_MAX_LQ): the decode kernels run,
  ** on a plan of 16 x hattn__cuda_decode_block_n blocks, with PACK query
  ** heads a tile, NTILES tiles a group and NSPLIT splits. */
  int decode, pack, ntiles, nsplit;
  CUdeviceptr mem;                   /* every table, in one allocation */
  CUdeviceptr split_mem;             /* the splits' O and LSE, or 0 */
  hattn_cuda_args args;              /* all but the tensors and their strides */
};

/* Write "CALL: NAME (description)" for driver error R into ERR. */
static int cu_fail(const hattn__cuda *cu, CUresult r, const char *call, int code, char *err,
                   size_t errlen) {
  const char *name = NULL, *text = NULL;
  if (cu->f.cuGetErrorName == NULL || cu->f.cuGetErrorName(r, &name) != CUDA_SUCCESS) name = NULL;
  if (cu->f.cuGetErrorString == NULL || cu->f.cuGetErrorString(r, &text) != CUDA_SUCCESS) text = NULL;
  snprintf(err, errlen, "%s failed: %s (%s)", call, name ? name : "CUDA error",
           text ? text : "unknown error code");
  if (name == NULL && text == NULL) {
    size_t n = strlen(err);
    snprintf(err + n, errlen > n ? errlen - n : 0, " %d", (int)r);
  }
  return code;
}

/* Evaluate driver call EXPR; on failure set rc to CODE, write the message
** and go to LABEL. */
#define CU_CHECK_CODE(cu, expr, call, code, label)                            \
  do {                                                                         \
    CUresult r_ = (expr);                                                      \
    if (r_ != CUDA_SUCCESS) {                                                  \
      rc = cu_fail((cu), r_, (call), (code), err, errlen);                     \
      goto label;                                                              \
    }                                                                          \
  } while (0)

/* A failed copy, launch or synchronisation is an input/output error. */
#define CU_CHECK(cu, expr, call, label) CU_CHECK_CODE(cu, expr, call, HATTN_EIO, label)

static CUdeviceptr dptr_of(const void *p) { return (CUdeviceptr)(uintptr_t)p; }
static void *ptr_of(CUdeviceptr d) { return (void *)(uintptr_t)d; }

/* ---- the device ----------------------------------------------------------- */

int hattn__cuda_open(int ordinal, hattn__cuda **out, char *err, size_t errlen) {
  hattn__cuda *cu;
  CUresult r;
  int count = 0, major = 0, minor = 0, rc;
  const char *missing = NULL;

  *out = NULL;
  cu = calloc(1, sizeof *cu);
  if (cu == NULL) {
    snprintf(err, errlen, "out of memory opening the CUDA device");
    return HATTN_ENOMEM;
  }
  cu->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (cu->lib == NULL) {
    const char *why = dlerror();
    if (why != NULL && strncmp(why, "libcuda.so.1", 12) == 0) /* dlerror names the file */
      snprintf(err, errlen, "no CUDA driver: %s", why);
    else
      snprintf(err, errlen, "no CUDA driver: libcuda.so.1: %s", why ? why : "cannot be loaded");
    rc = HATTN_ENODEV;
    goto fail_lib;
  }
  /* Resolve every entry point through the list macro. */
#define HATTN_CUDA_FN(name, symbol, fallback, params)                         \
  {                                                                            \
    void *p_ = dlsym(cu->lib, symbol);                                         \
    if (p_ == NULL) p_ = dlsym(cu->lib, fallback);                             \
    if (p_ == NULL && missing == NULL) missing = symbol;                       \
    memcpy(&cu->f.name, &p_, sizeof p_);                                       \
  }
#define HATTN_CUDA_FN_OPTIONAL(name, symbol, params)                           \
  {                                                                            \
    void *p_ = dlsym(cu->lib, symbol);                                         \
    memcpy(&cu->f.name, &p_, sizeof p_);                                       \
  }
#include "cuda_functions.h"
#undef HATTN_CUDA_FN_OPTIONAL
#undef HATTN_CUDA_FN
  if (missing != NULL) {
    snprintf(err, errlen, "no CUDA driver: libcuda.so.1 lacks %s (the driver is too old)", missing);
    rc = HATTN_ENODEV;
    goto fail_sym;
  }
  r = cu->f.cuInit(0);
  if (r != CUDA_SUCCESS) {
    char why[512];
    cu_fail(cu, r, "cuInit", 0, why, sizeof why);
    snprintf(err, errlen, "no CUDA device: %s", why);
    rc = HATTN_ENODEV;
    goto fail_sym;
  }
  r = cu->f.cuDeviceGetCount(&count);
  if (r != CUDA_SUCCESS) {
    char why[512];
    cu_fail(cu, r, "cuDeviceGetCount", 0, why, sizeof why);
    snprintf(err, errlen, "no CUDA device: %s", why);
    rc = HATTN_ENODEV;
    goto fail_sym;
  }
  if (count <= 0 || ordinal < 0 || ordinal >= count) {
    snprintf(err, errlen, "no CUDA device: device %d was asked for, and the driver sees %d", ordinal, count);
    rc = HATTN_ENODEV;
    goto fail_sym;
  }
  cu->ordinal = ordinal;
  cu->f.cuDriverGetVersion(&cu->driver_version);
#define OPEN_CHECK(expr, call)                                                 \
  do {                                                                         \
    CUresult r_ = (expr);                                                      \
    if (r_ != CUDA_SUCCESS) {                                                  \
      char why_[512];                                                          \
      cu_fail(cu, r_, (call), 0, why_, sizeof why_);                           \
      snprintf(err, errlen, "no CUDA device: %s", why_);                       \
      rc = HATTN_ENODEV;                                                       \
      goto fail_sym;                                                           \
    }                                                                          \
  } while (0)
  OPEN_CHECK(cu->f.cuDeviceGet(&cu->dev, ordinal), "cuDeviceGet");
  OPEN_CHECK(cu->f.cuDeviceGetName(cu->name, (int)sizeof cu->name - 1, cu->dev), "cuDeviceGetName");
  OPEN_CHECK(cu->f.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, cu->dev),
             "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)");
  OPEN_CHECK(cu->f.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, cu->dev),
             "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)");
  OPEN_CHECK(cu->f.cuDeviceGetAttribute(&cu->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, cu->dev),
             "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)");
  OPEN_CHECK(cu->f.cuDeviceGetAttribute(&cu->smem_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                        cu->dev),
             "cuDeviceGetAttribute(MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)");
  OPEN_CHECK(cu->f.cuDevicePrimaryCtxRetain(&cu->ctx, cu->dev), "cuDevicePrimaryCtxRetain");
#undef OPEN_CHECK
  r = cu->f.cuCtxSetCurrent(cu->ctx);
  if (r != CUDA_SUCCESS) {
    char why[512];
    cu_fail(cu, r, "cuCtxSetCurrent", 0, why, sizeof why);
    snprintf(err, errlen, "no CUDA device: %s", why);
    rc = HATTN_ENODEV;
    goto fail_ctx;
  }
  cu->sm = major * 10 + minor;
  if (cu->sm == 90) snprintf(cu->arch, sizeof cu->arch, "sm_90a");
  else snprintf(cu->arch, sizeof cu->arch, "sm_%d", cu->sm);
  *out = cu;
  return HATTN_OK;

fail_ctx:
  cu->f.cuDevicePrimaryCtxRelease(cu->dev);
fail_sym:
  dlclose(cu->lib);
fail_lib:
  free(cu);
  return rc;
}

void hattn__cuda_close(hattn__cuda *cu) {
  hattn__cuda_kernel *k, *next;
  int i;
  if (cu == NULL) return;
  cu->f.cuCtxSetCurrent(cu->ctx);
  for (k = cu->kernels; k != NULL; k = next) {
    next = k->next;
    cu->f.cuModuleUnload(k->module);
    free(k->cubin);
    free(k);
  }
  for (i = 0; i < 3; i++)
    if (cu->merge_module[i] != NULL) cu->f.cuModuleUnload(cu->merge_module[i]);
  cu->f.cuDevicePrimaryCtxRelease(cu->dev);
  dlclose(cu->lib);
  free(cu);
}

const char *hattn__cuda_name(const hattn__cuda *cu) { return cu->name; }
int hattn__cuda_sm(const hattn__cuda *cu) { return cu->sm; }
const char *hattn__cuda_arch(const hattn__cuda *cu) { return cu->arch; }
int hattn__cuda_sm_count(const hattn__cuda *cu) { return cu->sm_count; }

/* ---- kernels -------------------------------------------------------------- */

/* The kernel of DESC and CFG: from the device's cache, else loaded from
** GIVEN (GIVEN_SIZE bytes of cubin) when it is not NULL, else compiled by
** COMPILE.  The cache is keyed by the entry point's name, which names the
** pattern, dtype, head dim and config. */
static int kernel_get(hattn__cuda *cu, const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                      const void *given, size_t given_size, hattn__cuda_compile_fn compile,
                      hattn__cuda_kernel **out, char *err, size_t errlen) {
  hattn__cuda_kernel *k = NULL;
  char name[128];
  void *cubin = NULL;
  size_t cubin_size = 0, smem;
  int rc;

  assert(cu != NULL && desc != NULL && desc->pattern != NULL && cfg != NULL && out != NULL);
  *out = NULL;
  rc = hattn__cuda_config_check(desc, cfg, err, errlen);
  if (rc == HATTN_OK) rc = hattn__cuda_config_runs_on(cfg, cu->sm, cu->name, err, errlen);
  if (rc != HATTN_OK) return rc;
  hattn__cuda_kernel_name(desc, cfg, name, sizeof name);
  for (k = cu->kernels; k != NULL; k = k->next)
    if (strcmp(k->name, name) == 0) {
      *out = k;
      return HATTN_OK;
    }

  smem = hattn__cuda_smem_bytes(desc, cfg);
  if (smem > (size_t)cu->smem_optin) {
    snprintf(err, errlen,
             "the kernel needs %zu bytes of shared memory per block (block %dx%d, %d stages, head_dim %d), "
             "but %s allows at most %d",
             smem, cfg->block_m, cfg->block_n, cfg->stages, desc->head_dim, cu->name, cu->smem_optin);
    return HATTN_ENOTSUP;
  }
  if (given != NULL) {
    if ((cubin = malloc(given_size ? given_size : 1)) == NULL) {
      snprintf(err, errlen, "out of memory loading a CUDA kernel");
      return HATTN_ENOMEM;
    }
    memcpy(cubin, given, given_size);
    cubin_size = given_size;
  } else {
    rc = compile(desc, cfg, name, cu->arch, &cubin, &cubin_size, err, errlen);
    if (rc != HATTN_OK) return rc;
  }

  k = calloc(1, sizeof *k);
  if (k == NULL) {
    snprintf(err, errlen, "out of memory loading a CUDA kernel");
    rc = HATTN_ENOMEM;
    goto fail_cubin;
  }
  CU_CHECK(cu, cu->f.cuCtxSetCurrent(cu->ctx), "cuCtxSetCurrent", fail_kernel);
  CU_CHECK_CODE(cu, cu->f.cuModuleLoadData(&k->module, cubin), "cuModuleLoadData", HATTN_ECOMPILE, fail_kernel);
  CU_CHECK_CODE(cu, cu->f.cuModuleGetFunction(&k->fn, k->module, name), "cuModuleGetFunction", HATTN_ECOMPILE,
                fail_module);
  if (smem > SMEM_DEFAULT_LIMIT)
    CU_CHECK(cu, cu->f.cuFuncSetAttribute(k->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem),
             "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)", fail_module);
  /* The decode kernels, when the module has them (a cubin of an older
  ** hattn does not: its plans then take the forward kernel). */
  {
    char dname[160];
    snprintf(dname, sizeof dname, "%s_paged", name);
    if (cu->f.cuModuleGetFunction(&k->paged_fn, k->module, dname) != CUDA_SUCCESS) k->paged_fn = NULL;
    if (k->paged_fn != NULL && smem > SMEM_DEFAULT_LIMIT)
      CU_CHECK(cu, cu->f.cuFuncSetAttribute(k->paged_fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem),
               "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) of the paged kernel", fail_module);
    snprintf(dname, sizeof dname, "%s_decode", name);
    if (cu->f.cuModuleGetFunction(&k->decode_fn, k->module, dname) != CUDA_SUCCESS) k->decode_fn = NULL;
    snprintf(dname, sizeof dname, "%s_combine", name);
    if (cu->f.cuModuleGetFunction(&k->combine_fn, k->module, dname) != CUDA_SUCCESS) k->combine_fn = NULL;
    if (k->decode_fn == NULL || k->combine_fn == NULL) k->decode_fn = k->combine_fn = NULL;
    if (k->decode_fn != NULL && hattn__cuda_decode_smem_bytes(cfg, desc->head_dim) > SMEM_DEFAULT_LIMIT)
      CU_CHECK(cu,
               cu->f.cuFuncSetAttribute(k->decode_fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        (int)hattn__cuda_decode_smem_bytes(cfg, desc->head_dim)),
               "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) of the decode kernel", fail_module);
  }
  k->cubin = cubin;
  k->cubin_size = cubin_size;
  k->cu = cu;
  memcpy(k->name, name, sizeof name);
  k->dtype = desc->dtype;
  k->head_dim = desc->head_dim;
  k->cfg = *cfg;
  k->smem = smem;
  k->next = cu->kernels;
  cu->kernels = k;
  *out = k;
  return HATTN_OK;

fail_module:
  cu->f.cuModuleUnload(k->module);
fail_kernel:
  free(k);
fail_cubin:
  free(cubin);
  return rc;
}

int hattn__cuda_kernel_build(hattn__cuda *cu, const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                             hattn__cuda_compile_fn compile, hattn__cuda_kernel **out, char *err, size_t errlen) {
  assert(compile != NULL);
  return kernel_get(cu, desc, cfg, NULL, 0, compile, out, err, errlen);
}

int hattn__cuda_kernel_load(hattn__cuda *cu, const hattn__kernel_desc *desc,
                            const hattn__cuda_config *cfg, const void *cubin, size_t size,
                            hattn__cuda_kernel **out, char *err, size_t errlen) {
  assert(cubin != NULL);
  return kernel_get(cu, desc, cfg, cubin, size, NULL, out, err, errlen);
}

void hattn__cuda_kernel_cubin(const hattn__cuda_kernel *k, const void **cubin, size_t *size) {
  *cubin = k->cubin;
  *size = k->cubin_size;
}

/* ---- memory --------------------------------------------------------------- */

int hattn__cuda_alloc(hattn__cuda *cu, size_t bytes, void **dptr, char *err, size_t errlen) {
  CUdeviceptr d = 0;
  CUresult r;
  *dptr = NULL;
  if (bytes == 0) return HATTN_OK;
  cu->f.cuCtxSetCurrent(cu->ctx);
  r = cu->f.cuMemAlloc(&d, bytes);
  if (r != CUDA_SUCCESS) {
    char why[400];
    cu_fail(cu, r, "cuMemAlloc", 0, why, sizeof why);
    snprintf(err, errlen, "cannot allocate %zu bytes on %s: %s", bytes, cu->name, why);
    return HATTN_ENOMEM;
  }
  *dptr = ptr_of(d);
  return HATTN_OK;
}

void hattn__cuda_free(hattn__cuda *cu, void *dptr) {
  if (cu == NULL || dptr == NULL) return;
  cu->f.cuCtxSetCurrent(cu->ctx);
  cu->f.cuMemFree(dptr_of(dptr));
}

int hattn__cuda_upload(hattn__cuda *cu, void *dst, const void *src, size_t bytes, char *err,
                       size_t errlen) {
  int rc = HATTN_OK;
  if (bytes == 0) return HATTN_OK;
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuMemcpyHtoD(dptr_of(dst), src, bytes), "cuMemcpyHtoD", done);
done:
  return rc;
}

int hattn__cuda_download(hattn__cuda *cu, void *dst, const void *src, size_t bytes, char *err,
                         size_t errlen) {
  int rc = HATTN_OK;
  if (bytes == 0) return HATTN_OK;
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuMemcpyDtoH(dst, dptr_of(src), bytes), "cuMemcpyDtoH", done);
done:
  return rc;
}

int hattn__cuda_memset(hattn__cuda *cu, void *dst, int byte, size_t bytes, char *err, size_t errlen) {
  int rc = HATTN_OK;
  if (bytes == 0) return HATTN_OK;
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuMemsetD8(dptr_of(dst), (unsigned char)byte, bytes), "cuMemsetD8", done);
done:
  return rc;
}

int hattn__cuda_sync(hattn__cuda *cu, char *err, size_t errlen) {
  int rc = HATTN_OK;
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuCtxSynchronize(), "cuCtxSynchronize", done);
done:
  return rc;
}

/* ---- streams and graphs, for the tests ------------------------------------ */

/* HATTN_ENOTSUP naming FN when the driver lacks it. */
#define NEED_FN(cu, fn)                                                        \
  do {                                                                         \
    if ((cu)->f.fn == NULL) {                                                  \
      snprintf(err, errlen, "the CUDA driver lacks %s", #fn);                  \
      return HATTN_ENOTSUP;                                                    \
    }                                                                          \
  } while (0)

int hattn__cuda_stream_create(hattn__cuda *cu, void **stream, char *err, size_t errlen) {
  CUstream s = NULL;
  int rc = HATTN_OK;
  *stream = NULL;
  NEED_FN(cu, cuStreamCreate);
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate", done);
  *stream = s;
done:
  return rc;
}

void hattn__cuda_stream_destroy(hattn__cuda *cu, void *stream) {
  if (stream == NULL || cu->f.cuStreamDestroy == NULL) return;
  cu->f.cuCtxSetCurrent(cu->ctx);
  cu->f.cuStreamDestroy((CUstream)stream);
}

int hattn__cuda_stream_sync(hattn__cuda *cu, void *stream, char *err, size_t errlen) {
  int rc = HATTN_OK;
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuStreamSynchronize((CUstream)stream), "cuStreamSynchronize", done);
done:
  return rc;
}

int hattn__cuda_capture_begin(hattn__cuda *cu, void *stream, char *err, size_t errlen) {
  int rc = HATTN_OK;
  NEED_FN(cu, cuStreamBeginCapture);
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuStreamBeginCapture((CUstream)stream, CU_STREAM_CAPTURE_MODE_GLOBAL),
           "cuStreamBeginCapture", done);
done:
  return rc;
}

int hattn__cuda_capture_end(hattn__cuda *cu, void *stream, void **exec, char *err, size_t errlen) {
  CUgraph graph = NULL;
  CUgraphExec ge = NULL;
  int rc = HATTN_OK;
  *exec = NULL;
  NEED_FN(cu, cuStreamEndCapture);
  NEED_FN(cu, cuGraphInstantiateWithFlags);
  NEED_FN(cu, cuGraphDestroy);
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuStreamEndCapture((CUstream)stream, &graph), "cuStreamEndCapture", done);
  CU_CHECK(cu, cu->f.cuGraphInstantiateWithFlags(&ge, graph, 0), "cuGraphInstantiateWithFlags", fail_graph);
  *exec = ge;
fail_graph:
  cu->f.cuGraphDestroy(graph);
done:
  return rc;
}

int hattn__cuda_graph_launch(hattn__cuda *cu, void *exec, void *stream, char *err, size_t errlen) {
  int rc = HATTN_OK;
  NEED_FN(cu, cuGraphLaunch);
  cu->f.cuCtxSetCurrent(cu->ctx);
  CU_CHECK(cu, cu->f.cuGraphLaunch((CUgraphExec)exec, (CUstream)stream), "cuGraphLaunch", done);
done:
  return rc;
}

void hattn__cuda_graph_destroy(hattn__cuda *cu, void *exec) {
  if (exec == NULL || cu->f.cuGraphExecDestroy == NULL) return;
  cu->f.cuCtxSetCurrent(cu->ctx);
  cu->f.cuGraphExecDestroy((CUgraphExec)exec);
}

#undef NEED_FN

/* ---- the plan ------------------------------------------------------------- */

/* Whether a problem of SHAPE takes the decode kernels: 1 to
** HATTN_CUDA_DECODE_MAX_LQ queries, unless HATTN_CUDA_DECODE is "0" (the
** forward kernel then runs, for comparisons). */
static int decode_wanted(const hattn__shape *shape) {
  const char *env = getenv("HATTN_CUDA_DECODE");
  if (env != NULL && strcmp(env, "0") == 0) return 0;
  return shape->lq >= 1 && shape->lq <= HATTN_CUDA_DECODE_MAX_LQ;
}

/* The decode launch of CP for PLAN and CFG: query heads packed a tile (all
** of a KV head's, unless the plan is per head), tiles a group, and the
** splits of the key blocks: as many as fill the device's SMs CFG's split
** factor times (1 by default: a decode CTA takes most of an SM's shared
** memory), at least 2 blocks a warp each. */
static void decode_split(const hattn__cuda *cu, const hattn__cuda_config *cfg, hattn__cuda_plan *cp,
                         const hattn__plan *plan) {
  const int warps = hattn__cuda_decode_warps(cfg);
  const hattn__shape *s = &cp->shape;
  int64_t groups, ctas, nblocks = 0, nsplit, t;
  cp->pack = plan->ntables > 1 ? 1 : (int)(s->heads / s->kv_heads);
  cp->ntiles = (int)((cp->pack * s->lq + HATTN_CUDA_DECODE_ROWS - 1) / HATTN_CUDA_DECODE_ROWS);
  groups = s->heads / cp->pack;
  ctas = (int64_t)cp->ntiles * s->batch * groups;
  for (t = 0; t < plan->ntables; t++) {
    int64_t n = plan->full_off[t][1] - plan->full_off[t][0] + plan->partial_off[t][1] - plan->partial_off[t][0];
    if (n > nblocks) nblocks = n;
  }
  nsplit = cu->sm_count * hattn__cuda_decode_split(cfg) / ctas;
  if (nsplit > nblocks / (2 * warps)) nsplit = nblocks / (2 * warps);
  if (nsplit > 256) nsplit = 256;
  if (nsplit < 1) nsplit = 1;
  cp->nsplit = (int)nsplit;
}

int hattn__cuda_plan_create(hattn__cuda *cu, const hattn__kernel_desc *desc,
                            const hattn__cuda_config *cfg, const hattn__shape *shape,
                            const hattn__mask_env *env, hattn__cuda_plan **out,
                            char *err, size_t errlen) {
  const hattn__pattern *pat = desc->pattern;
  hattn__cuda_plan *cp = NULL;
  hattn__plan *plan = NULL;
  hattn__tables tb;
  int64_t B = shape->batch, H = shape->heads, HK = shape->kv_heads, LQ = shape->lq, LK = shape->lk;
  int rc, l;
  void *mem = NULL;

  assert(cu != NULL && desc != NULL && pat != NULL && cfg != NULL && shape != NULL && env != NULL);
  *out = NULL;
  memset(&tb, 0, sizeof tb);
  if (B < 1 || H < 1 || HK < 1 || H % HK != 0) {
    snprintf(err, errlen, "bad shape: batch %lld, heads %lld, kv_heads %lld (all positive, heads a multiple of kv_heads)",
             (long long)B, (long long)H, (long long)HK);
    return HATTN_ESHAPE;
  }
  if (LQ < 0 || LK < 0 || LQ >= MAX_LEN || LK >= MAX_LEN) {
    snprintf(err, errlen, "bad shape: sequence lengths %lld and %lld must be in [0, 2^30)", (long long)LQ,
             (long long)LK);
    return HATTN_ESHAPE;
  }
  if (shape->head_dim != desc->head_dim) {
    snprintf(err, errlen, "bad shape: head_dim %lld, but the kernel is for %d", (long long)shape->head_dim,
             desc->head_dim);
    return HATTN_ESHAPE;
  }
  if (B * H > 65535) {
    snprintf(err, errlen, "bad shape: batch x heads is %lld, above the CUDA grid's limit of 65535",
             (long long)(B * H));
    return HATTN_ESHAPE;
  }
  rc = hattn__env_check(env, shape, pat->lowered, err, errlen);
  if (rc != HATTN_OK) return rc;
  if ((pat->lowered->needs & HATTN_NEEDS_BLOCKS) && env->nlayouts > 4) {
    snprintf(err, errlen, "the CUDA backend takes at most 4 block layouts, the pattern has %d", env->nlayouts);
    return HATTN_ENOTSUP;
  }
  if (pat->lowered->nrandom > 4) {
    snprintf(err, errlen, "the CUDA backend takes at most 4 random() atoms in a pattern, it has %d",
             pat->lowered->nrandom);
    return HATTN_ENOTSUP;
  }

  cp = calloc(1, sizeof *cp);
  if (cp == NULL) {
    snprintf(err, errlen, "out of memory for the run-time tables of a CUDA plan");
    rc = HATTN_ENOMEM;
    goto fail_plan;
  }
  cp->cu = cu;
  cp->shape = *shape;
  cp->dtype = desc->dtype;
  cp->head_dim = desc->head_dim;
  cp->decode = decode_wanted(shape);
  cp->block_m = cp->decode ? HATTN_CUDA_DECODE_ROWS : cfg->block_m;
  cp->block_n = cp->decode ? hattn__cuda_decode_block_n(cfg, desc->head_dim) : cfg->block_n;

  rc = hattn__plan_build(pat->lowered, env, cp->block_m, cp->block_n, &plan, err, errlen);
  if (rc != HATTN_OK) goto fail_plan;
  cp->nqb = plan->nqb;
  if (cp->decode) decode_split(cu, cfg, cp, plan);

  /* The plan's lists and the run-time tables, in one buffer (tables.h). */
  rc = hattn__tables_build(pat, shape, env, plan, &tb, err, errlen);
  if (rc != HATTN_OK) goto fail_plan;

  rc = hattn__cuda_alloc(cu, tb.size, &mem, err, errlen);
  if (rc != HATTN_OK) goto fail_plan;
  cp->mem = dptr_of(mem);
  rc = hattn__cuda_upload(cu, mem, tb.buf, tb.size, err, errlen);
  if (rc != HATTN_OK) goto fail_mem;

#define DEV(off) ((const void *)((const unsigned char *)mem + (off)))
  {
    hattn_cuda_args *a = &cp->args;
    double scale = pat->scale > 0 ? pat->scale : 1.0 / sqrt((double)desc->head_dim);
    memset(a, 0, sizeof *a);
    a->heads = (int)H;
    a->kv_heads = (int)HK;
    a->lq = (int)LQ;
    a->lk = (int)LK;
    a->q_pos0 = hattn__env_qpos0(env);
    a->k_pos0 = hattn__env_kpos0(env);
    a->scale = (float)scale;
    a->scale_log2 = (float)(scale * 1.4426950408889634074);
    a->alibi_slopes = tb.slopes != HATTN__TABLE_NONE ? (const float *)DEV(tb.slopes) : NULL;
    a->sink_logits = tb.sink != HATTN__TABLE_NONE ? (const float *)DEV(tb.sink) : NULL;
    a->full_off = (const int *)DEV(tb.full_off);
    a->full_idx = (const int *)DEV(tb.full_idx);
    a->partial_off = (const int *)DEV(tb.partial_off);
    a->partial_idx = (const int *)DEV(tb.partial_idx);
    a->off_stride = tb.off_stride;
    a->full_idx_stride = tb.full_idx_stride;
    a->partial_idx_stride = tb.partial_idx_stride;
    a->per_head = tb.per_head;
    a->doc_id = tb.doc_id != HATTN__TABLE_NONE ? (const int *)DEV(tb.doc_id) : NULL;
    for (l = 0; l < tb.nlayouts; l++) {
      a->layout_bits[l] = (const unsigned char *)DEV(tb.layout[l]);
      a->layout_shape[l][0] = env->layouts[l].bm;
      a->layout_shape[l][1] = env->layouts[l].bn;
      a->layout_shape[l][2] = env->layouts[l].nqb;
      a->layout_shape[l][3] = env->layouts[l].nkb;
    }
    for (l = 0; l < tb.nrandom; l++) a->random_bits[l] = (const unsigned long long *)DEV(tb.random[l]);
    a->random_words = tb.random_words;
    if (tb.topk != HATTN__TABLE_NONE) {
      a->topk_blocks = (const int *)DEV(tb.topk);
      a->topk_k = (int)tb.topk_k;
    }
    a->batch = (int)B;
    a->nsplit = cp->decode ? cp->nsplit : 1;
  }
#undef DEV
  if (cp->decode && cp->args.nsplit > 1) {
    /* The splits' O and LSE: float32, [nsplit][B][H][LQ][D + 1]. */
    size_t rows = (size_t)cp->args.nsplit * (size_t)(B * H * LQ);
    void *split = NULL;
    rc = hattn__cuda_alloc(cu, rows * (size_t)(desc->head_dim + 1) * sizeof(float), &split, err, errlen);
    if (rc != HATTN_OK) goto fail_mem;
    cp->split_mem = dptr_of(split);
    cp->args.split_o = split;
    cp->args.split_lse = (float *)split + rows * (size_t)desc->head_dim;
  }
  hattn__tables_clear(&tb);
  hattn__plan_destroy(plan);
  *out = cp;
  return HATTN_OK;

fail_mem:
  hattn__cuda_free(cu, mem);
fail_plan:
  hattn__tables_clear(&tb);
  hattn__plan_destroy(plan);
  free(cp);
  return rc;
}

const hattn__shape *hattn__cuda_plan_shape(const hattn__cuda_plan *plan) { return &plan->shape; }

void hattn__cuda_plan_destroy(hattn__cuda_plan *plan) {
  if (plan == NULL) return;
  hattn__cuda_free(plan->cu, ptr_of(plan->split_mem));
  hattn__cuda_free(plan->cu, ptr_of(plan->mem));
  free(plan);
}

/* ---- launching ------------------------------------------------------------ */

/* Check tensor NAME of dims N[4] (LSE: rank 3) with element size ESZ:
** present, contiguous in its last dimension, and every row start 16-byte
** aligned (4-byte for LSE). */
static int check_tensor(const char *name, const hattn__tensor *t, const int64_t n[4], int rank, int esz,
                        char *err, size_t errlen) {
  int64_t elems = n[0] * n[1] * n[2] * (rank == 4 ? n[3] : 1);
  size_t align = rank == 4 ? 16 : 4;
  int i;
  if (t == NULL) {
    snprintf(err, errlen, "tensor %s is missing", name);
    return HATTN_ESHAPE;
  }
  if (rank == 4 && t->stride[3] != 1) {
    snprintf(err, errlen, "tensor %s must be contiguous in the head dimension (stride 3 is 1), got %lld", name,
             (long long)t->stride[3]);
    return HATTN_ESHAPE;
  }
  if (elems == 0) return HATTN_OK;
  if (t->data == NULL) {
    snprintf(err, errlen, "tensor %s has no data", name);
    return HATTN_ESHAPE;
  }
  if ((uintptr_t)t->data % align != 0) {
    snprintf(err, errlen, "tensor %s must start on a %zu-byte boundary in device memory, its address is %p", name,
             align, t->data);
    return HATTN_ESHAPE;
  }
  for (i = 0; i < (rank == 4 ? 3 : 0); i++)
    if (n[i] > 1 && (t->stride[i] * esz) % (int64_t)align != 0) {
      snprintf(err, errlen,
               "tensor %s: stride %d is %lld elements (%lld bytes); rows must start on 16-byte boundaries, "
               "so strides 0-2 must be multiples of %d elements",
               name, i, (long long)t->stride[i], (long long)(t->stride[i] * esz), 16 / esz);
      return HATTN_ESHAPE;
    }
  return HATTN_OK;
}

/* Fill ARGS for one launch: the plan's tables and the tensors. */
static int launch_args(const hattn__cuda_kernel *kern, const hattn__cuda_plan *plan, const hattn__shape *shape,
                       const hattn__tensor *q, const hattn__tensor *k, const hattn__tensor *v,
                       const hattn__paged *pg, const hattn__lens *lens, const hattn__tensor *o,
                       const hattn__tensor *lse, hattn_cuda_args *args, char *err, size_t errlen) {
  const hattn__shape *s = &plan->shape;
  /* Packed (lens->cu_q, cu_k): the batch entries' rows follow each other in
  ** one sequence dimension. */
  int64_t dq[4] = {lens && lens->cu_q ? 1 : shape->batch, shape->heads, shape->lq, shape->head_dim};
  /* Paged: a page's slots of every kv head (cpu.h's hattn__paged form). */
  int64_t dk[4] = {pg || (lens && lens->cu_k) ? 1 : shape->batch, shape->kv_heads, pg ? pg->page_size : shape->lk,
                   shape->head_dim};
  int esz = hattn__dtype_size(kern->dtype), rc, i;

  if (shape->batch != s->batch || shape->heads != s->heads || shape->kv_heads != s->kv_heads ||
      shape->lq != s->lq || shape->lk != s->lk || shape->head_dim != s->head_dim) {
    snprintf(err, errlen,
             "bad shape: the plan was made for batch %lld, heads %lld, kv_heads %lld, lq %lld, lk %lld, head_dim %lld",
             (long long)s->batch, (long long)s->heads, (long long)s->kv_heads, (long long)s->lq, (long long)s->lk,
             (long long)s->head_dim);
    return HATTN_ESHAPE;
  }
  if (shape->head_dim != kern->head_dim) {
    snprintf(err, errlen, "bad shape: head_dim %lld, but the kernel was compiled for %d", (long long)shape->head_dim,
             kern->head_dim);
    return HATTN_ESHAPE;
  }
  if (plan->decode && (plan->dtype != kern->dtype ||
                       plan->block_n != hattn__cuda_decode_block_n(&kern->cfg, kern->head_dim))) {
    snprintf(err, errlen, "the plan was made for decode blocks of %d keys of %s, but the kernel's decode blocks "
             "hold %d keys of %s", plan->block_n, hattn__dtype_name(plan->dtype),
             hattn__cuda_decode_block_n(&kern->cfg, kern->head_dim), hattn__dtype_name(kern->dtype));
    return HATTN_EINPUT;
  }
  if (!plan->decode && (plan->block_m != kern->cfg.block_m || plan->block_n != kern->cfg.block_n ||
                        plan->dtype != kern->dtype)) {
    snprintf(err, errlen, "the plan was made for %dx%d blocks of %s, but the kernel uses %dx%d blocks of %s",
             plan->block_m, plan->block_n, hattn__dtype_name(plan->dtype), kern->cfg.block_m, kern->cfg.block_n,
             hattn__dtype_name(kern->dtype));
    return HATTN_EINPUT;
  }
  if (plan->decode && kern->decode_fn == NULL) {
    snprintf(err, errlen,
             "the kernel %s has no decode entry point (a cubin from an older hattn): rebuild it, or set "
             "HATTN_CUDA_DECODE=0",
             kern->name);
    return HATTN_ENOTSUP;
  }
  if ((rc = check_tensor("Q", q, dq, 4, esz, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("K", k, dk, 4, esz, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("V", v, dk, 4, esz, err, errlen)) != HATTN_OK ||
      (rc = check_tensor("O", o, dq, 4, esz, err, errlen)) != HATTN_OK)
    return rc;
  if (pg != NULL && ((pg->k_page_stride * esz) % 16 != 0 || (pg->v_page_stride * esz) % 16 != 0)) {
    snprintf(err, errlen, "paged K and V: pages must start on 16-byte boundaries, so the page strides (%lld and %lld "
             "elements) must be multiples of %d", (long long)pg->k_page_stride, (long long)pg->v_page_stride, 16 / esz);
    return HATTN_ESHAPE;
  }
  if (lse != NULL && lse->data != NULL && (rc = check_tensor("LSE", lse, dq, 3, 4, err, errlen)) != HATTN_OK)
    return rc;

  *args = plan->args;
  args->q = q->data;
  args->k = k->data;
  args->v = v->data;
  args->o = o->data;
  args->lse = lse != NULL && lse->data != NULL ? (float *)lse->data : NULL;
  for (i = 0; i < 4; i++) {
    args->q_stride[i] = q->stride[i];
    args->k_stride[i] = k->stride[i];
    args->v_stride[i] = v->stride[i];
    args->o_stride[i] = o->stride[i];
    if (i < 3) args->lse_stride[i] = args->lse != NULL ? lse->stride[i] : 0;
  }
  if (lens != NULL) {
    args->cu_q = lens->cu_q;
    args->cu_k = lens->cu_k;
    args->len_q = lens->q_lens;
    args->len_k = lens->k_lens;
  }
  if (pg != NULL) {
    int shift = 0;
    while (((int64_t)1 << shift) < pg->page_size) shift++;
    args->block_table = pg->block_table;
    args->table_stride = pg->table_stride;
    args->k_page_stride = pg->k_page_stride;
    args->v_page_stride = pg->v_page_stride;
    args->page_shift = shift;
  }
  return HATTN_OK;
}

/* The TMA descriptor *MAP of the tensor at DATA of dims {head_dim, rows,
** heads, batch} (innermost first) with element strides STRIDE (batch,
** heads, rows; the head dim's is 1), elements of ESZ bytes of DTYPE, read
** in boxes of 64 columns x BOX_ROWS rows with the 128-byte swizzle that
** the wgmma kernels' tiles use.  Returns 0 where TMA cannot describe the
** tensor (an address or stride not a multiple of 16 bytes, a stride 0 over
** more than one index) or the driver refuses; the kernel then loads with
** cp.async. */
static int tma_map(hattn__cuda *cu, hattn_cuda_tmap *map, const void *data, int64_t head_dim, int64_t rows,
                   int64_t heads, int64_t batch, const long long *stride, int esz, int dtype, int box_rows) {
  unsigned long long dims[4], strides[3];
  unsigned box[4] = {64, (unsigned)box_rows, 1, 1}, elem[4] = {1, 1, 1, 1};
  int i;
  dims[0] = (unsigned long long)head_dim, dims[1] = (unsigned long long)rows;
  dims[2] = (unsigned long long)heads, dims[3] = (unsigned long long)batch;
  if ((uintptr_t)data % 16 != 0 || rows < 1 || heads < 1 || batch < 1) return 0;
  for (i = 0; i < 3; i++) {
    long long bytes = stride[2 - i] * esz;
    /* A dimension of one index: any valid stride describes it. */
    if (dims[i + 1] == 1 && bytes <= 0) bytes = i == 0 ? head_dim * esz : (long long)strides[i - 1] * (long long)dims[i];
    if (bytes <= 0 || bytes % 16 != 0 || bytes >= (1LL << 40)) return 0;
    strides[i] = (unsigned long long)bytes;
  }
  return cu->f.cuTensorMapEncodeTiled(map, dtype, 4, (void *)data, dims, strides, box, elem,
                                      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
         CUDA_SUCCESS;
}

/* The warp-specialised kernel's TMA descriptors of ARGS' Q, K and V into
** MAPS, or MAPS->on 0 where it loads with cp.async: paged K and V, a
** variable-length batch (TMA would read the next entry's rows where the
** kernels need zeros), a driver without tensor maps, or a tensor that TMA
** cannot describe. */
static void tma_maps(hattn__cuda_kernel *kern, const hattn__cuda_plan *plan, const hattn_cuda_args *args,
                     hattn_cuda_tmaps *maps) {
  hattn__cuda *cu = kern->cu;
  const hattn__shape *s = &plan->shape;
  int esz = hattn__dtype_size(kern->dtype);
  int dt = kern->dtype == HATTN_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  memset(maps, 0, sizeof *maps);
  if (cu->f.cuTensorMapEncodeTiled == NULL || args->block_table != NULL || args->cu_q != NULL ||
      args->cu_k != NULL || args->len_q != NULL || args->len_k != NULL)
    return;
  maps->on = tma_map(cu, &maps->q, args->q, s->head_dim, s->lq, s->heads, s->batch, args->q_stride, esz, dt,
                     kern->cfg.block_m) &&
             tma_map(cu, &maps->k, args->k, s->head_dim, s->lk, s->kv_heads, s->batch, args->k_stride, esz, dt,
                     kern->cfg.block_n) &&
             tma_map(cu, &maps->v, args->v, s->head_dim, s->lk, s->kv_heads, s->batch, args->v_stride, esz, dt,
                     kern->cfg.block_n);
}

static int launch_one(hattn__cuda_kernel *kern, const hattn__cuda_plan *plan, hattn_cuda_args *args,
                      CUstream stream, char *err, size_t errlen) {
  hattn__cuda *cu = kern->cu;
  void *params[2];
  hattn_cuda_tmaps maps;
  int rc = HATTN_OK;
  if (plan->nqb == 0) return HATTN_OK;
  params[0] = args;
  params[1] = &maps;
  if (plan->decode) {
    const hattn__shape *s = &plan->shape;
    unsigned rows = (unsigned)(s->batch * s->heads * s->lq);
    CU_CHECK(cu,
             cu->f.cuLaunchKernel(kern->decode_fn, (unsigned)plan->ntiles, (unsigned)(s->batch * s->heads / plan->pack),
                                  (unsigned)plan->nsplit, (unsigned)hattn__cuda_decode_warps(&kern->cfg) * 32, 1, 1,
                                  (unsigned)hattn__cuda_decode_smem_bytes(&kern->cfg, plan->head_dim), stream, params,
                                  NULL),
             "cuLaunchKernel (decode)", done);
    if (plan->nsplit > 1)
      CU_CHECK(cu, cu->f.cuLaunchKernel(kern->combine_fn, (rows + 3) / 4, 1, 1, 128, 1, 1, 0, stream, params, NULL),
               "cuLaunchKernel (combine)", done);
    return HATTN_OK;
  }
  if (args->block_table != NULL && kern->paged_fn == NULL) {
    snprintf(err, errlen, "the kernel %s has no entry point for paged K and V", kern->name);
    return HATTN_ENOTSUP;
  }
  if (kern->cfg.wgmma == 2) tma_maps(kern, plan, args, &maps);
  CU_CHECK(cu,
           cu->f.cuLaunchKernel(args->block_table != NULL ? kern->paged_fn : kern->fn, (unsigned)plan->nqb, (unsigned)(plan->shape.batch * plan->shape.heads), 1,
                                (unsigned)(kern->cfg.warps * 32), 1, 1, (unsigned)kern->smem, stream, params, NULL),
           "cuLaunchKernel", done);
done:
  return rc;
}

int hattn__cuda_launch(hattn__cuda_kernel *kern, const hattn__cuda_plan *plan,
                       const hattn__shape *shape, const hattn__tensor *q,
                       const hattn__tensor *k, const hattn__tensor *v, const hattn__paged *pg,
                       const hattn__lens *lens, hattn__tensor *o, hattn__tensor *lse, void *stream, char *err,
                       size_t errlen) {
  hattn_cuda_args args;
  int rc;
  assert(kern != NULL && plan != NULL && shape != NULL);
  rc = launch_args(kern, plan, shape, q, k, v, pg, lens, o, lse, &args, err, errlen);
  if (rc != HATTN_OK) return rc;
  kern->cu->f.cuCtxSetCurrent(kern->cu->ctx);
  return launch_one(kern, plan, &args, (CUstream)stream, err, errlen);
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

int hattn__cuda_time(hattn__cuda_kernel *kern, const hattn__cuda_plan *plan,
                     const hattn__shape *shape, const hattn__tensor *q, const hattn__tensor *k,
                     const hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse, int warmup,
                     int reps, double *median_ms, char *err, size_t errlen) {
  hattn__cuda *cu = kern->cu;
  hattn_cuda_args args;
  CUevent start = NULL, stop = NULL;
  float *times = NULL;
  int rc, i;

  *median_ms = 0;
  if (reps < 1) reps = 1;
  rc = launch_args(kern, plan, shape, q, k, v, NULL, NULL, o, lse, &args, err, errlen);
  if (rc != HATTN_OK) return rc;
  times = malloc((size_t)reps * sizeof *times);
  if (times == NULL) {
    snprintf(err, errlen, "out of memory timing a CUDA kernel");
    return HATTN_ENOMEM;
  }
  CU_CHECK(cu, cu->f.cuCtxSetCurrent(cu->ctx), "cuCtxSetCurrent", fail_times);
  CU_CHECK(cu, cu->f.cuEventCreate(&start, CU_EVENT_DEFAULT), "cuEventCreate", fail_times);
  CU_CHECK(cu, cu->f.cuEventCreate(&stop, CU_EVENT_DEFAULT), "cuEventCreate", fail_start);
  for (i = 0; i < warmup; i++)
    if ((rc = launch_one(kern, plan, &args, NULL, err, errlen)) != HATTN_OK) goto fail_events;
  CU_CHECK(cu, cu->f.cuCtxSynchronize(), "cuCtxSynchronize (after the warm-up launches)", fail_events);
  for (i = 0; i < reps; i++) {
    CU_CHECK(cu, cu->f.cuEventRecord(start, NULL), "cuEventRecord", fail_events);
    if ((rc = launch_one(kern, plan, &args, NULL, err, errlen)) != HATTN_OK) goto fail_events;
    CU_CHECK(cu, cu->f.cuEventRecord(stop, NULL), "cuEventRecord", fail_events);
    CU_CHECK(cu, cu->f.cuEventSynchronize(stop), "cuEventSynchronize (after a timed launch)", fail_events);
    CU_CHECK(cu, cu->f.cuEventElapsedTime(&times[i], start, stop), "cuEventElapsedTime", fail_events);
  }
  qsort(times, (size_t)reps, sizeof *times, cmp_float);
  *median_ms = reps % 2 ? times[reps / 2] : 0.5 * ((double)times[reps / 2 - 1] + (double)times[reps / 2]);
  rc = HATTN_OK;
fail_events:
  cu->f.cuEventDestroy(stop);
fail_start:
  cu->f.cuEventDestroy(start);
fail_times:
  free(times);
  return rc;
}

/* ---- the merge ---------------------------------------------------------------- */

int hattn__cuda_merge(hattn__cuda *cu, hattn__cuda_merge_compile_fn compile, int nparts,
                      const hattn__tensor *o_parts, const hattn__tensor *lse_parts, hattn__tensor *o,
                      hattn__tensor *lse, hattn__dtype dtype, const int64_t dims[4], void *stream, char *err,
                      size_t errlen) {
  hattn_cuda_merge_args args;
  char name[64];
  void *cubin = NULL, *params[1];
  size_t size = 0;
  CUmodule module = NULL;
  int64_t n = dims[0] * dims[1] * dims[2] * dims[3], blocks;
  int i, j, rc = HATTN_OK;

  assert(cu != NULL && compile != NULL && (int)dtype >= 0 && (int)dtype < 3);
  if (nparts < 1 || nparts > HATTN_CUDA_MERGE_MAX_PARTS) {
    snprintf(err, errlen, "the CUDA merge takes 1 to %d parts, not %d", HATTN_CUDA_MERGE_MAX_PARTS, nparts);
    return HATTN_EINVAL;
  }
  CU_CHECK(cu, cu->f.cuCtxSetCurrent(cu->ctx), "cuCtxSetCurrent", done);
  if (cu->merge_fn[dtype] == NULL) {
    snprintf(name, sizeof name, "hattn_merge_%s", hattn__dtype_name(dtype));
    if ((rc = compile(dtype, name, cu->arch, &cubin, &size, err, errlen)) != HATTN_OK) goto done;
    CU_CHECK_CODE(cu, cu->f.cuModuleLoadData(&module, cubin), "cuModuleLoadData", HATTN_ECOMPILE, done);
    CU_CHECK_CODE(cu, cu->f.cuModuleGetFunction(&cu->merge_fn[dtype], module, name), "cuModuleGetFunction",
                  HATTN_ECOMPILE, fail_module);
    cu->merge_module[dtype] = module;
    module = NULL;
  }
  if (n == 0) goto done;
  memset(&args, 0, sizeof args);
  for (i = 0; i < nparts; i++) {
    args.o[i] = o_parts[i].data;
    args.lse[i] = lse_parts[i].data;
    for (j = 0; j < 4; j++) args.o_stride[i][j] = o_parts[i].stride[j];
    for (j = 0; j < 3; j++) args.lse_stride[i][j] = lse_parts[i].stride[j];
  }
  args.out = o->data;
  args.out_lse = lse != NULL ? lse->data : NULL;
  for (j = 0; j < 4; j++) args.out_stride[j] = o->stride[j], args.dims[j] = dims[j];
  for (j = 0; j < 3; j++) args.out_lse_stride[j] = lse != NULL ? lse->stride[j] : 0;
  args.nparts = nparts;
  /* A grid-stride loop: enough blocks to fill the device several times. */
  blocks = (n + HATTN_CUDA_MERGE_THREADS - 1) / HATTN_CUDA_MERGE_THREADS;
  if (blocks > (int64_t)cu->sm_count * 16) blocks = (int64_t)cu->sm_count * 16;
  params[0] = &args;
  CU_CHECK(cu,
           cu->f.cuLaunchKernel(cu->merge_fn[dtype], (unsigned)blocks, 1, 1, HATTN_CUDA_MERGE_THREADS, 1, 1, 0,
                                (CUstream)stream, params, NULL),
           "cuLaunchKernel (merge)", done);
  goto done;

fail_module:
  cu->merge_fn[dtype] = NULL;
  cu->f.cuModuleUnload(module);
done:
  free(cubin);
  return rc;
}
