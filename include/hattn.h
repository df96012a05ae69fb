/*
** hattn.h: the public interface of hattn, a generator of attention kernels
** for sparse and hybrid attention patterns.  What is not in this file is not
** API.
**
** Every function returns an int: 0 (HATTN_OK) on success, a negative
** HATTN_E* code on failure.  Results come back through out-parameters.
*/
#ifndef HATTN_H
#define HATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HATTN_BUILDING) && defined(__GNUC__)
#define HATTN_API __attribute__((visibility("default")))
#else
#define HATTN_API
#endif

/* The status codes: XX(NAME, value, message).  HATTN_OK is 0. */
#define HATTN_ERR_MAP(XX)                                                    \
  XX(EINVAL,   -1, "invalid argument")                                      \
  XX(ENOMEM,   -2, "out of memory")                                         \
  XX(ESPEC,    -3, "the spec has errors")                                   \
  XX(ENOENT,   -4, "no such pattern, model or file")                        \
  XX(EIO,      -5, "input/output error")                                    \
  XX(ESHAPE,   -6, "bad problem shape")                                     \
  XX(EINPUT,   -7, "bad or missing run-time input")                         \
  XX(ENOTSUP,  -8, "not supported")                                         \
  XX(ENODEV,   -9, "no device")                                             \
  XX(ECOMPILE, -10, "kernel compilation failed")                            \
  XX(EDB,      -11, "kernel database error")                              \
  XX(ECLOSED,  -12, "the context is closed")

enum hattn_status {
  HATTN_OK = 0,
#define HATTN__XX(name, val, msg) HATTN_##name = (val),
  HATTN_ERR_MAP(HATTN__XX)
#undef HATTN__XX
};

/* The message of a status code: a static string, never NULL. */
HATTN_API const char *hattn_strerror(int status);

/* The name of a status code ("HATTN_ESPEC"): a static string, never NULL. */
HATTN_API const char *hattn_err_name(int status);

/* The version of this header, which configure's (AC_INIT) must equal
** (tests/test_api.c checks both against hattn_version()).  Compare with
** HATTN_VERSION_NUMBER: MAJOR * 1000000 + MINOR * 1000 + PATCH. */
#define HATTN_VERSION_MAJOR 0
#define HATTN_VERSION_MINOR 1
#define HATTN_VERSION_PATCH 0
#define HATTN_VERSION_NUMBER (HATTN_VERSION_MAJOR * 1000000 + HATTN_VERSION_MINOR * 1000 + HATTN_VERSION_PATCH)

/* The library's version, "MAJOR.MINOR.PATCH": a static string.  It names
** the library that runs, which may be newer than the header a program was
** built with. */
HATTN_API const char *hattn_version(void);

/* ==== contexts, specs, kernels ============================================
**
** Ownership: every object a hattn_* function creates through an out
** parameter is owned by the caller and freed with the matching destroy
** function (hattn_close, hattn_specfile_destroy, hattn_kernel_destroy,
** hattn_plan_destroy), all
** of which accept NULL.  Strings and arrays passed in are copied or only read
** during the call, unless stated otherwise.
**
** Lifetimes: a kernel keeps its context alive.  hattn_close gives up the
** caller's handle; the context itself (its device, kernel cache and
** database) lives on until the last of its kernels is destroyed, and those
** kernels keep working (their messages through hattn_kernel_errmsg).  While
** it lives on, a closed context refuses new work with HATTN_ECLOSED.  A spec
** needs no context once parsed.
**
** Thread safety: a context and everything made from it (specs, kernels) are
** used by one thread at a time, hattn_forward included: the context's
** device (the CPU's thread pool, a GPU's stream state) and its error text
** are shared by every kernel of the context, so two concurrent calls on one
** context, even on different kernels, are a data race.  Use one context
** per thread, or serialise the calls (the Python module holds one lock per
** context).  Distinct contexts share nothing that needs locking by the
** caller.  hattn_strerror, hattn_err_name and hattn_version may be called
** from any thread.
**
** Misuse: no function asserts on what the caller passes.  A NULL handle or
** out parameter where one is required returns HATTN_EINVAL (functions that
** return a value return the empty answer their comment names), with a
** sentence in hattn_errmsg when there is a context to hold it.  A handle
** that was destroyed (or whose last reference is gone) is freed memory, which
** C cannot detect: the caller must not pass it.  Failures of the environment
** or of the data return a status code and leave a sentence in hattn_errmsg.
** hattn never calls exit().
*/

#include <dlpack/dlpack.h>

typedef struct hattn_ctx hattn_ctx;
/* A parsed, checked spec file (its patterns and models).  Named
** "specfile" to keep the library's internal name of the tree apart. */
typedef struct hattn_specfile hattn_specfile;
/* One kernel: a pattern of a spec, for one problem (shape and dtype). */
typedef struct hattn_kernel hattn_kernel;

