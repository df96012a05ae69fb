/*
** api.c: the public API of hattn.h on top of the runtime's kernel cache
** (kernel_cache.h) and the backend tables (backend.h): nothing here
** branches on the backend.
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "backend.h"
#include "cpu_abi.h"
#include "cuda_abi.h"
#include "dtype.h"
#include "kernel_cache.h"
#include "tables.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

#define ERRLEN 16384

/* A prebuilt kernel's ABI is that of the kernels' argument blocks. */
_Static_assert(HATTN_PREBUILT_ABI == HATTN_CPU_ABI_VERSION && HATTN_PREBUILT_ABI == HATTN_CUDA_ABI_VERSION,
               "HATTN_PREBUILT_ABI follows gen/cpu_abi.h and gen/cuda_abi.h");

struct hattn_specfile {
  hattn__spec *spec;
  int refs;                    /* the caller's, plus one per context keeping it */
};

struct hattn_ctx {
  hattn_options opt;
  hattn__kcache *kc;
  const hattn__backend_i *be;
  void *dev;                   /* the backend's device: a thread pool, a GPU */
  hattn_specfile **kept;       /* specs whose patterns cached kernels point at */
  int nkept, capkept;
  char *msg;                   /* the error text; never NULL once open */
  char *open_err;              /* why hattn_open failed; NULL when it did not */
  int open_st;                 /* hattn_open's status */
  int refs;                    /* the caller's handle, plus one per kernel */
  int closed;                  /* hattn_close was called */
  char buf[ERRLEN];            /* scratch for the internal functions */
};

struct hattn_kernel {
  hattn_ctx *ctx;
  const hattn__spec *spec;
  const hattn__pattern *pat;
  hattn_problem prob;
  hattn__kc_kernel *kk;
  const char *origin;          /* where hattn_kernel_get found it */
};

/* ---- error text ------------------------------------------------------------ */

static void set_msg_str(hattn_ctx *ctx, const char *s) {
  size_t n = strlen(s);
  char *m = malloc(n + 1);
  if (m == NULL) {
    /* Keep the old buffer; say what happened in as much of it as fits. */
    return;
  }
  memcpy(m, s, n + 1);
  free(ctx->msg);
  ctx->msg = m;
}

static int fail(hattn_ctx *ctx, int st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail(hattn_ctx *ctx, int st, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  set_msg_str(ctx, tmp);
  return st;
}

/* The status ST of an internal call whose sentence is in ctx->buf. */
static int fail_buf(hattn_ctx *ctx, int st) {
  set_msg_str(ctx, ctx->buf[0] ? ctx->buf : hattn_strerror(st));
  return st;
}

const char *hattn_errmsg(const hattn_ctx *ctx) {
  if (ctx == NULL) return "out of memory";
  return ctx->msg ? ctx->msg : "";
}

/* ---- contexts -------------------------------------------------------------- */

void hattn_options_init(hattn_options *opt) {
  if (opt == NULL) return;
  memset(opt, 0, sizeof *opt);
  opt->backend = HATTN_BACKEND_CPU;
}

/* Whether CTX takes new work from FN: HATTN_OK, or the status (with the
** sentence in CTX's text) of a NULL, closed or failed context.  CTX NULL
** has no text to hold the sentence. */
static int ctx_usable(hattn_ctx *ctx, const char *fn) {
  if (ctx == NULL) return HATTN_EINVAL;
  if (ctx->closed) return fail(ctx, HATTN_ECLOSED, "%s: the context is closed", fn);
  if (ctx->open_st != HATTN_OK)
    return fail(ctx, HATTN_EINVAL, "the context failed to open: %s",
                ctx->open_err ? ctx->open_err : hattn_strerror(ctx->open_st));
  return HATTN_OK;
}

/* Record that hattn_open failed with ST and CTX's text; returns ST. */
static int open_failed(hattn_ctx *ctx, int st) {
  size_t n = strlen(ctx->msg) + 1;
  ctx->open_st = st;
  if ((ctx->open_err = malloc(n)) != NULL) memcpy(ctx->open_err, ctx->msg, n);
  return st;
}

int hattn_open(const hattn_options *opt, hattn_ctx **out) {
  hattn_ctx *ctx;
  hattn__kcache_opts ko;
  int st;

  if (out == NULL) return HATTN_EINVAL;
  *out = NULL;
  ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) return HATTN_ENOMEM;
  ctx->msg = calloc(1, 1);
  if (ctx->msg == NULL) {
    free(ctx);
    return HATTN_ENOMEM;
  }
  ctx->refs = 1;
  *out = ctx;
  if (opt) ctx->opt = *opt;
  else hattn_options_init(&ctx->opt);
  ctx->opt.db = NULL;          /* not kept: the caller's string */
  if ((ctx->be = hattn__backend_get(ctx->opt.backend)) == NULL)
    return open_failed(ctx, fail(ctx, HATTN_EINVAL, "unknown backend %d (HATTN_BACKEND_CPU or HATTN_BACKEND_CUDA)",
                                 ctx->opt.backend));
  if (ctx->opt.threads < 0)
    return open_failed(ctx, fail(ctx, HATTN_EINVAL, "threads must be >= 0, got %d", ctx->opt.threads));
  if (ctx->opt.device < 0)
    return open_failed(ctx, fail(ctx, HATTN_EINVAL, "device must be >= 0, got %d", ctx->opt.device));
  if (ctx->opt.threadpool != NULL && ctx->be->dev_threadpool == NULL)
    return open_failed(ctx, fail(ctx, HATTN_EINVAL, "threadpool: the %s backend runs no host threads",
                                 ctx->be->name));
  if (ctx->opt.threadpool != NULL && ctx->opt.threads != 0)
    return open_failed(ctx, fail(ctx, HATTN_EINVAL, "threadpool and threads (%d): set one of them, not both",
                                 ctx->opt.threads));
  ctx->buf[0] = 0;
  /* With the caller's pool, the device starts no threads of its own. */
  if ((st = ctx->be->dev_open(ctx->opt.device, ctx->opt.threadpool ? -1 : ctx->opt.threads, &ctx->dev, ctx->buf,
                              sizeof ctx->buf)) != HATTN_OK ||
      (ctx->opt.threadpool != NULL &&
       (st = ctx->be->dev_threadpool(ctx->dev, ctx->opt.threadpool, ctx->buf, sizeof ctx->buf)) != HATTN_OK))
    return open_failed(ctx, fail_buf(ctx, st));
  ctx->opt.threadpool = NULL;  /* not kept: the caller's struct (the pool has its copy) */
  memset(&ko, 0, sizeof ko);
  ko.backend = ctx->be->id;
  ko.db_path = opt ? opt->db : NULL;
  ko.dev = ctx->dev;
  ko.quiet = ctx->opt.quiet;
  if ((st = hattn__kcache_open(&ko, &ctx->kc, ctx->buf, sizeof ctx->buf)) != HATTN_OK)
    return open_failed(ctx, fail_buf(ctx, st));
  set_msg_str(ctx, hattn__kcache_warning(ctx->kc));
  return HATTN_OK;
}

static void spec_unref(hattn_specfile *s) {
  if (s && --s->refs == 0) {
    hattn__spec_destroy(s->spec);
    free(s);
  }
}

/* Drop one reference to CTX; the last frees it and everything it keeps. */
static void ctx_unref(hattn_ctx *ctx) {
  int i;
  if (--ctx->refs > 0) return;
  hattn__kcache_close(ctx->kc);
  for (i = 0; i < ctx->nkept; i++) spec_unref(ctx->kept[i]);
  free(ctx->kept);
  if (ctx->dev) ctx->be->dev_close(ctx->dev);
  free(ctx->open_err);
  free(ctx->msg);
  free(ctx);
}

void hattn_close(hattn_ctx *ctx) {
  if (ctx == NULL || ctx->closed) return;
  ctx->closed = 1;
  ctx_unref(ctx);
}

/* ---- specs ------------------------------------------------------------------ */

int hattn_specfile_parse(hattn_ctx *ctx, const char *text, size_t len, const char *filename,
                         hattn_specfile **out) {
  hattn__diags diags;
  hattn__spec *spec = NULL;
  hattn_specfile *s;
  int st;

  if (out != NULL) *out = NULL;
  if ((st = ctx_usable(ctx, "hattn_specfile_parse")) != HATTN_OK) return st;
  if (out == NULL) return fail(ctx, HATTN_EINVAL, "hattn_specfile_parse: out is NULL");
  if (text == NULL && len > 0)
    return fail(ctx, HATTN_EINVAL, "hattn_specfile_parse: text is NULL with len %zu", len);
  memset(&diags, 0, sizeof diags);
  st = hattn__spec_parse(text ? text : "", len, filename ? filename : "<spec>", &spec, &diags);
  if (st != HATTN_OK) {
    if (st == HATTN_ESPEC && diags.text) set_msg_str(ctx, diags.text);
    else set_msg_str(ctx, hattn_strerror(st));
    hattn__diags_clear(&diags);
    return st;
  }
  hattn__diags_clear(&diags);
  s = malloc(sizeof *s);
  if (s == NULL) {
    hattn__spec_destroy(spec);
    return fail(ctx, HATTN_ENOMEM, "out of memory");
  }
  s->spec = spec;
  s->refs = 1;
  *out = s;
  set_msg_str(ctx, "");
  return HATTN_OK;
}

void hattn_specfile_destroy(hattn_specfile *spec) { spec_unref(spec); }

int hattn_specfile_npatterns(const hattn_specfile *spec) {
  if (spec == NULL) return HATTN_EINVAL;
  return spec->spec->npatterns;
}

const char *hattn_specfile_pattern_name(const hattn_specfile *spec, int i) {
  if (spec == NULL || i < 0 || i >= spec->spec->npatterns) return NULL;
  return spec->spec->patterns[i].name;
}

/* ---- kernels ----------------------------------------------------------------- */

static int keep_spec(hattn_ctx *ctx, hattn_specfile *s) {
  int i;
  for (i = 0; i < ctx->nkept; i++)
    if (ctx->kept[i] == s) return HATTN_OK;
  if (ctx->nkept == ctx->capkept) {
    int cap = ctx->capkept ? 2 * ctx->capkept : 8;
    hattn_specfile **k = realloc(ctx->kept, (size_t)cap * sizeof *k);
    if (k == NULL) return HATTN_ENOMEM;
    ctx->kept = k;
    ctx->capkept = cap;
  }
  ctx->kept[ctx->nkept++] = s;
  s->refs++;
  return HATTN_OK;
}

/* Whether A * B (both >= 0) is above LIMIT, without overflow. */
static int product_above(int64_t a, int64_t b, int64_t limit) { return b != 0 && a > limit / b; }

