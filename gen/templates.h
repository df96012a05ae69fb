/*
** templates.h: the CUDA templates of templates/, embedded in the library as
** NUL-terminated strings by templates/embed.sh (the build's
** templates_embed.c).  Internal; not installed.
*/
#ifndef HATTN_GEN_TEMPLATES_H
#define HATTN_GEN_TEMPLATES_H

/* templates/arch_sm80.cuh: the architecture layer of sm_80 and later
** (cp.async, ldmatrix, mma.sync), pasted into every source. */
extern const char hattn__tmpl_arch_sm80[];

/* templates/arch_sm90.cuh: the architecture layer of sm_90a (wgmma), on top
** of arch_sm80, pasted into the sources of warpgroup kernels. */
extern const char hattn__tmpl_arch_sm90[];

/* templates/cuda_common.cuh: the pieces every kernel body shares (tile
** loader, key-block walker) and the contract between a body and the
** generated pattern. */
extern const char hattn__tmpl_cuda_common[];

/* templates/attn_fwd.cuh: the forward kernel body on mma.sync, sm_80 and
** later (see gen/emit_cuda.c). */
extern const char hattn__tmpl_attn_fwd[];

/* templates/attn_fwd_sm90.cuh: the forward kernel body on wgmma, sm_90a. */
extern const char hattn__tmpl_attn_fwd_sm90[];

/* templates/attn_decode.cuh: the decode and combine kernel bodies (mma.sync). */
extern const char hattn__tmpl_attn_decode[];

/* gen/cuda_abi.h, verbatim: pasted into every generated source. */
extern const char hattn__tmpl_cuda_abi[];

#endif /* HATTN_GEN_TEMPLATES_H */