typedef enum hattn_backend {
  HATTN_BACKEND_CPU = 0,       /* LLVM JIT for the host CPU */
  HATTN_BACKEND_CUDA = 1       /* NVRTC and the CUDA driver (dlopen'ed) */
} hattn_backend;

/* Element types of Q, K, V and O (LSE is always float32). */
typedef enum hattn_eltype {
  HATTN_FP32 = 0,
  HATTN_FP16 = 1,
  HATTN_BF16 = 2
} hattn_eltype;

/*
** A caller's thread pool (hattn_options.threadpool), for a program that
** embeds hattn beside its own threads (PyTorch's, ggml's), as oneDNN's
** threadpool interface: the CPU backend then runs its work on it and starts
** no thread of its own.  NUM_THREADS(USER) is how many tasks the pool runs
** at once (1 or more), asked once, when the context opens.
** PARALLEL_FOR(USER, N, TASK, ARG) must call TASK(ARG, i) exactly once for
** every i in [0, N), on any of its threads, any number at a time, and
** return when all have returned.  hattn calls it with N = NUM_THREADS from
** the thread that runs a kernel, never from inside a task; the tasks share
** the kernel's work items, so a pool that runs them one after another is
** correct, only slower.  The pool must outlive the context.
*/
typedef struct hattn_threadpool {
  int (*num_threads)(void *user);
  void (*parallel_for)(void *user, int n, void (*task)(void *arg, int i), void *arg);
  void *user;
} hattn_threadpool;

typedef struct hattn_options {
  int backend;                 /* hattn_backend */
  int device;                  /* CUDA device ordinal (backend CUDA) */
  const char *db;              /* kernel database: NULL the default path
                               ** ($HATTN_DB, else the user's cache dir),
                               ** "" none (compile every kernel in process) */
  int threads;                 /* CPU worker threads; 0: $HATTN_NUM_THREADS,
                               ** else every online core */
  int quiet;                   /* nonzero: no warnings on stderr (the last
                               ** one is still in hattn_errmsg) */
  const hattn_threadpool *threadpool;
                               /* CPU backend: the caller's thread pool
                               ** (above), or NULL: hattn's own workers;
                               ** with it THREADS must be 0.  Not kept: its
                               ** functions and USER are. */
} hattn_options;

/* Fill OPT with the defaults: CPU, device 0, the default db, all cores.
** NULL is ignored. */
HATTN_API void hattn_options_init(hattn_options *opt);

/*
** Open a context with OPT (NULL: the defaults).  *OUT is set whenever memory
** allows, also on failure, so that hattn_errmsg(*OUT) tells why (a missing
** CUDA driver, no LLVM, ...); the caller closes it either way.  *OUT is NULL
** only with HATTN_ENOMEM.  Returns HATTN_OK, HATTN_EINVAL, HATTN_ENODEV,
** HATTN_ENOTSUP, HATTN_ENOMEM (HATTN_EINVAL without setting anything for
** OUT NULL).  HATTN_EINVAL also answers a bad THREADPOOL: a NULL function,
** a thread count below 1, THREADS set beside it, or the CUDA backend.  A
** database that cannot be opened is not a failure: kernels
** are compiled and not stored, with a warning.  A context that failed to
** open answers every call but hattn_errmsg and hattn_close with HATTN_EINVAL
** and "the context failed to open: " and the reason.
*/
HATTN_API int hattn_open(const hattn_options *opt, hattn_ctx **out);

/* Give up the caller's handle to CTX; NULL is allowed.  The context is freed
** now when no kernel of it is alive, else when the last is destroyed (see
** "Lifetimes" above): its kernels keep running until then.  CTX must not be
** passed to any function afterwards (while kernels keep it alive, calls on it
** return HATTN_ECLOSED, and a second hattn_close does nothing).  Specs made
** from CTX are independent of it and are destroyed with
** hattn_specfile_destroy, before or after. */
HATTN_API void hattn_close(hattn_ctx *ctx);

/*
** The text of the last failure on CTX (or the last warning, when the last
** call succeeded with one): compiler logs (NVRTC, LLVM), database errors,
** the spec's diagnostics, shape mismatches.  "" when there is none; "out of
** memory" for CTX NULL (hattn_open sets no context only when memory runs
** out).  Owned by CTX; valid until the next call on it.
*/
HATTN_API const char *hattn_errmsg(const hattn_ctx *ctx);

/*
** Parse and check LEN bytes of TEXT (need not be NUL-terminated) as a spec
** (docs/spec.md); FILENAME (may be NULL: "<spec>") names it in messages.
** On a spec with errors returns HATTN_ESPEC, sets *OUT to NULL, and the
** context's error text holds every diagnostic, formatted as compilers do
** ("file:line:col: error: msg").  The spec is independent of the text.
** Returns HATTN_EINVAL for CTX or OUT NULL, or TEXT NULL with LEN > 0, and
** HATTN_ECLOSED on a closed context.
*/
HATTN_API int hattn_specfile_parse(hattn_ctx *ctx, const char *text, size_t len,
                                   const char *filename, hattn_specfile **out);

