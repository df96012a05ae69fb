/*
** kernel_cache.c: the runtime's kernel lookup (memory, database, compile)
** and the identities of kernels and devices.  See kernel_cache.h.  The
** LLVM calls of the object loader are here, behind HATTN_HAVE_LLVM.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hattn.h"
#include "kernel_cache.h"

#ifdef HATTN_HAVE_LLVM
#include <pthread.h>

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#endif

#define NO_LLVM_MSG "hattn was built without LLVM: the CPU backend is off"

const char *hattn__backend_name(hattn__backend b) { return b == HATTN__BACKEND_CUDA ? "cuda" : "cpu"; }

const char *hattn__kc_source_name(hattn__kc_source s) {
  switch (s) {
  case HATTN__KC_MEMORY: return "memory";
  case HATTN__KC_DB: return "db";
  case HATTN__KC_COMPILED: return "compiled";
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
  snprintf(buf, len, "bm=%d bn=%d warps=%d stages=%d", cfg->block_m, cfg->block_n, cfg->warps, cfg->stages);
}

int hattn__kc_cuda_config_parse(const char *text, hattn_cuda_config *cfg) {
  int n = 0;
  if (sscanf(text, "bm=%d bn=%d warps=%d stages=%d%n", &cfg->block_m, &cfg->block_n, &cfg->warps,
             &cfg->stages, &n) != 4 || text[n] != '\0')
    return HATTN_EINVAL;
  return HATTN_OK;
}

void hattn__kc_cpu_fn_name(const char *key, char *buf, size_t len) { snprintf(buf, len, "hattn_%s", key); }

void hattn__kc_gpu_identity(hattn__cuda *cu, hattn__kc_gpu *out) {
  const char *v = hattn__nvrtc_version();
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", hattn__cuda_name(cu));
  snprintf(out->arch, sizeof out->arch, "%s", hattn__cuda_arch(cu));
  snprintf(out->compiler, sizeof out->compiler, "nvrtc %s", v ? v : "none");
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

#ifdef HATTN_HAVE_LLVM

static pthread_once_t g_host_once = PTHREAD_ONCE_INIT;
static hattn__kc_host g_host;
static int g_host_rc;
static char g_host_err[256];

static void init_host(void) {
  /* The features that change what a kernel can do or how fast it is. */
  static const char *const keep[] = {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                                     "avx512dq", "avx512bf16", "avx512fp16", "amx-tile", "amx-bf16",
                                     "neon", "sve", "sve2", NULL};
  char *cpu, *features, *tok, *save = NULL, *copy;
  uint64_t h = 0xcbf29ce484222325ull;
  size_t n = 0;
  long cores;
  int i;

  if (LLVMInitializeNativeTarget() != 0 || LLVMInitializeNativeAsmPrinter() != 0) {
    g_host_rc = HATTN_ENOTSUP;
    snprintf(g_host_err, sizeof g_host_err, "LLVM could not initialise the native target");
    return;
  }
  cpu = LLVMGetHostCPUName();
  features = LLVMGetHostCPUFeatures();
  snprintf(g_host.cpu, sizeof g_host.cpu, "%s", cpu);
  h = fnv_str(h, cpu);
  h = fnv_str(h, features);
  g_host.vec = strstr(features, "+avx512f") != NULL ? 16 : 8;
  copy = strdup(features);
  if (copy) {
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
      if (tok[0] != '+') continue;
      for (i = 0; keep[i]; i++)
        if (!strcmp(tok + 1, keep[i])) break;
      if (keep[i] && n + strlen(tok) + 1 < sizeof g_host.features)
        n += (size_t)snprintf(g_host.features + n, sizeof g_host.features - n, "%s%s", n ? "," : "", tok + 1);
    }
    free(copy);
  }
  cores = sysconf(_SC_NPROCESSORS_ONLN);
  g_host.cores = cores > 0 ? (int)cores : 1;
  snprintf(g_host.target, sizeof g_host.target, "%s/%016llx", g_host.cpu, (unsigned long long)h);
  snprintf(g_host.compiler, sizeof g_host.compiler, "llvm %s", hattn__llvm_version());
  g_host.device.kind = "cpu";
  g_host.device.name = g_host.cpu;
  g_host.device.driver = "";
  g_host.device.toolkit = "";
  g_host.device.features = g_host.features;
  g_host.device.cores = g_host.cores;
  hattn__db_device_model(&g_host.device, g_host.model, sizeof g_host.model);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  g_host_rc = HATTN_OK;
}

int hattn__kc_host_cpu(const hattn__kc_host **out, char *err, size_t errlen) {
  pthread_once(&g_host_once, init_host);
  *out = g_host_rc == HATTN_OK ? &g_host : NULL;
  if (g_host_rc != HATTN_OK) snprintf(err, errlen, "%s", g_host_err);
  return g_host_rc;
}

/* ---- the object loader --------------------------------------------------------- */

struct hattn__kc_loader {
  LLVMOrcLLJITRef lljit;
};