/* Check P against hattn.h's limits, each dimension before any product of
** them is formed; HATTN_ESHAPE names the limit. */
static int check_problem(hattn_ctx *ctx, const hattn_problem *p) {
  int64_t bh;
  if (p->batch < 1) return fail(ctx, HATTN_ESHAPE, "problem: batch must be >= 1, got %lld", (long long)p->batch);
  if (p->heads < 1) return fail(ctx, HATTN_ESHAPE, "problem: heads must be >= 1, got %lld", (long long)p->heads);
  if (p->kv_heads < 1 || p->heads % p->kv_heads != 0)
    return fail(ctx, HATTN_ESHAPE, "problem: kv_heads must divide heads (%lld), got %lld", (long long)p->heads,
                (long long)p->kv_heads);
  if (product_above(p->batch, p->heads, HATTN_MAX_BATCH_HEADS)) {
    if (p->batch > HATTN_MAX_BATCH_HEADS || p->heads > HATTN_MAX_BATCH_HEADS)
      return fail(ctx, HATTN_ESHAPE, "problem: batch %lld and heads %lld: batch x heads is above "
                  "HATTN_MAX_BATCH_HEADS (%lld)", (long long)p->batch, (long long)p->heads,
                  (long long)HATTN_MAX_BATCH_HEADS);
    return fail(ctx, HATTN_ESHAPE, "problem: batch x heads is %lld, above HATTN_MAX_BATCH_HEADS (%lld)",
                (long long)(p->batch * p->heads), (long long)HATTN_MAX_BATCH_HEADS);
  }
  if (p->lq < 0 || p->lk < 0)
    return fail(ctx, HATTN_ESHAPE, "problem: lq and lk must be >= 0, got %lld and %lld", (long long)p->lq,
                (long long)p->lk);
  if (p->lq > HATTN_MAX_SEQLEN || p->lk > HATTN_MAX_SEQLEN)
    return fail(ctx, HATTN_ESHAPE, "problem: %s is %lld, above HATTN_MAX_SEQLEN (%lld)",
                p->lq > HATTN_MAX_SEQLEN ? "lq" : "lk", (long long)(p->lq > HATTN_MAX_SEQLEN ? p->lq : p->lk),
                (long long)HATTN_MAX_SEQLEN);
  if (p->head_dim < 1 || p->head_dim > HATTN_MAX_HEAD_DIM)
    return fail(ctx, HATTN_ESHAPE, "problem: head_dim must be in [1, HATTN_MAX_HEAD_DIM (%d)], got %lld",
                HATTN_MAX_HEAD_DIM, (long long)p->head_dim);
  /* batch x heads < 2^31 and lq, lk < 2^30: these products fit in 2^61. */
  bh = p->batch * p->heads;
  if (product_above(bh * p->lq, p->head_dim, HATTN_MAX_ELEMENTS))
    return fail(ctx, HATTN_ESHAPE, "problem: Q and O have %lld x %lld x %lld x %lld elements, above "
                "HATTN_MAX_ELEMENTS (%lld)", (long long)p->batch, (long long)p->heads, (long long)p->lq,
                (long long)p->head_dim, (long long)HATTN_MAX_ELEMENTS);
  if (product_above(p->batch * p->kv_heads * p->lk, p->head_dim, HATTN_MAX_ELEMENTS))
    return fail(ctx, HATTN_ESHAPE, "problem: K and V have %lld x %lld x %lld x %lld elements, above "
                "HATTN_MAX_ELEMENTS (%lld)", (long long)p->batch, (long long)p->kv_heads, (long long)p->lk,
                (long long)p->head_dim, (long long)HATTN_MAX_ELEMENTS);
  if (p->dtype != HATTN_FP32 && p->dtype != HATTN_FP16 && p->dtype != HATTN_BF16)
    return fail(ctx, HATTN_ESHAPE, "problem: unknown dtype %d (HATTN_FP32, HATTN_FP16 or HATTN_BF16)", p->dtype);
  return HATTN_OK;
}

/* One element type: the public hattn_eltype and the library's hattn__dtype
** agree value for value. */
_Static_assert((int)HATTN_FP32 == (int)HATTN_DTYPE_FP32 && (int)HATTN_FP16 == (int)HATTN_DTYPE_FP16 &&
                   (int)HATTN_BF16 == (int)HATTN_DTYPE_BF16,
               "hattn_eltype and hattn__dtype agree");

static hattn__dtype dtype_of(int t) { return (hattn__dtype)t; }

int hattn_kernel_get(hattn_ctx *ctx, const hattn_specfile *spec, const char *pattern,
                     const hattn_problem *prob, hattn_kernel **out) {
  hattn_kernel *kern;
  hattn__kc_kernel *kk;
  const hattn__pattern *p;
  int idx, st;

  if (out != NULL) *out = NULL;
  if ((st = ctx_usable(ctx, "hattn_kernel_get")) != HATTN_OK) return st;
  if (spec == NULL || pattern == NULL || prob == NULL || out == NULL)
    return fail(ctx, HATTN_EINVAL, "hattn_kernel_get: %s is NULL",
                spec == NULL ? "spec" : pattern == NULL ? "pattern" : prob == NULL ? "prob" : "out");
  idx = hattn__spec_find_pattern(spec->spec, pattern);
  if (idx < 0) return fail(ctx, HATTN_ENOENT, "no pattern named '%s' in the spec", pattern);
  p = &spec->spec->patterns[idx];
  if ((st = check_problem(ctx, prob)) != HATTN_OK) return st;
  kern = calloc(1, sizeof *kern);
  if (kern == NULL) return fail(ctx, HATTN_ENOMEM, "out of memory");
  /* Kept before the lookup: cached kernels point at the pattern. */
  if (keep_spec(ctx, (hattn_specfile *)spec) != HATTN_OK) {
    free(kern);
    return fail(ctx, HATTN_ENOMEM, "out of memory");
  }
  ctx->buf[0] = 0;
  st = hattn__kcache_get(ctx->kc, p, dtype_of(prob->dtype), (int)prob->head_dim, prob->lq, prob->lk,
                         prob->batch * prob->heads, &kk, ctx->buf, sizeof ctx->buf);
  if (st != HATTN_OK) {
    free(kern);
    return fail_buf(ctx, st);
  }
  kern->ctx = ctx;
  ctx->refs++;
  kern->spec = spec->spec;
  kern->pat = p;
  kern->prob = *prob;
  kern->kk = kk;
  kern->origin = hattn__kc_source_name(kk->source);
  *out = kern;
  set_msg_str(ctx, hattn__kcache_warning(ctx->kc));
  return HATTN_OK;
}

void hattn_kernel_destroy(hattn_kernel *kern) {
  if (kern == NULL) return;
  ctx_unref(kern->ctx);
  free(kern);
}

unsigned hattn_kernel_needs(const hattn_kernel *kern) {
  unsigned n, r = 0;
  if (kern == NULL) return 0;
  n = kern->pat->needs;
  if (n & HATTN_NEEDS_DOCUMENT) r |= HATTN_NEED_DOCUMENTS;
  if (n & HATTN_NEEDS_BLOCKS) r |= HATTN_NEED_LAYOUTS;
  if (n & HATTN_NEEDS_TOPK) r |= HATTN_NEED_TOPK;
  return r;
}

const char *hattn_kernel_config(const hattn_kernel *kern) { return kern ? kern->kk->config : ""; }

const char *hattn_kernel_origin(const hattn_kernel *kern) { return kern ? kern->origin : ""; }

const char *hattn_kernel_errmsg(const hattn_kernel *kern) { return kern ? hattn_errmsg(kern->ctx) : ""; }

/* ---- prebuilt kernels ----------------------------------------------------------- */

int hattn_add_prebuilt(hattn_ctx *ctx, const hattn_prebuilt *table, int n, int *nused) {
  hattn__kc_prebuilt pb;
  int i, used, count = 0, st = HATTN_OK;

  if (nused) *nused = 0;
  if ((st = ctx_usable(ctx, "hattn_add_prebuilt")) != HATTN_OK) return st;
  if (n < 0) return fail(ctx, HATTN_EINVAL, "hattn_add_prebuilt: n must be >= 0, got %d", n);
  if (table == NULL && n > 0) return fail(ctx, HATTN_EINVAL, "hattn_add_prebuilt: table is NULL with n %d", n);
  for (i = 0; i < n && st == HATTN_OK; i++) {
    const hattn_prebuilt *t = &table[i];
    if (t->abi != HATTN_PREBUILT_ABI) {
      st = fail(ctx, HATTN_ENOTSUP,
                "prebuilt kernel %d was generated for kernel ABI %d; this library runs ABI %d: generate it again",
                i, t->abi, HATTN_PREBUILT_ABI);
      break;
    }
    if (hattn__backend_get(t->backend) == NULL ||
        (t->dtype != HATTN_FP32 && t->dtype != HATTN_FP16 && t->dtype != HATTN_BF16) || t->head_dim < 1) {
      st = fail(ctx, HATTN_EINVAL, "prebuilt kernel %d: backend %d, dtype %d or head_dim %d is not valid", i,
                t->backend, t->dtype, t->head_dim);
      break;
    }
    memset(&pb, 0, sizeof pb);
    pb.backend = (hattn__backend)t->backend;
    pb.canon = t->canon;
    pb.dtype = dtype_of(t->dtype);
    pb.head_dim = t->head_dim;
    pb.config = t->config;
    pb.target = t->target;
    pb.needs = t->needs;
    /* The kernel's own type: hattn_cpu_kernel_fn is hattn__cpu_fn. */
    pb.fn = (hattn__cpu_fn)t->cpu_fn;
    pb.cubin = t->cubin;
    pb.cubin_size = t->cubin_size;
    ctx->buf[0] = 0;
    if ((st = hattn__kcache_add_prebuilt(ctx->kc, &pb, &used, ctx->buf, sizeof ctx->buf)) != HATTN_OK) {
      fail_buf(ctx, st);
      break;
    }
    count += used;
  }
  if (nused) *nused = count;
  if (st == HATTN_OK) set_msg_str(ctx, "");
  return st;
}

/* ---- forward ------------------------------------------------------------------- */

static const char *dtype_text(DLDataType t, char *buf, size_t len) {
  const char *code = t.code == kDLFloat ? "float" : t.code == kDLBfloat ? "bfloat" : t.code == kDLInt ? "int"
                     : t.code == kDLUInt ? "uint" : "code";
  if (t.lanes == 1) snprintf(buf, len, "%s%d", code, (int)t.bits);
  else snprintf(buf, len, "%s%dx%d", code, (int)t.bits, (int)t.lanes);
  return buf;
}

