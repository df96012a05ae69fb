/*
** backend.h: the interface every backend fills, one table of operations
** per backend (in the style of ggml's ggml_backend_i and SQLite's
** sqlite3_io_methods): identity, configurations, compile (optional),
** load, the per-problem state, launch.  The kernel cache (kernel_cache.c)
** and the public API (api.c) reach backends through this table only.
** Adding a backend is a new backend_NAME.c and one line in backend.c.
** Internal; not installed.
**
** Tables start with a version; entries marked optional may be NULL.
** Every operation returns HATTN_OK or a negative HATTN_E* code with a
** sentence in ERR (ERRLEN bytes).
*/
#ifndef HATTN_RUNTIME_BACKEND_H
#define HATTN_RUNTIME_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "hattn.h"
#include "cpu.h"
#include "cpu_config.h"
#include "cuda_config.h"
#include "db.h"
#include "kernel_desc.h"
#include "mask.h"
#include "reference.h"

/* One backend enum: the public one. */
typedef hattn_backend hattn__backend;
#define HATTN__BACKEND_CPU HATTN_BACKEND_CPU
#define HATTN__BACKEND_CUDA HATTN_BACKEND_CUDA

#define HATTN__BACKEND_I_VERSION 9  /* 2: candidates, memory, time (the tuner); 3: the tools;
                                      ** 4: launch_async (hattn_run); 5: merge (hattn_merge);
                                      ** 6: launch_paged (paged K and V); 7: varlen;
                                      ** 8: launch_varlen (lengths read by the kernels), the shape
                                      ** in config_candidates (decode tiles); 9: dev_threadpool */

/* A tile configuration of some backend: the backend reads its own member.
** THREADS (CPU) is how many workers run a kernel, 0: all; it is not
** compiled in and not part of a kernel's key. */
typedef struct hattn__config {
  hattn__cpu_config cpu;
  int threads;
  hattn__cuda_config cuda;
} hattn__config;

/* Tile sizes a user asks for (hattn run, gen): 0 keeps the default.  BM
** and BN are query rows and keys of a tile, ROWS the query rows held in
** registers and VEC the floats of a vector (the CPU's). */
typedef struct hattn__tile {
  int bm, bn, rows, vec;
} hattn__tile;

/* What hattn gen asks of a backend (the gen operation): write the kernel
** of each pattern of SPEC (or of PATTERN) in DTYPE at HEAD_DIM, tiles TILE
** applied, for TARGETS (CPU: one LLVM CPU name; CUDA: a comma list of
** archs) in the form EMIT (NULL: the backend's default; CUDA "source" or
** "cubin"), into DIR (which exists), with the registration
** DIR/hattn_prebuilt.c whose C names start with NAME.  NEEDS (CPU) are the
** extensions a host must have to run the kernels, NULL: those of the
** target.  Each file written gets a line on LISTING; a warning the caller
** should show goes into WARNING. */
typedef struct hattn__gen_opts {
  const char *dir, *targets, *emit, *needs, *name, *pattern;
  hattn__dtype dtype;
  int head_dim;
  hattn__tile tile;
  FILE *listing;
  char warning[512];
} hattn__gen_opts;

/* What a device is to the database and to kernel keys: TARGET (CPU:
** "x86-64/" and a hash of the extensions; CUDA: "sm_90a"), the compiler
** identity ("llvm 16.0.6", "nvrtc 13.0"; "" where no compiler is
** registered, which accepts any compiler's binaries), the device record
** and its model string.  DEVICE points into this struct: fill it in
** place, never copy it. */
typedef struct hattn__ident {
  char name[128];
  char features[256];
  char target[96];
  char compiler[32];
  hattn__db_device device;
  char model[512];
} hattn__ident;

/* One input set of a timing: Q, K, V, O, LSE in the device's memory,
** strides filled (hattn__tensor_strides). */
typedef struct hattn__tensor_set {
  hattn__tensor q, k, v, o, lse;
} hattn__tensor_set;

