/*
** backend_cpu.c: the CPU backend's table (backend.h): the host as hattn
** sees it (CPUID, no LLVM), configurations and their text, kernels as
** object files loaded by hattn's own ELF loader (elf_load.h), problems and
** launches over the thread pool (cpu_run.c).  Compiling is in
** backend_compile.c, linked into libhattn only.
*/
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "dtype.h"
#include "elf_load.h"
#include "kernel_cache.h"

/* ---- the host ------------------------------------------------------------------- */

static pthread_once_t g_host_once = PTHREAD_ONCE_INIT;
static hattn__kc_host g_host;

static void init_host(void) {
  const hattn__backend_i *be = hattn__backend_get(HATTN__BACKEND_CPU);
  const char *v = be->compiler_version ? be->compiler_version() : NULL;
  hattn__host_cpu h;
  hattn__host_cpu_probe(&h);
  snprintf(g_host.cpu, sizeof g_host.cpu, "%s", h.name);
  snprintf(g_host.features, sizeof g_host.features, "%s", h.features);
  snprintf(g_host.all, sizeof g_host.all, "%s", h.all);
  snprintf(g_host.target, sizeof g_host.target, "%s", h.target);
  g_host.cores = h.cores;
  g_host.vec = h.vec;
  if (v) snprintf(g_host.compiler, sizeof g_host.compiler, "llvm %s", v);
  g_host.device.kind = "cpu";
  g_host.device.name = g_host.cpu;
  g_host.device.driver = "";
  g_host.device.toolkit = "";
  g_host.device.features = g_host.features;
  g_host.device.cores = g_host.cores;
  hattn__db_device_model(&g_host.device, g_host.model, sizeof g_host.model);
}

int hattn__kc_host_cpu(const hattn__kc_host **out, char *err, size_t errlen) {
  (void)err, (void)errlen;
  pthread_once(&g_host_once, init_host);
  *out = &g_host;
  return HATTN_OK;
}

/* Whether the comma-separated LIST holds the LEN bytes at NAME. */
static int list_has(const char *list, const char *name, size_t len) {
  const char *p = list;
  while (*p) {
    size_t n = strcspn(p, ",");
    if (n == len && !strncmp(p, name, len)) return 1;
    p += n;
    if (*p == ',') p++;
  }
  return 0;
}

int hattn__kc_features_cover(const char *have, const char *need) {
  const char *p = need;
  while (*p) {
    size_t n = strcspn(p, ",");
    if (n > 0 && !list_has(have, p, n)) return 0;
    p += n;
    if (*p == ',') p++;
  }
  return 1;
}

/* ---- configurations ------------------------------------------------------------- */

void hattn__kc_cpu_config_text(const hattn__cpu_config *cfg, int threads, char *buf, size_t len) {
  int n = snprintf(buf, len, "bm=%d bn=%d rows=%d vec=%d", cfg->bm, cfg->bn, cfg->rows, cfg->vec);
  if (threads > 0 && n >= 0 && (size_t)n < len) snprintf(buf + n, len - (size_t)n, " threads=%d", threads);
}

int hattn__kc_cpu_config_parse(const char *text, hattn__cpu_config *cfg, int *threads) {
  int n = 0, t = 0;
  if (sscanf(text, "bm=%d bn=%d rows=%d vec=%d%n", &cfg->bm, &cfg->bn, &cfg->rows, &cfg->vec, &n) != 4)
    return HATTN_EINVAL;
  if (text[n] == '\0') t = 0;
  else if (sscanf(text + n, " threads=%d", &t) != 1 || t < 1) return HATTN_EINVAL;
  if (threads) *threads = t;
  return HATTN_OK;
}

void hattn__kc_cpu_fn_name(const char *key, char *buf, size_t len) { snprintf(buf, len, "hattn_%s", key); }

static void config_default(void *dev, const hattn__kernel_desc *desc, hattn__config *out) {
  const hattn__kc_host *host;
  (void)dev;
  hattn__kc_host_cpu(&host, NULL, 0);
  hattn__cpu_config_default(desc->head_dim, host->vec, &out->cpu);
}

static int config_check(const hattn__kernel_desc *desc, const hattn__config *cfg, char *err, size_t errlen) {
  return hattn__cpu_config_check(&cfg->cpu, desc->head_dim, err, errlen);
}

