/*
** backend_cuda.c: the CUDA backend's table (backend.h): a device is an
** open GPU (cuda_driver.c, the driver through dlopen), kernels are cubins
** loaded into it, a problem is a plan with its tables in device memory.
** Compiling (the emitter and NVRTC) is in backend_compile.c, linked into
** libhattn only.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda.h"
#include "kernel_cache.h"

/* ---- identity and configurations -------------------------------------------------- */

void hattn__kc_gpu_identity(hattn__cuda *cu, hattn__kc_gpu *out) {
  const hattn__backend_i *be = hattn__backend_get(HATTN__BACKEND_CUDA);
  /* No compiler: any stored cubin for the arch loads. */
  const char *v = be->compiler_version ? be->compiler_version() : NULL;
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

int hattn__kc_arch_runs(const char *arch, int sm) {
  int major, minor, n = 0;
  char tail[2] = {0, 0};
  if (sscanf(arch, "sm_%1d%1d%n", &major, &minor, &n) != 2) return 0;
  if (arch[n] == 'a' && arch[n + 1] == '\0') tail[0] = 'a';
  else if (arch[n] != '\0') return 0;
  if (major * 10 + minor == sm) return 2;
  return !tail[0] && major == sm / 10 && minor < sm % 10 ? 1 : 0;
}

void hattn__kc_cuda_config_text(const hattn__cuda_config *cfg, char *buf, size_t len) {
  int n = snprintf(buf, len, "bm=%d bn=%d warps=%d stages=%d%s", cfg->block_m, cfg->block_n, cfg->warps,
                   cfg->stages, cfg->wgmma == 2 ? " ws" : cfg->wgmma ? " wgmma" : "");
  /* The decode fields where set: a default configuration reads as before. */
  if (n > 0 && (size_t)n < len && (cfg->dwarps || cfg->dblock_n || cfg->dsplit))
    snprintf(buf + n, len - (size_t)n, " dwarps=%d dblock_n=%d dsplit=%d", cfg->dwarps, cfg->dblock_n, cfg->dsplit);
}

int hattn__kc_cuda_config_parse(const char *text, hattn__cuda_config *cfg) {
  int n = 0, m = 0;
  memset(cfg, 0, sizeof *cfg);
  if (sscanf(text, "bm=%d bn=%d warps=%d stages=%d%n", &cfg->block_m, &cfg->block_n, &cfg->warps,
             &cfg->stages, &n) != 4)
    return HATTN_EINVAL;
  text += n;
  if (strncmp(text, " wgmma", 6) == 0) cfg->wgmma = 1, text += 6;
  else if (strncmp(text, " ws", 3) == 0) cfg->wgmma = 2, text += 3;
  if (*text != '\0' &&
      (sscanf(text, " dwarps=%d dblock_n=%d dsplit=%d%n", &cfg->dwarps, &cfg->dblock_n, &cfg->dsplit, &m) != 3 ||
       text[m] != '\0'))
    return HATTN_EINVAL;
  return HATTN_OK;
}

static void config_default(void *dev, const hattn__kernel_desc *desc, hattn__config *out) {
  hattn__cuda_config_default(desc, hattn__cuda_sm(dev), &out->cuda);
}

static int config_check(const hattn__kernel_desc *desc, const hattn__config *cfg, char *err, size_t errlen) {
  return hattn__cuda_config_check(desc, &cfg->cuda, err, errlen);
}

static void config_text(const hattn__config *cfg, int threads, char *buf, size_t len) {
  (void)threads;
  hattn__kc_cuda_config_text(&cfg->cuda, buf, len);
}

static int config_parse(const char *text, hattn__config *cfg) { return hattn__kc_cuda_config_parse(text, &cfg->cuda); }

/* Tiles of BM x BN; a warpgroup per 64 rows for the warpgroup kernel. */
static int config_tile(const hattn__kernel_desc *desc, const hattn__tile *tile, hattn__config *cfg, char *err,
                       size_t errlen) {
  (void)desc;
  if (tile->rows || tile->vec) {
    snprintf(err, errlen, "%s applies to the cpu backend only", tile->rows ? "--rows" : "--vec");
    return HATTN_EINVAL;
  }
  if (tile->bm) cfg->cuda.block_m = tile->bm, cfg->cuda.block_n = tile->bn;
  if (tile->bm && cfg->cuda.wgmma) cfg->cuda.warps = tile->bm / 16 + (cfg->cuda.wgmma == 2 ? 4 : 0);
  return HATTN_OK;
}

/* ---- the device and its kernels --------------------------------------------------- */

static int dev_open(int ordinal, int threads, void **dev, char *err, size_t errlen) {
  (void)threads;
  return hattn__cuda_open(ordinal, (hattn__cuda **)dev, err, errlen);
}

static void dev_close(void *dev) { hattn__cuda_close(dev); }

static void ident(void *dev, hattn__ident *out) {
  hattn__kc_gpu gpu;
  hattn__kc_gpu_identity(dev, &gpu);
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", gpu.name);
  snprintf(out->target, sizeof out->target, "%s", gpu.arch);
  snprintf(out->compiler, sizeof out->compiler, "%s", gpu.compiler);
  out->device = gpu.device;
  out->device.name = out->name;
  out->device.features = "";
  snprintf(out->model, sizeof out->model, "%s", gpu.model);
}

static void config_describe(void *dev, const hattn__config *cfg, char *buf, size_t len) {
  snprintf(buf, len, "cuda %s %s block %dx%d warps %d stages %d", hattn__cuda_name(dev), hattn__cuda_arch(dev),
           cfg->cuda.block_m, cfg->cuda.block_n, cfg->cuda.warps, cfg->cuda.stages);
}

/* Whether ARCH reads as "sm_XY" or "sm_XYa". */
static int target_valid(const char *arch) {
  int major, minor, n = 0;
  if (sscanf(arch, "sm_%1d%1d%n", &major, &minor, &n) != 2) return 0;
  return hattn__kc_arch_runs(arch, major * 10 + minor) == 2;
}

static int target_score(void *dev, const char *target, const char *needs) {
  (void)needs;
  return hattn__kc_arch_runs(target, hattn__cuda_sm(dev));
}

static int prebuilt_has_binary(void (*fn)(void), const void *bin, size_t size) {
  (void)fn;
  return bin != NULL && size != 0;
}

static int load(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, const char *key,
                const void *bin, size_t size, void **kern, char *err, size_t errlen) {
  (void)key;
  return hattn__cuda_kernel_load(dev, desc, &cfg->cuda, bin, size, (hattn__cuda_kernel **)kern, err, errlen);
}

static int load_prebuilt(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg, void (*fn)(void),
                         const void *bin, size_t size, void **kern, char *err, size_t errlen) {
  (void)fn;
  return hattn__cuda_kernel_load(dev, desc, &cfg->cuda, bin, size, (hattn__cuda_kernel **)kern, err, errlen);
}

static void binary(const void *kern, const void **bin, size_t *size) { hattn__cuda_kernel_cubin(kern, bin, size); }

/* ---- problems and launches -------------------------------------------------------- */

static int problem_create(void *dev, const hattn__kernel_desc *desc, const hattn__config *cfg,
                          const hattn__shape *shape, const hattn__mask_env *env, void **prob, char *err,
                          size_t errlen) {
  return hattn__cuda_plan_create(dev, desc, &cfg->cuda, shape, env, (hattn__cuda_plan **)prob, err, errlen);
}

static void problem_destroy(void *prob) { hattn__cuda_plan_destroy(prob); }

/* Queued on STREAM and not waited for: the launch allocates, copies and
** synchronises nothing (hattn__cuda_launch), so it can be captured. */
static int launch_async(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                        const hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse, void *stream, char *err,
                        size_t errlen) {
  const hattn__cuda_plan *plan = prob;
  (void)dev;
  return hattn__cuda_launch(kern, plan, hattn__cuda_plan_shape(plan), q, k, v, NULL, NULL, o, lse, stream, err, errlen);
}

/* Asynchronous on STREAM, then the device synchronised, as hattn_forward
** promises. */
static int launch(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                  const hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse, void *stream, char *err,
                  size_t errlen) {
  const hattn__cuda_plan *plan = prob;
  int rc = hattn__cuda_launch(kern, plan, hattn__cuda_plan_shape(plan), q, k, v, NULL, NULL, o, lse, stream, err, errlen);
  if (rc == HATTN_OK) rc = hattn__cuda_sync(dev, err, errlen);
  return rc;
}

/* Paged K and V, the block table in device memory (trusted): queued on
** STREAM, and the device synchronised when WAIT. */
static int launch_paged(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                        const hattn__tensor *v, const hattn__paged *pg, hattn__tensor *o, hattn__tensor *lse,
                        void *stream, int wait, char *err, size_t errlen) {
  const hattn__cuda_plan *plan = prob;
  int rc = hattn__cuda_launch(kern, plan, hattn__cuda_plan_shape(plan), q, k, v, pg, NULL, o, lse, stream, err,
                              errlen);
  if (rc == HATTN_OK && wait) rc = hattn__cuda_sync(dev, err, errlen);
  return rc;
}

/* A variable-length batch, its lengths in device memory (trusted), K and V
** contiguous or paged (PG): queued on STREAM, and the device synchronised
** when WAIT. */
static int launch_varlen(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                         const hattn__tensor *v, const hattn__paged *pg, const hattn__lens *lens, hattn__tensor *o,
                         hattn__tensor *lse, void *stream, int wait, char *err, size_t errlen) {
  const hattn__cuda_plan *plan = prob;
  int rc = hattn__cuda_launch(kern, plan, hattn__cuda_plan_shape(plan), q, k, v, pg, lens, o, lse, stream, err,
                              errlen);
  if (rc == HATTN_OK && wait) rc = hattn__cuda_sync(dev, err, errlen);
  return rc;
}

/* ---- the tuner: candidates, memory, timing --------------------------------------- */

/* Append CFG to C (N of CAP used) when DESC accepts it. */
static void add_cand(hattn__config *c, int *n, int cap, const hattn__kernel_desc *desc, const hattn__cuda_config *cfg) {
  char err[256];
  if (hattn__cuda_config_check(desc, cfg, err, sizeof err) != HATTN_OK || *n >= cap) return;
  memset(&c[*n], 0, sizeof c[*n]);
  c[*n].cuda = *cfg;
  (*n)++;
}

static int config_candidates(void *dev, const hattn__kernel_desc *desc, const hattn__shape *shape, int max_threads,
                             hattn__config **out, int *n) {
  static const int bms[] = {64, 128}, bns[] = {32, 64, 128}, warps[] = {4, 8}, stages[] = {2, 3};
  /* The decode kernel's warps, keys a block (in units of the default's
  ** 4096 / head dim, halved: 1 is half the default) and split factors. */
  static const int dws[] = {4, 8, 2}, dns[] = {2, 4, 1}, dss[] = {1, 2, 4};
  hattn__config *c;
  hattn__cuda_config d, cfg;
  int cap = 32, i, sm = hattn__cuda_sm(dev);
  (void)max_threads;

  *out = NULL;
  *n = 0;
  if ((c = calloc((size_t)cap, sizeof *c)) == NULL) return HATTN_ENOMEM;
  /* The default first. */
  hattn__cuda_config_default(desc, sm, &d);
  add_cand(c, n, cap, desc, &d);
  if (shape != NULL && shape->lq >= 1 && shape->lq <= HATTN_CUDA_DECODE_MAX_LQ) {
    /* Few queries: the decode kernels run, whatever the forward tiles, so
    ** only their tiles and splits vary. */
    for (i = 0; i < 3 * 3 * 3; i++) {
      cfg = d;
      cfg.dwarps = dws[i / 9], cfg.dblock_n = dns[i / 3 % 3] * 2048 / desc->head_dim, cfg.dsplit = dss[i % 3];
      if (cfg.dwarps == 4 && cfg.dblock_n == 4096 / desc->head_dim && cfg.dsplit == 1) continue;
      /* Many warps of small blocks, or few of large ones, and no deep
      ** splits of large blocks: the pruned space. */
      if ((cfg.dwarps == 8 && dns[i / 3 % 3] == 4) || (cfg.dwarps == 2 && dns[i / 3 % 3] == 1)) continue;
      add_cand(c, n, cap, desc, &cfg);
    }
    *out = c;
    return HATTN_OK;
  }
  /* The mma.sync kernel, pruned: 128-row tiles with 8 warps only (16 rows
  ** a warp), 64-row tiles with 4; 128-key tiles only at head dim 64. */
  for (i = 0; i < 2 * 3 * 2 * 2; i++) {
    memset(&cfg, 0, sizeof cfg);
    cfg.block_m = bms[i / 12], cfg.block_n = bns[i / 4 % 3], cfg.warps = warps[i / 2 % 2];
    cfg.stages = stages[i % 2];
    if (cfg.block_m / cfg.warps != 16) continue;
    if (cfg.block_n == 128 && desc->head_dim > 64) continue;
    if (!memcmp(&cfg, &d, sizeof cfg)) continue;
    add_cand(c, n, cap, desc, &cfg);
  }
  /* The warpgroup kernels' tiles, on sm_90 only: the one that loads with
  ** every thread (wgmma 1), and the warp-specialised one (wgmma 2, a
  ** producer warpgroup more; 3 stages at 64-key blocks too). */
  for (i = 0; sm == 90 && i < 4 * 3; i++) {
    memset(&cfg, 0, sizeof cfg);
    cfg.block_m = i % 4 < 2 ? 128 : 64, cfg.block_n = i % 2 ? 64 : 128;
    cfg.wgmma = i < 4 ? 1 : 2, cfg.stages = i < 8 ? 2 : 3;
    cfg.warps = cfg.block_m / 16 + (cfg.wgmma == 2 ? 4 : 0);
    if (!memcmp(&cfg, &d, sizeof cfg)) continue;
    add_cand(c, n, cap, desc, &cfg);
  }
  *out = c;
  return HATTN_OK;
}

static int mem_alloc(void *dev, size_t bytes, void **ptr, char *err, size_t errlen) {
  return hattn__cuda_alloc(dev, bytes, ptr, err, errlen);
}

static void mem_free(void *dev, void *ptr) { hattn__cuda_free(dev, ptr); }

static int mem_set(void *dev, void *ptr, int byte, size_t bytes, char *err, size_t errlen) {
  return hattn__cuda_memset(dev, ptr, byte, bytes, err, errlen);
}

static int mem_upload(void *dev, void *dst, const void *src, size_t bytes, char *err, size_t errlen) {
  return hattn__cuda_upload(dev, dst, src, bytes, err, errlen);
}

static int mem_download(void *dev, void *dst, const void *src, size_t bytes, char *err, size_t errlen) {
  return hattn__cuda_download(dev, dst, src, bytes, err, errlen);
}

/* Bytes written before each timed launch when the input sets together
** are smaller: more than an H100's 50 MB L2. */
#define FLUSH_BYTES ((size_t)128 << 20)

/* Device events around one launch a sample, after a warm-up on the first
** set (whose one timed launch prices a sample); input sets rotated and, for
** a problem that fits in L2 even rotated, L2 flushed before each sample. */
static int time_kernel(void *dev, void *kern, void *prob, const hattn__kernel_desc *desc, const hattn__config *cfg,
                       const hattn__tensor_set *sets, int nsets, int warmup, int (*reps)(void *ctx, double sample_s),
                       void *ctx, int max, double *samples_us, int *n, char *err, size_t errlen) {
  const hattn__cuda_plan *plan = prob;
  const hattn__shape *shape = hattn__cuda_plan_shape(plan);
  size_t esz = (size_t)hattn__dtype_size(desc->dtype);
  size_t set_bytes = (size_t)(2 * shape->batch * shape->heads * shape->lq * shape->head_dim +
                              2 * shape->batch * shape->kv_heads * shape->lk * shape->head_dim) * esz;
  void *flush = NULL;
  double ms1;
  int j, r, rc;
  (void)cfg;
  *n = 0;
  if (nsets < 1) {
    snprintf(err, errlen, "no input sets to time with");
    return HATTN_EINVAL;
  }
  if (warmup <= 0) warmup = 3;
  if (nsets * set_bytes < FLUSH_BYTES && hattn__cuda_alloc(dev, FLUSH_BYTES, &flush, err, errlen) != HATTN_OK)
    flush = NULL;
  {
    hattn__tensor o = sets[0].o, lse = sets[0].lse;
    if ((rc = hattn__cuda_time(kern, plan, shape, &sets[0].q, &sets[0].k, &sets[0].v, &o, &lse, warmup, 1, &ms1,
                               err, errlen)) != HATTN_OK)
      goto done;
  }
  r = reps(ctx, ms1 * 1e-3 + 50e-6);
  if (r > max) r = max;
  for (j = 0; j < r; j++) {
    const hattn__tensor_set *s = &sets[j % nsets];
    hattn__tensor o = s->o, lse = s->lse;
    if ((flush && (rc = hattn__cuda_memset(dev, flush, j & 0xff, FLUSH_BYTES, err, errlen)) != HATTN_OK) ||
        (rc = hattn__cuda_time(kern, plan, shape, &s->q, &s->k, &s->v, &o, &lse, 0, 1, &samples_us[j], err,
                               errlen)) != HATTN_OK)
      goto done;
    samples_us[j] *= 1e3;
  }
  *n = r;
  rc = HATTN_OK;
done:
  hattn__cuda_free(dev, flush);
  return rc;
}

hattn__backend_i hattn__backend_cuda = {
    .version = HATTN__BACKEND_I_VERSION,
    .id = HATTN__BACKEND_CUDA,
    .name = "cuda",
    .dl_device = kDLCUDA,
    .dl_name = "kDLCUDA",
    .binary_name = "cubin",
    .target_form = "a CUDA arch (sm_80, sm_90a, ...)",
    .dtype_default = HATTN_DTYPE_BF16,
    .dtypes = 1u << HATTN_DTYPE_FP16 | 1u << HATTN_DTYPE_BF16,
    .gen_target_option = "--arch",
    .compiler_name = "nvrtc",
    .dev_open = dev_open,
    .dev_close = dev_close,
    .ident = ident,
    .config_default = config_default,
    .config_check = config_check,
    .config_text = config_text,
    .config_parse = config_parse,
    .target_valid = target_valid,
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
    .mem_upload = mem_upload,
    .mem_download = mem_download,
    .time = time_kernel,
    .config_tile = config_tile,
    .config_describe = config_describe,
    .gen = NULL,                /* backend_gen.c, by backend_compile.c */
    .launch_async = launch_async,
    .launch_paged = launch_paged,
    .varlen = 0,                /* the kernels read the lengths: launch_varlen */
    .launch_varlen = launch_varlen,
};
