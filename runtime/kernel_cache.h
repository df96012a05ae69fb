/*
** kernel_cache.h: the runtime's kernel lookup.  A kernel is asked for by
** pattern, dtype, head dim and problem shape; the answer comes from, in
** order: the in-process cache; the database (this device's tuned winner
** for the shape bucket, else the nearest tuned bucket, else the kernel of
** the default configuration when an earlier process stored it); and last a
** compile of the default configuration, which is stored in the database so
** that the next process finds it.  Also the identities that key kernels
** and tuning records (kernel keys, the host CPU as a device, compiler
** identities), shared with the tuner.  Internal; not installed.
**
** A cache is used by one thread at a time.  Every function returns HATTN_OK
** or a negative HATTN_E* code with a sentence in ERR (ERRLEN bytes).
*/
#ifndef HATTN_RUNTIME_KERNEL_CACHE_H
#define HATTN_RUNTIME_KERNEL_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "cpu.h"
#include "cpu_config.h"
#include "cuda.h"
#include "db.h"
#include "cuda_config.h"
#include "spec.h"

/* ---- identities ------------------------------------------------------------- */

/* The length of a key: "k" or "c", 16 hex digits, a NUL. */
#define HATTN__KC_KEY_LEN 18

/*
** The kernel key of a kernel: FNV-1a 64 over the canonical pattern (its
** modifiers included), dtype, head dim, backend, target, CONFIG and the
** kernel ABI (HATTN_PREBUILT_ABI), as "k" and 16 hex digits.  With CONFIG
** NULL (no ABI either: tuning outlives ABI changes) it is the kernel class (the key
** of tuning records), "c" and 16 hex digits.
*/
void hattn__kc_key(const char *canon, hattn__dtype dtype, int head_dim, hattn__backend backend,
                   const char *target, const char *config, char out[HATTN__KC_KEY_LEN]);

/* Problems of 1 to this many queries (decode: the CUDA decode kernels run
** them) are tuned and looked up apart from longer ones. */
#define HATTN__KC_DECODE_MAX_LQ 16

/* The kernel class (hattn__kc_key with CONFIG NULL) of a problem of LQ
** queries: for 1 <= LQ <= HATTN__KC_DECODE_MAX_LQ a class of its own, so
** that the tuned winners of decode and of longer problems never replace
** each other. */
void hattn__kc_class(const char *canon, hattn__dtype dtype, int head_dim, hattn__backend backend,
                     const char *target, int64_t lq, char out[HATTN__KC_KEY_LEN]);

/* The host CPU as hattn sees it (hattn__host_cpu_probe, no LLVM): its
** name (the brand string), the features that matter to the kernels (comma
** separated: "avx2,fma,avx512f"), every feature present (ALL), the core
** count, the kernel target ("x86-64/" and a 16-digit hash of the feature
** set, so that kernels built for another feature set never load), the
** vector width in floats, the device record and the compiler identity
** ("llvm 16.0.6"; "" in the runtime-only library, which compiles
** nothing).  Static storage, filled once. */
typedef struct hattn__kc_host {
  char cpu[64];
  char features[256];
  char all[512];
  char target[96];
  int cores;
  int vec;
  char compiler[32];
  hattn__db_device device;
  char model[512];             /* hattn__db_device_model of device */
} hattn__kc_host;

/* Always HATTN_OK (the signature keeps room for hosts hattn cannot read). */
int hattn__kc_host_cpu(const hattn__kc_host **out, char *err, size_t errlen);

/* Whether every feature of the comma-separated list NEED is in the
** comma-separated list HAVE ("" needs nothing). */
int hattn__kc_features_cover(const char *have, const char *need);

/* Whether a cubin built for ARCH ("sm_80", "sm_90a") runs on a device of
** compute capability SM (90 for 9.0): 2 when ARCH is the device's own, 1
** when the device runs it anyway (the same major, an older minor, no "a"
** suffix), 0 when not or when ARCH is not of that form. */
int hattn__kc_arch_runs(const char *arch, int sm);

/* A GPU as a device record and its model string ("gpu:NAME:sm_90:132"),
** with the compiler identity ("nvrtc 12.4"); into caller storage. */
typedef struct hattn__kc_gpu {
  char name[128];
  char arch[16];
  char compiler[32];
  hattn__db_device device;
  char model[256];
} hattn__kc_gpu;

void hattn__kc_gpu_identity(hattn__cuda *cu, hattn__kc_gpu *out);

/* Configurations as text, the form kept in the database:
** "bm=128 bn=64 rows=4 vec=8" (with " threads=N" when THREADS > 0) and
** "bm=64 bn=64 warps=4 stages=2".  Parsing accepts what formatting writes
** (and a CPU config without threads: *THREADS = 0). */
void hattn__kc_cpu_config_text(const hattn__cpu_config *cfg, int threads, char *buf, size_t len);
int hattn__kc_cpu_config_parse(const char *text, hattn__cpu_config *cfg, int *threads);
void hattn__kc_cuda_config_text(const hattn__cuda_config *cfg, char *buf, size_t len);
int hattn__kc_cuda_config_parse(const char *text, hattn__cuda_config *cfg);

/* ---- CPU object files -------------------------------------------------------- */

