/*
** templates.h: the CUDA templates of templates/, embedded in the library as
** NUL-terminated strings by templates/embed.sh (the build's
** templates_embed.c).  Internal; not installed.
*/
#ifndef HATTN_GEN_TEMPLATES_H
#define HATTN_GEN_TEMPLATES_H

/* templates/cuda_common.cuh: PTX wrappers that both kernel bodies use. */
extern const char hattn__tmpl_cuda_common[];

/* templates/attn_fwd.cuh: the forward kernel body on mma.sync, sm_80 and
** later (see gen/emit_cuda.c). */
extern const char hattn__tmpl_attn_fwd[];

/* templates/attn_fwd_sm90.cuh: the forward kernel body on wgmma, sm_90a. */
extern const char hattn__tmpl_attn_fwd_sm90[];

/* gen/cuda_abi.h, verbatim: pasted into every generated source. */
extern const char hattn__tmpl_cuda_abi[];

#endif /* HATTN_GEN_TEMPLATES_H */
