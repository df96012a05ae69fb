/*
** emit_cuda.h: the CUDA kernel emitter.  From a checked pattern and a tile
** configuration it writes readable CUDA C++ source for one attention
** kernel of a given kind (forward today: the FA2 recipe on mma.sync, the FA3
** recipe on wgmma), instantiating the templates of templates/ that are
** embedded in the library.  Plain C: no NVRTC here.  Internal; not
** installed.
*/
#ifndef HATTN_GEN_EMIT_CUDA_H
#define HATTN_GEN_EMIT_CUDA_H

#include <stddef.h>

#include "cuda_abi.h"
#include "cuda_config.h"
#include "spec.h"

/*
** Write the CUDA source of kernel FN_NAME (letters, digits and '_') of kind
** KIND for DESC and CFG into *OUT, a malloc'd NUL-terminated string the
** caller frees.  KIND and CFG's wgmma flag select the kernel body of
** templates/.  The source's first line says it is generated; it carries
** the canonical pattern only inside a comment made of the checked tree's
** canonical text.  Returns HATTN_OK, or HATTN_EINVAL / HATTN_ENOTSUP /
** HATTN_ENOMEM with a sentence in ERR.
*/
int hattn__emit_cuda_kernel(hattn__cuda_kernel_kind kind, const hattn__kernel_desc *desc,
                            const hattn__cuda_config *cfg, const char *fn_name, char **out, char *err,
                            size_t errlen);

/* The forward kernel: hattn__emit_cuda_kernel(HATTN_CUDA_KERNEL_FWD, ...). */
int hattn__emit_cuda(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                     const char *fn_name, char **out, char *err, size_t errlen);

/*
** Write the CUDA source of the merge kernel FN_NAME for O of DTYPE (see
** hattn_cuda_merge_args in cuda_abi.h and hattn_merge in hattn.h) into
** *OUT, malloc'd, the caller's.  It needs sm_80 or later (bf16
** conversions).  Returns HATTN_OK, or HATTN_EINVAL / HATTN_ENOMEM with a
** sentence in ERR.
*/
int hattn__emit_cuda_merge(hattn__dtype dtype, const char *fn_name, char **out, char *err, size_t errlen);

#endif /* HATTN_GEN_EMIT_CUDA_H */