typedef struct hattn__backend_i {
  int version;                  /* HATTN__BACKEND_I_VERSION */
  hattn__backend id;
  const char *name;             /* "cpu", "cuda": in kernel keys and the database */
  int dl_device;                /* the DLPack device type its tensors live on (kDLCPU, kDLCUDA) */
  const char *dl_name;          /* "kDLCPU", "kDLCUDA" */
  const char *binary_name;      /* what a prebuilt kernel brings: "function", "cubin" */
  const char *target_form;      /* a valid target, for messages; NULL: any text */
  /* Version 3: what the tools need to know. */
  hattn__dtype dtype_default;   /* the dtype of a run that names none (CPU fp32, CUDA bf16) */
  unsigned dtypes;              /* the dtypes it runs, bit 1 << dtype */
  const char *gen_target_option;/* the hattn gen option naming its targets: "--cpu", "--arch" */
  const char *compiler_name;    /* its compiler in identities: "llvm", "nvrtc" */

  /* Devices.  A CPU device holds a thread pool (none when THREADS < 0)
  ** and the kernels it loaded; a CUDA device is an open GPU (ORDINAL). */
  int (*dev_open)(int ordinal, int threads, void **dev, char *err, size_t errlen);
  void (*dev_close)(void *dev);
  void (*ident)(void *dev, hattn__ident *out);

  /* Configurations, and their text (the database's form; THREADS > 0 adds
  ** the CPU's thread count). */
  void (*config_default)(void *dev, const hattn__kernel_desc *desc, hattn__config *out);
  int (*config_check)(const hattn__kernel_desc *desc, const hattn__config *cfg, char *err, size_t errlen);
  void (*config_text)(const hattn__config *cfg, int threads, char *buf, size_t len);
  int (*config_parse)(const char *text, hattn__config *cfg);

  /* Prebuilt kernels: whether TARGET reads (optional: NULL, any does);
  ** whether a kernel built for TARGET needing NEEDS runs on DEV: 2 when
  ** made for it, 1 when it runs anyway, 0 when not; whether FN or BIN is
  ** the binary this backend needs. */
  int (*target_valid)(const char *target);
  int (*target_score)(void *dev, const char *target, const char *needs);
  int (*prebuilt_has_binary)(void (*fn)(void), const void *bin, size_t size);

  /* Kernels, owned by DEV.  COMPILE (optional: absent in libhattnrt, set
  ** by hattn__backend_register_compilers) builds the kernel of DESC and
  ** CFG named after KEY; COMPILER_VERSION (optional, with it) names the
  ** compiler.  LOAD reads a binary from the database; LOAD_PREBUILT takes
  ** a program's own; BINARY says what to store for a kernel. */
  int (*compile)(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, const char *key,
                 void **kern, char *err, size_t errlen);
  const char *(*compiler_version)(void);
  int (*load)(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, const char *key,
              const void *bin, size_t size, void **kern, char *err, size_t errlen);
  int (*load_prebuilt)(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, void (*fn)(void),
                       const void *bin, size_t size, void **kern, char *err, size_t errlen);
  void (*binary)(const void *kern, const void **bin, size_t *size);

  /* The per-problem state: plan and run-time tables (tables.h) for SHAPE
  ** and ENV, in the device's memory; made once, launched many times. */
  int (*problem_create)(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg,
                        const hattn__shape *shape, const hattn__mask_env *env, void **prob, char *err,
                        size_t errlen);
  void (*problem_destroy)(void *prob);

  /* Run KERN on PROB with tensors in the device's memory, on STREAM (CUDA;
  ** NULL: the default stream); returns when the outputs are written. */
  int (*launch)(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                const hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse, void *stream, char *err,
                size_t errlen);

  /* Version 2: what the tuner needs. */

  /* The candidate configurations for DESC on DEV for problems of SHAPE
  ** (NULL: any; CUDA varies the decode kernels' tiles alone for few
  ** queries): *OUT (malloc'd; free it), *N entries, the default first.
  ** MAX_THREADS (CPU: the thread count of the candidates, 0: every core)
  ** is ignored where it means nothing.  SHAPE since version 8. */
  int (*config_candidates)(void *dev, const hattn__kernel_desc *desc, const hattn__shape *shape, int max_threads,
                           hattn__config **out, int *n);

  /* Device memory for test tensors (the CPU's is host memory): ALLOC
  ** BYTES, FREE (NULL is fine), SET each byte to BYTE, UPLOAD from and
  ** DOWNLOAD to the host. */
  int (*mem_alloc)(void *dev, size_t bytes, void **ptr, char *err, size_t errlen);
  void (*mem_free)(void *dev, void *ptr);
  int (*mem_set)(void *dev, void *ptr, int byte, size_t bytes, char *err, size_t errlen);
  int (*mem_upload)(void *dev, void *dst, const void *src, size_t bytes, char *err, size_t errlen);
  int (*mem_download)(void *dev, void *dst, const void *src, size_t bytes, char *err, size_t errlen);

  /* Time KERN (of DESC and CFG) on PROB: WARMUP launches (0: the
  ** backend's own count), then as many timed launches as REPS(CTX, S)
  ** asks for, at most MAX, S being what one timed launch costs in seconds
  ** as the warm-up found; SAMPLES_US gets each launch's time, *N how many.
  ** Launches rotate among the NSETS input SETS.  Each backend times its
  ** own way: the CPU the wall clock around a launch over the pool of
  ** CFG's threads, CUDA device events with L2 flushed before each. */
  int (*time)(void *dev, void *kern, void *prob, const hattn__kernel_desc *desc, const hattn__config *cfg,
              const hattn__tensor_set *sets, int nsets, int warmup, int (*reps)(void *ctx, double sample_s),
              void *ctx, int max, double *samples_us, int *n, char *err, size_t errlen);

  /* Version 3: what the tools need. */

  /* Apply the tile sizes TILE asks for to CFG (configured for DESC);
  ** HATTN_EINVAL with a sentence for one the backend does not have (CUDA:
  ** register rows, vector width).  The caller checks the result. */
  int (*config_tile)(const hattn__kernel_desc *desc, const hattn__tile *tile, hattn__config *cfg, char *err,
                     size_t errlen);

  /* One line for people: the backend, the device and CFG ("cpu NAME block
  ** 128x64 rows 4 vec 16, 8 threads"; "cuda NAME sm_90a block 128x64
  ** warps 8 stages 2"). */
  void (*config_describe)(void *dev, const hattn__config *cfg, char *buf, size_t len);

  /* Ahead-of-time kernels for hattn gen (optional: set with COMPILE, by
  ** hattn__backend_register_compilers, libhattn only): see hattn__gen_opts. */
  int (*gen)(const hattn__spec *spec, hattn__gen_opts *opts, char *err, size_t errlen);

  /* Version 4: what hattn_run needs. */

  /* Launch KERN on PROB as LAUNCH does, but return once the launch is
  ** queued on STREAM (CUDA: a CUstream, NULL the default stream), without
  ** allocating, copying or synchronising, so that it can be captured into
  ** a CUDA graph (optional: NULL where LAUNCH itself is what a run does,
  ** the CPU's synchronous launch over the device's pool). */
  int (*launch_async)(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                      const hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse, void *stream, char *err,
                      size_t errlen);

  /* Version 5: what hattn_merge needs. */

  /* Merge NPARTS (1 to HATTN_MERGE_MAX_PARTS) partial attention results by
  ** their log-sum-exp: O_PARTS[i] [DIMS[0], DIMS[1], DIMS[2], DIMS[3]] of
  ** DTYPE and LSE_PARTS[i] [DIMS[0], DIMS[1], DIMS[2]] float32 (strides
  ** 0..2 used; any strides, the last of O included) into O and LSE (LSE's
  ** data NULL: not written), in the device's memory, accumulating in
  ** float32.  A part whose row's LSE is -inf adds nothing; a row no part
  ** saw gets O = 0 and LSE = -inf; NaN propagates.  CUDA: queued on
  ** STREAM, no allocation, no synchronisation.  Optional: NULL where the
  ** backend cannot merge (hattn_merge says HATTN_ENOTSUP). */
  int (*merge)(void *dev, int nparts, const hattn__tensor *o_parts, const hattn__tensor *lse_parts,
               hattn__tensor *o, hattn__tensor *lse, hattn__dtype dtype, const int64_t dims[4], void *stream,
               char *err, size_t errlen);

  /* Version 6: paged K and V. */

  /* Launch KERN on PROB with K and V paged as PG says (cpu.h: K and V
  ** are the pools, stride[0] unused; the block table on the backend's
  ** device), as LAUNCH does when WAIT (returning when the outputs are
  ** written), else as LAUNCH_ASYNC does where the backend has it (queued
  ** on STREAM).  The block table's entries are checked by the caller
  ** where it can (host memory), else trusted.  Optional: NULL where the
  ** backend cannot read paged K and V (the API then says HATTN_ENOTSUP). */
  int (*launch_paged)(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                      const hattn__tensor *v, const hattn__paged *pg, hattn__tensor *o, hattn__tensor *lse,
                      void *stream, int wait, char *err, size_t errlen);

  /* Version 7: variable-length batches. */

  /* Nonzero where the API may run a batch of sequences of their own lengths
  ** (hattn_inputs.q_lens, k_lens) on this backend: api.c makes one problem
  ** of batch 1 per distinct (q_len, k_len) pair, launches each batch entry
  ** on views of its rows and itself writes the rows past a sequence's end
  ** (O 0, LSE -inf), which needs the outputs in host memory (the CPU's).
  ** 0: the API says HATTN_ENOTSUP, unless the backend has launch_varlen. */
  int varlen;

  /* Version 8: variable-length batches read by the kernels. */

  /* Launch KERN on PROB, a problem made for the batch's longest lengths
  ** (and the default positions), over a variable-length batch whose
  ** lengths LENS live in the backend's memory (cpu.h: hattn__lens, packed
  ** or padded form; trusted), K and V contiguous or paged (PG), as
  ** LAUNCH_PAGED does with WAIT.  Optional: NULL where the kernels cannot
  ** read lengths (the API then uses VARLEN's problems per length, or says
  ** HATTN_ENOTSUP). */
  int (*launch_varlen)(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                       const hattn__tensor *v, const hattn__paged *pg, const hattn__lens *lens, hattn__tensor *o,
                       hattn__tensor *lse, void *stream, int wait, char *err, size_t errlen);

  /* Version 9: the caller's thread pool. */

  /* Run DEV's work on the caller's pool TP (hattn_threadpool) from now on,
  ** DEV having been opened with threads -1 (no pool of its own).  Returns
  ** HATTN_OK, HATTN_EINVAL with the sentence for a bad TP, HATTN_ENOMEM.
  ** Optional: NULL where the backend runs no host threads (the API then
  ** says HATTN_EINVAL). */
  int (*dev_threadpool)(void *dev, const hattn_threadpool *tp, char *err, size_t errlen);
} hattn__backend_i;