/* Check tensor T (NAME) against NDIM dims DIMS of element type WANT on the
** kernel's device (the host when ON_HOST); fill *OUT.  The last dim must
** have stride 1 when LASTCONTIG. */
static int check_tensor_on(hattn_kernel *kern, int on_host, const char *name, const DLTensor *t, int ndim,
                           const int64_t *dims, DLDataType want, int lastcontig, hattn__tensor *out) {
  hattn_ctx *ctx = kern->ctx;
  /* The reference reads host memory; DLPack gives the host no ordinal. */
  int dl_device = on_host ? kDLCPU : kern->kk->be->dl_device;
  const char *dl_name = on_host ? "kDLCPU" : kern->kk->be->dl_name;
  int dev_id = dl_device == kDLCPU ? 0 : ctx->opt.device;
  int i;
  int64_t st[4], n = 1;
  char a[32], b[32];

  if (t == NULL) return fail(ctx, HATTN_ESHAPE, "%s: missing (NULL)", name);
  if ((int)t->device.device_type != dl_device || (dl_device != kDLCPU && t->device.device_id != dev_id))
    return fail(ctx, HATTN_ESHAPE, "%s: on device type %d id %d; this kernel runs on %s %d", name,
                (int)t->device.device_type, (int)t->device.device_id, dl_name, dev_id);
  if (t->dtype.code != want.code || t->dtype.bits != want.bits || t->dtype.lanes != want.lanes)
    return fail(ctx, HATTN_ESHAPE, "%s: dtype %s, expected %s", name, dtype_text(t->dtype, a, sizeof a),
                dtype_text(want, b, sizeof b));
  if (t->ndim != ndim)
    return fail(ctx, HATTN_ESHAPE, "%s: %d dimensions, expected %d", name, (int)t->ndim, ndim);
  if (t->shape == NULL) return fail(ctx, HATTN_ESHAPE, "%s: shape is NULL", name);
  for (i = 0; i < ndim; i++) {
    if (t->shape[i] != dims[i]) {
      char want_s[128], got_s[128];
      int j, pw = 0, pg = 0;
      for (j = 0; j < ndim; j++) {
        pw += snprintf(want_s + pw, sizeof want_s - (size_t)pw, "%s%lld", j ? ", " : "", (long long)dims[j]);
        pg += snprintf(got_s + pg, sizeof got_s - (size_t)pg, "%s%lld", j ? ", " : "", (long long)t->shape[j]);
      }
      return fail(ctx, HATTN_ESHAPE, "%s: shape [%s], expected [%s] (dimension %d differs)", name, got_s,
                  want_s, i);
    }
    n *= dims[i];
  }
  if (t->strides) {
    for (i = 0; i < ndim; i++) st[i] = t->strides[i];
  } else {
    int64_t s = 1;
    for (i = ndim - 1; i >= 0; i--) {
      st[i] = s;
      s *= dims[i];
    }
  }
  if (lastcontig && dims[ndim - 1] > 1 && st[ndim - 1] != 1)
    return fail(ctx, HATTN_ESHAPE, "%s: the last dimension must be contiguous (stride 1), got stride %lld", name,
                (long long)st[ndim - 1]);
  if (n > 0 && t->data == NULL) return fail(ctx, HATTN_ESHAPE, "%s: data is NULL", name);
  out->data = t->data ? (char *)t->data + t->byte_offset : NULL;
  for (i = 0; i < 4; i++) out->stride[i] = i < ndim ? st[i] : 1;
  if (ndim == 4 && lastcontig) out->stride[3] = 1;
  return HATTN_OK;
}

static int check_tensor(hattn_kernel *kern, const char *name, const DLTensor *t, int ndim, const int64_t *dims,
                        DLDataType want, int lastcontig, hattn__tensor *out) {
  return check_tensor_on(kern, 0, name, t, ndim, dims, want, lastcontig, out);
}

/* The element type of PR's Q, K, V and O, and the logical shapes of Q and
** O (DQ), K and V (DKV) and LSE (DL, its first three). */
static void problem_dims(const hattn_problem *pr, DLDataType *dt, int64_t dq[4], int64_t dkv[4], int64_t *dl) {
  dt->code = pr->dtype == HATTN_BF16 ? kDLBfloat : kDLFloat;
  dt->bits = pr->dtype == HATTN_FP32 ? 32 : 16;
  dt->lanes = 1;
  dq[0] = pr->batch, dq[1] = pr->heads, dq[2] = pr->lq, dq[3] = pr->head_dim;
  dkv[0] = pr->batch, dkv[1] = pr->kv_heads, dkv[2] = pr->lk, dkv[3] = pr->head_dim;
  dl[0] = pr->batch, dl[1] = pr->heads, dl[2] = pr->lq;
}

/* The shape and run-time data of a launch of KERN with INPUTS, checked:
** *LAYS (malloc'd, may be NULL; the caller frees it, also on failure) holds
** the spec's layouts in the spec's order. */
static int make_env(hattn_kernel *kern, const hattn_inputs *inputs, hattn__shape *shp, hattn__mask_env *envp,
                    hattn__layout **layp) {
  hattn_ctx *ctx = kern->ctx;
  const hattn_problem *pr = &kern->prob;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__layout *lays = NULL;
  int st = HATTN_OK, i, j;

  *layp = NULL;
  if (inputs->alibi_slopes) {
    if (kern->pat->alibi != HATTN_ALIBI_STANDARD)
      return fail(ctx, HATTN_EINPUT,
                  "inputs: alibi_slopes are for patterns \"with alibi\"; pattern '%s' has %s", kern->pat->name,
                  kern->pat->alibi == HATTN_ALIBI_FIXED ? "a fixed slope compiled in" : "no alibi");
    for (i = 0; i < pr->heads; i++)
      if (!isfinite(inputs->alibi_slopes[i]))
        return fail(ctx, HATTN_EINPUT, "inputs: alibi_slopes[%d] is not finite", i);
  }
  if (inputs->sink_logits)
    for (i = 0; i < pr->heads; i++)
      if (isnan(inputs->sink_logits[i]) || inputs->sink_logits[i] == INFINITY)
        return fail(ctx, HATTN_EINPUT, "inputs: sink_logits[%d] is %s", i,
                    isnan(inputs->sink_logits[i]) ? "NaN" : "+inf");
  if (inputs->seed && kern->pat->lowered->nrandom == 0)
    return fail(ctx, HATTN_EINPUT, "inputs: seed is set, but pattern '%s' has no random() atom", kern->pat->name);
  shape.batch = pr->batch, shape.heads = pr->heads, shape.kv_heads = pr->kv_heads;
  shape.lq = pr->lq, shape.lk = pr->lk, shape.head_dim = pr->head_dim;
  memset(&env, 0, sizeof env);
  env.lq = pr->lq, env.lk = pr->lk, env.batch = pr->batch, env.heads = pr->heads;
  env.doc_offsets = inputs->doc_offsets;
  env.ndocs = inputs->ndocs;
  env.topk_blocks = inputs->topk_blocks;
  env.topk_k = inputs->topk_k;
  env.seed = inputs->seed;
  env.alibi_slopes = inputs->alibi_slopes;
  env.sink_logits = inputs->sink_logits;
  env.q_offset = inputs->q_offset;
  env.k_offset = inputs->k_offset;
  env.offsets_set = inputs->offsets_set != 0;
  if ((kern->pat->needs & HATTN_NEEDS_DOCUMENT) && inputs->doc_offsets == NULL)
    return fail(ctx, HATTN_EINPUT, "inputs: pattern '%s' uses document(): doc_offsets are required",
                kern->pat->name);
  if (inputs->nlayouts < 0 || (inputs->nlayouts > 0 && inputs->layouts == NULL))
    return fail(ctx, HATTN_EINPUT, "inputs: nlayouts is %d with layouts %s", inputs->nlayouts,
                inputs->layouts ? "set" : "NULL");
  for (j = 0; j < inputs->nlayouts; j++) {
    const char *nm = inputs->layouts[j].name;
    for (i = 0; i < kern->spec->nlayouts; i++)
      if (nm && strcmp(nm, kern->spec->layouts[i]) == 0) break;
    if (i == kern->spec->nlayouts)
      return fail(ctx, HATTN_EINPUT, "inputs: layout '%s' is not named in the spec", nm ? nm : "(NULL)");
    for (i = 0; i < j; i++)
      if (strcmp(inputs->layouts[i].name, nm) == 0)
        return fail(ctx, HATTN_EINPUT, "inputs: layout '%s' is given twice (layouts[%d] and layouts[%d])", nm, i,
                    j);
  }
  if (kern->spec->nlayouts > 0) {
    lays = calloc((size_t)kern->spec->nlayouts, sizeof *lays);
    if (lays == NULL) return fail(ctx, HATTN_ENOMEM, "out of memory");
    for (i = 0; i < kern->spec->nlayouts; i++) {
      for (j = 0; j < inputs->nlayouts; j++)
        if (inputs->layouts[j].name && strcmp(inputs->layouts[j].name, kern->spec->layouts[i]) == 0) break;
      if (j < inputs->nlayouts) {
        const hattn_layout *l = &inputs->layouts[j];
        if (l->nqb > 0 && l->nkb > 0 && product_above(l->nqb, l->nkb, HATTN_MAX_ELEMENTS)) {
          st = fail(ctx, HATTN_EINPUT, "inputs: layout '%s' has %lld x %lld blocks, above HATTN_MAX_ELEMENTS (%lld)",
                    l->name, (long long)l->nqb, (long long)l->nkb, (long long)HATTN_MAX_ELEMENTS);
          goto done;
        }
        lays[i].bm = l->bm, lays[i].bn = l->bn, lays[i].nqb = l->nqb, lays[i].nkb = l->nkb;
        lays[i].bits = l->bits;
      } else if (hattn__mask_uses_layout(kern->pat->lowered, i)) {
        st = fail(ctx, HATTN_EINPUT, "inputs: pattern '%s' uses blocks(%s): no layout of that name given",
                  kern->pat->name, kern->spec->layouts[i]);
        goto done;
      } else {
        lays[i].bm = lays[i].bn = 1; /* unused by this pattern */
      }
    }
    env.layouts = lays;
    env.nlayouts = kern->spec->nlayouts;
  }
  ctx->buf[0] = 0;
  if ((st = hattn__mask_env_check(kern->pat->lowered, &env, kern->spec->nlayouts, ctx->buf, sizeof ctx->buf)) !=
      HATTN_OK) {
    fail_buf(ctx, st);
    goto done;
  }
  *shp = shape;
  *envp = env;
done:
  *layp = lays;
  return st;
}

