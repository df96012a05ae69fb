/*
** cpu.h: the CPU backend's runtime: the LLVM JIT host, object files for
** named CPUs, the thread pool, and the launch of a kernel over a problem.
** Internal; not installed.
*/
#ifndef HATTN_RUNTIME_CPU_H
#define HATTN_RUNTIME_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "hattn.h"
#include "cpu_abi.h"
#include "cpu_config.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

/* A compiled kernel function (cpu_abi.h). */
typedef void (*hattn__cpu_fn)(const hattn_cpu_args *args, int64_t bh, int64_t qb, float *scratch);

/* A compiled decode kernel, the module's NAME_decode (cpu_abi.h). */
typedef void (*hattn__cpu_decode_fn)(const hattn_cpu_args *args, const hattn_cpu_split *split, float *scratch);

/* Decode launches run for 1 to HATTN_CPU_DECODE_MAX_LQ query rows (and at
** most the kernel's bm), their key blocks cut in at most
** HATTN_CPU_DECODE_MAX_SPLITS splits. */
#define HATTN_CPU_DECODE_MAX_LQ 16
#define HATTN_CPU_DECODE_MAX_SPLITS 256

/* ---- thread pool (runtime/pool.c) --------------------------------------- */

typedef struct hattn__pool hattn__pool;

/* A pool of NTHREADS workers (0: HATTN_NUM_THREADS if set, else the number
** of online cores; the calling thread counts as one). */
int hattn__pool_create(int nthreads, hattn__pool **out);
/* A pool over the caller's TP (copied; its functions and user pointer must
** outlive the pool): as many threads as TP says, its PARALLEL_FOR running
** the tasks that share a job's items.  HATTN_EINVAL for a NULL function or
** fewer than 1 thread, HATTN_ENOMEM. */
int hattn__pool_create_foreign(const hattn_threadpool *tp, hattn__pool **out);
void hattn__pool_destroy(hattn__pool *pool);
int hattn__pool_threads(const hattn__pool *pool);

/* Call FN(CTX, ORDER[i], thread) for every i in [0, N), items taken in
** order by whichever thread is free (so put the longest first), thread in
** [0, threads).  Returns when all are done.  ORDER may be NULL (identity). */
void hattn__pool_run(hattn__pool *pool, int64_t n, const int64_t *order,
                     void (*fn)(void *ctx, int64_t item, int thread), void *ctx);

/* ---- LLVM JIT host and object files (runtime/cpu_jit.c) ------------------ */

typedef struct hattn__jit hattn__jit;

/* An LLJIT for the host CPU (its name and features), with a process-symbol
** generator.  Returns HATTN_OK, or HATTN_ENOTSUP when hattn was built
** without LLVM, with a sentence in ERR. */
int hattn__jit_create(hattn__jit **out, char *err, size_t errlen);
void hattn__jit_destroy(hattn__jit *jit);

/* The host CPU's name ("znver3") and its vector width in floats (8 or 16). */
const char *hattn__jit_cpu_name(const hattn__jit *jit);
int hattn__jit_vec(const hattn__jit *jit);

/* Emit, optimise (default<O3>) and add the kernel of DESC and CFG; sets *FN.
** Returns HATTN_OK, or HATTN_ECOMPILE/HATTN_EINVAL/HATTN_ENOTSUP with the
** LLVM message in ERR. */
int hattn__jit_compile(hattn__jit *jit, const hattn__kernel_desc *desc,
                       const hattn__cpu_config *cfg, hattn__cpu_fn *fn,
                       char *err, size_t errlen);

/* Write the kernel of DESC and CFG, named FN_NAME, as a relocatable
** position-independent object file at PATH for CPU (an LLVM CPU name such
** as "x86-64-v3", "znver1", "sapphirerapids"; NULL for the host).  Returns
** HATTN_OK, or an error code with a sentence in ERR. */
int hattn__llvm_write_object(const hattn__kernel_desc *desc,
                             const hattn__cpu_config *cfg, const char *fn_name,
                             const char *cpu, const char *path, char *err, size_t errlen);