/* Free a spec; NULL is allowed.  Kernels made from it stay valid (their
** context keeps what they need until it is closed). */
HATTN_API void hattn_specfile_destroy(hattn_specfile *spec);

/* The number of patterns of SPEC (HATTN_EINVAL for SPEC NULL) and the name
** of pattern I (NULL when I is out of range or SPEC is NULL); owned by SPEC. */
HATTN_API int hattn_specfile_npatterns(const hattn_specfile *spec);
HATTN_API const char *hattn_specfile_pattern_name(const hattn_specfile *spec, int i);

/*
** The problem a kernel is for.  Tensors are described logically as
**   Q, O  [batch, heads,    lq, head_dim]
**   K, V  [batch, kv_heads, lk, head_dim]
**   LSE   [batch, heads,    lq]            (float32, natural log)
** heads must be a multiple of kv_heads (GQA/MQA: query head h reads kv head
** h / (heads / kv_heads)).  When lq < lk the queries are the last lq
** positions (qpos = q + lk - lq), unless hattn_inputs sets offsets.
**
** Limits, checked by hattn_kernel_get before anything is computed from
** them (HATTN_ESHAPE, with a message naming the limit): batch, heads and
** kv_heads >= 1 and batch * heads <= HATTN_MAX_BATCH_HEADS; 0 <= lq, lk <=
** HATTN_MAX_SEQLEN; 1 <= head_dim <= HATTN_MAX_HEAD_DIM; the elements of Q
** (batch * heads * lq * head_dim) and of K (batch * kv_heads * lk *
** head_dim) at most HATTN_MAX_ELEMENTS each, and a block layout's nqb * nkb
** too (hattn_forward, HATTN_EINPUT).  A backend may have lower limits of its
** own (CUDA: batch * heads <= 65535), checked when the kernel runs.
*/
#define HATTN_MAX_BATCH_HEADS INT64_C(2147483647)   /* 2^31 - 1 */
#define HATTN_MAX_SEQLEN INT64_C(1073741823)        /* 2^30 - 1 */
#define HATTN_MAX_HEAD_DIM 1024
#define HATTN_MAX_ELEMENTS (INT64_C(1) << 48)
typedef struct hattn_problem {
  int64_t batch, heads, kv_heads;
  int64_t lq, lk;
  int64_t head_dim;
  int dtype;                   /* hattn_eltype */
} hattn_problem;

/*
** The kernel of pattern PATTERN of SPEC for PROB, on CTX's backend: from the
** context's memory, else the kernel database (the tuned winner for this
** device and shape bucket), else compiled now (and stored in the database).
** *OUT is the caller's, freed with hattn_kernel_destroy (before or after
** SPEC is destroyed, before or after CTX is closed: the kernel keeps CTX
** alive).  Returns HATTN_OK, HATTN_EINVAL (an argument is NULL), HATTN_ECLOSED
** (CTX is closed), HATTN_ENOENT (no such pattern), HATTN_ESHAPE (a bad
** problem or one beyond the limits above), HATTN_ECOMPILE (with the
** compiler's log in hattn_errmsg), HATTN_ENOTSUP, HATTN_ENOMEM.
*/
HATTN_API int hattn_kernel_get(hattn_ctx *ctx, const hattn_specfile *spec, const char *pattern,
                               const hattn_problem *prob, hattn_kernel **out);

/* Free a kernel handle, and its context when it was closed and this was its
** last kernel; NULL is allowed. */
HATTN_API void hattn_kernel_destroy(hattn_kernel *kern);

/* What run-time data the kernel's pattern reads: a bit set of these. */
enum {
  HATTN_NEED_DOCUMENTS = 1,   /* hattn_inputs.doc_offsets */
  HATTN_NEED_LAYOUTS = 2,     /* hattn_inputs.layouts */
  HATTN_NEED_TOPK = 8          /* hattn_inputs.topk_blocks */
};
/* 0 for KERN NULL. */
HATTN_API unsigned hattn_kernel_needs(const hattn_kernel *kern);

/* The configuration the kernel runs with ("bm=64 bn=64 ..."), owned by it;
** "" for KERN NULL. */
HATTN_API const char *hattn_kernel_config(const hattn_kernel *kern);

/* Where the kernel came from when hattn_kernel_get returned it: "prebuilt"
** (registered with hattn_add_prebuilt), "memory" (this context had it),
** "db" (the kernel database), or "compiled".  A static string; "" for KERN
** NULL. */
HATTN_API const char *hattn_kernel_origin(const hattn_kernel *kern);

/* The text of the last failure or warning on KERN's context, as
** hattn_errmsg gives it, also after the context was closed; "" for KERN
** NULL.  Valid until the next call on the context or one of its kernels. */
HATTN_API const char *hattn_kernel_errmsg(const hattn_kernel *kern);


