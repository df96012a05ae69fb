/*
** kernel_cache.c: the runtime's kernel lookup (memory, database, compile)
** and the identities of kernels and devices.  See kernel_cache.h.  Built
** twice: into libhattn, which compiles what it does not find, and with
** HATTN_RT_ONLY into libhattnrt, which only loads.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hattn.h"
#include "kernel_cache.h"

#include <pthread.h>

#include "elf_load.h"

const char *hattn__backend_name(hattn__backend b) { return b == HATTN__BACKEND_CUDA ? "cuda" : "cpu"; }

const char *hattn__kc_source_name(hattn__kc_source s) {
  switch (s) {
  case HATTN__KC_MEMORY: return "memory";
  case HATTN__KC_DB: return "db";
  case HATTN__KC_COMPILED: return "compiled";
  case HATTN__KC_PREBUILT: return "prebuilt";
  }
  return "?";
}

/* ---- identities ------------------------------------------------------------- */

static uint64_t fnv_add(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  size_t i;
  for (i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/* Add the string S and its NUL, so that fields cannot run into each other. */
static uint64_t fnv_str(uint64_t h, const char *s) { return fnv_add(h, s, strlen(s) + 1); }

void hattn__kc_key(const char *canon, hattn_dtype dtype, int head_dim, hattn__backend backend,
                   const char *target, const char *config, char out[HATTN__KC_KEY_LEN]) {
  uint64_t h = 0xcbf29ce484222325ull;
  char num[32];
  h = fnv_str(h, canon);
  h = fnv_str(h, hattn__dtype_name(dtype));
  snprintf(num, sizeof num, "%d", head_dim);
  h = fnv_str(h, num);
  h = fnv_str(h, hattn__backend_name(backend));
  h = fnv_str(h, target);
  if (config) h = fnv_str(h, config);
  snprintf(out, HATTN__KC_KEY_LEN, "%c%016llx", config ? 'k' : 'c', (unsigned long long)h);
}

void hattn__kc_cpu_config_text(const hattn_cpu_config *cfg, int threads, char *buf, size_t len) {
  int n = snprintf(buf, len, "bm=%d bn=%d rows=%d vec=%d", cfg->bm, cfg->bn, cfg->rows, cfg->vec);
  if (threads > 0 && n >= 0 && (size_t)n < len) snprintf(buf + n, len - (size_t)n, " threads=%d", threads);
}

int hattn__kc_cpu_config_parse(const char *text, hattn_cpu_config *cfg, int *threads) {
  int n = 0, t = 0;
  if (sscanf(text, "bm=%d bn=%d rows=%d vec=%d%n", &cfg->bm, &cfg->bn, &cfg->rows, &cfg->vec, &n) != 4)
    return HATTN_EINVAL;
  if (text[n] == '\0') t = 0;
  else if (sscanf(text + n, " threads=%d", &t) != 1 || t < 1) return HATTN_EINVAL;
  if (threads) *threads = t;
  return HATTN_OK;
}

void hattn__kc_cuda_config_text(const hattn_cuda_config *cfg, char *buf, size_t len) {
  snprintf(buf, len, "bm=%d bn=%d warps=%d stages=%d%s", cfg->block_m, cfg->block_n, cfg->warps,
           cfg->stages, cfg->wgmma ? " wgmma" : "");
}

int hattn__kc_cuda_config_parse(const char *text, hattn_cuda_config *cfg) {
  int n = 0;
  if (sscanf(text, "bm=%d bn=%d warps=%d stages=%d%n", &cfg->block_m, &cfg->block_n, &cfg->warps,
             &cfg->stages, &n) != 4)
    return HATTN_EINVAL;
  cfg->wgmma = strcmp(text + n, " wgmma") == 0;
  if (text[n] != '\0' && !cfg->wgmma) return HATTN_EINVAL;
  return HATTN_OK;
}

void hattn__kc_cpu_fn_name(const char *key, char *buf, size_t len) { snprintf(buf, len, "hattn_%s", key); }

void hattn__kc_gpu_identity(hattn__cuda *cu, hattn__kc_gpu *out) {
#ifdef HATTN_RT_ONLY
  const char *v = NULL;        /* no compiler: any stored cubin for the arch loads */
#else
  const char *v = hattn__nvrtc_version();
#endif
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", hattn__cuda_name(cu));
  snprintf(out->arch, sizeof out->arch, "%s", hattn__cuda_arch(cu));
  if (v) snprintf(out->compiler, sizeof out->compiler, "nvrtc %s", v);
  out->device.kind = "gpu";
  out->device.name = out->name;
  out->device.cc = hattn__cuda_sm(cu);
  out->device.sm_count = hattn__cuda_sm_count(cu);
  out->device.driver = "";
  out->device.toolkit = v ? v : "";
  out->device.features = "";
  out->device.cores = 0;
  hattn__db_device_model(&out->device, out->model, sizeof out->model);
}

/* ---- the host ------------------------------------------------------------------- */

static pthread_once_t g_host_once = PTHREAD_ONCE_INIT;
static hattn__kc_host g_host;

static void init_host(void) {
  hattn__host_cpu h;
  hattn__host_cpu_probe(&h);
  snprintf(g_host.cpu, sizeof g_host.cpu, "%s", h.name);
  snprintf(g_host.features, sizeof g_host.features, "%s", h.features);
  snprintf(g_host.all, sizeof g_host.all, "%s", h.all);
  snprintf(g_host.target, sizeof g_host.target, "%s", h.target);
  g_host.cores = h.cores;
  g_host.vec = h.vec;
#if defined(HATTN_HAVE_LLVM) && !defined(HATTN_RT_ONLY)
  snprintf(g_host.compiler, sizeof g_host.compiler, "llvm %s", hattn__llvm_version());
#endif
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

int hattn__kc_arch_runs(const char *arch, int sm) {
  int major, minor, n = 0;
  char tail[2] = {0, 0};
  if (sscanf(arch, "sm_%1d%1d%n", &major, &minor, &n) != 2) return 0;
  if (arch[n] == 'a' && arch[n + 1] == '\0') tail[0] = 'a';
  else if (arch[n] != '\0') return 0;
  if (major * 10 + minor == sm) return 2;
  return !tail[0] && major == sm / 10 && minor < sm % 10 ? 1 : 0;
}

/* Make room for NEED elements of SIZE bytes in *P of capacity *CAP
** (doubling): 0, or -1 when memory runs out (*P untouched). */
static int grow(void **p, int *cap, int need, size_t size) {
  void *q;
  int n;
  if (need <= *cap) return 0;
  n = *cap ? *cap * 2 : 8;
  if ((q = realloc(*p, (size_t)n * size)) == NULL) return -1;
  *p = q;
  *cap = n;
  return 0;
}

/* ---- the object loader --------------------------------------------------------- */

/* Object files are loaded by hattn's own ELF loader (elf_load.h): no LLVM,
** so the runtime-only library loads what the database stores. */
struct hattn__kc_loader {
  hattn__elf_image **images;
  int n, cap;
};

int hattn__kc_loader_create(hattn__kc_loader **out, char *err, size_t errlen) {
  *out = calloc(1, sizeof **out);
  if (*out == NULL) {
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  return HATTN_OK;
}

void hattn__kc_loader_destroy(hattn__kc_loader *ld) {
  int i;
  if (ld == NULL) return;
  for (i = 0; i < ld->n; i++) hattn__elf_unload(ld->images[i]);
  free(ld->images);
  free(ld);
}

int hattn__kc_loader_add(hattn__kc_loader *ld, const void *bytes, size_t size, const char *fn_name,
                         hattn_cpu_fn *fn, char *err, size_t errlen) {
  hattn__elf_image *img = NULL;
  void *addr = NULL;
  int rc;

  *fn = NULL;
  if (grow((void **)&ld->images, &ld->cap, ld->n + 1, sizeof *ld->images)) {
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  if ((rc = hattn__elf_load(bytes, size, fn_name, &img, &addr, err, errlen)) != HATTN_OK) return rc;
  ld->images[ld->n++] = img;
  /* An object function pointer from a data pointer: POSIX guarantees it. */
  memcpy(fn, &addr, sizeof *fn);
  return HATTN_OK;
}

#ifndef HATTN_RT_ONLY
int hattn__kc_cpu_object(const hattn_cpu_kernel_desc *desc, const hattn_cpu_config *cfg,
                         const char *fn_name, void **bytes, size_t *size, char *err, size_t errlen) {
  const char *tmp = getenv("TMPDIR");
  char path[4096];
  FILE *f = NULL;
  long n;
  int fd, rc;
  void *data = NULL;

  *bytes = NULL;
  *size = 0;
  snprintf(path, sizeof path, "%s/hattn-obj-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if ((fd = mkstemp(path)) < 0) {
    snprintf(err, errlen, "cannot create a temporary file in %s: %s", tmp && *tmp ? tmp : "/tmp",
             strerror(errno));
    return HATTN_EIO;
  }
  close(fd);
  rc = hattn__llvm_write_object(desc, cfg, fn_name, NULL, path, err, errlen);
  if (rc != HATTN_OK) goto done;
  rc = HATTN_EIO;
  if ((f = fopen(path, "rb")) == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 ||
      fseek(f, 0, SEEK_SET) != 0) {
    snprintf(err, errlen, "cannot read the object file %s back", path);
    goto done;
  }
  if ((data = malloc((size_t)n)) == NULL) {
    snprintf(err, errlen, "out of memory");
    rc = HATTN_ENOMEM;
    goto done;
  }
  if (fread(data, 1, (size_t)n, f) != (size_t)n) {
    snprintf(err, errlen, "cannot read the object file %s back", path);
    free(data);
    goto done;
  }
  *bytes = data;
  *size = (size_t)n;
  rc = HATTN_OK;
done:
  if (f) fclose(f);
  unlink(path);
  return rc;
}
#endif /* HATTN_RT_ONLY */

/* ---- the cache ------------------------------------------------------------------ */

/* One entry of the memory cache: the kernel of a class and bucket. */
typedef struct kc_slot {
  char kclass[HATTN__KC_KEY_LEN];
  int lk_log2, bh_class;
  hattn__kc_kernel *kern;
} kc_slot;

/* A registered prebuilt kernel: the caller's binary, our copies of the text. */
typedef struct kc_pre {
  hattn__kc_prebuilt pb;       /* strings point at TEXT */
  hattn_cpu_config cpu;
  hattn_cuda_config cuda;
  char text[];
} kc_pre;

struct hattn__kcache {
  hattn__kcache_opts opt;
  hattn__db *db;
  hattn__kc_loader *loader;
  kc_pre **pre;                /* registered prebuilt kernels, in order */
  int npre, cappre;
  hattn__kc_kernel **kernels;  /* loaded kernels, one per kernel key */
  int nkernels, capkernels;
  kc_slot *slots;
  int nslots, capslots;
  char warning[1024];
};

static void warn(hattn__kcache *kc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(hattn__kcache *kc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(kc->warning, sizeof kc->warning, fmt, ap);
  va_end(ap);
  if (!kc->opt.quiet) fprintf(stderr, "hattn: warning: %s\n", kc->warning);
}

int hattn__kcache_open(const hattn__kcache_opts *opt, hattn__kcache **out, char *err, size_t errlen) {
  hattn__kcache *kc;
  char dberr[1024];

  *out = NULL;
  if ((kc = calloc(1, sizeof *kc)) == NULL) {
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  kc->opt = *opt;
  if (opt->backend == HATTN__BACKEND_CUDA && opt->cu == NULL) {
    free(kc);
    snprintf(err, errlen, "the cuda backend needs an open device");
    return HATTN_EINVAL;
  }
  if (opt->db_path == NULL || opt->db_path[0] != '\0') {
    if (hattn__db_open(opt->db_path, 0, &kc->db, dberr, sizeof dberr) != HATTN_OK) {
      kc->db = NULL;
      warn(kc, "%s; kernels are compiled and not kept", dberr);
    }
  }
  *out = kc;
  return HATTN_OK;
}

void hattn__kcache_close(hattn__kcache *kc) {
  int i;
  if (kc == NULL) return;
  for (i = 0; i < kc->nkernels; i++) free(kc->kernels[i]);
  free(kc->kernels);
  free(kc->slots);
  for (i = 0; i < kc->npre; i++) free(kc->pre[i]);
  free(kc->pre);
  hattn__kc_loader_destroy(kc->loader);
  hattn__db_close(kc->db);
  free(kc);
}

hattn__db *hattn__kcache_db(hattn__kcache *kc) { return kc->db; }

const char *hattn__kcache_warning(const hattn__kcache *kc) { return kc->warning; }

static hattn__kc_kernel *find_kernel(hattn__kcache *kc, const char *key) {
  int i;
  for (i = 0; i < kc->nkernels; i++)
    if (!strcmp(kc->kernels[i]->key, key)) return kc->kernels[i];
  return NULL;
}

/* Say that the runtime-only library found no kernel K to load. */
#ifdef HATTN_RT_ONLY
static int not_found(const hattn__kcache *kc, const hattn__kc_kernel *k, const char *target, char *err,
                     size_t errlen) {
  const hattn__pattern *p = k->backend == HATTN__BACKEND_CUDA ? k->cuda_desc.pattern : k->cpu_desc.pattern;
  hattn_dtype dt = k->backend == HATTN__BACKEND_CUDA ? k->cuda_desc.dtype : k->cpu_desc.dtype;
  int hd = k->backend == HATTN__BACKEND_CUDA ? k->cuda_desc.head_dim : k->cpu_desc.head_dim;
  snprintf(err, errlen,
           "no %s kernel of pattern '%s' (%s, head_dim %d) for %s: none was registered and %s; libhattnrt "
           "does not compile kernels: register one written by hattn gen, or run the pattern once with "
           "libhattn against the same database",
           hattn__backend_name(k->backend), p->name, hattn__dtype_name(dt), hd, target,
           kc->db ? "the database has none" : "no database is open");
  return HATTN_ENOTSUP;
}
#endif

/* Load the CPU kernel K (key, config and descriptor set) from the db, or
** compile it and store it.  Sets K->fn and K->source. */
static int load_cpu(hattn__kcache *kc, const hattn__kc_host *host, hattn__kc_kernel *k, char *err,
                    size_t errlen) {
  hattn__db_kernel *row = NULL;
  char fn_name[64], dberr[1024];
  int rc, miss = 0;

  hattn__kc_cpu_fn_name(k->key, fn_name, sizeof fn_name);
  if (kc->loader == NULL && (rc = hattn__kc_loader_create(&kc->loader, err, errlen)) != HATTN_OK) return rc;
  if (kc->db) {
    rc = hattn__db_kernel_get(kc->db, k->key, host->compiler[0] ? host->compiler : NULL, &row, &miss, dberr,
                              sizeof dberr);
    if (rc == HATTN_OK) {
      rc = hattn__kc_loader_add(kc->loader, row->binary, row->size, fn_name, &k->fn, dberr, sizeof dberr);
      free(row);
      if (rc == HATTN_OK) {
        k->source = HATTN__KC_DB;
        return HATTN_OK;
      }
      warn(kc, "the stored kernel would not load (%s)%s", dberr, host->compiler[0] ? "; compiling it again" : "");
    } else if (rc != HATTN_ENOENT) {
      warn(kc, "%s%s", dberr, host->compiler[0] ? "; compiling the kernel" : "");
    } else if (miss == HATTN__DB_MISS_CHECKSUM) {
      warn(kc, "%s%s", dberr, host->compiler[0] ? "; compiling the kernel again" : "");
    }
  }
#ifdef HATTN_RT_ONLY
  return not_found(kc, k, host->target, err, errlen);
#else
  {
    hattn__db_kernel put;
    void *obj = NULL;
    size_t size = 0;
    if ((rc = hattn__kc_cpu_object(&k->cpu_desc, &k->cpu, fn_name, &obj, &size, err, errlen)) != HATTN_OK)
      return rc;
    if ((rc = hattn__kc_loader_add(kc->loader, obj, size, fn_name, &k->fn, err, errlen)) != HATTN_OK) {
      free(obj);
      return rc;
    }
    k->source = HATTN__KC_COMPILED;
    if (kc->db && !hattn__db_readonly(kc->db)) {
      memset(&put, 0, sizeof put);
      put.key = k->key;
      put.canon = k->cpu_desc.pattern->canon;
      put.backend = "cpu";
      put.target = host->target;
      put.config = k->config;
      put.compiler = host->compiler;
      put.binary = obj;
      put.size = size;
      if (hattn__db_kernel_put(kc->db, &put, dberr, sizeof dberr) != HATTN_OK)
        warn(kc, "%s; the kernel is not kept", dberr);
    }
    free(obj);
    return HATTN_OK;
  }
#endif
}

/* The CUDA counterpart: the db's cubin when it can be loaded, else a
** compile through hattn__cuda_kernel_get. */
static int load_cuda(hattn__kcache *kc, const hattn__kc_gpu *gpu, hattn__kc_kernel *k, char *err,
                     size_t errlen) {
  hattn__db_kernel *row = NULL;
  char dberr[1024];
  int rc;

  if (kc->db && hattn__db_kernel_get(kc->db, k->key, gpu->compiler[0] ? gpu->compiler : NULL, &row, NULL, dberr,
                                     sizeof dberr) == HATTN_OK) {
    rc = hattn__cuda_kernel_load(kc->opt.cu, &k->cuda_desc, &k->cuda, row->binary, row->size, &k->cuda_kern,
                                 dberr, sizeof dberr);
    free(row);
    if (rc == HATTN_OK) {
      k->source = HATTN__KC_DB;
      return HATTN_OK;
    }
    warn(kc, "the stored kernel would not load (%s)%s", dberr, gpu->compiler[0] ? "; compiling it again" : "");
  }
#ifdef HATTN_RT_ONLY
  return not_found(kc, k, gpu->arch, err, errlen);
#else
  rc = hattn__cuda_kernel_get(kc->opt.cu, &k->cuda_desc, &k->cuda, &k->cuda_kern, err, errlen);
  if (rc != HATTN_OK) return rc;
  k->source = HATTN__KC_COMPILED;
  if (kc->db && !hattn__db_readonly(kc->db)) {
    hattn__db_kernel put;
    memset(&put, 0, sizeof put);
    put.key = k->key;
    put.canon = k->cuda_desc.pattern->canon;
    put.backend = "cuda";
    put.target = gpu->arch;
    put.config = k->config;
    put.compiler = gpu->compiler;
    hattn__cuda_kernel_cubin(k->cuda_kern, &put.binary, &put.size);
    if (hattn__db_kernel_put(kc->db, &put, dberr, sizeof dberr) != HATTN_OK)
      warn(kc, "%s; the kernel is not kept", dberr);
  }
  return HATTN_OK;
#endif
}

/* ---- prebuilt kernels ------------------------------------------------------------ */

/* Whether ARCH reads as "sm_XY" or "sm_XYa". */
static int arch_valid(const char *arch) {
  int major, minor, n = 0;
  if (sscanf(arch, "sm_%1d%1d%n", &major, &minor, &n) != 2) return 0;
  return hattn__kc_arch_runs(arch, major * 10 + minor) == 2;
}

int hattn__kcache_add_prebuilt(hattn__kcache *kc, const hattn__kc_prebuilt *pb, int *used, char *err,
                               size_t errlen) {
  const char *needs = pb->needs ? pb->needs : "";
  size_t lc, lf, lt, ln;
  kc_pre *e;
  int threads = 0;
  hattn_cpu_config cpu;
  hattn_cuda_config cuda;

  *used = 0;
  if (pb->canon == NULL || pb->config == NULL || pb->target == NULL) {
    snprintf(err, errlen, "a prebuilt kernel needs its canonical pattern, configuration and target");
    return HATTN_EINVAL;
  }
  if (pb->backend == HATTN__BACKEND_CPU ? pb->fn == NULL : pb->cubin == NULL || pb->cubin_size == 0) {
    snprintf(err, errlen, "prebuilt kernel '%s' (%s): no %s", pb->canon, pb->config,
             pb->backend == HATTN__BACKEND_CPU ? "function" : "cubin");
    return HATTN_EINVAL;
  }
  memset(&cpu, 0, sizeof cpu);
  memset(&cuda, 0, sizeof cuda);
  if (pb->backend == HATTN__BACKEND_CPU ? hattn__kc_cpu_config_parse(pb->config, &cpu, &threads) != HATTN_OK ||
                                              threads != 0
                                        : hattn__kc_cuda_config_parse(pb->config, &cuda) != HATTN_OK) {
    snprintf(err, errlen, "prebuilt kernel '%s': '%s' is not a %s configuration", pb->canon, pb->config,
             hattn__backend_name(pb->backend));
    return HATTN_EINVAL;
  }
  if (pb->backend == HATTN__BACKEND_CUDA && !arch_valid(pb->target)) {
    snprintf(err, errlen, "prebuilt kernel '%s': '%s' is not a CUDA arch (sm_80, sm_90a, ...)", pb->canon,
             pb->target);
    return HATTN_EINVAL;
  }
  if (pb->backend != kc->opt.backend) return HATTN_OK;
  lc = strlen(pb->canon) + 1, lf = strlen(pb->config) + 1, lt = strlen(pb->target) + 1, ln = strlen(needs) + 1;
  if (grow((void **)&kc->pre, &kc->cappre, kc->npre + 1, sizeof *kc->pre) ||
      (e = malloc(sizeof *e + lc + lf + lt + ln)) == NULL) {
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  e->pb = *pb;
  memcpy(e->text, pb->canon, lc);
  memcpy(e->text + lc, pb->config, lf);
  memcpy(e->text + lc + lf, pb->target, lt);
  memcpy(e->text + lc + lf + lt, needs, ln);
  e->pb.canon = e->text;
  e->pb.config = e->text + lc;
  e->pb.target = e->text + lc + lf;
  e->pb.needs = e->text + lc + lf + lt;
  e->cpu = cpu;
  e->cuda = cuda;
  kc->pre[kc->npre++] = e;
  *used = 1;
  return HATTN_OK;
}

/* The registered kernel for P, DTYPE and HEAD_DIM that runs here (the
** device's own arch first), or NULL. */
static kc_pre *find_prebuilt(hattn__kcache *kc, const hattn__kc_host *host, const hattn__pattern *p,
                             hattn_dtype dtype, int head_dim) {
  kc_pre *best = NULL;
  int i, score, best_score = 0;
  for (i = 0; i < kc->npre; i++) {
    kc_pre *e = kc->pre[i];
    if (e->pb.dtype != dtype || e->pb.head_dim != head_dim || strcmp(e->pb.canon, p->canon) != 0) continue;
    if (kc->opt.backend == HATTN__BACKEND_CUDA) score = hattn__kc_arch_runs(e->pb.target, hattn__cuda_sm(kc->opt.cu));
    else score = hattn__kc_features_cover(host->all, e->pb.needs) ? 2 : 0;
    if (score > best_score) best = e, best_score = score;
  }
  return best;
}

/* Give K (configuration and key set) the binary of the registered kernel E. */
static int load_prebuilt(hattn__kcache *kc, const kc_pre *e, hattn__kc_kernel *k, char *err, size_t errlen) {
  int rc = HATTN_OK;
  if (k->backend == HATTN__BACKEND_CUDA)
    rc = hattn__cuda_kernel_load(kc->opt.cu, &k->cuda_desc, &k->cuda, e->pb.cubin, e->pb.cubin_size,
                                 &k->cuda_kern, err, errlen);
  else
    k->fn = e->pb.fn;
  k->source = HATTN__KC_PREBUILT;
  return rc;
}

int hattn__kcache_get(hattn__kcache *kc, const hattn__pattern *p, hattn_dtype dtype, int head_dim,
                      int64_t lk, int64_t bh, hattn__kc_kernel **out, char *err, size_t errlen) {
  const hattn__kc_host *host = NULL;
  hattn__kc_gpu gpu;
  const char *target, *model, *compiler;
  char kclass[HATTN__KC_KEY_LEN], dberr[1024];
  hattn__db_tuning *t = NULL;
  hattn__kc_kernel cand, *k;
  kc_pre *pre = NULL;
  int lk_log2, bh_class, i, rc, cuda = kc->opt.backend == HATTN__BACKEND_CUDA;

  *out = NULL;
  if (cuda) {
    hattn__kc_gpu_identity(kc->opt.cu, &gpu);
    target = gpu.arch;
    model = gpu.model;
    compiler = gpu.compiler;
  } else {
    if ((rc = hattn__kc_host_cpu(&host, err, errlen)) != HATTN_OK) return rc;
    target = host->target;
    model = host->model;
    compiler = host->compiler;
  }
  if (!compiler[0]) compiler = NULL;      /* the runtime-only library: any compiler's work */
  hattn__kc_key(p->canon, dtype, head_dim, kc->opt.backend, target, NULL, kclass);
  hattn__db_bucket(lk, bh, &lk_log2, &bh_class);

  /* 1. This process. */
  for (i = 0; i < kc->nslots; i++) {
    kc_slot *s = &kc->slots[i];
    if (s->lk_log2 == lk_log2 && s->bh_class == bh_class && !strcmp(s->kclass, kclass) &&
        s->kern->cpu_desc.pattern == (cuda ? NULL : p) && s->kern->cuda_desc.pattern == (cuda ? p : NULL)) {
      s->kern->source = HATTN__KC_MEMORY;
      *out = s->kern;
      return HATTN_OK;
    }
  }

  memset(&cand, 0, sizeof cand);
  cand.backend = kc->opt.backend;
  memcpy(cand.kclass, kclass, sizeof kclass);
  if (cuda) {
    cand.cuda_desc.pattern = p;
    cand.cuda_desc.dtype = dtype;
    cand.cuda_desc.head_dim = head_dim;
  } else {
    cand.cpu_desc.pattern = p;
    cand.cpu_desc.dtype = dtype;
    cand.cpu_desc.head_dim = head_dim;
  }

  /* 2. A kernel the program brought with it. */
  pre = find_prebuilt(kc, host, p, dtype, head_dim);

  /* 3. The configuration: the prebuilt kernel's, else this device's tuned
  ** winner for the bucket (or the nearest tuned one), else the default. */
  if (pre != NULL) {
    cand.cpu = pre->cpu;
    cand.cuda = pre->cuda;
  } else if (kc->db) {
    rc = hattn__db_tuning_get(kc->db, model, kclass, compiler, lk, bh, &t, dberr, sizeof dberr);
    if (rc == HATTN_OK) {
      int ok = cuda ? hattn__kc_cuda_config_parse(t->winner, &cand.cuda)
                    : hattn__kc_cpu_config_parse(t->winner, &cand.cpu, &cand.threads);
      if (ok == HATTN_OK) {
        cand.tuned = 1;
        cand.lk_log2 = t->lk_log2;
        cand.bh_class = t->bh_class;
      } else {
        warn(kc, "the stored winner '%s' is not a configuration; using the default", t->winner);
      }
      free(t);
    } else if (rc != HATTN_ENOENT) {
      warn(kc, "%s; using the default configuration", dberr);
    }
  }
  if (cuda) {
    if (!cand.tuned && pre == NULL) hattn__cuda_config_default(&cand.cuda_desc, hattn__cuda_sm(kc->opt.cu), &cand.cuda);
    if ((rc = hattn__cuda_config_check(&cand.cuda_desc, &cand.cuda, err, errlen)) != HATTN_OK) return rc;
    hattn__kc_cuda_config_text(&cand.cuda, cand.config, sizeof cand.config);
  } else {
    if (!cand.tuned && pre == NULL) hattn__cpu_config_default(head_dim, host->vec, &cand.cpu);
    if ((rc = hattn__cpu_config_check(&cand.cpu, head_dim, err, errlen)) != HATTN_OK) return rc;
    /* The kernel key leaves the thread count out: it is not compiled in. */
    hattn__kc_cpu_config_text(&cand.cpu, 0, cand.config, sizeof cand.config);
  }
  /* A prebuilt kernel is keyed by the target it was built for. */
  hattn__kc_key(p->canon, dtype, head_dim, kc->opt.backend, pre ? pre->pb.target : target, cand.config, cand.key);

  /* 4. A kernel this process loaded for another bucket, else the
  ** prebuilt one, the db's binary, or a compile. */
  if ((k = find_kernel(kc, cand.key)) != NULL && (cuda ? k->cuda_desc.pattern : k->cpu_desc.pattern) == p) {
    k->source = HATTN__KC_MEMORY;
  } else {
    if (grow((void **)&kc->kernels, &kc->capkernels, kc->nkernels + 1, sizeof *kc->kernels) ||
        (k = malloc(sizeof *k)) == NULL) {
      snprintf(err, errlen, "out of memory");
      return HATTN_ENOMEM;
    }
    *k = cand;
    if (pre != NULL) rc = load_prebuilt(kc, pre, k, err, errlen);
    else rc = cuda ? load_cuda(kc, &gpu, k, err, errlen) : load_cpu(kc, host, k, err, errlen);
    if (rc != HATTN_OK) {
      free(k);
      return rc;
    }
    kc->kernels[kc->nkernels++] = k;
  }
  k->tuned = cand.tuned, k->lk_log2 = cand.lk_log2, k->bh_class = cand.bh_class, k->threads = cand.threads;
  if (grow((void **)&kc->slots, &kc->capslots, kc->nslots + 1, sizeof *kc->slots) == 0) {
    kc_slot *s = &kc->slots[kc->nslots++];
    memcpy(s->kclass, kclass, sizeof kclass);
    s->lk_log2 = lk_log2;
    s->bh_class = bh_class;
    s->kern = k;
  }
  *out = k;
  return HATTN_OK;
}