/* Whether PAGE_SIZE and LAYOUT of paged K and V are valid (HATTN_EINPUT
** with the sentence on KERN's context if not) and, when LAUNCHING, whether
** KERN's backend runs paged K and V (HATTN_ENOTSUP). */
static int check_paged_params(hattn_kernel *kern, const char *who, int64_t page_size, int layout,
                              int launching) {
  hattn_ctx *ctx = kern->ctx;
  const hattn__backend_i *be = kern->kk->be;
  if (page_size < 1 || page_size > HATTN_MAX_PAGE_SIZE || (page_size & (page_size - 1)) != 0)
    return fail(ctx, HATTN_EINPUT, "%s: page_size %lld is not a power of two in 1..%d", who, (long long)page_size,
                HATTN_MAX_PAGE_SIZE);
  if (layout != HATTN_PAGED_NHD && layout != HATTN_PAGED_HND)
    return fail(ctx, HATTN_EINPUT, "%s: layout %d is neither HATTN_PAGED_NHD (0) nor HATTN_PAGED_HND (1)", who,
                layout);
  if (launching && (be->version < 6 || be->launch_paged == NULL))
    return fail(ctx, HATTN_ENOTSUP, "%s: paged K and V are not supported on the %s backend yet", who, be->name);
  return HATTN_OK;
}

/* Check the paged pools K and V and the block table BT of a
** launch of KERN with PAGE_SIZE and LAYOUT (checked), on the kernel's
** device (the host when ON_HOST), every entry the kernel reads included;
** fill *TK and *TV as cpu.h's hattn__paged wants them, and *PG.  With
** K_LENS (checked), row b's entries past ceil(k_lens[b] / page_size) are
** not read, so not checked. */
static int check_paged(hattn_kernel *kern, int on_host, int64_t page_size, int layout, const DLTensor *k,
                       const DLTensor *v, const DLTensor *bt, const int32_t *k_lens, hattn__tensor *tk,
                       hattn__tensor *tv, hattn__paged *pg) {
  hattn_ctx *ctx = kern->ctx;
  const hattn_problem *pr = &kern->prob;
  DLDataType dt, i32 = {kDLInt, 32, 1};
  int64_t dq[4], dkv[4], dl[3], dims[4], dbt[2], pages, need, b, c;
  const char *form = layout == HATTN_PAGED_NHD ? "[pages, page_size, kv_heads, head_dim] (HATTN_PAGED_NHD)"
                                               : "[pages, kv_heads, page_size, head_dim] (HATTN_PAGED_HND)";
  hattn__tensor tb;
  int st, i;

  problem_dims(pr, &dt, dq, dkv, dl);
  for (i = 0; i < 2; i++) {
    const DLTensor *t = i == 0 ? k : v;
    const char *name = i == 0 ? "k" : "v";
    hattn__tensor *out = i == 0 ? tk : tv;
    int64_t page_stride;
    if (t == NULL) return fail(ctx, HATTN_ESHAPE, "%s: missing (NULL)", name);
    if (t->ndim != 4 || t->shape == NULL)
      return fail(ctx, HATTN_ESHAPE, "%s: a paged pool is 4-d, %s; got %d dimensions%s", name, form, (int)t->ndim,
                  t->shape == NULL ? " and no shape" : "");
    pages = i == 0 ? t->shape[0] : k->shape[0];
    if (pages < 1 || pages > INT32_MAX)
      return fail(ctx, HATTN_ESHAPE, "%s: a pool of %lld pages; between 1 and 2^31 - 1 (int32 block-table entries)",
                  name, (long long)t->shape[0]);
    if (product_above(pages * page_size, pr->kv_heads * pr->head_dim, HATTN_MAX_ELEMENTS))
      return fail(ctx, HATTN_ESHAPE, "%s: a pool of %lld pages of %lld holds more than HATTN_MAX_ELEMENTS (2^48)",
                  name, (long long)pages, (long long)page_size);
    dims[0] = pages, dims[3] = pr->head_dim;
    dims[1] = layout == HATTN_PAGED_NHD ? page_size : pr->kv_heads;
    dims[2] = layout == HATTN_PAGED_NHD ? pr->kv_heads : page_size;
    if ((st = check_tensor_on(kern, on_host, name, t, 4, dims, dt, 1, out)) != HATTN_OK) return st;
    page_stride = out->stride[0];
    if (layout == HATTN_PAGED_NHD) {
      int64_t slot = out->stride[1];
      out->stride[1] = out->stride[2];
      out->stride[2] = slot;
    }
    out->stride[0] = 0;
    if (i == 0) pg->k_page_stride = page_stride;
    else pg->v_page_stride = page_stride;
  }
  pages = k->shape[0];
  need = (pr->lk + page_size - 1) / page_size;
  if (bt == NULL) return fail(ctx, HATTN_EINPUT, "block_table: missing (NULL); paged K and V need one");
  if (bt->ndim != 2 || bt->shape == NULL)
    return fail(ctx, HATTN_ESHAPE, "block_table: %d dimensions, expected 2 (int32 [batch, pages per sequence])",
                (int)bt->ndim);
  dbt[0] = pr->batch, dbt[1] = bt->shape[1];
  if (bt->shape[1] < need)
    return fail(ctx, HATTN_ESHAPE,
                "block_table: %lld columns, fewer than the ceil(lk / page_size) = ceil(%lld / %lld) = %lld pages "
                "a sequence spans",
                (long long)bt->shape[1], (long long)pr->lk, (long long)page_size, (long long)need);
  if ((st = check_tensor_on(kern, on_host, "block_table", bt, 2, dbt, i32, 1, &tb)) != HATTN_OK) return st;
  pg->block_table = tb.data;
  pg->table_stride = tb.stride[0];
  pg->page_size = page_size;
  pg->npages = pages;
  /* The entries are data; the kernels read them where they live, so the
  ** host checks them where they are host memory (every backend that
  ** reads paged K and V today). */
  if (on_host || kern->kk->be->dl_device == kDLCPU)
    for (b = 0; b < pr->batch; b++)
      for (c = 0; c < (k_lens ? (k_lens[b] + page_size - 1) / page_size : need); c++) {
        int32_t e = pg->block_table[b * pg->table_stride + c];
        if (e < 0 || e >= pages)
          return fail(ctx, HATTN_EINPUT,
                      "block_table[%lld][%lld] is %d, outside the pool's pages [0, %lld)", (long long)b,
                      (long long)c, (int)e, (long long)pages);
      }
  return HATTN_OK;
}

/* The checked tensors of a launch of KERN: Q, K, V, O on the kernel's
** device in the problem's dtype and shapes, LSE (NULL: none; TL then has
** data NULL and compact strides).  With PAGED (NULL: contiguous K and V),
** K and V are pools of pages read through block table BT, and *PG is
** filled (PAGED's own block_table is not read); K_LENS (checked, may be
** NULL) are the key lengths of a variable-length batch. */
static int check_tensors(hattn_kernel *kern, const DLTensor *q, const DLTensor *k, const DLTensor *v,
                         const DLTensor *o, const DLTensor *lse, const hattn_paged_kv *paged, const DLTensor *bt,
                         const int32_t *k_lens, hattn__tensor *tq, hattn__tensor *tk, hattn__tensor *tv,
                         hattn__tensor *to, hattn__tensor *tl, hattn__paged *pg) {
  const hattn_problem *pr = &kern->prob;
  DLDataType dt, f32 = {kDLFloat, 32, 1};
  int64_t dq[4], dkv[4], dl[3];
  int st;

  problem_dims(pr, &dt, dq, dkv, dl);
  if ((st = check_tensor(kern, "q", q, 4, dq, dt, 1, tq)) != HATTN_OK) return st;
  if (paged != NULL) {
    if ((st = check_paged(kern, 0, paged->page_size, paged->layout, k, v, bt, k_lens, tk, tv, pg)) != HATTN_OK)
      return st;
  } else if ((st = check_tensor(kern, "k", k, 4, dkv, dt, 1, tk)) != HATTN_OK ||
             (st = check_tensor(kern, "v", v, 4, dkv, dt, 1, tv)) != HATTN_OK) {
    return st;
  }
  if ((st = check_tensor(kern, "o", o, 4, dq, dt, 1, to)) != HATTN_OK) return st;
  if (lse) return check_tensor(kern, "lse", lse, 3, dl, f32, 0, tl);
  memset(tl, 0, sizeof *tl);
  tl->stride[0] = pr->heads * pr->lq, tl->stride[1] = pr->lq, tl->stride[2] = 1, tl->stride[3] = 1;
  return HATTN_OK;
}

/* A plan: a copy of its kernel's handle (whose context it holds a
** reference to) and the backend's per-problem state. */
struct hattn_plan {
  hattn_kernel kern;
  void *prob;                   /* NULL for a variable-length batch run as VARLEN */
  hattn_paged_kv paged;         /* page_size 0: contiguous K and V (hattn_run) */
  hattn__varlen *varlen;        /* a variable-length batch (inputs.q_lens, k_lens), or NULL */
  /* A variable-length batch on a backend whose kernels read the lengths
  ** (launch_varlen): inputs.q_lens and k_lens in device memory LENS_MEM,
  ** [batch] each, and LENS pointing into it; LENS_MEM NULL otherwise. */
  void *lens_mem;
  hattn__lens lens;
  /* What hattn_run_varlen needs of the inputs: whether offsets were set,
  ** and copies of the ALiBi slopes and sink logits (NULL: none). */
  int offsets_set;
  float *slopes, *sinks;
};

/* Free what PLAN holds (its problems, device lengths, copies) and PLAN;
** its context is not touched. */
static void plan_free(hattn_plan *plan) {
  const hattn__backend_i *be = plan->kern.kk->be;
  if (plan->prob != NULL) be->problem_destroy(plan->prob);
  hattn__varlen_destroy(be, plan->varlen);
  if (plan->lens_mem != NULL) be->mem_free(plan->kern.ctx->dev, plan->lens_mem);
  free(plan->slopes);
  free(plan->sinks);
  free(plan);
}

/* A malloc'd copy of the N floats at P, or NULL. */
static float *copy_floats(const float *p, int64_t n) {
  float *c = malloc((size_t)n * sizeof *c);
  if (c != NULL) memcpy(c, p, (size_t)n * sizeof *c);
  return c;
}