/* An explicit block-sparse layout for blocks(NAME): query block i, key block
** j (rows i*bm .. and j*bn ..) is visible when bits[i * nkb + j] != 0. */
typedef struct hattn_layout {
  const char *name;            /* as written in blocks(NAME) */
  int64_t bm, bn;              /* block size, > 0 */
  int64_t nqb, nkb;            /* blocks in the table, >= 0 */
  const uint8_t *bits;         /* [nqb * nkb], row-major, host memory */
} hattn_layout;

/*
** Paged K and V, as serving engines keep them (vLLM, FlashInfer): K and V
** are pools of pages of PAGE_SIZE key positions, and each batch entry has a
** row of a block table listing its pages.  Logical key k of batch entry b
** (the k of hattn_problem, 0 <= k < lk) is slot k % page_size of page
** block_table[b][k / page_size].  The pools are 4-d DLTensors of the
** problem's dtype on the kernel's device, any strides with the last
** dimension contiguous, K and V of one shape:
**   HATTN_PAGED_NHD  [pages, page_size, kv_heads, head_dim]
**   HATTN_PAGED_HND  [pages, kv_heads, page_size, head_dim]
** The block table is an int32 DLTensor [batch, max_pages] on the kernel's
** device with max_pages >= ceil(lk / page_size) and its last dimension
** contiguous; the first ceil(lk / page_size) entries of each row must lie
** in [0, pages) (columns past them are not read, and may hold anything,
** -1 for instance).  Pages may be shared between rows and appear in any
** order; pages no row lists are never read.  Every sequence has the same
** logical length lk.  CUDA: the pools' pages start on 16-byte boundaries
** (page strides multiples of 8 elements), and both the forward and the
** decode kernels read through the table.
*/
typedef enum hattn_paged_layout {
  HATTN_PAGED_NHD = 0,         /* [pages, page_size, kv_heads, head_dim] */
  HATTN_PAGED_HND = 1          /* [pages, kv_heads, page_size, head_dim] */
} hattn_paged_layout;

/* The largest page size. */
#define HATTN_MAX_PAGE_SIZE 256

typedef struct hattn_paged_kv {
  int64_t page_size;           /* a power of two, 1 .. HATTN_MAX_PAGE_SIZE */
  int layout;                  /* hattn_paged_layout */
  /* The block table, for hattn_forward and hattn_reference (which then
  ** take K and V as the pools); hattn_plan_create does not read it: the
  ** plan's runs take their table with the pools (hattn_run_paged). */
  const DLTensor *block_table;
} hattn_paged_kv;

/*
** Run-time inputs; all host memory, read during hattn_forward or
** hattn_plan_create only (a plan copies what it needs).  Zero
** the struct (or pass NULL) for none.
*/
typedef struct hattn_inputs {
  /* document(): ndocs + 1 cumulative offsets over key positions, starting at
  ** 0, nondecreasing, ending at lk; shared by every batch entry. */
  const int64_t *doc_offsets;
  int64_t ndocs;
  /* blocks(NAME): one layout per name the pattern uses, in any order, each
  ** name once (a name given twice is refused: HATTN_EINPUT). */
  const hattn_layout *layouts;
  int nlayouts;
  /* topk(K): topk_blocks[((b * heads + h) * ceil(lk / 64) + i) * topk_k + j]
  ** is the j-th routed key 64-block of query 64-block i, or -1.  topk_k is K,
  ** or min(K, ceil(lk / 64)): a query block is never routed to more key
  ** blocks than exist, so rows need not be longer. */
  const int32_t *topk_blocks;
  int64_t topk_k;
  /* ALiBi slopes [heads] for a pattern "with alibi", instead of
  ** 2^(-8 (h + 1) / heads); NULL: those.  A pattern without alibi, or with a
  ** fixed alibi(M) compiled in, refuses them (HATTN_EINPUT). */
  const float *alibi_slopes;
  /* Learned per-head sink logits [heads] (gpt-oss's attention sinks), or
  ** NULL: each row's softmax gets one more term e^sink[h] that carries no
  ** value, O = sum_j e^s_j v_j / (sum_j e^s_j + e^sink[h]) with s_j the
  ** scaled, modified scores; LSE includes the term.  -inf: no sink for that
  ** head; NaN and +inf are refused. */
  const float *sink_logits;
  /* Nonzero: every random(R, S) atom draws its blocks with seed S ^ seed
  ** instead of S (a pattern without random() refuses it). */
  uint64_t seed;
  /* Paged K and V (see hattn_paged_kv), or NULL: K and V are the logical
  ** [batch, kv_heads, lk, head_dim] tensors.  A plan made with it is run
  ** with hattn_run_paged, one made without it with hattn_run. */
  const hattn_paged_kv *paged;
  /* Positions (docs/spec.md, "Positions").  With offsets_set zero (a
  ** zeroed struct) query row q is at position q + lk - lq and key row k at
  ** position k, and q_offset and k_offset are ignored.  With offsets_set
  ** nonzero, query row q is at q + q_offset and key row k at k + k_offset:
  ** a chunk of queries (chunked prefill) or a slice of the keys (split-KV,
  ** context parallelism; merge the parts with hattn_merge) computed at its
  ** true positions.  q_offset lies in [-HATTN_MAX_SEQLEN, HATTN_MAX_SEQLEN] and k_offset
  ** in [0, HATTN_MAX_SEQLEN], with q_offset + lq and k_offset + lk at most
  ** HATTN_MAX_SEQLEN (HATTN_EINPUT).  document() needs k_offset 0 (the
  ** document offsets cover the key rows), random() and topk() the default
  ** positions (q_offset lk - lq, k_offset 0); otherwise HATTN_ENOTSUP.
  ** blocks(NAME) indexes by rows, whatever the offsets. */
  int64_t q_offset, k_offset;
  int offsets_set;
  /* Variable-length batches (padded form, as FlashAttention's seqused_k):
  ** q_lens and k_lens are host arrays of batch entries (NULL: every entry
  ** has lq, resp. lk rows), and lq and lk of hattn_problem are the maxima.
  ** Batch entry b uses its first q_lens[b] query rows and its first
  ** k_lens[b] key rows, at positions q + k_lens[b] - q_lens[b] and k (its
  ** queries end with its keys); each entry's O and LSE are what a problem
  ** of that entry alone (batch 1, lq q_lens[b], lk k_lens[b]) gives.  Rows
  ** past q_lens[b] of O are written 0, their LSE -inf; keys past
  ** k_lens[b] are never read (paged: only the first ceil(k_lens[b] /
  ** page_size) entries of a table row are used).  0 <= q_lens[b] <= lq and
  ** 0 <= k_lens[b] <= lk (HATTN_EINPUT naming the entry).  hattn_forward
  ** and hattn_reference read them; hattn_plan_create copies them (CUDA:
  ** to device memory) and the plan's runs use those lengths.  Not with
  ** offsets_set, nor with document(), blocks(), random() or topk(), whose
  ** run-time data covers the padded lk (HATTN_ENOTSUP).  Lengths that
  ** change every run, and the packed form, go to hattn_run_varlen. */
  const int32_t *q_lens, *k_lens;
} hattn_inputs;