static void take_error(LLVMErrorRef e, const char *what, char *err, size_t errlen) {
  char *msg = LLVMGetErrorMessage(e);
  snprintf(err, errlen, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
}

int hattn__kc_loader_create(hattn__kc_loader **out, char *err, size_t errlen) {
  const hattn__kc_host *host;
  hattn__kc_loader *ld;
  LLVMOrcDefinitionGeneratorRef gen;
  LLVMErrorRef e;
  int rc;

  *out = NULL;
  if ((rc = hattn__kc_host_cpu(&host, err, errlen)) != HATTN_OK) return rc;
  if ((ld = calloc(1, sizeof *ld)) == NULL) {
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  /* The default builder detects the host; objects bring their own code. */
  e = LLVMOrcCreateLLJIT(&ld->lljit, NULL);
  if (e != NULL) {
    take_error(e, "LLVM could not create a JIT for object files", err, errlen);
    free(ld);
    return HATTN_ENOTSUP;
  }
  e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(ld->lljit), NULL,
                                                           NULL);
  if (e != NULL) {
    take_error(e, "LLVM could not search the process for symbols", err, errlen);
    e = LLVMOrcDisposeLLJIT(ld->lljit);
    if (e) LLVMConsumeError(e);
    free(ld);
    return HATTN_ENOTSUP;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(ld->lljit), gen);
  *out = ld;
  return HATTN_OK;
}

void hattn__kc_loader_destroy(hattn__kc_loader *ld) {
  LLVMErrorRef e;
  if (ld == NULL) return;
  e = LLVMOrcDisposeLLJIT(ld->lljit);
  if (e) LLVMConsumeError(e);
  free(ld);
}

int hattn__kc_loader_add(hattn__kc_loader *ld, const void *bytes, size_t size, const char *fn_name,
                         hattn_cpu_fn *fn, char *err, size_t errlen) {
  LLVMMemoryBufferRef buf;
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef e;

  *fn = NULL;
  buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(bytes, size, fn_name);
  if (buf == NULL) {
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }
  e = LLVMOrcLLJITAddObjectFile(ld->lljit, LLVMOrcLLJITGetMainJITDylib(ld->lljit), buf); /* takes BUF */
  if (e != NULL) {
    take_error(e, "LLVM could not add the object file", err, errlen);
    return HATTN_ECOMPILE;
  }
  e = LLVMOrcLLJITLookup(ld->lljit, &addr, fn_name);
  if (e != NULL) {
    take_error(e, "LLVM could not link the object file", err, errlen);
    return HATTN_ECOMPILE;
  }
  *fn = (hattn_cpu_fn)(uintptr_t)addr;
  return HATTN_OK;
}

#else /* !HATTN_HAVE_LLVM */

int hattn__kc_host_cpu(const hattn__kc_host **out, char *err, size_t errlen) {
  *out = NULL;
  snprintf(err, errlen, NO_LLVM_MSG);
  return HATTN_ENOTSUP;
}

int hattn__kc_loader_create(hattn__kc_loader **out, char *err, size_t errlen) {
  *out = NULL;
  snprintf(err, errlen, NO_LLVM_MSG);
  return HATTN_ENOTSUP;
}

void hattn__kc_loader_destroy(hattn__kc_loader *ld) { (void)ld; }

int hattn__kc_loader_add(hattn__kc_loader *ld, const void *bytes, size_t size, const char *fn_name,
                         hattn_cpu_fn *fn, char *err, size_t errlen) {
  (void)ld, (void)bytes, (void)size, (void)fn_name;
  *fn = NULL;
  snprintf(err, errlen, NO_LLVM_MSG);
  return HATTN_ENOTSUP;
}

#endif /* HATTN_HAVE_LLVM */

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

/* ---- the cache ------------------------------------------------------------------ */

/* One entry of the memory cache: the kernel of a class and bucket. */
typedef struct kc_slot {
  char kclass[HATTN__KC_KEY_LEN];
  int lk_log2, bh_class;
  hattn__kc_kernel *kern;
} kc_slot;

struct hattn__kcache {
  hattn__kcache_opts opt;
  hattn__db *db;
  hattn__kc_loader *loader;
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
  hattn__kc_loader_destroy(kc->loader);
  hattn__db_close(kc->db);
  free(kc);
}

hattn__db *hattn__kcache_db(hattn__kcache *kc) { return kc->db; }

const char *hattn__kcache_warning(const hattn__kcache *kc) { return kc->warning; }

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

static hattn__kc_kernel *find_kernel(hattn__kcache *kc, const char *key) {
  int i;
  for (i = 0; i < kc->nkernels; i++)
    if (!strcmp(kc->kernels[i]->key, key)) return kc->kernels[i];
  return NULL;
}

/* Load the CPU kernel K (key, config and descriptor set) from the db, or
** compile it and store it.  Sets K->fn and K->source. */
static int load_cpu(hattn__kcache *kc, const hattn__kc_host *host, hattn__kc_kernel *k, char *err,
                    size_t errlen) {
  hattn__db_kernel *row = NULL, put;
  char fn_name[64], dberr[1024];
  void *obj = NULL;
  size_t size = 0;
  int rc, miss = 0;

  hattn__kc_cpu_fn_name(k->key, fn_name, sizeof fn_name);
  if (kc->loader == NULL && (rc = hattn__kc_loader_create(&kc->loader, err, errlen)) != HATTN_OK) return rc;
  if (kc->db) {
    rc = hattn__db_kernel_get(kc->db, k->key, host->compiler, &row, &miss, dberr, sizeof dberr);
    if (rc == HATTN_OK) {
      rc = hattn__kc_loader_add(kc->loader, row->binary, row->size, fn_name, &k->fn, dberr, sizeof dberr);
      free(row);
      if (rc == HATTN_OK) {
        k->source = HATTN__KC_DB;
        return HATTN_OK;
      }
      /* A binary that will not load: rebuild it below.  The JIT may
      ** now hold a broken definition of FN_NAME, so start a new one. */
      warn(kc, "the stored kernel would not load (%s); compiling it again", dberr);
      hattn__kc_loader_destroy(kc->loader);
      kc->loader = NULL;
      if ((rc = hattn__kc_loader_create(&kc->loader, err, errlen)) != HATTN_OK) return rc;
    } else if (rc != HATTN_ENOENT) {
      warn(kc, "%s; compiling the kernel", dberr);
    } else if (miss == HATTN__DB_MISS_CHECKSUM) {
      warn(kc, "%s; compiling the kernel again", dberr);
    }
  }
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

/* The CUDA counterpart: the db's cubin when it can be loaded, else a
** compile through hattn__cuda_kernel_get. */
static int load_cuda(hattn__kcache *kc, const hattn__kc_gpu *gpu, hattn__kc_kernel *k, char *err,
                     size_t errlen) {
  hattn__db_kernel *row = NULL;
  char dberr[1024];
  int rc;

  if (kc->db && hattn__db_kernel_get(kc->db, k->key, gpu->compiler, &row, NULL, dberr, sizeof dberr) == HATTN_OK) {
    rc = hattn__cuda_kernel_load(kc->opt.cu, &k->cuda_desc, &k->cuda, row->binary, row->size, &k->cuda_kern,
                                 dberr, sizeof dberr);
    free(row);
    if (rc == HATTN_OK) {
      k->source = HATTN__KC_DB;
      return HATTN_OK;
    }
    warn(kc, "the stored kernel would not load (%s); compiling it again", dberr);
  }
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
}

int hattn__kcache_get(hattn__kcache *kc, const hattn__pattern *p, hattn_dtype dtype, int head_dim,
                      int64_t lk, int64_t bh, hattn__kc_kernel **out, char *err, size_t errlen) {
  const hattn__kc_host *host = NULL;
  hattn__kc_gpu gpu;
  const char *target, *model, *compiler;
  char kclass[HATTN__KC_KEY_LEN], dberr[1024];
  hattn__db_tuning *t = NULL;
  hattn__kc_kernel cand, *k;
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

  /* 2. The configuration: this device's tuned winner for the bucket (or
  ** the nearest tuned one), else the default. */
  memset(&cand, 0, sizeof cand);
  cand.backend = kc->opt.backend;
  memcpy(cand.kclass, kclass, sizeof kclass);
  if (kc->db) {
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
    cand.cuda_desc.pattern = p;
    cand.cuda_desc.dtype = dtype;
    cand.cuda_desc.head_dim = head_dim;
    if (!cand.tuned) hattn__cuda_config_default(head_dim, hattn__cuda_sm(kc->opt.cu), &cand.cuda);
    if ((rc = hattn__cuda_config_check(&cand.cuda_desc, &cand.cuda, err, errlen)) != HATTN_OK) return rc;
    hattn__kc_cuda_config_text(&cand.cuda, cand.config, sizeof cand.config);
  } else {
    cand.cpu_desc.pattern = p;
    cand.cpu_desc.dtype = dtype;
    cand.cpu_desc.head_dim = head_dim;
    if (!cand.tuned) hattn__cpu_config_default(head_dim, host->vec, &cand.cpu);
    if ((rc = hattn__cpu_config_check(&cand.cpu, head_dim, err, errlen)) != HATTN_OK) return rc;
    /* The kernel key leaves the thread count out: it is not compiled in. */
    hattn__kc_cpu_config_text(&cand.cpu, 0, cand.config, sizeof cand.config);
  }
  hattn__kc_key(p->canon, dtype, head_dim, kc->opt.backend, target, cand.config, cand.key);

  /* 3. A kernel this process loaded for another bucket, else the db's
  ** binary, else a compile. */
  if ((k = find_kernel(kc, cand.key)) != NULL && (cuda ? k->cuda_desc.pattern : k->cpu_desc.pattern) == p) {
    k->source = HATTN__KC_MEMORY;
  } else {
    if (grow((void **)&kc->kernels, &kc->capkernels, kc->nkernels + 1, sizeof *kc->kernels) ||
        (k = malloc(sizeof *k)) == NULL) {
      snprintf(err, errlen, "out of memory");
      return HATTN_ENOMEM;
    }
    *k = cand;
    rc = cuda ? load_cuda(kc, &gpu, k, err, errlen) : load_cpu(kc, host, k, err, errlen);
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