/* Put the lengths Q_LENS and K_LENS (host, checked; either may be NULL) of
** PLAN's batch into device memory for kernels that read them: PLAN's
** lens_mem and lens.  The sentence of a failure is on the context. */
static int upload_lens(hattn_kernel *kern, hattn_plan *plan, const int32_t *q_lens, const int32_t *k_lens) {
  hattn_ctx *ctx = kern->ctx;
  const hattn__backend_i *be = kern->kk->be;
  size_t n = (size_t)kern->prob.batch;
  int32_t *mem;
  int st;
  ctx->buf[0] = 0;
  if ((st = be->mem_alloc(ctx->dev, 2 * n * sizeof(int32_t), &plan->lens_mem, ctx->buf, sizeof ctx->buf)) != HATTN_OK)
    return fail_buf(ctx, st);
  mem = plan->lens_mem;
  if ((q_lens && (st = be->mem_upload(ctx->dev, mem, q_lens, n * sizeof *mem, ctx->buf, sizeof ctx->buf)) != HATTN_OK) ||
      (k_lens && (st = be->mem_upload(ctx->dev, mem + n, k_lens, n * sizeof *mem, ctx->buf, sizeof ctx->buf)) != HATTN_OK))
    return fail_buf(ctx, st);
  plan->lens.q_lens = q_lens ? mem : NULL;
  plan->lens.k_lens = k_lens ? mem + n : NULL;
  return HATTN_OK;
}

/* Check INPUTS' q_lens and k_lens for KERN (HATTN_OK when both are NULL),
** the sentence of a failure on the context. */
static int check_varlen(hattn_kernel *kern, const hattn_inputs *inputs) {
  hattn_ctx *ctx = kern->ctx;
  const hattn_problem *pr = &kern->prob;
  hattn__shape shape;
  int st;
  if (inputs->q_lens == NULL && inputs->k_lens == NULL) return HATTN_OK;
  shape.batch = pr->batch, shape.heads = pr->heads, shape.kv_heads = pr->kv_heads;
  shape.lq = pr->lq, shape.lk = pr->lk, shape.head_dim = pr->head_dim;
  ctx->buf[0] = 0;
  if ((st = hattn__varlen_check(kern->kk->be, kern->pat, &shape, inputs->offsets_set, inputs->q_lens,
                                inputs->k_lens, ctx->buf, sizeof ctx->buf)) != HATTN_OK)
    return fail_buf(ctx, st);
  return HATTN_OK;
}

/* Make *OUT for KERN and INPUTS: the checked run-time data, then the
** backend's problem (plan, tables, device memory).  The sentence of a
** failure is in the context's text. */
static int plan_make(hattn_kernel *kern, const hattn_inputs *inputs, hattn_plan **out) {
  static const hattn_inputs none;
  hattn_ctx *ctx = kern->ctx;
  const hattn__backend_i *be = kern->kk->be;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__layout *lays = NULL;
  hattn_plan *plan;
  int st;

  *out = NULL;
  if (inputs == NULL) inputs = &none;
  if (inputs->paged != NULL &&
      (st = check_paged_params(kern, "inputs.paged", inputs->paged->page_size, inputs->paged->layout, 1)) != HATTN_OK)
    return st;
  if ((plan = calloc(1, sizeof *plan)) == NULL) return fail(ctx, HATTN_ENOMEM, "out of memory for a plan");
  plan->kern = *kern;
  if (inputs->paged != NULL) {
    plan->paged.page_size = inputs->paged->page_size;
    plan->paged.layout = inputs->paged->layout;
  }
  if ((st = check_varlen(kern, inputs)) != HATTN_OK) goto fail_env;
  if ((st = make_env(kern, inputs, &shape, &env, &lays)) != HATTN_OK) goto fail_env;
  plan->offsets_set = inputs->offsets_set;
  if ((inputs->alibi_slopes && (plan->slopes = copy_floats(inputs->alibi_slopes, kern->prob.heads)) == NULL) ||
      (inputs->sink_logits && (plan->sinks = copy_floats(inputs->sink_logits, kern->prob.heads)) == NULL)) {
    st = fail(ctx, HATTN_ENOMEM, "out of memory for a plan");
    goto fail_env;
  }
  /* Lengths the kernels read go to the device; else each distinct pair
  ** of lengths gets a problem of its own (varlen.c). */
  if ((inputs->q_lens != NULL || inputs->k_lens != NULL) && be->version >= 8 && be->launch_varlen != NULL &&
      (st = upload_lens(kern, plan, inputs->q_lens, inputs->k_lens)) != HATTN_OK)
    goto fail_env;
  ctx->buf[0] = 0;
  if ((inputs->q_lens != NULL || inputs->k_lens != NULL) && plan->lens_mem == NULL) {
    st = hattn__varlen_create(be, ctx->dev, &kern->kk->desc, &kern->kk->cfg, &shape, &env, inputs->q_lens,
                              inputs->k_lens, &plan->varlen, ctx->buf, sizeof ctx->buf);
    if (st != HATTN_OK) {
      fail_buf(ctx, st);
      goto fail_env;
    }
  } else {
    st = be->problem_create(ctx->dev, &kern->kk->desc, &kern->kk->cfg, &shape, &env, &plan->prob, ctx->buf,
                            sizeof ctx->buf);
    if (st != HATTN_OK) {
      fail_buf(ctx, st);
      goto fail_env;
    }
  }
  free(lays);
  ctx->refs++;
  *out = plan;
  return HATTN_OK;

fail_env:
  free(lays);
  plan_free(plan);
  return st;
}

int hattn_plan_create(hattn_kernel *kern, const hattn_inputs *inputs, hattn_plan **out) {
  int st;
  if (out != NULL) *out = NULL;
  if (kern == NULL) return HATTN_EINVAL;
  if (out == NULL) return fail(kern->ctx, HATTN_EINVAL, "hattn_plan_create: out is NULL");
  if ((st = plan_make(kern, inputs, out)) == HATTN_OK) set_msg_str(kern->ctx, "");
  return st;
}

void hattn_plan_destroy(hattn_plan *plan) {
  hattn_ctx *ctx;
  if (plan == NULL) return;
  ctx = plan->kern.ctx;
  plan_free(plan);
  ctx_unref(ctx);
}

const char *hattn_plan_errmsg(const hattn_plan *plan) { return plan ? hattn_errmsg(plan->kern.ctx) : ""; }

/* Launch PLAN on the checked tensors: asynchronously on STREAM where the
** backend can (launch_async), else the backend's synchronous launch; with
** WAIT, the backend's launch, which returns when the outputs are written. */
static int plan_launch(hattn_plan *plan, hattn__tensor *tq, hattn__tensor *tk, hattn__tensor *tv,
                       const hattn__paged *pg, hattn__tensor *to, hattn__tensor *tl, void *stream, int wait) {
  hattn_kernel *kern = &plan->kern;
  hattn_ctx *ctx = kern->ctx;
  const hattn__backend_i *be = kern->kk->be;
  int st;
  ctx->buf[0] = 0;
  if (plan->varlen != NULL) {
    hattn__shape shape;
    shape.batch = kern->prob.batch, shape.heads = kern->prob.heads, shape.kv_heads = kern->prob.kv_heads;
    shape.lq = kern->prob.lq, shape.lk = kern->prob.lk, shape.head_dim = kern->prob.head_dim;
    st = hattn__varlen_launch(be, ctx->dev, kern->kk->kern, plan->varlen, &shape, dtype_of(kern->prob.dtype), tq,
                              tk, tv, pg, to, tl, ctx->buf, sizeof ctx->buf);
  } else if (plan->lens_mem != NULL)
    st = be->launch_varlen(ctx->dev, kern->kk->kern, plan->prob, tq, tk, tv, pg, &plan->lens, to, tl, stream, wait,
                           ctx->buf, sizeof ctx->buf);
  else if (pg != NULL)
    st = be->launch_paged(ctx->dev, kern->kk->kern, plan->prob, tq, tk, tv, pg, to, tl, stream, wait, ctx->buf,
                          sizeof ctx->buf);
  else if (!wait && be->launch_async != NULL)
    st = be->launch_async(ctx->dev, kern->kk->kern, plan->prob, tq, tk, tv, to, tl, stream, ctx->buf,
                          sizeof ctx->buf);
  else
    st = be->launch(ctx->dev, kern->kk->kern, plan->prob, tq, tk, tv, to, tl, stream, ctx->buf, sizeof ctx->buf);
  if (st != HATTN_OK) return fail_buf(ctx, st);
  /* Success clears the text in place: a run allocates nothing. */
  if (ctx->msg[0] != 0) ctx->msg[0] = 0;
  return HATTN_OK;
}

int hattn_run(hattn_plan *plan, const DLTensor *q, const DLTensor *k, const DLTensor *v, DLTensor *o,
              DLTensor *lse, void *stream) {
  hattn__tensor tq, tk, tv, to, tl;
  int st;
  if (plan == NULL) return HATTN_EINVAL;
  if (plan->paged.page_size != 0)
    return fail(plan->kern.ctx, HATTN_EINPUT,
                "hattn_run: the plan was made for paged K and V (inputs.paged): run it with hattn_run_paged");
  if ((st = check_tensors(&plan->kern, q, k, v, o, lse, NULL, NULL, NULL, &tq, &tk, &tv, &to, &tl, NULL)) !=
      HATTN_OK)
    return st;
  return plan_launch(plan, &tq, &tk, &tv, NULL, &to, &tl, stream, 0);
}

int hattn_run_paged(hattn_plan *plan, const DLTensor *q, const DLTensor *k_pages, const DLTensor *v_pages,
                    const DLTensor *block_table, DLTensor *o, DLTensor *lse, void *stream) {
  hattn__tensor tq, tk, tv, to, tl;
  hattn__paged pg;
  int st;
  if (plan == NULL) return HATTN_EINVAL;
  if (plan->paged.page_size == 0)
    return fail(plan->kern.ctx, HATTN_EINPUT,
                "hattn_run_paged: the plan was made for contiguous K and V (inputs.paged was NULL): run it with "
                "hattn_run");
  if ((st = check_tensors(&plan->kern, q, k_pages, v_pages, o, lse, &plan->paged, block_table,
                          plan->varlen ? plan->varlen->lens + plan->kern.prob.batch : NULL, &tq, &tk, &tv, &to,
                          &tl, &pg)) != HATTN_OK)
    return st;
  return plan_launch(plan, &tq, &tk, &tv, &pg, &to, &tl, stream, 0);
}

/* Check the entries of PG's block table that a launch of KERN reads, where
** the table is device memory (hattn_forward's promise; check_paged checks
** host tables): downloaded a batch row at a time.  With K_LENS (host,
** checked; NULL: every entry has lk keys), row b's entries past
** ceil(k_lens[b] / page_size) are not read, so not checked. */
static int check_table_on_device(hattn_kernel *kern, const hattn__paged *pg, const int32_t *k_lens) {
  hattn_ctx *ctx = kern->ctx;
  const hattn__backend_i *be = kern->kk->be;
  int64_t need = (kern->prob.lk + pg->page_size - 1) / pg->page_size, b, c;
  int32_t *row;
  int st = HATTN_OK;
  if (need == 0) return HATTN_OK;
  if ((row = malloc((size_t)need * sizeof *row)) == NULL)
    return fail(ctx, HATTN_ENOMEM, "out of memory checking the block table");
  for (b = 0; b < kern->prob.batch && st == HATTN_OK; b++) {
    ctx->buf[0] = 0;
    st = be->mem_download(ctx->dev, row, pg->block_table + b * pg->table_stride, (size_t)need * sizeof *row, ctx->buf,
                          sizeof ctx->buf);
    if (st != HATTN_OK) {
      st = fail_buf(ctx, st);
      break;
    }
    for (c = 0; c < (k_lens ? (k_lens[b] + pg->page_size - 1) / pg->page_size : need); c++)
      if (row[c] < 0 || row[c] >= pg->npages) {
        st = fail(ctx, HATTN_EINPUT, "block_table[%lld][%lld] is %d, outside the pool's pages [0, %lld)", (long long)b,
                  (long long)c, (int)row[c], (long long)pg->npages);
        break;
      }
  }
  free(row);
  return st;
}