/*
** O = attention(Q, K, V) under the kernel's pattern, and LSE (may be NULL)
** the log-sum-exp of each row's visible scores.  Tensors are DLPack
** DLTensors describing the logical shapes of hattn_problem (4-d Q, K, V, O
** and 3-d LSE) with any strides in elements (strides NULL: compact
** row-major), as long as the last dimension of Q, K, V, O is contiguous
** (stride 1).  So memory laid out as [B, S, H, D] is passed as a strided
** view with shape [B, H, S, D] and strides [S*H*D, D, H*D, 1].  byte_offset
** is honoured.  dtype must be the problem's (float32 / float16 / bfloat16,
** lanes 1); LSE is float32.  Device: kDLCPU for the CPU backend; kDLCUDA
** with the context's device ordinal for CUDA.
**
** hattn_forward is the convenience path: hattn_plan_create, one launch,
** hattn_plan_destroy, on every call.  So each call builds the plan and the
** run-time tables (CUDA: allocates device memory and copies the tables to
** it).  CPU: synchronous, over the context's thread pool.  CUDA: the kernel
** is launched on STREAM (a CUstream; NULL the default stream) and
** hattn_forward synchronises the device (cuCtxSynchronize) before it frees
** the tables and returns.  To serve one problem many times, make a plan
** once and call hattn_run (below).
**
** Returns HATTN_OK, HATTN_ESHAPE (a tensor does not match the problem: the
** message names the tensor and what is wrong), HATTN_EINPUT (missing or
** malformed run-time inputs), HATTN_ENOTSUP (what the backend cannot run,
** or a problem past the documented limits of docs/spec.md, "Limits": a block
** plan of more than 256 MiB or 2^26 blocks classified, random() bit sets of
** more than 64 MiB; said before anything is allocated), or a device error;
** the sentence is in hattn_errmsg of the kernel's context and in
** hattn_kernel_errmsg.  HATTN_EINVAL for KERN NULL.  With INPUTS->paged,
** K and V are the pools and INPUTS->paged->block_table the table
** (hattn_paged_kv): a bad page size or layout is HATTN_EINPUT, a pool or
** table of the wrong shape, dtype or device HATTN_ESHAPE, an entry outside
** the pool HATTN_EINPUT (every entry read is checked first), a backend
** without paged K and V HATTN_ENOTSUP.  NaN in Q, K or V
** is not taken for masking: it reaches the rows of O (and, from Q or K, of
** LSE) that see it.
*/
HATTN_API int hattn_forward(hattn_kernel *kern, const DLTensor *q, const DLTensor *k,
                            const DLTensor *v, DLTensor *o, DLTensor *lse,
                            const hattn_inputs *inputs, void *stream);