static void config_text(const hattn__config *cfg, int threads, char *buf, size_t len) {
  hattn__kc_cpu_config_text(&cfg->cpu, threads, buf, len);
}

static int config_parse(const char *text, hattn__config *cfg) {
  return hattn__kc_cpu_config_parse(text, &cfg->cpu, &cfg->threads);
}

static int config_tile(const hattn__kernel_desc *desc, const hattn__tile *tile, hattn__config *cfg, char *err,
                       size_t errlen) {
  (void)desc, (void)err, (void)errlen;
  if (tile->vec) cfg->cpu.vec = tile->vec;
  if (tile->bm) cfg->cpu.bm = tile->bm, cfg->cpu.bn = tile->bn;
  if (tile->rows) cfg->cpu.rows = tile->rows;
  return HATTN_OK;
}

/* ---- the device and its kernels ------------------------------------------------- */

/* A loaded kernel: its function, its decode function (NULL where the
** object has none: a program's own function, an object of an older hattn),
** and the object it came from (NULL for a program's own function). */
typedef struct cpu_kernel {
  struct cpu_kernel *next;
  hattn__cpu_fn fn;
  hattn__cpu_decode_fn decode_fn;
  hattn__elf_image *img;
  void *bin;
  size_t size;
} cpu_kernel;

typedef struct cpu_dev {
  hattn__pool *pool;            /* NULL: launches run on the calling thread */
  cpu_kernel *kernels;          /* owned, newest first */
  struct {
    int threads;
    hattn__pool *pool;
  } timing[4];                  /* the pools timings ran on, by thread count */
  int ntiming;
} cpu_dev;