int hattn_forward(hattn_kernel *kern, const DLTensor *q, const DLTensor *k, const DLTensor *v, DLTensor *o,
                  DLTensor *lse, const hattn_inputs *inputs, void *stream) {
  hattn__tensor tq, tk, tv, to, tl;
  hattn__paged pg;
  const hattn_paged_kv *paged = inputs != NULL ? inputs->paged : NULL;
  hattn_plan *plan = NULL;
  int st;

  if (kern == NULL) return HATTN_EINVAL;
  if (paged != NULL && (st = check_paged_params(kern, "inputs.paged", paged->page_size, paged->layout, 1)) != HATTN_OK)
    return st;
  /* The tensors before the run-time data, as hattn_run checks them. */
  if (inputs != NULL && (st = check_varlen(kern, inputs)) != HATTN_OK) return st;
  if ((st = check_tensors(kern, q, k, v, o, lse, paged, paged ? paged->block_table : NULL,
                          inputs != NULL ? inputs->k_lens : NULL, &tq, &tk, &tv, &to, &tl,
                          &pg)) != HATTN_OK)
    return st;
  if (paged != NULL && kern->kk->be->dl_device != kDLCPU &&
      (st = check_table_on_device(kern, &pg, inputs->k_lens)) != HATTN_OK)
    return st;
  if ((st = plan_make(kern, inputs, &plan)) != HATTN_OK) return st;
  st = plan_launch(plan, &tq, &tk, &tv, paged ? &pg : NULL, &to, &tl, stream, 1);
  hattn_plan_destroy(plan);
  return st;
}

/* ---- variable-length batches, lengths per run ---------------------------------- */

/* Packed tensor T (NAME) of a run of KERN: [rows, HEADS, head_dim] of the
** problem's dtype, or for LSE float32 [heads, rows], any rows, on the
** kernel's device; *OUT in the internal 4-d form [1, heads, rows, head_dim]
** (stride[0] 0), *ROWS its rows. */
static int check_packed(hattn_kernel *kern, const char *name, const DLTensor *t, int64_t heads, int lse,
                        hattn__tensor *out, int64_t *rows) {
  const hattn_problem *pr = &kern->prob;
  DLDataType dt, f32 = {kDLFloat, 32, 1};
  int64_t dq[4], dkv[4], dl[3], dims[3];
  hattn__tensor raw;
  int st;
  problem_dims(pr, &dt, dq, dkv, dl);
  *rows = t != NULL && t->shape != NULL && t->ndim == (lse ? 2 : 3) ? t->shape[lse ? 1 : 0] : 0;
  if (lse) dims[0] = heads, dims[1] = *rows;
  else dims[0] = *rows, dims[1] = heads, dims[2] = pr->head_dim;
  if ((st = check_tensor(kern, name, t, lse ? 2 : 3, dims, lse ? f32 : dt, !lse, &raw)) != HATTN_OK) return st;
  if (*rows < 0 || *rows > HATTN_MAX_SEQLEN)
    return fail(kern->ctx, HATTN_ESHAPE, "%s: %lld rows, outside [0, HATTN_MAX_SEQLEN]", name, (long long)*rows);
  out->data = raw.data;
  out->stride[0] = 0;
  out->stride[1] = lse ? raw.stride[0] : raw.stride[1];
  out->stride[2] = lse ? raw.stride[1] : raw.stride[0];
  out->stride[3] = 1;
  return HATTN_OK;
}

/* Length tensor T (NAME) of a run of KERN, or NULL: int32 [N], contiguous,
** on the kernel's device; *OUT its data (NULL for T NULL). */
static int check_lens_tensor(hattn_kernel *kern, const char *name, const DLTensor *t, int64_t n,
                             const int32_t **out) {
  DLDataType i32 = {kDLInt, 32, 1};
  hattn__tensor raw;
  int st;
  *out = NULL;
  if (t == NULL) return HATTN_OK;
  if ((st = check_tensor(kern, name, t, 1, &n, i32, 1, &raw)) != HATTN_OK) return st;
  *out = raw.data;
  return HATTN_OK;
}

/* The tensors of a run of KERN: Q, O and LSE (NULL: none) packed when
** PACKED_Q, K and V packed when PACKED_K (check_packed), else as
** check_tensors takes them (PAGED: pools read through BT, the entries
** within K_LENS checked where they are host memory).  *Q_ROWS and *K_ROWS
** get the packed tensors' rows. */
static int check_run_tensors(hattn_kernel *kern, const DLTensor *q, const DLTensor *k, const DLTensor *v,
                             const DLTensor *o, const DLTensor *lse, const hattn_paged_kv *paged, const DLTensor *bt,
                             int packed_q, int packed_k, const int32_t *k_lens, hattn__tensor *tq, hattn__tensor *tk,
                             hattn__tensor *tv, hattn__tensor *to, hattn__tensor *tl, hattn__paged *pg,
                             int64_t *q_rows, int64_t *k_rows) {
  const hattn_problem *pr = &kern->prob;
  DLDataType dt, f32 = {kDLFloat, 32, 1};
  int64_t dq[4], dkv[4], dl[3], o_rows = 0, l_rows = 0, v_rows = 0;
  int st;
  if (!packed_q && !packed_k) return check_tensors(kern, q, k, v, o, lse, paged, bt, k_lens, tq, tk, tv, to, tl, pg);
  problem_dims(pr, &dt, dq, dkv, dl);
  memset(tl, 0, sizeof *tl);
  if (packed_q) {
    if ((st = check_packed(kern, "q", q, pr->heads, 0, tq, q_rows)) != HATTN_OK ||
        (st = check_packed(kern, "o", o, pr->heads, 0, to, &o_rows)) != HATTN_OK ||
        (lse != NULL && (st = check_packed(kern, "lse", lse, pr->heads, 1, tl, &l_rows)) != HATTN_OK))
      return st;
    if (o_rows != *q_rows || (lse != NULL && l_rows != *q_rows))
      return fail(kern->ctx, HATTN_ESHAPE, "%s: %lld rows, but q has %lld", o_rows != *q_rows ? "o" : "lse",
                  (long long)(o_rows != *q_rows ? o_rows : l_rows), (long long)*q_rows);
  } else if ((st = check_tensor(kern, "q", q, 4, dq, dt, 1, tq)) != HATTN_OK ||
             (st = check_tensor(kern, "o", o, 4, dq, dt, 1, to)) != HATTN_OK ||
             (lse != NULL && (st = check_tensor(kern, "lse", lse, 3, dl, f32, 0, tl)) != HATTN_OK)) {
    return st;
  }
  if (packed_k) {
    if ((st = check_packed(kern, "k", k, pr->kv_heads, 0, tk, k_rows)) != HATTN_OK ||
        (st = check_packed(kern, "v", v, pr->kv_heads, 0, tv, &v_rows)) != HATTN_OK)
      return st;
    if (v_rows != *k_rows)
      return fail(kern->ctx, HATTN_ESHAPE, "v: %lld rows, but k has %lld", (long long)v_rows, (long long)*k_rows);
    return HATTN_OK;
  }
  if (paged != NULL) return check_paged(kern, 0, paged->page_size, paged->layout, k, v, bt, k_lens, tk, tv, pg);
  if ((st = check_tensor(kern, "k", k, 4, dkv, dt, 1, tk)) != HATTN_OK) return st;
  return check_tensor(kern, "v", v, 4, dkv, dt, 1, tv);
}

/* Check lengths L (host copies) of a run of KERN: lengths in [0, lq] and [0,
** lk], offsets nondecreasing from 0 or more and within Q_ROWS (K_ROWS) rows
** of the packed tensors.  Fills LENS[2 * batch] with the query lengths,
** then the key lengths. */
static int check_lens_values(hattn_kernel *kern, const hattn__lens *l, int64_t q_rows, int64_t k_rows,
                             int32_t *lens) {
  const hattn_problem *pr = &kern->prob;
  int64_t B = pr->batch, b;
  int i;
  for (i = 0; i < 2; i++) {
    const int32_t *cu = i == 0 ? l->cu_q : l->cu_k, *len = i == 0 ? l->q_lens : l->k_lens;
    const char *cu_name = i == 0 ? "cu_seqlens_q" : "cu_seqlens_k", *len_name = i == 0 ? "q_lens" : "k_lens";
    int64_t max = i == 0 ? pr->lq : pr->lk, rows = i == 0 ? q_rows : k_rows;
    if (cu != NULL && cu[0] < 0)
      return fail(kern->ctx, HATTN_EINPUT, "%s[0] is %d, below 0", cu_name, (int)cu[0]);
    for (b = 0; b < B; b++) {
      int64_t n = cu ? (int64_t)cu[b + 1] - cu[b] : len ? len[b] : max;
      if (cu != NULL && n < 0)
        return fail(kern->ctx, HATTN_EINPUT, "%s[%lld] is %d, below %s[%lld] = %d: offsets must not decrease",
                    cu_name, (long long)(b + 1), (int)cu[b + 1], cu_name, (long long)b, (int)cu[b]);
      if (cu == NULL && n < 0)
        return fail(kern->ctx, HATTN_EINPUT, "%s[%lld] is %d, below 0", len_name, (long long)b, (int)n);
      if (n > max)
        return fail(kern->ctx, HATTN_EINPUT, "sequence %lld has %lld %s, above the plan's %s %lld", (long long)b,
                    (long long)n, i == 0 ? "queries" : "keys", i == 0 ? "lq" : "lk", (long long)max);
      lens[i * B + b] = (int32_t)n;
    }
    if (cu != NULL && cu[B] > rows)
      return fail(kern->ctx, HATTN_EINPUT, "%s[%lld] is %d, past the %lld rows of %s", cu_name, (long long)B,
                  (int)cu[B], (long long)rows, i == 0 ? "q" : "k");
  }
  return HATTN_OK;
}