/* ==== plans: plan once, run many ==========================================
**
** A plan is the per-problem state of a kernel and its run-time inputs: the
** block plan, the run-time tables (document ids, layouts, top-k routes,
** random() bits, ALiBi slopes, sinks) and, on CUDA, the device memory they
** live in, uploaded once.  hattn_run then only checks the tensors, fills
** the kernel's argument block and launches.  A plan keeps its kernel's
** context alive (as a kernel does): it works after hattn_kernel_destroy of
** the kernel it was made from and after hattn_close, and the context is
** freed with the last kernel or plan.  Plans follow the context's thread
** rules (see "Thread safety").
*/
typedef struct hattn_plan hattn_plan;

/*
** Make the plan of KERN with INPUTS (NULL: none; read during the call
** only, all copied) in *OUT, the caller's, freed with hattn_plan_destroy.
** Builds the block plan and the run-time tables; CUDA: allocates device
** memory and copies them to it (synchronous).  With INPUTS->paged the
** plan is for paged K and V of its page size and layout (its block_table
** is not read), run with hattn_run_paged; HATTN_EINPUT for a bad page size
** or layout, HATTN_ENOTSUP on a backend without paged K and V.  Returns
** HATTN_OK,
** HATTN_EINVAL (KERN or OUT NULL), HATTN_EINPUT (missing or malformed
** run-time inputs), HATTN_ENOTSUP, HATTN_ESHAPE (a problem past the
** backend's limits), HATTN_ENOMEM or a device error, with the sentence in
** hattn_kernel_errmsg(KERN).
*/
HATTN_API int hattn_plan_create(hattn_kernel *kern, const hattn_inputs *inputs, hattn_plan **out);

/*
** Run PLAN: O and LSE (may be NULL) from Q, K, V, tensors as hattn_forward
** takes them (the plan's problem's shapes and dtype, on its device).  Checks
** the tensors (HATTN_ESHAPE, the message naming the tensor), fills the
** argument block and launches; it allocates nothing, copies nothing to the
** device and never synchronises.
**   CPU: runs over the context's thread pool and returns when O and LSE
**   are written; STREAM is ignored.
**   CUDA: queues the kernel on STREAM (a CUstream; NULL the default stream)
**   and returns at once: O and LSE are written when the stream gets there,
**   and the caller synchronises (cuStreamSynchronize, an event, the next
**   work on the stream).  A run may be captured into a CUDA graph
**   (cuStreamBeginCapture on STREAM); the graph reads the plan's tables,
**   so the plan must outlive every launch of the graph.
** Returns HATTN_OK, HATTN_EINVAL (PLAN NULL), HATTN_ESHAPE, or a launch
** error (HATTN_EIO); the sentence is in hattn_plan_errmsg.  A failure of
** the kernel itself on the GPU shows at the caller's synchronisation.
*/
HATTN_API int hattn_run(hattn_plan *plan, const DLTensor *q, const DLTensor *k, const DLTensor *v, DLTensor *o,
                        DLTensor *lse, void *stream);

/*
** Run PLAN, made with INPUTS->paged (hattn_paged_kv), on paged K and V:
** K_PAGES and V_PAGES are the pools in the plan's page size and layout,
** BLOCK_TABLE the int32 [batch, max_pages] table of this run, read at run
** time, so that it may change between runs (as a server's does every step)
** without a new plan; Q, O, LSE and STREAM as hattn_run takes them.
** The table's entries are data: on the CPU, where it is host memory, every
** entry the run reads is checked first (batch * ceil(lk / page_size)
** integers; HATTN_EINPUT naming the first one outside [0, pages)); CUDA,
** where it is device memory, trusts them (the run neither copies nor
** synchronises), so that a caller who cannot vouch for a table checks it
** once with hattn_forward (which downloads and checks it) or
** hattn_reference.  Returns as hattn_run does, and HATTN_EINPUT for a
** plan made without INPUTS->paged (run it with hattn_run; hattn_run
** likewise refuses a paged plan).
*/
HATTN_API int hattn_run_paged(hattn_plan *plan, const DLTensor *q, const DLTensor *k_pages,
                              const DLTensor *v_pages, const DLTensor *block_table, DLTensor *o, DLTensor *lse,
                              void *stream);

/*
** Variable-length batches whose lengths change from run to run (a server's
** every step), given as int32 DLTensors on the plan's device, read when the
** kernels run; a NULL member is absent.  For batch entry b (of the plan's
** batch):
**   padded form   q_lens [batch] (k_lens likewise): entry b uses its first
**                 q_lens[b] query rows of Q [batch, heads, lq, head_dim];
**                 rows of O past them are written 0, their LSE -inf.
**   packed form   cu_seqlens_q [batch + 1], nondecreasing (FlashAttention's
**                 varlen convention): entry b's queries are rows
**                 cu_seqlens_q[b] .. cu_seqlens_q[b + 1] of a packed Q and
**                 O [total_q, heads, head_dim] and LSE [heads, total_q];
**                 cu_seqlens_k likewise for K and V [total_k, kv_heads,
**                 head_dim] (not with paged K and V: their lengths are
**                 k_lens).
** One of each pair at most; an absent query (key) length is the plan's lq
** (lk).  Every entry's lengths lie in [0, lq] and [0, lk] of the plan's
** problem (which gives the longest, and the batch), and its queries end
** with its keys: qpos = q + lk_b - lq_b, kpos = k.
*/
typedef struct hattn_varlen {
  const DLTensor *q_lens, *k_lens;
  const DLTensor *cu_seqlens_q, *cu_seqlens_k;
} hattn_varlen;