static int dev_open(int ordinal, int threads, void **out, char *err, size_t errlen) {
  cpu_dev *d;
  int rc;
  (void)ordinal;
  *out = NULL;
  if ((d = calloc(1, sizeof *d)) == NULL) {
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  if (threads >= 0 && (rc = hattn__pool_create(threads, &d->pool)) != HATTN_OK) {
    if (threads > 0)
      snprintf(err, errlen, "cannot start a pool of %d threads: %s", threads, hattn_strerror(rc));
    else
      snprintf(err, errlen, "cannot start a pool of a thread per core (HATTN_NUM_THREADS sets fewer): %s",
               hattn_strerror(rc));
    free(d);
    return rc;
  }
  *out = d;
  return HATTN_OK;
}

static int dev_threadpool(void *dev, const hattn_threadpool *tp, char *err, size_t errlen) {
  cpu_dev *d = dev;
  int rc = hattn__pool_create_foreign(tp, &d->pool);
  if (rc == HATTN_EINVAL)
    snprintf(err, errlen, "threadpool: %s",
             tp == NULL || tp->num_threads == NULL || tp->parallel_for == NULL
                 ? "num_threads and parallel_for must both be set"
                 : "num_threads must return 1 or more");
  else if (rc != HATTN_OK)
    snprintf(err, errlen, "out of memory");
  return rc;
}

static void dev_close(void *dev) {
  cpu_dev *d = dev;
  cpu_kernel *k, *next;
  if (d == NULL) return;
  for (k = d->kernels; k != NULL; k = next) {
    next = k->next;
    hattn__elf_unload(k->img);
    free(k->bin);
    free(k);
  }
  hattn__pool_destroy(d->pool);
  while (d->ntiming > 0) hattn__pool_destroy(d->timing[--d->ntiming].pool);
  free(d);
}

static void ident(void *dev, hattn__ident *out) {
  const hattn__kc_host *host;
  (void)dev;
  hattn__kc_host_cpu(&host, NULL, 0);
  memset(out, 0, sizeof *out);
  _Static_assert(sizeof out->name >= sizeof host->cpu && sizeof out->features >= sizeof host->features &&
                     sizeof out->target >= sizeof host->target && sizeof out->compiler >= sizeof host->compiler &&
                     sizeof out->model >= sizeof host->model,
                 "an identity holds the host's strings");
  memcpy(out->name, host->cpu, sizeof host->cpu);
  memcpy(out->features, host->features, sizeof host->features);
  memcpy(out->target, host->target, sizeof host->target);
  memcpy(out->compiler, host->compiler, sizeof host->compiler);
  out->device = host->device;
  out->device.name = out->name;
  out->device.features = out->features;
  memcpy(out->model, host->model, sizeof host->model);
}

static void config_describe(void *dev, const hattn__config *cfg, char *buf, size_t len) {
  const cpu_dev *d = dev;
  const hattn__kc_host *host;
  int threads = cfg->threads > 0 ? cfg->threads : d != NULL && d->pool != NULL ? hattn__pool_threads(d->pool) : 0;
  hattn__kc_host_cpu(&host, NULL, 0);
  snprintf(buf, len, "cpu %s block %dx%d rows %d vec %d, %d threads", host->cpu, cfg->cpu.bm, cfg->cpu.bn,
           cfg->cpu.rows, cfg->cpu.vec, threads > 0 ? threads : host->cores);
}

static int target_score(void *dev, const char *target, const char *needs) {
  const hattn__kc_host *host;
  (void)dev, (void)target;
  hattn__kc_host_cpu(&host, NULL, 0);
  return hattn__kc_features_cover(host->all, needs) ? 2 : 0;
}

static int prebuilt_has_binary(void (*fn)(void), const void *bin, size_t size) {
  (void)bin, (void)size;
  return fn != NULL;
}

/* Add a kernel to DEV: FN and DFN (may be NULL), from IMG and a copy of
** BIN (may be NULL). */
static int add_kernel(cpu_dev *d, hattn__cpu_fn fn, hattn__cpu_decode_fn dfn, hattn__elf_image *img,
                      const void *bin, size_t size, void **out, char *err, size_t errlen) {
  cpu_kernel *k = calloc(1, sizeof *k);
  if (k == NULL || (bin != NULL && (k->bin = malloc(size ? size : 1)) == NULL)) {
    free(k);
    hattn__elf_unload(img);
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  if (bin != NULL) memcpy(k->bin, bin, size);
  k->size = bin != NULL ? size : 0;
  k->fn = fn;
  k->decode_fn = dfn;
  k->img = img;
  k->next = d->kernels;
  d->kernels = k;
  *out = k;
  return HATTN_OK;
}

static int load(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, const char *key,
                const void *bin, size_t size, void **out, char *err, size_t errlen) {
  hattn__elf_image *img = NULL;
  hattn__cpu_fn fn;
  hattn__cpu_decode_fn dfn = NULL;
  void *addr = NULL, *daddr = NULL;
  char fn_name[64], decode_name[80];
  int rc;
  (void)desc, (void)cfg;
  *out = NULL;
  hattn__kc_cpu_fn_name(key, fn_name, sizeof fn_name);
  snprintf(decode_name, sizeof decode_name, "%s_decode", fn_name);
  if ((rc = hattn__elf_load2(bin, size, fn_name, decode_name, &img, &addr, &daddr, err, errlen)) != HATTN_OK)
    return rc;
  /* An object function pointer from a data pointer: POSIX guarantees it. */
  memcpy(&fn, &addr, sizeof fn);
  if (daddr != NULL) memcpy(&dfn, &daddr, sizeof dfn);
  return add_kernel(dev, fn, dfn, img, bin, size, out, err, errlen);
}

static int load_prebuilt(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, void (*fn)(void),
                         const void *bin, size_t size, void **out, char *err, size_t errlen) {
  (void)desc, (void)cfg, (void)bin, (void)size;
  /* The kernel's own type: hattn_cpu_kernel_fn is hattn__cpu_fn. */
  return add_kernel(dev, (hattn__cpu_fn)fn, NULL, NULL, NULL, 0, out, err, errlen);
}

static void binary(const void *kern, const void **bin, size_t *size) {
  const cpu_kernel *k = kern;
  *bin = k->bin;
  *size = k->size;
}

hattn__cpu_fn hattn__cpu_kernel_fn(const void *kern) { return ((const cpu_kernel *)kern)->fn; }

/* ---- problems and launches ------------------------------------------------------ */

static int problem_create(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg,
                          const hattn__shape *shape, const hattn__mask_env *env, void **prob, char *err,
                          size_t errlen) {
  cpu_dev *d = dev;
  hattn__cpu_problem *pr = NULL;
  int rc = hattn__cpu_problem_create(desc, &cfg->cpu, shape, env, &pr, err, errlen);
  /* The scratch of the device's pool now: launches allocate nothing. */
  if (rc == HATTN_OK &&
      (rc = hattn__cpu_problem_reserve(pr, d->pool ? hattn__pool_threads(d->pool) : 1, err, errlen)) != HATTN_OK) {
    hattn__cpu_problem_destroy(pr);
    pr = NULL;
  }
  *prob = pr;
  return rc;
}

static void problem_destroy(void *prob) { hattn__cpu_problem_destroy(prob); }

static int launch(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                  const hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse, void *stream, char *err,
                  size_t errlen) {
  (void)stream;
  return hattn__cpu_launch_kernel(hattn__cpu_kernel_fn(kern), ((const cpu_kernel *)kern)->decode_fn, prob, q, k, v,
                                  NULL, o, lse, ((cpu_dev *)dev)->pool, err, errlen);
}

static int launch_paged(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                        const hattn__tensor *v, const hattn__paged *pg, hattn__tensor *o, hattn__tensor *lse,
                        void *stream, int wait, char *err, size_t errlen) {
  (void)stream;
  (void)wait;                   /* always: the CPU's launches return when done */
  return hattn__cpu_launch_kernel(hattn__cpu_kernel_fn(kern), ((const cpu_kernel *)kern)->decode_fn, prob, q, k, v,
                                  pg, o, lse, ((cpu_dev *)dev)->pool, err, errlen);
}

/* ---- the tuner: candidates, memory, timing ------------------------------------- */

/* Append the tile (BM, BN, ROWS, VEC) at THREADS to C (N of CAP used) when
** HEAD_DIM accepts it and it is not there yet. */
static void add_cand(hattn__config *c, int *n, int cap, int head_dim, int bm, int bn, int rows, int vec,
                     int threads) {
  hattn__cpu_config cfg;
  char err[256];
  int i;
  cfg.bm = bm, cfg.bn = bn, cfg.rows = rows, cfg.vec = vec;
  if (*n >= cap || hattn__cpu_config_check(&cfg, head_dim, err, sizeof err) != HATTN_OK) return;
  for (i = 0; i < *n; i++)
    if (!memcmp(&c[i].cpu, &cfg, sizeof cfg) && c[i].threads == threads) return;
  memset(&c[*n], 0, sizeof c[*n]);
  c[*n].cpu = cfg;
  c[*n].threads = threads;
  (*n)++;
}

static int config_candidates(void *dev, const hattn__kernel_desc *desc, const hattn__shape *shape, int max_threads,
                             hattn__config **out, int *n) {
  /* Query tiles x key tiles around the default, 4 register rows (and 2
  ** and 8 for the default tile), the host's vector width (and 8 floats on
  ** AVX-512 hosts), every core (and half of them for the default). */
  static const int bms[] = {64, 128, 256}, bns[] = {32, 64, 128};
  const hattn__kc_host *host;
  hattn__config *c;
  hattn__cpu_config d;
  int cap = 24, i, j, cores, head_dim = desc->head_dim;
  (void)dev;
  (void)shape;

  *out = NULL;
  *n = 0;
  hattn__kc_host_cpu(&host, NULL, 0);
  cores = max_threads > 0 ? max_threads : host->cores;
  if ((c = calloc((size_t)cap, sizeof *c)) == NULL) return HATTN_ENOMEM;
  if (cores < 1) cores = 1;
  hattn__cpu_config_default(head_dim, host->vec, &d);
  add_cand(c, n, cap, head_dim, d.bm, d.bn, d.rows, d.vec, cores);
  for (i = 0; i < 3; i++)
    for (j = 0; j < 3; j++) {
      if (head_dim > 256 && (bms[i] > 128 || bns[j] > 64)) continue; /* scratch beyond L2 */
      add_cand(c, n, cap, head_dim, bms[i], bns[j], 4, d.vec, cores);
    }
  add_cand(c, n, cap, head_dim, d.bm, d.bn, 2, d.vec, cores);
  add_cand(c, n, cap, head_dim, d.bm, d.bn, 8, d.vec, cores);
  if (d.vec == 16) add_cand(c, n, cap, head_dim, d.bm, d.bn < 64 ? 64 : d.bn, d.rows, 8, cores);
  if (cores >= 2) add_cand(c, n, cap, head_dim, d.bm, d.bn, d.rows, d.vec, cores / 2);
  *out = c;
  return HATTN_OK;
}

static int mem_alloc(void *dev, size_t bytes, void **ptr, char *err, size_t errlen) {
  (void)dev;
  if ((*ptr = malloc(bytes ? bytes : 1)) == NULL) {
    snprintf(err, errlen, "out of memory (%zu bytes)", bytes);
    return HATTN_ENOMEM;
  }
  return HATTN_OK;
}

static void mem_free(void *dev, void *ptr) {
  (void)dev;
  free(ptr);
}

static int mem_set(void *dev, void *ptr, int byte, size_t bytes, char *err, size_t errlen) {
  (void)dev, (void)err, (void)errlen;
  memset(ptr, byte, bytes);
  return HATTN_OK;
}

static int mem_copy(void *dev, void *dst, const void *src, size_t bytes, char *err, size_t errlen) {
  (void)dev, (void)err, (void)errlen;
  memcpy(dst, src, bytes);
  return HATTN_OK;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The pool of THREADS workers for timings, started on first use. */
static hattn__pool *timing_pool(cpu_dev *d, int threads) {
  hattn__pool *pool = NULL;
  int i;
  for (i = 0; i < d->ntiming; i++)
    if (d->timing[i].threads == threads) return d->timing[i].pool;
  if (d->ntiming >= 4 || hattn__pool_create(threads, &pool) != HATTN_OK) return NULL;
  d->timing[d->ntiming].threads = threads;
  d->timing[d->ntiming++].pool = pool;
  return pool;
}

/* The wall clock around one launch a sample, over the pool of CFG's
** threads; the warm-up and the samples walk the input sets in turn. */
static int time_kernel(void *dev, void *kern, void *prob, const hattn__kernel_desc *desc, const hattn__config *cfg,
                       const hattn__tensor_set *sets, int nsets, int warmup, int (*reps)(void *ctx, double sample_s),
                       void *ctx, int max, double *samples_us, int *n, char *err, size_t errlen) {
  hattn__pool *pool = timing_pool(dev, cfg->threads);
  hattn__cpu_fn fn = hattn__cpu_kernel_fn(kern);
  /* A run's launch: the decode kernel where the problem takes it, so that
  ** the tuner times what runs. */
  hattn__cpu_decode_fn dfn = ((const cpu_kernel *)kern)->decode_fn;
  double t, ts;
  int j, r, rc;
  (void)desc;
  *n = 0;
  if (pool == NULL) {
    if (cfg->threads > 0)
      snprintf(err, errlen, "cannot start a pool of %d threads", cfg->threads);
    else
      snprintf(err, errlen, "cannot start a pool of a thread per core (HATTN_NUM_THREADS sets fewer)");
    return HATTN_ENOMEM;
  }
  if (nsets < 1) {
    snprintf(err, errlen, "no input sets to time with");
    return HATTN_EINVAL;
  }
  if (warmup <= 0) warmup = 2;
  ts = now_s();
  for (j = 0; j < warmup; j++) {
    const hattn__tensor_set *s = &sets[j % nsets];
    hattn__tensor o = s->o, lse = s->lse;
    if ((rc = hattn__cpu_launch_kernel(fn, dfn, prob, &s->q, &s->k, &s->v, NULL, &o, &lse, pool, err, errlen)) != HATTN_OK)
      return rc;
  }
  r = reps(ctx, (now_s() - ts) / warmup);
  if (r > max) r = max;
  for (j = 0; j < r; j++) {
    const hattn__tensor_set *s = &sets[(j + warmup) % nsets];
    hattn__tensor o = s->o, lse = s->lse;
    t = now_s();
    if ((rc = hattn__cpu_launch_kernel(fn, dfn, prob, &s->q, &s->k, &s->v, NULL, &o, &lse, pool, err, errlen)) != HATTN_OK)
      return rc;
    samples_us[j] = (now_s() - t) * 1e6;
  }
  *n = r;
  return HATTN_OK;
}

/* The merge operation (backend.h), single-threaded: it reads each input
** once and is bound by memory.  STREAM is ignored. */
static int merge(void *dev, int nparts, const hattn__tensor *o_parts, const hattn__tensor *lse_parts,
                 hattn__tensor *o, hattn__tensor *lse, hattn__dtype dtype, const int64_t dims[4], void *stream,
                 char *err, size_t errlen) {
  int64_t b, h, l, d;
  int i;
  float w[HATTN_MERGE_MAX_PARTS];
  (void)dev;
  (void)stream;
  (void)err;
  (void)errlen;
  for (b = 0; b < dims[0]; b++)
    for (h = 0; h < dims[1]; h++)
      for (l = 0; l < dims[2]; l++) {
        float m = -INFINITY, sum = 0.f, out_lse;
        int nan = 0;
        for (i = 0; i < nparts; i++) {
          const hattn__tensor *t = &lse_parts[i];
          float x = ((const float *)t->data)[b * t->stride[0] + h * t->stride[1] + l * t->stride[2]];
          w[i] = x;
          if (isnan(x)) nan = 1;
          else if (x > m) m = x;
        }
        if (nan) m = NAN;
        for (i = 0; i < nparts; i++) {
          /* A part that saw no key of this row adds nothing, whatever its O. */
          w[i] = w[i] == -INFINITY && !nan ? 0.f : expf(w[i] - m);
          sum += w[i];
        }
        out_lse = m == -INFINITY ? -INFINITY : m + logf(sum);
        for (d = 0; d < dims[3]; d++) {
          float acc = 0.f;
          for (i = 0; i < nparts; i++) {
            const hattn__tensor *t = &o_parts[i];
            if (w[i] != 0.f || nan)
              acc += w[i] * (float)hattn__elem_get(t->data, dtype,
                                                  (size_t)(b * t->stride[0] + h * t->stride[1] +
                                                           l * t->stride[2] + d * t->stride[3]));
          }
          hattn__elem_set(o->data, dtype,
                          (size_t)(b * o->stride[0] + h * o->stride[1] + l * o->stride[2] + d * o->stride[3]),
                          m == -INFINITY ? 0.f : acc / sum);
        }
        if (lse->data != NULL)
          ((float *)lse->data)[b * lse->stride[0] + h * lse->stride[1] + l * lse->stride[2]] = out_lse;
      }
  return HATTN_OK;
}

hattn__backend_i hattn__backend_cpu = {
    .version = HATTN__BACKEND_I_VERSION,
    .id = HATTN__BACKEND_CPU,
    .name = "cpu",
    .dl_device = kDLCPU,
    .dl_name = "kDLCPU",
    .binary_name = "function",
    .target_form = NULL,
    .dtype_default = HATTN_DTYPE_FP32,
    .dtypes = 1u << HATTN_DTYPE_FP32 | 1u << HATTN_DTYPE_FP16 | 1u << HATTN_DTYPE_BF16,
    .gen_target_option = "--cpu",
    .compiler_name = "llvm",
    .dev_open = dev_open,
    .dev_close = dev_close,
    .ident = ident,
    .config_default = config_default,
    .config_check = config_check,
    .config_text = config_text,
    .config_parse = config_parse,
    .target_valid = NULL,
    .target_score = target_score,
    .prebuilt_has_binary = prebuilt_has_binary,
    .compile = NULL,            /* backend_compile.c */
    .compiler_version = NULL,   /* backend_compile.c */
    .load = load,
    .load_prebuilt = load_prebuilt,
    .binary = binary,
    .problem_create = problem_create,
    .problem_destroy = problem_destroy,
    .launch = launch,
    .config_candidates = config_candidates,
    .mem_alloc = mem_alloc,
    .mem_free = mem_free,
    .mem_set = mem_set,
    .mem_upload = mem_copy,
    .mem_download = mem_copy,
    .time = time_kernel,
    .config_tile = config_tile,
    .config_describe = config_describe,
    .gen = NULL,                /* backend_gen.c, by backend_compile.c */
    .launch_async = NULL,       /* hattn_run takes the synchronous launch over the pool */
    .merge = merge,
    .launch_paged = launch_paged,
    .varlen = 1,
    .dev_threadpool = dev_threadpool,
};