/* The lengths of LENS as the backend's memory holds them, downloaded
** into HOST (int32 [4 * (batch + 1)]) where they are device memory; *OUT
** points at host copies. */
static int lens_to_host(hattn_kernel *kern, const hattn__lens *lens, int32_t *host, hattn__lens *out) {
  hattn_ctx *ctx = kern->ctx;
  const hattn__backend_i *be = kern->kk->be;
  size_t n = (size_t)kern->prob.batch;
  const int32_t *src[4] = {lens->cu_q, lens->cu_k, lens->q_lens, lens->k_lens};
  const int32_t **dst[4] = {&out->cu_q, &out->cu_k, &out->q_lens, &out->k_lens};
  int i, st;
  *out = *lens;
  if (be->dl_device == kDLCPU) return HATTN_OK;
  for (i = 0; i < 4; i++) {
    size_t count = i < 2 ? n + 1 : n;
    if (src[i] == NULL) continue;
    ctx->buf[0] = 0;
    if ((st = be->mem_download(ctx->dev, host + i * (n + 1), src[i], count * sizeof *host, ctx->buf,
                               sizeof ctx->buf)) != HATTN_OK)
      return fail_buf(ctx, st);
    *dst[i] = host + i * (n + 1);
  }
  return HATTN_OK;
}

/* hattn_run_varlen (LAUNCH) and hattn_run_check: the checks, then, when
** LAUNCH, the run.  LENS NULL is a run of the plan's own kind (hattn_run,
** hattn_run_paged), checked only by hattn_run_check. */
static int run_varlen(hattn_plan *plan, const DLTensor *q, const DLTensor *k, const DLTensor *v,
                      const DLTensor *bt, const hattn_varlen *lens, const DLTensor *o, const DLTensor *lse,
                      void *stream, int launch) {
  hattn_kernel *kern = &plan->kern;
  hattn_ctx *ctx = kern->ctx;
  const hattn__backend_i *be = kern->kk->be;
  const hattn_problem *pr = &kern->prob;
  const char *who = launch ? "hattn_run_varlen" : "hattn_run_check";
  const hattn_paged_kv *paged = plan->paged.page_size != 0 ? &plan->paged : NULL;
  hattn__tensor tq, tk, tv, to, tl;
  hattn__paged pg;
  hattn__lens dl, hl;
  int64_t q_rows = pr->lq, k_rows = pr->lk, B = pr->batch;
  int32_t *host = NULL, *vl_lens = NULL;
  int st;

  memset(&dl, 0, sizeof dl);
  memset(&pg, 0, sizeof pg);
  if (lens != NULL && lens->q_lens == NULL && lens->k_lens == NULL && lens->cu_seqlens_q == NULL &&
      lens->cu_seqlens_k == NULL)
    lens = NULL;
  if (launch && lens == NULL)
    return fail(ctx, HATTN_EINPUT, "%s: no lengths (lens is NULL or empty): run the plan with %s", who,
                paged ? "hattn_run_paged" : "hattn_run");
  if (lens != NULL) {
    if (plan->varlen != NULL || plan->lens_mem != NULL)
      return fail(ctx, HATTN_EINPUT, "%s: the plan was made with inputs.q_lens/k_lens; lengths per run need a "
                  "plan made without them", who);
    if ((lens->q_lens && lens->cu_seqlens_q) || (lens->k_lens && lens->cu_seqlens_k))
      return fail(ctx, HATTN_EINPUT, "%s: lens gives both %s; one form per side", who,
                  lens->q_lens && lens->cu_seqlens_q ? "q_lens and cu_seqlens_q" : "k_lens and cu_seqlens_k");
    if (paged && lens->cu_seqlens_k)
      return fail(ctx, HATTN_EINPUT, "%s: paged K and V take their lengths as lens.k_lens, not cu_seqlens_k", who);
    ctx->buf[0] = 0;
    if ((st = hattn__varlen_supported(be, kern->pat, plan->offsets_set, ctx->buf, sizeof ctx->buf)) != HATTN_OK)
      return fail_buf(ctx, st);
    if ((st = check_lens_tensor(kern, "lens.cu_seqlens_q", lens->cu_seqlens_q, B + 1, &dl.cu_q)) != HATTN_OK ||
        (st = check_lens_tensor(kern, "lens.cu_seqlens_k", lens->cu_seqlens_k, B + 1, &dl.cu_k)) != HATTN_OK ||
        (st = check_lens_tensor(kern, "lens.q_lens", lens->q_lens, B, &dl.q_lens)) != HATTN_OK ||
        (st = check_lens_tensor(kern, "lens.k_lens", lens->k_lens, B, &dl.k_lens)) != HATTN_OK)
      return st;
  }
  /* The lengths' values where they can be read (the host's, or downloaded
  ** for a check), against the packed rows the tensors claim (checked
  ** next). */
  if (lens != NULL && (be->dl_device == kDLCPU || !launch)) {
    if ((host = malloc((size_t)(4 * (B + 1) + 2 * B) * sizeof *host)) == NULL)
      return fail(ctx, HATTN_ENOMEM, "out of memory checking the lengths");
    vl_lens = host + 4 * (B + 1);
    /* A packed tensor of the wrong rank is the tensor checks' to report. */
    if (dl.cu_q != NULL) q_rows = q != NULL && q->ndim == 3 && q->shape != NULL ? q->shape[0] : INT64_MAX;
    if (dl.cu_k != NULL) k_rows = k != NULL && k->ndim == 3 && k->shape != NULL ? k->shape[0] : INT64_MAX;
    if ((st = lens_to_host(kern, &dl, host, &hl)) != HATTN_OK ||
        (st = check_lens_values(kern, &hl, q_rows, k_rows, vl_lens)) != HATTN_OK)
      goto done;
  }
  /* The tensors, a host block table's entries within the lengths. */
  if ((st = check_run_tensors(kern, q, k, v, o, lse, paged, bt, dl.cu_q != NULL, dl.cu_k != NULL,
                              vl_lens ? vl_lens + B : NULL, &tq, &tk, &tv, &to, &tl, &pg, &q_rows, &k_rows)) != HATTN_OK)
    goto done;

  /* A device block table's entries, for a check. */
  if (!launch && paged && be->dl_device != kDLCPU &&
      (st = check_table_on_device(kern, &pg, vl_lens ? vl_lens + B : NULL)) != HATTN_OK)
    goto done;
  if (!launch) {
    st = HATTN_OK;
    goto done;
  }
  ctx->buf[0] = 0;
  if (be->version >= 8 && be->launch_varlen != NULL) {
    st = be->launch_varlen(ctx->dev, kern->kk->kern, plan->prob, &tq, &tk, &tv, paged ? &pg : NULL, &dl, &to, &tl,
                           stream, 0, ctx->buf, sizeof ctx->buf);
  } else {
    /* Problems of this run's distinct pairs of lengths (varlen.c), with the
    ** plan's slopes and sinks. */
    hattn__shape shape;
    hattn__mask_env env;
    hattn__varlen *vl = NULL;
    shape.batch = B, shape.heads = pr->heads, shape.kv_heads = pr->kv_heads;
    shape.lq = pr->lq, shape.lk = pr->lk, shape.head_dim = pr->head_dim;
    memset(&env, 0, sizeof env);
    env.lq = pr->lq, env.lk = pr->lk, env.batch = B, env.heads = pr->heads;
    env.alibi_slopes = plan->slopes;
    env.sink_logits = plan->sinks;
    st = hattn__varlen_create(be, ctx->dev, &kern->kk->desc, &kern->kk->cfg, &shape, &env, vl_lens, vl_lens + B, &vl,
                              ctx->buf, sizeof ctx->buf);
    if (st == HATTN_OK) {
      vl->cu_q = hl.cu_q;
      vl->cu_k = hl.cu_k;
      st = hattn__varlen_launch(be, ctx->dev, kern->kk->kern, vl, &shape, dtype_of(pr->dtype), &tq, &tk, &tv,
                                paged ? &pg : NULL, &to, &tl, ctx->buf, sizeof ctx->buf);
    }
    hattn__varlen_destroy(be, vl);
  }
  if (st != HATTN_OK) {
    fail_buf(ctx, st);
    goto done;
  }
  if (ctx->msg[0] != 0) ctx->msg[0] = 0;
done:
  free(host);
  return st;
}

int hattn_run_varlen(hattn_plan *plan, const DLTensor *q, const DLTensor *k, const DLTensor *v,
                     const DLTensor *block_table, const hattn_varlen *lens, DLTensor *o, DLTensor *lse,
                     void *stream) {
  if (plan == NULL) return HATTN_EINVAL;
  return run_varlen(plan, q, k, v, block_table, lens, o, lse, stream, 1);
}

int hattn_run_check(hattn_plan *plan, const DLTensor *q, const DLTensor *k, const DLTensor *v,
                    const DLTensor *block_table, const hattn_varlen *lens, const DLTensor *o, const DLTensor *lse) {
  int st;
  if (plan == NULL) return HATTN_EINVAL;
  if ((st = run_varlen(plan, q, k, v, block_table, lens, o, lse, NULL, 0)) == HATTN_OK) set_msg_str(plan->kern.ctx, "");
  return st;
}

/* ---- merge ------------------------------------------------------------------- */

/* Check merge tensor T (NAME) on CTX's device: NDIM dims DIMS (NULL: any,
** T then 4-d and of one of the three dtypes), dtype WANT; fill *OUT. */
static int merge_tensor(hattn_ctx *ctx, const char *name, const DLTensor *t, int ndim, const int64_t *dims,
                        DLDataType want, hattn__tensor *out) {
  const hattn__backend_i *be = ctx->be;
  int dev_id = be->dl_device == kDLCPU ? 0 : ctx->opt.device;
  int i;
  int64_t n = 1, s = 1;
  char a[32], b[32];

  if (t == NULL) return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: missing (NULL)", name);
  if ((int)t->device.device_type != be->dl_device || (be->dl_device != kDLCPU && t->device.device_id != dev_id))
    return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: on device type %d id %d; this context runs on %s %d", name,
                (int)t->device.device_type, (int)t->device.device_id, be->dl_name, dev_id);
  if (t->dtype.code != want.code || t->dtype.bits != want.bits || t->dtype.lanes != want.lanes)
    return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: dtype %s, expected %s", name,
                dtype_text(t->dtype, a, sizeof a), dtype_text(want, b, sizeof b));
  if (t->ndim != ndim)
    return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: %d dimensions, expected %d", name, (int)t->ndim, ndim);
  if (t->shape == NULL) return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: shape is NULL", name);
  for (i = 0; i < ndim; i++) {
    if (t->shape[i] < 0) return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: negative dimension %d", name, i);
    if (product_above(n, t->shape[i], HATTN_MAX_ELEMENTS))
      return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: more than HATTN_MAX_ELEMENTS (2^48) elements", name);
    if (dims != NULL && t->shape[i] != dims[i])
      return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: dimension %d is %lld, expected %lld (as o_parts[0])",
                  name, i, (long long)t->shape[i], (long long)dims[i]);
    n *= t->shape[i];
  }
  if (n > 0 && t->data == NULL) return fail(ctx, HATTN_ESHAPE, "hattn_merge: %s: data is NULL", name);
  out->data = t->data ? (char *)t->data + t->byte_offset : NULL;
  for (i = ndim - 1; i >= 0; i--) {
    out->stride[i] = t->strides ? t->strides[i] : s;
    s *= t->shape[i];
  }
  for (i = ndim; i < 4; i++) out->stride[i] = 1;
  return HATTN_OK;
}

