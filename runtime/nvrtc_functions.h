/*
** nvrtc_functions.h: the NVRTC entry points that hattn uses, as one list
** macro (as cuda_functions.h lists the driver's).  runtime/cuda_nvrtc.c
** includes this file twice: once with HATTN_NVRTC_FN defined to declare a
** function pointer per entry, once to resolve each pointer with dlsym()
** from the libnvrtc it dlopen'ed.  Nothing links against libnvrtc, so
** libhattn loads where the CUDA toolkit is not installed.
**
** HATTN_NVRTC_FN(RET, NAME, PARAMS): the pointer is named NAME, as the
** function nvrtc.h declares, whose type it must match (cuda_nvrtc.c checks
** that at compile time); RET is its return type.  Every entry exists since
** NVRTC 11.1 (nvrtcGetCUBIN is the newest).
** Internal; not installed.  Deliberately without an include guard.
*/
#ifndef HATTN_NVRTC_FN
#error "define HATTN_NVRTC_FN(ret, name, params) before including nvrtc_functions.h"
#endif

HATTN_NVRTC_FN(nvrtcResult, nvrtcVersion, (int *major, int *minor))
HATTN_NVRTC_FN(const char *, nvrtcGetErrorString, (nvrtcResult result))
HATTN_NVRTC_FN(nvrtcResult, nvrtcCreateProgram,
               (nvrtcProgram *prog, const char *src, const char *name, int num_headers,
                const char *const *headers, const char *const *include_names))
HATTN_NVRTC_FN(nvrtcResult, nvrtcDestroyProgram, (nvrtcProgram *prog))
HATTN_NVRTC_FN(nvrtcResult, nvrtcCompileProgram, (nvrtcProgram prog, int num_options, const char *const *options))
HATTN_NVRTC_FN(nvrtcResult, nvrtcGetProgramLogSize, (nvrtcProgram prog, size_t *size))
HATTN_NVRTC_FN(nvrtcResult, nvrtcGetProgramLog, (nvrtcProgram prog, char *log))
HATTN_NVRTC_FN(nvrtcResult, nvrtcGetCUBINSize, (nvrtcProgram prog, size_t *size))
HATTN_NVRTC_FN(nvrtcResult, nvrtcGetCUBIN, (nvrtcProgram prog, char *cubin))