/* The LLVM version hattn was built with ("16.0.6"), or NULL without LLVM. */
const char *hattn__llvm_version(void);

/* ---- the host CPU (runtime/host_cpu.c) ----------------------------------- */

/* The host CPU as read from CPUID, without LLVM: NAME, the brand string
** ("AMD EPYC 9R45 48-Core Processor"); FEATURES, the extensions that matter
** to the kernels' speed, comma separated ("avx,avx2,fma,f16c,avx512f");
** ALL, every extension present, in the same form; TARGET, the kernel target: "x86-64/" and a 16-digit hash of every
** instruction-set extension LLVM may use, each present or absent (with the
** OS's register state checked), so that a CPU kernel stored by one host is
** loaded only by hosts that can run it; VEC, the vector width in floats
** (16 with AVX-512F, else 8); CORES, the online cores. */
typedef struct hattn__host_cpu {
  char name[64];
  char features[256];
  char all[512];
  char target[64];
  int vec;
  int cores;
} hattn__host_cpu;

void hattn__host_cpu_probe(hattn__host_cpu *out);

/* ---- launching (runtime/cpu_run.c) --------------------------------------- */

/* A strided tensor: element (i0, i1, i2, i3) is at data + sum(i * stride)
** elements; stride[3] must be 1. */
typedef struct hattn__tensor {
  void *data;
  int64_t stride[4];
} hattn__tensor;

/* Paged K and V (hattn_paged_kv): K and V are pools of pages of PAGE_SIZE
** (a power of two) key positions, passed as hattn__tensor with stride[0]
** 0, stride[1] between kv heads, stride[2] between slots of a page; key k
** of batch entry b is slot k % PAGE_SIZE of page BLOCK_TABLE[b *
** TABLE_STRIDE + k / PAGE_SIZE], K_PAGE_STRIDE (V_PAGE_STRIDE) elements
** apart.  Every entry a launch reads is in [0, NPAGES) (checked by the
** caller). */
typedef struct hattn__paged {
  const int32_t *block_table;
  int64_t table_stride;
  int64_t page_size;
  int64_t npages;
  int64_t k_page_stride, v_page_stride;
} hattn__paged;

/* The lengths of a variable-length batch, read when a kernel runs: int32
** arrays in the backend's memory (the lengths are data: the caller checks
** them where it can read them, else they are trusted), NULL where absent.
** Packed form: CU_Q [batch + 1], cumulative, batch entry b's query rows are
** rows cu_q[b] .. cu_q[b + 1] of Q and O, which are then passed with
** stride[0] 0 and stride[2] between their rows; CU_K likewise for K and
** V.  Padded form: Q_LENS [batch] (K_LENS), entry b's first rows of its
** batch entry.  A launch with lengths gives entry b positions qpos = q +
** lk_b - lq_b and kpos = k, and writes O 0 and LSE -inf past a padded
** entry's queries. */
typedef struct hattn__lens {
  const int32_t *cu_q, *cu_k;
  const int32_t *q_lens, *k_lens;
} hattn__lens;

/* Contiguous element strides for SHAPE: Q and O as [batch, heads, lq,
** head_dim], K and V as [batch, kv_heads, lk, head_dim], LSE as [batch,
** heads, lq] (its stride[3] is 1 and unused).  Data pointers untouched. */
void hattn__tensor_strides(const hattn__shape *shape, hattn__tensor *q, hattn__tensor *k,
                           hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse);

/* A problem prepared for CPU kernels of DESC and CFG: the plan for CFG's
** blocks, the run-time tables (tables.h) and the order of the work items
** (longest first), made once and launched any number of times. */
typedef struct hattn__cpu_problem hattn__cpu_problem;

