/*
** emit_llvm.h: the CPU kernel emitter.  From a checked pattern and a tile
** configuration it builds an LLVM module holding the kernel function and its
** decode function (FN_NAME "_decode") with the calling conventions of
** cpu_abi.h.  Declared only where hattn is built
** with LLVM (HATTN_HAVE_LLVM); configurations are in cpu_config.h.
** Internal; not installed.
*/
#ifndef HATTN_GEN_EMIT_LLVM_H
#define HATTN_GEN_EMIT_LLVM_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_config.h"

#ifdef HATTN_HAVE_LLVM
#include <llvm-c/Core.h>

/*
** Build a module in CTX holding the kernel FN_NAME and the decode kernel
** FN_NAME "_decode" (external functions with the cpu_abi.h signatures) for
** DESC and CFG.  PREFER_512 sets the
** "prefer-vector-width"="512" attribute.  The module has no triple or data
** layout; the caller sets them for its target.  Returns HATTN_OK and sets
** *OUT (owned by the caller), or HATTN_ENOTSUP / HATTN_EINVAL with a
** sentence in ERR.
*/
int hattn__emit_llvm(LLVMContextRef ctx, const hattn__kernel_desc *desc,
                     const hattn__cpu_config *cfg, const char *fn_name, int prefer_512,
                     LLVMModuleRef *out, char *err, size_t errlen);
#endif /* HATTN_HAVE_LLVM */

#endif /* HATTN_GEN_EMIT_LLVM_H */