/*
** Variable-length batches (varlen.c), padded form: Q and O [batch, heads,
** lq, D], K and V [batch, kv_heads, lk, D] with lq and lk the maxima;
** entry b uses its first lens[b] query rows and lens[batch + b] key rows,
** at the positions of a problem of its own (q + k_len - q_len and k), run
** as that problem of batch 1 (PROBS[PROB_OF[b]], one per distinct pair of
** lengths); rows past its queries get O 0 and LSE -inf.
*/
typedef struct hattn__varlen {
  int64_t batch;
  int32_t *lens;                /* [2 * batch]: the query lengths, then the key lengths */
  void **probs;                 /* [nprobs], the backend's problems */
  int64_t *prob_of;             /* [batch] */
  int64_t nprobs;
  /* Packed form (cpu.h's hattn__lens), host memory the launch reads, or
  ** NULL: the caller's, set before hattn__varlen_launch. */
  const int32_t *cu_q, *cu_k;
} hattn__varlen;

/* Whether BE runs variable-length batches of pattern P (OFFSETS_SET: the
** plan has offsets): HATTN_OK, else HATTN_ENOTSUP with the sentence. */
int hattn__varlen_supported(const hattn__backend_i *be, const hattn__pattern *p, int offsets_set, char *err,
                            size_t errlen);

