/*
** backend_cuda.c: the CUDA backend's table (backend.h): a device is an
** open GPU (cuda_driver.c, the driver through dlopen), kernels are cubins
** loaded into it, a problem is a plan with its tables in device memory.
** Compiling (the emitter and NVRTC) is in backend_compile.c, linked into
** libhattn only.
*/
#include <stdio.h>
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

/* Asynchronous on STREAM, then the device synchronised, as hattn_forward
** promises. */
static int launch(void *dev, void *kern, void *prob, const hattn__tensor *q, const hattn__tensor *k,
                  const hattn__tensor *v, hattn__tensor *o, hattn__tensor *lse, void *stream, char *err,
                  size_t errlen) {
  const hattn__cuda_plan *plan = prob;
  int rc = hattn__cuda_launch(kern, plan, hattn__cuda_plan_shape(plan), q, k, v, o, lse, stream, err, errlen);
  if (rc == HATTN_OK) rc = hattn__cuda_sync(dev, err, errlen);
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
};
