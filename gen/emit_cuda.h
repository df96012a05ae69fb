/*
** emit_cuda.h: the CUDA kernel emitter.  From a checked pattern and a tile
** configuration it writes readable CUDA C++ source for one forward
** attention kernel (the FA2 recipe of docs: mma.sync m16n8k16, ldmatrix,
** cp.async, swizzled shared memory, exp2 online softmax), instantiating the
** templates of templates/ that are embedded in the library.  Plain C: no
** NVRTC here.  Internal; not installed.
*/
#ifndef HATTN_GEN_EMIT_CUDA_H
#define HATTN_GEN_EMIT_CUDA_H

#include <stddef.h>

#include "cuda_abi.h"
#include "cuda_config.h"
#include "spec.h"

/*
** Write the CUDA source of kernel FN_NAME (letters, digits and '_') for
** DESC and CFG into *OUT, a malloc'd NUL-terminated string the caller
** frees.  The source's first line says it is generated; it carries the
** canonical pattern only inside a comment made of the checked tree's
** canonical text.  Returns HATTN_OK, or HATTN_EINVAL / HATTN_ENOTSUP /
** HATTN_ENOMEM with a sentence in ERR.
*/
int hattn__emit_cuda(const hattn_cuda_kernel_desc *desc, const hattn_cuda_config *cfg,
                     const char *fn_name, char **out, char *err, size_t errlen);

#endif /* HATTN_GEN_EMIT_CUDA_H */