/* The kernel of DESC and CFG for the host CPU as a relocatable object
** whose function is FN_NAME: *BYTES (malloc'd; the caller frees) and
** *SIZE.  Codegen through hattn__llvm_write_object into a temporary file
** (backend_compile.c: libhattn only). */
int hattn__kc_cpu_object(const hattn__kernel_desc *desc, const hattn__cpu_config *cfg,
                         const char *fn_name, void **bytes, size_t *size, char *err, size_t errlen);

/* The function name a stored CPU kernel of KEY carries: "hattn_" KEY. */
void hattn__kc_cpu_fn_name(const char *key, char *buf, size_t len);

/* ---- the cache ------------------------------------------------------------------ */

typedef struct hattn__kcache hattn__kcache;

typedef struct hattn__kcache_opts {
  hattn__backend backend;
  const char *db_path;   /* NULL: hattn__db_default_path; "": no database */
  int quiet;             /* do not print warnings to stderr (they are kept anyway) */
  void *dev;             /* the backend's device, opened through its table (backend.h; for
                         ** cuda an open hattn__cuda); not owned.  NULL: a device of the
                         ** cache's own (ordinal 0; the CPU's without a pool) */
} hattn__kcache_opts;

/* Where a kernel came from. */
typedef enum hattn__kc_source {
  HATTN__KC_MEMORY = 1,  /* this process had it */
  HATTN__KC_DB,          /* the database had its binary */
  HATTN__KC_COMPILED,    /* compiled now (and stored when a database is open) */
  HATTN__KC_PREBUILT     /* built ahead of time by hattn gen and registered */
} hattn__kc_source;

const char *hattn__kc_source_name(hattn__kc_source s);

/* A runnable kernel.  Owned by the cache; valid until hattn__kcache_close.
** The descriptors point at the pattern passed to hattn__kcache_get, which
** must outlive the cache. */
typedef struct hattn__kc_kernel {
  const hattn__backend_i *be;
  hattn__backend backend;
  char key[HATTN__KC_KEY_LEN];
  char kclass[HATTN__KC_KEY_LEN];
  char config[96];
  hattn__kc_source source;     /* of the last hattn__kcache_get that returned it */
  int tuned;                   /* 1: the config is a tuning's winner */
  int lk_log2, bh_class;       /* the tuned bucket used (tuned only) */
  hattn__kernel_desc desc;
  hattn__config cfg;           /* cfg.threads, CPU: the tuned thread count, 0: all */
  void *kern;                  /* the backend's kernel (backend.h), owned by its device */
} hattn__kc_kernel;

/* Open a cache.  A database that cannot be opened is not a failure: the
** cache warns ("hattn: warning: ...", on stderr unless OPT->quiet, and in
** hattn__kcache_warning) and compiles without storing. */
int hattn__kcache_open(const hattn__kcache_opts *opt, hattn__kcache **out, char *err, size_t errlen);
void hattn__kcache_close(hattn__kcache *kc);

/* The database, or NULL when none is open. */
hattn__db *hattn__kcache_db(hattn__kcache *kc);

/*
** A kernel built ahead of time (hattn gen) and linked into the program:
** the pattern's canonical text, dtype, head dim, configuration text (the
** database's form), the target it was built for (CPU: an LLVM CPU name;
** CUDA: an arch, "sm_90a"), and the binary: FN for the CPU with NEEDS, the
** host features it requires ("avx,avx2,fma"); CUBIN and CUBIN_SIZE for
** CUDA.  Strings are copied; FN and CUBIN must outlive the cache.
*/
typedef struct hattn__kc_prebuilt {
  hattn__backend backend;
  const char *canon;
  hattn__dtype dtype;
  int head_dim;
  const char *config;
  const char *target;
  const char *needs;
  hattn__cpu_fn fn;
  const void *cubin;
  size_t cubin_size;
} hattn__kc_prebuilt;

/* Register PB with the cache; kernels of the other backend are skipped (and
** *USED says 0).  Returns HATTN_OK, HATTN_EINVAL with a sentence for a
** configuration or target that does not read, HATTN_ENOMEM.  Whether the
** host can run the kernel is decided at lookup: the first registered
** kernel that runs here wins, one built for the device's own arch before
** one it merely runs. */
int hattn__kcache_add_prebuilt(hattn__kcache *kc, const hattn__kc_prebuilt *pb, int *used, char *err,
                               size_t errlen);

/* The last warning ("" when none). */
const char *hattn__kcache_warning(const hattn__kcache *kc);

/* The kernel of pattern P in DTYPE at HEAD_DIM for a problem of LQ queries,
** LK keys and BH = batch * heads (the tuned bucket; the class by LQ,
** hattn__kc_class): *OUT (owned by the cache), whose source says where
** it came from: memory, a registered prebuilt kernel, the database, else a
** compile.  Database failures warn and fall through to a compile.  Where
** the backend has no compile operation (libhattnrt) a kernel found nowhere
** is HATTN_ENOTSUP, with a sentence saying how to provide it. */
int hattn__kcache_get(hattn__kcache *kc, const hattn__pattern *p, hattn__dtype dtype, int head_dim,
                      int64_t lq, int64_t lk, int64_t bh, hattn__kc_kernel **out, char *err, size_t errlen);

#endif /* HATTN_RUNTIME_KERNEL_CACHE_H */
