/*
** cuda_functions.h: the CUDA driver entry points that hattn uses, as one
** list macro (Halide's cuda_functions.h).  runtime/cuda_driver.c includes
** this file twice: once with HATTN_CUDA_FN defined to declare a function
** pointer per entry, once to resolve each pointer with dlsym() from
** libcuda.so.1.  Nothing links against libcuda.
**
** HATTN_CUDA_FN(NAME, SYMBOL, FALLBACK, PARAMS): the pointer is named NAME
** and returns CUresult; SYMBOL is the name the driver exports (the _v2 name
** where cuda.h #defines NAME to one); FALLBACK is tried when SYMBOL is
** missing (an older driver), and is SYMBOL itself where there is none.
** The types are those of cuda_driver.c, which mirrors cuda.h's ABI.
** HATTN_CUDA_FN_OPTIONAL(NAME, SYMBOL, PARAMS) lists entry points that
** only the tests use (streams, graph capture) or that hattn can do
** without (tensor maps: without them the warp-specialised kernel loads with
** cp.async): resolved when present, NULL when not, never a reason to
** refuse a driver.  Left undefined it lists nothing.
** Internal; not installed.  Deliberately without an include guard.
*/
#ifndef HATTN_CUDA_FN
#error "define HATTN_CUDA_FN(name, symbol, fallback, params) before including cuda_functions.h"
#endif

HATTN_CUDA_FN(cuInit, "cuInit", "cuInit", (unsigned int flags))
HATTN_CUDA_FN(cuDriverGetVersion, "cuDriverGetVersion", "cuDriverGetVersion", (int *version))
HATTN_CUDA_FN(cuGetErrorString, "cuGetErrorString", "cuGetErrorString", (CUresult error, const char **str))
HATTN_CUDA_FN(cuGetErrorName, "cuGetErrorName", "cuGetErrorName", (CUresult error, const char **str))

HATTN_CUDA_FN(cuDeviceGetCount, "cuDeviceGetCount", "cuDeviceGetCount", (int *count))
HATTN_CUDA_FN(cuDeviceGet, "cuDeviceGet", "cuDeviceGet", (CUdevice *device, int ordinal))
HATTN_CUDA_FN(cuDeviceGetName, "cuDeviceGetName", "cuDeviceGetName", (char *name, int len, CUdevice dev))
HATTN_CUDA_FN(cuDeviceGetAttribute, "cuDeviceGetAttribute", "cuDeviceGetAttribute",
              (int *value, CUdevice_attribute attrib, CUdevice dev))

HATTN_CUDA_FN(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain",
              (CUcontext *pctx, CUdevice dev))
HATTN_CUDA_FN(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease",
              (CUdevice dev))
HATTN_CUDA_FN(cuCtxSetCurrent, "cuCtxSetCurrent", "cuCtxSetCurrent", (CUcontext ctx))
HATTN_CUDA_FN(cuCtxSynchronize, "cuCtxSynchronize", "cuCtxSynchronize", (void))

HATTN_CUDA_FN(cuModuleLoadData, "cuModuleLoadData", "cuModuleLoadData", (CUmodule *module, const void *image))
HATTN_CUDA_FN(cuModuleUnload, "cuModuleUnload", "cuModuleUnload", (CUmodule module))
HATTN_CUDA_FN(cuModuleGetFunction, "cuModuleGetFunction", "cuModuleGetFunction",
              (CUfunction *fn, CUmodule module, const char *name))
HATTN_CUDA_FN(cuFuncSetAttribute, "cuFuncSetAttribute", "cuFuncSetAttribute",
              (CUfunction fn, CUfunction_attribute attrib, int value))
HATTN_CUDA_FN(cuLaunchKernel, "cuLaunchKernel", "cuLaunchKernel",
              (CUfunction f, unsigned int grid_x, unsigned int grid_y, unsigned int grid_z,
               unsigned int block_x, unsigned int block_y, unsigned int block_z,
               unsigned int shared_bytes, CUstream stream, void **params, void **extra))

HATTN_CUDA_FN(cuMemAlloc, "cuMemAlloc_v2", "cuMemAlloc_v2", (CUdeviceptr *dptr, size_t bytes))
HATTN_CUDA_FN(cuMemFree, "cuMemFree_v2", "cuMemFree_v2", (CUdeviceptr dptr))
HATTN_CUDA_FN(cuMemcpyHtoD, "cuMemcpyHtoD_v2", "cuMemcpyHtoD_v2",
              (CUdeviceptr dst, const void *src, size_t bytes))
HATTN_CUDA_FN(cuMemcpyDtoH, "cuMemcpyDtoH_v2", "cuMemcpyDtoH_v2",
              (void *dst, CUdeviceptr src, size_t bytes))
HATTN_CUDA_FN(cuMemsetD8, "cuMemsetD8_v2", "cuMemsetD8_v2", (CUdeviceptr dst, unsigned char value, size_t n))

HATTN_CUDA_FN(cuStreamSynchronize, "cuStreamSynchronize", "cuStreamSynchronize", (CUstream stream))
HATTN_CUDA_FN(cuEventCreate, "cuEventCreate", "cuEventCreate", (CUevent *event, unsigned int flags))
HATTN_CUDA_FN(cuEventRecord, "cuEventRecord", "cuEventRecord", (CUevent event, CUstream stream))
HATTN_CUDA_FN(cuEventSynchronize, "cuEventSynchronize", "cuEventSynchronize", (CUevent event))
HATTN_CUDA_FN(cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime",
              (float *ms, CUevent start, CUevent end))
HATTN_CUDA_FN(cuEventDestroy, "cuEventDestroy_v2", "cuEventDestroy_v2", (CUevent event))

#ifdef HATTN_CUDA_FN_OPTIONAL
HATTN_CUDA_FN_OPTIONAL(cuStreamCreate, "cuStreamCreate", (CUstream *stream, unsigned int flags))
HATTN_CUDA_FN_OPTIONAL(cuStreamDestroy, "cuStreamDestroy_v2", (CUstream stream))
HATTN_CUDA_FN_OPTIONAL(cuStreamBeginCapture, "cuStreamBeginCapture_v2", (CUstream stream, int mode))
HATTN_CUDA_FN_OPTIONAL(cuStreamEndCapture, "cuStreamEndCapture", (CUstream stream, CUgraph *graph))
HATTN_CUDA_FN_OPTIONAL(cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags",
                       (CUgraphExec *exec, CUgraph graph, unsigned long long flags))
HATTN_CUDA_FN_OPTIONAL(cuGraphLaunch, "cuGraphLaunch", (CUgraphExec exec, CUstream stream))
HATTN_CUDA_FN_OPTIONAL(cuGraphExecDestroy, "cuGraphExecDestroy", (CUgraphExec exec))
HATTN_CUDA_FN_OPTIONAL(cuGraphDestroy, "cuGraphDestroy", (CUgraph graph))
HATTN_CUDA_FN_OPTIONAL(cuTensorMapEncodeTiled, "cuTensorMapEncodeTiled",
                       (hattn_cuda_tmap *map, int dtype, unsigned rank, void *addr, const unsigned long long *dims,
                        const unsigned long long *strides, const unsigned *box, const unsigned *elem_strides,
                        int interleave, int swizzle, int l2_promotion, int oob_fill))
#endif