/* Whether Q_LENS and K_LENS (either may be NULL; both NULL: HATTN_OK) suit
** pattern P at SHAPE on BE: HATTN_ENOTSUP on a backend without varlen,
** with offsets set, or for a pattern with document(), blocks(), random()
** or topk(); HATTN_EINPUT naming an entry outside [0, lq] or [0, lk]. */
int hattn__varlen_check(const hattn__backend_i *be, const hattn__pattern *p, const hattn__shape *shape,
                        int offsets_set, const int32_t *q_lens, const int32_t *k_lens, char *err, size_t errlen);

/* The problems of a variable-length batch (lengths checked) of DESC and CFG
** for SHAPE and ENV, made with BE on DEV, in *OUT (hattn__varlen_destroy).
** NULL lengths are the maxima.  Returns HATTN_OK or the status of the
** backend's problem_create, or HATTN_ENOMEM. */
int hattn__varlen_create(const hattn__backend_i *be, void *dev, const hattn__kernel_desc *desc,
                         const hattn__config *cfg, const hattn__shape *shape, const hattn__mask_env *env,
                         const int32_t *q_lens, const int32_t *k_lens, hattn__varlen **out, char *err,
                         size_t errlen);

/* Free VL's problems and VL; NULL is allowed. */
void hattn__varlen_destroy(const hattn__backend_i *be, hattn__varlen *vl);