int hattn_merge(hattn_ctx *ctx, int nparts, const DLTensor *const *o_parts, const DLTensor *const *lse_parts,
                DLTensor *o, DLTensor *lse, void *stream) {
  static const DLDataType f32 = {kDLFloat, 32, 1}, f16 = {kDLFloat, 16, 1}, bf16 = {kDLBfloat, 16, 1};
  hattn__tensor to[HATTN_MERGE_MAX_PARTS], tl[HATTN_MERGE_MAX_PARTS], oo, ol;
  hattn__dtype dtype;
  DLDataType dt;
  int64_t dims[4];
  char name[32];
  int i, st;

  if ((st = ctx_usable(ctx, "hattn_merge")) != HATTN_OK) return st;
  if (nparts < 1 || nparts > HATTN_MERGE_MAX_PARTS)
    return fail(ctx, HATTN_EINVAL, "hattn_merge: %d parts; between 1 and %d (HATTN_MERGE_MAX_PARTS) are merged "
                "at once, merge more as merges of merges", nparts, HATTN_MERGE_MAX_PARTS);
  if (o_parts == NULL || lse_parts == NULL)
    return fail(ctx, HATTN_EINVAL, "hattn_merge: %s is NULL", o_parts == NULL ? "o_parts" : "lse_parts");
  if (o_parts[0] == NULL) return fail(ctx, HATTN_ESHAPE, "hattn_merge: o_parts[0]: missing (NULL)");
  dt = o_parts[0]->dtype;
  if (dt.code == f32.code && dt.bits == 32 && dt.lanes == 1) dtype = HATTN_DTYPE_FP32;
  else if (dt.code == f16.code && dt.bits == 16 && dt.lanes == 1) dtype = HATTN_DTYPE_FP16;
  else if (dt.code == bf16.code && dt.bits == 16 && dt.lanes == 1) dtype = HATTN_DTYPE_BF16;
  else {
    char a[32];
    return fail(ctx, HATTN_ESHAPE, "hattn_merge: o_parts[0]: dtype %s; float32, float16 or bfloat16 expected",
                dtype_text(dt, a, sizeof a));
  }
  if ((st = merge_tensor(ctx, "o_parts[0]", o_parts[0], 4, NULL, dt, &to[0])) != HATTN_OK) return st;
  for (i = 0; i < 4; i++) dims[i] = o_parts[0]->shape[i];
  for (i = 0; i < nparts; i++) {
    snprintf(name, sizeof name, "o_parts[%d]", i);
    if (i > 0 && (st = merge_tensor(ctx, name, o_parts[i], 4, dims, dt, &to[i])) != HATTN_OK) return st;
    snprintf(name, sizeof name, "lse_parts[%d]", i);
    if ((st = merge_tensor(ctx, name, lse_parts[i], 3, dims, f32, &tl[i])) != HATTN_OK) return st;
  }
  if ((st = merge_tensor(ctx, "o", o, 4, dims, dt, &oo)) != HATTN_OK) return st;
  if (lse != NULL) {
    if ((st = merge_tensor(ctx, "lse", lse, 3, dims, f32, &ol)) != HATTN_OK) return st;
  } else {
    memset(&ol, 0, sizeof ol);
  }
  if (ctx->be->merge == NULL)
    return fail(ctx, HATTN_ENOTSUP, "hattn_merge: the %s backend of this library cannot merge", ctx->be->name);
  ctx->buf[0] = 0;
  if ((st = ctx->be->merge(ctx->dev, nparts, to, tl, &oo, &ol, dtype, dims, stream, ctx->buf, sizeof ctx->buf)) !=
      HATTN_OK)
    return fail_buf(ctx, st);
  if (ctx->msg[0] != 0) ctx->msg[0] = 0;
  return HATTN_OK;
}

/* ---- the reference ------------------------------------------------------------- */

/* Copy the [n0, n1, n2, n3] tensor T of DTYPE into the contiguous X; with
** PG (K or V paged, T its pool as cpu.h's hattn__paged says, pages
** PAGE_STRIDE elements apart), position c of batch entry a through the
** block table.  With LENS, positions c >= lens[a] are not read (0 in X). */
static void gather(const hattn__tensor *t, const hattn__paged *pg, int64_t page_stride, hattn__dtype dtype,
                   const int64_t n[4], const int32_t *lens, double *x) {
  int64_t a, b, c, d, i = 0, base;
  for (a = 0; a < n[0]; a++)
    for (b = 0; b < n[1]; b++)
      for (c = 0; c < n[2]; c++) {
        if (lens != NULL && c >= lens[a]) {
          for (d = 0; d < n[3]; d++) x[i++] = 0;
          continue;
        }
        if (pg != NULL) {
          int64_t page = pg->block_table[a * pg->table_stride + c / pg->page_size];
          base = page * page_stride + b * t->stride[1] + (c % pg->page_size) * t->stride[2];
        } else {
          base = a * t->stride[0] + b * t->stride[1] + c * t->stride[2];
        }
        for (d = 0; d < n[3]; d++) x[i++] = hattn__elem_get(t->data, dtype, (size_t)(base + d * t->stride[3]));
      }
}

/* Copy the contiguous X into the float64 [n0, n1, n2, n3] tensor T. */
static void scatter(const double *x, const int64_t n[4], hattn__tensor *t) {
  int64_t a, b, c, d, i = 0;
  double *y = t->data;
  for (a = 0; a < n[0]; a++)
    for (b = 0; b < n[1]; b++)
      for (c = 0; c < n[2]; c++)
        for (d = 0; d < n[3]; d++)
          y[a * t->stride[0] + b * t->stride[1] + c * t->stride[2] + d * t->stride[3]] = x[i++];
}

int hattn_reference(hattn_kernel *kern, const DLTensor *q, const DLTensor *k, const DLTensor *v, DLTensor *o,
                    DLTensor *lse, const hattn_inputs *inputs) {
  static const hattn_inputs none;
  hattn_ctx *ctx;
  const hattn_problem *pr;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__layout *lays = NULL;
  hattn__tensor tq, tk, tv, to, tl;
  hattn__paged pg;
  const hattn_paged_kv *paged;
  DLDataType dt, f64 = {kDLFloat, 64, 1};
  int64_t dq[4], dkv[4], dl[4];
  double *qd = NULL, *kd = NULL, *vd = NULL, *od = NULL, *ld = NULL;
  size_t nq, nkv, nl;
  int st;

  if (kern == NULL) return HATTN_EINVAL;
  ctx = kern->ctx;
  pr = &kern->prob;
  if (inputs == NULL) inputs = &none;
  paged = inputs->paged;
  memset(&pg, 0, sizeof pg);
  if ((st = check_varlen(kern, inputs)) != HATTN_OK) return st;
  problem_dims(pr, &dt, dq, dkv, dl);
  dl[3] = 1;
  if ((st = check_tensor_on(kern, 1, "q", q, 4, dq, dt, 0, &tq)) != HATTN_OK) return st;
  if (paged != NULL) {
    if ((st = check_paged_params(kern, "inputs.paged", paged->page_size, paged->layout, 0)) != HATTN_OK ||
        (st = check_paged(kern, 1, paged->page_size, paged->layout, k, v, paged->block_table, inputs->k_lens, &tk,
                          &tv, &pg)) !=
            HATTN_OK)
      return st;
  } else if ((st = check_tensor_on(kern, 1, "k", k, 4, dkv, dt, 0, &tk)) != HATTN_OK ||
             (st = check_tensor_on(kern, 1, "v", v, 4, dkv, dt, 0, &tv)) != HATTN_OK) {
    return st;
  }
  if ((st = check_tensor_on(kern, 1, "o", o, 4, dq, f64, 0, &to)) != HATTN_OK) return st;
  if (lse && (st = check_tensor_on(kern, 1, "lse", lse, 3, dl, f64, 0, &tl)) != HATTN_OK) return st;
  if (lse) tl.stride[3] = 0;
  if ((st = make_env(kern, inputs, &shape, &env, &lays)) != HATTN_OK) goto done;
  nq = (size_t)(dq[0] * dq[1] * dq[2] * dq[3]);
  nkv = (size_t)(dkv[0] * dkv[1] * dkv[2] * dkv[3]);
  nl = (size_t)(dl[0] * dl[1] * dl[2]);
  qd = malloc((nq ? nq : 1) * sizeof *qd), od = malloc((nq ? nq : 1) * sizeof *od);
  kd = malloc((nkv ? nkv : 1) * sizeof *kd), vd = malloc((nkv ? nkv : 1) * sizeof *vd);
  ld = malloc((nl ? nl : 1) * sizeof *ld);
  if (!qd || !od || !kd || !vd || !ld) {
    st = fail(ctx, HATTN_ENOMEM, "out of memory for the reference");
    goto done;
  }
  gather(&tq, NULL, 0, dtype_of(pr->dtype), dq, inputs->q_lens, qd);
  gather(&tk, paged ? &pg : NULL, pg.k_page_stride, dtype_of(pr->dtype), dkv, inputs->k_lens, kd);
  gather(&tv, paged ? &pg : NULL, pg.v_page_stride, dtype_of(pr->dtype), dkv, inputs->k_lens, vd);
  ctx->buf[0] = 0;
  if (inputs->q_lens != NULL || inputs->k_lens != NULL)
    st = hattn__reference_varlen(kern->pat, &shape, &env, kern->spec->nlayouts, inputs->q_lens, inputs->k_lens, qd,
                                 kd, vd, od, ld, ctx->buf, sizeof ctx->buf);
  else
    st = hattn__reference(kern->pat, &shape, &env, kern->spec->nlayouts, qd, kd, vd, od, ld, ctx->buf,
                          sizeof ctx->buf);
  if (st != HATTN_OK) {
    fail_buf(ctx, st);
    goto done;
  }
  scatter(od, dq, &to);
  if (lse) scatter(ld, dl, &tl);
  set_msg_str(ctx, "");
done:
  free(qd), free(kd), free(vd), free(od), free(ld);
  free(lays);
  return st;
}