/*
** Run PLAN over a variable-length batch with the lengths LENS of this run:
** Q, K, V, O and LSE (may be NULL) in the padded or the packed form LENS
** says, K and V the pools and BLOCK_TABLE their table for a paged plan (as
** hattn_run_paged takes them; NULL otherwise).  The plan is one made with
** hattn_plan_create for the batch's longest lengths, without
** inputs.q_lens, k_lens or offsets; its pattern without document(),
** blocks(), random() or topk() (HATTN_ENOTSUP).  CUDA: the lengths are
** read by the kernels, which trust them (this call neither copies nor
** synchronises, and may be captured into a CUDA graph); a key-block plan
** that is not a band (window, causal) is walked whole, block by block with
** the mask, for an entry whose positions differ from the plan's.  CPU: the
** lengths are host memory, checked first, and each run makes the problems
** of its distinct pairs of lengths.  CUDA decode (one query an entry):
** the kernels split each entry's keys so as to fill the GPU for the plan's
** batch, so that a plan for many more entries than a run has leaves SMs
** idle (on an H200 at 128k keys, Gemma 3 27B's 62 layers decoded one
** request's token in 183 ms on plans for 64 entries, in 24 ms on plans for
** one: README, "Under load"): keep plans for a few batch sizes
** (powers of two, as hattn loadgen does) and run the smallest that covers
** the entries in use.  Returns as hattn_run does, and
** HATTN_EINPUT for missing, doubled or (where checked) malformed lengths,
** naming the entry.
*/
HATTN_API int hattn_run_varlen(hattn_plan *plan, const DLTensor *q, const DLTensor *k, const DLTensor *v,
                               const DLTensor *block_table, const hattn_varlen *lens, DLTensor *o, DLTensor *lse,
                               void *stream);

/*
** Check everything hattn_run_varlen (BLOCK_TABLE and LENS NULL:
** hattn_run; LENS NULL: hattn_run_paged) would check, and what it trusts
** on a device: the lengths (in range, offsets nondecreasing and within the
** packed tensors' rows) and the block table's entries that the run would
** read (within the pool), downloaded from the device (synchronous).
** Launches nothing.  Returns HATTN_OK, or the status and sentence the run
** would give (HATTN_EINPUT naming the first bad entry).
*/
HATTN_API int hattn_run_check(hattn_plan *plan, const DLTensor *q, const DLTensor *k, const DLTensor *v,
                              const DLTensor *block_table, const hattn_varlen *lens, const DLTensor *o,
                              const DLTensor *lse);

/* Free PLAN (NULL is allowed), and its context when it was closed and
** nothing else keeps it.  CUDA: the caller makes sure no run of the plan
** (or graph that captured one) is still queued, by synchronising first. */
HATTN_API void hattn_plan_destroy(hattn_plan *plan);

/* The text of the last failure or warning on PLAN's context, as
** hattn_kernel_errmsg gives it; "" for PLAN NULL. */
HATTN_API const char *hattn_plan_errmsg(const hattn_plan *plan);

/* ==== merging partial results ============================================
**
** Attention over keys split into parts (split-KV, context parallelism, a
** prefix cache plus new tokens) gives per part an O_i and its LSE_i; the
** attention over all the keys is their merge by LSE:
**   m = max_i LSE_i,  w_i = exp(LSE_i - m),
**   O = sum_i w_i O_i / sum_i w_i,  LSE = m + log(sum_i w_i).
*/

/* The most parts one hattn_merge takes (CUDA passes them by value in the
** kernel's arguments).  Merge more by merging merges. */
#define HATTN_MERGE_MAX_PARTS 16