/* Run KERN on VL over the padded tensors of SHAPE and DTYPE (host memory,
** checked; K and V the pools with PG, NULL: contiguous; packed where VL's
** cu_q, cu_k say), synchronously, and write O 0 and LSE -inf (LSE's data
** NULL: not written) past each padded entry's queries.  Returns HATTN_OK or the backend's launch status. */
int hattn__varlen_launch(const hattn__backend_i *be, void *dev, void *kern, const hattn__varlen *vl,
                         const hattn__shape *shape, hattn__dtype dtype, const hattn__tensor *q,
                         const hattn__tensor *k, const hattn__tensor *v, const hattn__paged *pg, hattn__tensor *o,
                         hattn__tensor *lse, char *err, size_t errlen);

/* The table of backend ID, compilers registered; NULL for an unknown ID. */
const hattn__backend_i *hattn__backend_get(int id);

/* "cpu" or "cuda". */
const char *hattn__backend_name(hattn__backend b);

/* The I-th table (0, 1, ...), compilers registered; NULL past the last. */
const hattn__backend_i *hattn__backend_at(int i);

/* The table named NAME ("cpu", "cuda"), or NULL; *NAMES, when not NULL,
** gets the names there are, for messages ("cpu or cuda"). */
const hattn__backend_i *hattn__backend_find(const char *name, const char **names);

/* The tables themselves (backend_cpu.c, backend_cuda.c), and the
** registration of compilers, defined once in each library: libhattn's
** (backend_compile.c) fills COMPILE and COMPILER_VERSION, libhattnrt's
** (backend_nocompile.c) leaves them NULL.  Called once, by
** hattn__backend_get. */
extern hattn__backend_i hattn__backend_cpu;
extern hattn__backend_i hattn__backend_cuda;
void hattn__backend_register_compilers(void);

/* The gen operations of the two tables (backend_gen.c, libhattn only). */
int hattn__backend_gen_cpu(const hattn__spec *spec, hattn__gen_opts *opts, char *err, size_t errlen);
int hattn__backend_gen_cuda(const hattn__spec *spec, hattn__gen_opts *opts, char *err, size_t errlen);

/* The CPU backend's kernel handle: its function. */
hattn__cpu_fn hattn__cpu_kernel_fn(const void *kern);

#endif /* HATTN_RUNTIME_BACKEND_H */
