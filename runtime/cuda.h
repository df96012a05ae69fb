/*
** cuda.h: the CUDA backend's runtime: NVRTC compilation, the driver API
** through dlopen("libcuda.so.1") (always built: it needs no toolkit), module cache, and the launch of a kernel
** over a problem.  Internal; not installed.
*/
#ifndef HATTN_RUNTIME_CUDA_H
#define HATTN_RUNTIME_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "cpu.h"         /* hattn__tensor */
#include "cuda_config.h"
#include "mask.h"
#include "reference.h"

/* ---- NVRTC (runtime/cuda_nvrtc.c) ---------------------------------------- */

/* Load NVRTC (through dlopen, once per process; HATTN_NVRTC_LIBRARY names
** the file to load instead of libnvrtc.so.N).  Returns HATTN_OK, or
** HATTN_ENOTSUP with "NVRTC (libnvrtc.so.13) could not be loaded: ..." in
** ERR, or with "hattn was built without NVRTC: ..." in a build without it.
** Thread-safe. */
int hattn__nvrtc_load(char *err, size_t errlen);

/* Compile SOURCE (named NAME in messages) for ARCH ("sm_80", "sm_90a") to a
** cubin: *CUBIN (malloc'd) and *SIZE.  On failure returns HATTN_ECOMPILE
** with the NVRTC log in ERR, HATTN_EINVAL for a bad ARCH, or HATTN_ENOTSUP
** with hattn__nvrtc_load's message when NVRTC is not there. */
int hattn__nvrtc_compile(const char *source, const char *name, const char *arch,
                         void **cubin, size_t *size, char *err, size_t errlen);

/* The NVRTC version ("13.0"), or NULL where NVRTC is not there. */
const char *hattn__nvrtc_version(void);

/* ---- the driver (runtime/cuda_driver.c) ----------------------------------- */

typedef struct hattn__cuda hattn__cuda;

/* Open device ORDINAL through a dlopen'ed libcuda.so.1 (its primary
** context made current on the calling thread).  Returns HATTN_OK, or
** HATTN_ENODEV with "no CUDA driver: ..." / "no CUDA device: ..." in ERR. */
int hattn__cuda_open(int ordinal, hattn__cuda **out, char *err, size_t errlen);
void hattn__cuda_close(hattn__cuda *cu);

/* The device's name, compute capability (90 for 9.0), arch for NVRTC
** ("sm_90a" on 9.0, else "sm_XY"), SM count. */
const char *hattn__cuda_name(const hattn__cuda *cu);
int hattn__cuda_sm(const hattn__cuda *cu);
const char *hattn__cuda_arch(const hattn__cuda *cu);
int hattn__cuda_sm_count(const hattn__cuda *cu);

/* A loaded kernel (module + function + its launch shape). */
typedef struct hattn__cuda_kernel hattn__cuda_kernel;

/* A compiler of CUDA kernels: the cubin (*CUBIN, malloc'd, *SIZE bytes)
** of the kernel of DESC and CFG, entry point NAME, for ARCH. */
typedef int (*hattn__cuda_compile_fn)(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                                      const char *name, const char *arch, void **cubin, size_t *size,
                                      char *err, size_t errlen);

/* The kernel of DESC and CFG for this device from CU's cache (keyed by
** entry point), else compiled by COMPILE and loaded; raises the dynamic
** shared-memory limit as needed.  Returns HATTN_OK or an error with the
** compiler's log / driver error in ERR. */
int hattn__cuda_kernel_build(hattn__cuda *cu, const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                             hattn__cuda_compile_fn compile, hattn__cuda_kernel **out, char *err, size_t errlen);

/* hattn__cuda_kernel_build with the emitter and NVRTC (backend_compile.c;
** libhattn only). */
int hattn__cuda_kernel_get(hattn__cuda *cu, const hattn__kernel_desc *desc,
                           const hattn__cuda_config *cfg, hattn__cuda_kernel **out,
                           char *err, size_t errlen);

/* Load CUBIN (SIZE bytes, compiled earlier from the source of DESC and CFG
** for this device's arch, as hattn__cuda_kernel_cubin hands out) without
** NVRTC; cached like hattn__cuda_kernel_get.  A cubin that the driver
** refuses gives HATTN_ECOMPILE with the driver's message. */
int hattn__cuda_kernel_load(hattn__cuda *cu, const hattn__kernel_desc *desc,
                            const hattn__cuda_config *cfg, const void *cubin, size_t size,
                            hattn__cuda_kernel **out, char *err, size_t errlen);

/* The cubin KERN was loaded from: owned by KERN, valid while it lives. */
void hattn__cuda_kernel_cubin(const hattn__cuda_kernel *kern, const void **cubin, size_t *size);

/* Device memory. */
int hattn__cuda_alloc(hattn__cuda *cu, size_t bytes, void **dptr, char *err, size_t errlen);
void hattn__cuda_free(hattn__cuda *cu, void *dptr);
int hattn__cuda_upload(hattn__cuda *cu, void *dst, const void *src, size_t bytes, char *err, size_t errlen);
int hattn__cuda_download(hattn__cuda *cu, void *dst, const void *src, size_t bytes, char *err, size_t errlen);
int hattn__cuda_memset(hattn__cuda *cu, void *dst, int byte, size_t bytes, char *err, size_t errlen);
int hattn__cuda_sync(hattn__cuda *cu, char *err, size_t errlen);