/* Prepare SHAPE with ENV (which must match SHAPE) for kernels of DESC and
** CFG.  Returns HATTN_OK, or HATTN_ESHAPE / HATTN_EINPUT / HATTN_EINVAL /
** HATTN_ENOMEM with a sentence in ERR. */
int hattn__cpu_problem_create(const hattn__kernel_desc *desc, const hattn__cpu_config *cfg,
                              const hattn__shape *shape, const hattn__mask_env *env,
                              hattn__cpu_problem **out, char *err, size_t errlen);
void hattn__cpu_problem_destroy(hattn__cpu_problem *pr);

/* Give PR the scratch of NTHREADS workers (at least 1) now, so that
** launches over at most that many threads allocate nothing.  Returns
** HATTN_OK or HATTN_ENOMEM with a sentence in ERR. */
int hattn__cpu_problem_reserve(hattn__cpu_problem *pr, int nthreads, char *err, size_t errlen);

/* Run kernel FN (compiled for the problem's DESC and CFG) on PR: Q, O are
** [batch, heads, lq, head_dim], K, V [batch, kv_heads, lk, head_dim], in
** DESC's dtype; LSE (float32, may have data NULL) is [batch, heads, lq]
** with strides 0..2.  Spreads (bh, query block) work over POOL (NULL: the
** calling thread), with the workers' scratch kept in PR: a launch
** allocates only when PR has less scratch than POOL's threads need (see
** hattn__cpu_problem_reserve), so PR is used by one launch at a time.
** Returns HATTN_OK, or HATTN_ESHAPE / HATTN_ENOMEM with a sentence in
** ERR. */
int hattn__cpu_launch(hattn__cpu_fn fn, hattn__cpu_problem *pr, const hattn__tensor *q,
                      const hattn__tensor *k, const hattn__tensor *v, hattn__tensor *o,
                      hattn__tensor *lse, hattn__pool *pool, char *err, size_t errlen);

/* hattn__cpu_launch with K and V paged as PG says (NULL: contiguous). */
int hattn__cpu_launch_paged(hattn__cpu_fn fn, hattn__cpu_problem *pr, const hattn__tensor *q,
                            const hattn__tensor *k, const hattn__tensor *v, const hattn__paged *pg,
                            hattn__tensor *o, hattn__tensor *lse, hattn__pool *pool, char *err,
                            size_t errlen);

/* hattn__cpu_launch_paged, with decode kernel DFN (may be NULL): when DFN
** is given and PR was made for decode (1 <= lq <= HATTN_CPU_DECODE_MAX_LQ,
** lq <= bm, and HATTN_CPU_DECODE is not "0" when PR was made), every
** (batch entry, KV head) - (batch entry, head) when the plan is per head -
** runs in splits of its key blocks over POOL, each split reading its K and
** V rows once for all the query rows that share them, and the splits are
** merged into O and LSE (cpu_abi.h); otherwise FN runs as
** hattn__cpu_launch says.  The partial results live in PR (made by
** hattn__cpu_problem_reserve), so a launch allocates nothing more. */
int hattn__cpu_launch_kernel(hattn__cpu_fn fn, hattn__cpu_decode_fn dfn, hattn__cpu_problem *pr,
                             const hattn__tensor *q, const hattn__tensor *k, const hattn__tensor *v,
                             const hattn__paged *pg, hattn__tensor *o, hattn__tensor *lse, hattn__pool *pool,
                             char *err, size_t errlen);

/* The number of decode launches this process has run (for tests). */
long hattn__cpu_decode_launches(void);

/* hattn__cpu_problem_create, hattn__cpu_launch and destroy in one call:
** the tensors are checked before the run-time data. */
int hattn__cpu_forward(hattn__cpu_fn fn, const hattn__kernel_desc *desc,
                       const hattn__cpu_config *cfg, const hattn__shape *shape,
                       const hattn__mask_env *env, const hattn__tensor *q,
                       const hattn__tensor *k, const hattn__tensor *v, hattn__tensor *o,
                       hattn__tensor *lse, hattn__pool *pool, char *err, size_t errlen);

#endif /* HATTN_RUNTIME_CPU_H */