/*
** Merge NPARTS (1 to HATTN_MERGE_MAX_PARTS) partial results O_PARTS[i]
** [B, H, L, D] and LSE_PARTS[i] [B, H, L] (natural log, float32) into O
** [B, H, L, D] and LSE [B, H, L] (may be NULL: not written).  The O tensors
** share one dtype (float32, float16 or bfloat16; the sums are float32), all
** shapes equal those of O_PARTS[0], any strides in elements (strides NULL:
** compact row-major), byte_offset honoured, all on CTX's device (kDLCPU for
** the CPU backend; kDLCUDA with the context's ordinal for CUDA).  A row
** whose LSE_i is -inf (part i saw no key) adds nothing whatever its O_i; a
** row no part saw gets O = 0 and LSE = -inf; a NaN LSE_i makes the row NaN.
** O and LSE may not overlap the parts.
**   CPU: synchronous; STREAM is ignored.
**   CUDA: queued on STREAM (a CUstream; NULL the default stream) and
**   returns at once, as hattn_run does: nothing is allocated, copied or
**   synchronised, except that the first merge of each dtype on a context
**   compiles its kernel with NVRTC and loads it (kept until the context is
**   freed): make one merge of that dtype before capturing a merge into a
**   CUDA graph.
** Returns HATTN_OK, HATTN_EINVAL (CTX, O_PARTS or LSE_PARTS NULL; NPARTS
** out of range), HATTN_ESHAPE (a tensor missing, on the wrong device, of
** the wrong dtype or shape: the message names it as "o_parts[1]",
** "lse_parts[0]", "o" or "lse"), HATTN_ENOTSUP (a backend without a merge,
** the runtime-only library's CUDA), or a device error; the sentence is in
** hattn_errmsg(CTX).
*/
HATTN_API int hattn_merge(hattn_ctx *ctx, int nparts, const DLTensor *const *o_parts,
                          const DLTensor *const *lse_parts, DLTensor *o, DLTensor *lse, void *stream);

/* ==== kernels built ahead of time ==========================================
**
** `hattn gen` writes kernels at build time (CPU object files, CUDA cubins)
** and a C source that lists them in an array of hattn_prebuilt, with a
** function that registers the array.  A program links those and libhattn,
** or libhattnrt: the runtime alone, with neither LLVM nor NVRTC, which runs
** the kernels it is given or finds in the database and compiles nothing.
*/

/* The CPU kernels' argument block (internal to hattn; only passed along). */
struct hattn_cpu_args;
/* A CPU kernel: the calling convention of the objects hattn gen writes. */
typedef void (*hattn_cpu_kernel_fn)(const struct hattn_cpu_args *args, int64_t bh, int64_t qb,
                                    float *scratch);

/* The kernel ABI this library runs: a prebuilt kernel of another is refused. */
#define HATTN_PREBUILT_ABI 4

typedef struct hattn_prebuilt {
  int abi;                     /* HATTN_PREBUILT_ABI when it was generated */
  int backend;                 /* hattn_backend */
  const char *canon;           /* the pattern's canonical text */
  int dtype;                   /* hattn_eltype */
  int head_dim;
  const char *config;          /* "bm=64 bn=64 rows=4 vec=8" (CPU) or
                               ** "bm=64 bn=64 warps=4 stages=2" (CUDA) */
  const char *target;          /* CPU: the LLVM CPU name ("x86-64-v3");
                               ** CUDA: the arch ("sm_90a") */
  const char *needs;           /* CPU: the extensions the host must have,
                               ** comma separated ("avx,avx2,fma"); CUDA: NULL */
  hattn_cpu_kernel_fn cpu_fn;  /* CPU: the kernel */
  const void *cubin;           /* CUDA: the cubin and its size */
  size_t cubin_size;
} hattn_prebuilt;

/*
** Register the N kernels of TABLE with CTX.  From then on hattn_kernel_get
** returns a registered kernel whose canonical pattern, dtype and head dim
** match, before it looks in the database: on the CPU one whose needs the
** host meets, on CUDA one built for the device's arch (else one the
** device runs: the same major version, an older minor, no "a" suffix).
** Kernels of the other backend are skipped.  The strings are copied;
** CPU_FN and CUBIN must stay valid until CTX is closed (they are static
** data in generated code).  *NUSED (may be NULL) counts the kernels kept.
** Returns HATTN_OK, HATTN_EINVAL (a malformed entry: nothing after it is
** registered, or CTX NULL, or TABLE NULL with N > 0), HATTN_ECLOSED,
** HATTN_ENOTSUP (an entry of another ABI), HATTN_ENOMEM.
*/
HATTN_API int hattn_add_prebuilt(hattn_ctx *ctx, const hattn_prebuilt *table, int n, int *nused);

/*
** The float64 reference of what hattn_forward computes with KERN: the same
** tensors Q, K, V (host memory, kDLCPU, the problem's dtype, any strides)
** and inputs, with O a float64 tensor [batch, heads, lq, head_dim] and LSE
** (may be NULL) float64 [batch, heads, lq], host memory, any strides.  One
** row at a time over every key: slow, and meant for tests.  With
** INPUTS->paged, K and V are host pools read through its block table (host
** memory, every entry read checked), as hattn_forward takes them.  Returns
** as hattn_forward does (HATTN_EINVAL for KERN NULL), also on the CUDA
** backend's kernels, whose reference reads host memory.
*/
HATTN_API int hattn_reference(hattn_kernel *kern, const DLTensor *q, const DLTensor *k, const DLTensor *v,
                              DLTensor *o, DLTensor *lse, const hattn_inputs *inputs);

#ifdef __cplusplus
}
#endif
#endif /* HATTN_H */