/* A plan and run-time tables uploaded for one kernel configuration and
** problem: build once, launch many times. */
typedef struct hattn__cuda_plan hattn__cuda_plan;

int hattn__cuda_plan_create(hattn__cuda *cu, const hattn__kernel_desc *desc,
                            const hattn__cuda_config *cfg, const hattn__shape *shape,
                            const hattn__mask_env *env, hattn__cuda_plan **out,
                            char *err, size_t errlen);
void hattn__cuda_plan_destroy(hattn__cuda_plan *plan);

/* The shape PLAN was made for. */
const hattn__shape *hattn__cuda_plan_shape(const hattn__cuda_plan *plan);

/*
** Launch KERN on STREAM (NULL: the default stream) for SHAPE with the
** device tensors Q, K, V, O and LSE (data NULL: not written), strides in
** elements as in cuda_abi.h, using PLAN; with PG (NULL: contiguous K and
** V), K and V are pools read through PG's block table in device memory
** (cpu.h's hattn__paged; its entries are trusted); with LENS (NULL: every
** entry has SHAPE's lengths), a variable-length batch whose lengths are in
** device memory (cpu.h's hattn__lens; trusted), SHAPE's lq and lk their
** maxima.  Asynchronous.  Returns HATTN_OK, or HATTN_ESHAPE / HATTN_EINPUT
** with a sentence in ERR.
*/
int hattn__cuda_launch(hattn__cuda_kernel *kern, const hattn__cuda_plan *plan,
                       const hattn__shape *shape, const hattn__tensor *q,
                       const hattn__tensor *k, const hattn__tensor *v, const hattn__paged *pg,
                       const hattn__lens *lens, hattn__tensor *o, hattn__tensor *lse, void *stream, char *err,
                       size_t errlen);

/*
** Streams and CUDA graphs of CU's context, for the tests (hattn_run on a
** stream, captured into a graph).  STREAM_CREATE makes a non-blocking
** stream; CAPTURE_BEGIN starts a global-mode capture on STREAM (so that a
** call that may not be captured, such as an allocation or a
** synchronisation, invalidates it); CAPTURE_END ends it and instantiates
** the graph in *EXEC.  The destroys accept NULL.  Each returns HATTN_OK,
** HATTN_ENOTSUP when the driver lacks the entry point, or HATTN_EIO with
** the driver's error in ERR.
*/
int hattn__cuda_stream_create(hattn__cuda *cu, void **stream, char *err, size_t errlen);
void hattn__cuda_stream_destroy(hattn__cuda *cu, void *stream);
int hattn__cuda_stream_sync(hattn__cuda *cu, void *stream, char *err, size_t errlen);
int hattn__cuda_capture_begin(hattn__cuda *cu, void *stream, char *err, size_t errlen);
int hattn__cuda_capture_end(hattn__cuda *cu, void *stream, void **exec, char *err, size_t errlen);
int hattn__cuda_graph_launch(hattn__cuda *cu, void *exec, void *stream, char *err, size_t errlen);
void hattn__cuda_graph_destroy(hattn__cuda *cu, void *exec);

/* Time LAUNCHES launches of KERN with device events: the median of REPS
** timed runs (each of one launch) after WARMUP, in milliseconds. */
int hattn__cuda_time(hattn__cuda_kernel *kern, const hattn__cuda_plan *plan,
                     const hattn__shape *shape, const hattn__tensor *q, const hattn__tensor *k,
                     const hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse, int warmup,
                     int reps, double *median_ms, char *err, size_t errlen);

/* ---- the merge (hattn_merge) --------------------------------------------- */

/* What compiles the merge kernel NAME for O of DTYPE to a cubin for ARCH:
** *CUBIN (malloc'd) and *SIZE (backend_compile.c: the emitter and NVRTC). */
typedef int (*hattn__cuda_merge_compile_fn)(hattn__dtype dtype, const char *name, const char *arch, void **cubin,
                                            size_t *size, char *err, size_t errlen);

/* The merge operation of backend.h on CU: the kernel of DTYPE compiled by
** COMPILE on the first merge of that dtype and kept until
** hattn__cuda_close, then queued on STREAM with the parts by value;
** nothing allocated, nothing synchronised.  Returns HATTN_OK, HATTN_EINVAL
** for NPARTS outside 1 .. HATTN_CUDA_MERGE_MAX_PARTS, COMPILE's failure,
** or a driver error. */
int hattn__cuda_merge(hattn__cuda *cu, hattn__cuda_merge_compile_fn compile, int nparts,
                      const hattn__tensor *o_parts, const hattn__tensor *lse_parts, hattn__tensor *o,
                      hattn__tensor *lse, hattn__dtype dtype, const int64_t dims[4], void *stream, char *err,
                      size_t errlen);

#endif /* HATTN_RUNTIME_CUDA_H */
