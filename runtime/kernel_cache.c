/*
** kernel_cache.c: the runtime's kernel lookup (memory, registered kernels,
** database, compile) and the kernel keys.  See kernel_cache.h.  Compiled
** once, for both libraries: backends are reached through their tables
** (backend.h), whose compile operation libhattnrt leaves out.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "kernel_cache.h"

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

void hattn__kc_key(const char *canon, hattn__dtype dtype, int head_dim, hattn__backend backend,
                   const char *target, const char *config, char out[HATTN__KC_KEY_LEN]) {
  uint64_t h = 0xcbf29ce484222325ull;
  char num[32];
  h = fnv_str(h, canon);
  h = fnv_str(h, hattn__dtype_name(dtype));
  snprintf(num, sizeof num, "%d", head_dim);
  h = fnv_str(h, num);
  h = fnv_str(h, hattn__backend_name(backend));
  h = fnv_str(h, target);
  if (config) {
    /* A binary is also keyed by the kernel ABI it was generated for, so that
    ** a database written by an older hattn never hands one to this one. */
    h = fnv_str(h, config);
    snprintf(num, sizeof num, "abi %d", HATTN_PREBUILT_ABI);
    h = fnv_str(h, num);
  }
  snprintf(out, HATTN__KC_KEY_LEN, "%c%016llx", config ? 'k' : 'c', (unsigned long long)h);
}

void hattn__kc_class(const char *canon, hattn__dtype dtype, int head_dim, hattn__backend backend,
                     const char *target, int64_t lq, char out[HATTN__KC_KEY_LEN]) {
  uint64_t h;
  hattn__kc_key(canon, dtype, head_dim, backend, target, NULL, out);
  if (lq < 1 || lq > HATTN__KC_DECODE_MAX_LQ) return;
  h = fnv_str(strtoull(out + 1, NULL, 16), "decode");
  snprintf(out, HATTN__KC_KEY_LEN, "c%016llx", (unsigned long long)h);
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
  hattn__config cfg;
  char text[];
} kc_pre;

struct hattn__kcache {
  hattn__kcache_opts opt;
  const hattn__backend_i *be;
  void *dev;                   /* the backend's device */
  void *own_dev;               /* DEV when the cache opened it */
  hattn__db *db;
  kc_pre **pre;                /* registered prebuilt kernels, in order */
  int npre, cappre;
  hattn__kc_kernel **kernels;  /* loaded kernels, one per kernel key */
  int nkernels, capkernels;
  kc_slot *slots;
  int nslots, capslots;
  int said_hmac;               /* warned of a binary without a valid HMAC */
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
  if ((kc->be = hattn__backend_get(opt->backend)) == NULL) {
    free(kc);
    snprintf(err, errlen, "unknown backend %d", (int)opt->backend);
    return HATTN_EINVAL;
  }
  kc->dev = opt->dev;
  if (kc->dev == NULL) {
    int rc = kc->be->dev_open(0, -1, &kc->own_dev, err, errlen);
    if (rc != HATTN_OK) {
      free(kc);
      return rc;
    }
    kc->dev = kc->own_dev;
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
  hattn__db_close(kc->db);
  if (kc->own_dev) kc->be->dev_close(kc->own_dev);
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

/* Say that a backend without a compiler found no kernel K to load. */
static int not_found(const hattn__kcache *kc, const hattn__kc_kernel *k, const char *target, char *err,
                     size_t errlen) {
  snprintf(err, errlen,
           "no %s kernel of pattern '%s' (%s, head_dim %d) for %s: none was registered and %s; libhattnrt "
           "does not compile kernels: register one written by hattn gen, or run the pattern once with "
           "libhattn against the same database",
           k->be->name, k->desc.pattern->name, hattn__dtype_name(k->desc.dtype), k->desc.head_dim, target,
           kc->db ? "the database has none" : "no database is open");
  return HATTN_ENOTSUP;
}

/* Load kernel K (key, config and descriptor set) from the db, or compile
** it (where the backend can) and store it.  Sets K->kern and K->source. */
static int load_kernel(hattn__kcache *kc, const hattn__ident *id, hattn__kc_kernel *k, char *err,
                       size_t errlen) {
  const hattn__backend_i *be = kc->be;
  hattn__db_kernel *row = NULL;
  char dberr[1024];
  int rc, miss = 0;

  if (kc->db) {
    rc = hattn__db_kernel_get(kc->db, k->key, id->compiler[0] ? id->compiler : NULL, &row, &miss, dberr,
                              sizeof dberr);
    if (rc == HATTN_OK) {
      rc = be->load(kc->dev, &k->desc, &k->cfg, k->key, row->binary, row->size, &k->kern, dberr, sizeof dberr);
      free(row);
      if (rc == HATTN_OK) {
        k->source = HATTN__KC_DB;
        return HATTN_OK;
      }
      warn(kc, "the stored kernel would not load (%s)%s", dberr, id->compiler[0] ? "; compiling it again" : "");
    } else if (rc != HATTN_ENOENT) {
      warn(kc, "%s%s", dberr, id->compiler[0] ? "; compiling the kernel" : "");
    } else if (miss == HATTN__DB_MISS_CHECKSUM) {
      warn(kc, "%s%s", dberr, id->compiler[0] ? "; compiling the kernel again" : "");
    } else if (miss == HATTN__DB_MISS_HMAC && !kc->said_hmac) {
      /* Every kernel of a database from before schema 2 is one: said once. */
      kc->said_hmac = 1;
      warn(kc, "%s (said once: the same holds for every such binary)", dberr);
    }
  }
  if (be->compile == NULL) return not_found(kc, k, id->target, err, errlen);
  if ((rc = be->compile(kc->dev, &k->desc, &k->cfg, k->key, &k->kern, err, errlen)) != HATTN_OK) return rc;
  k->source = HATTN__KC_COMPILED;
  if (kc->db && !hattn__db_readonly(kc->db)) {
    hattn__db_kernel put;
    memset(&put, 0, sizeof put);
    put.key = k->key;
    put.canon = k->desc.pattern->canon;
    put.backend = be->name;
    put.target = id->target;
    put.config = k->config;
    put.compiler = id->compiler;
    put.kernel_class = k->kclass;
    put.dtype = hattn__dtype_name(k->desc.dtype);
    put.head_dim = k->desc.head_dim;
    be->binary(k->kern, &put.binary, &put.size);
    if (hattn__db_kernel_put(kc->db, &put, dberr, sizeof dberr) != HATTN_OK)
      warn(kc, "%s; the kernel is not kept", dberr);
  }
  return HATTN_OK;
}

/* ---- prebuilt kernels ------------------------------------------------------------ */

int hattn__kcache_add_prebuilt(hattn__kcache *kc, const hattn__kc_prebuilt *pb, int *used, char *err,
                               size_t errlen) {
  const char *needs = pb->needs ? pb->needs : "";
  const hattn__backend_i *be = hattn__backend_get(pb->backend);
  size_t lc, lf, lt, ln;
  kc_pre *e;
  hattn__config cfg;

  *used = 0;
  if (pb->canon == NULL || pb->config == NULL || pb->target == NULL || be == NULL) {
    snprintf(err, errlen, "a prebuilt kernel needs its canonical pattern, configuration and target");
    return HATTN_EINVAL;
  }
  if (!be->prebuilt_has_binary((void (*)(void))pb->fn, pb->cubin, pb->cubin_size)) {
    snprintf(err, errlen, "prebuilt kernel '%s' (%s): no %s", pb->canon, pb->config, be->binary_name);
    return HATTN_EINVAL;
  }
  memset(&cfg, 0, sizeof cfg);
  if (be->config_parse(pb->config, &cfg) != HATTN_OK || cfg.threads != 0) {
    snprintf(err, errlen, "prebuilt kernel '%s': '%s' is not a %s configuration", pb->canon, pb->config, be->name);
    return HATTN_EINVAL;
  }
  if (be->target_valid != NULL && !be->target_valid(pb->target)) {
    snprintf(err, errlen, "prebuilt kernel '%s': '%s' is not %s", pb->canon, pb->target, be->target_form);
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
  e->cfg = cfg;
  kc->pre[kc->npre++] = e;
  *used = 1;
  return HATTN_OK;
}

/* The registered kernel for P, DTYPE and HEAD_DIM that runs here (the
** device's own arch first), or NULL. */
static kc_pre *find_prebuilt(hattn__kcache *kc, const hattn__pattern *p, hattn__dtype dtype, int head_dim) {
  kc_pre *best = NULL;
  int i, score, best_score = 0;
  for (i = 0; i < kc->npre; i++) {
    kc_pre *e = kc->pre[i];
    if (e->pb.dtype != dtype || e->pb.head_dim != head_dim || strcmp(e->pb.canon, p->canon) != 0) continue;
    score = kc->be->target_score(kc->dev, e->pb.target, e->pb.needs);
    if (score > best_score) best = e, best_score = score;
  }
  return best;
}

int hattn__kcache_get(hattn__kcache *kc, const hattn__pattern *p, hattn__dtype dtype, int head_dim,
                      int64_t lq, int64_t lk, int64_t bh, hattn__kc_kernel **out, char *err, size_t errlen) {
  const hattn__backend_i *be = kc->be;
  hattn__ident id;
  const char *compiler;
  char kclass[HATTN__KC_KEY_LEN], dberr[1024];
  hattn__db_tuning *t = NULL;
  hattn__kc_kernel cand, *k;
  kc_pre *pre = NULL;
  int lk_log2, bh_class, i, rc;

  *out = NULL;
  be->ident(kc->dev, &id);
  compiler = id.compiler[0] ? id.compiler : NULL;  /* no compiler: any compiler's work */
  hattn__kc_class(p->canon, dtype, head_dim, be->id, id.target, lq, kclass);
  hattn__db_bucket(lk, bh, &lk_log2, &bh_class);

  /* 1. This process. */
  for (i = 0; i < kc->nslots; i++) {
    kc_slot *s = &kc->slots[i];
    if (s->lk_log2 == lk_log2 && s->bh_class == bh_class && !strcmp(s->kclass, kclass) &&
        s->kern->desc.pattern == p) {
      s->kern->source = HATTN__KC_MEMORY;
      *out = s->kern;
      return HATTN_OK;
    }
  }

  memset(&cand, 0, sizeof cand);
  cand.be = be;
  cand.backend = be->id;
  memcpy(cand.kclass, kclass, sizeof kclass);
  cand.desc.pattern = p;
  cand.desc.dtype = dtype;
  cand.desc.head_dim = head_dim;

  /* 2. A kernel the program brought with it. */
  pre = find_prebuilt(kc, p, dtype, head_dim);

  /* 3. The configuration: the prebuilt kernel's, else this device's tuned
  ** winner for the bucket (or the nearest tuned one), else the default. */
  if (pre != NULL) {
    cand.cfg = pre->cfg;
  } else if (kc->db) {
    rc = hattn__db_tuning_get(kc->db, id.model, kclass, compiler, lk, bh, &t, dberr, sizeof dberr);
    if (rc == HATTN_OK) {
      if (be->config_parse(t->winner, &cand.cfg) == HATTN_OK) {
        cand.tuned = 1;
        cand.lk_log2 = t->lk_log2;
        cand.bh_class = t->bh_class;
      } else {
        memset(&cand.cfg, 0, sizeof cand.cfg);
        warn(kc, "the stored winner '%s' is not a configuration; using the default", t->winner);
      }
      free(t);
    } else if (rc != HATTN_ENOENT) {
      warn(kc, "%s; using the default configuration", dberr);
    }
  }
  if (!cand.tuned && pre == NULL) be->config_default(kc->dev, &cand.desc, &cand.cfg);
  if ((rc = be->config_check(&cand.desc, &cand.cfg, err, errlen)) != HATTN_OK) return rc;
  /* The kernel key leaves the thread count out: it is not compiled in. */
  be->config_text(&cand.cfg, 0, cand.config, sizeof cand.config);
  /* A prebuilt kernel is keyed by the target it was built for. */
  hattn__kc_key(p->canon, dtype, head_dim, be->id, pre ? pre->pb.target : id.target, cand.config, cand.key);

  /* 4. A kernel this process loaded for another bucket, else the
  ** prebuilt one, the db's binary, or a compile. */
  if ((k = find_kernel(kc, cand.key)) != NULL && k->desc.pattern == p) {
    k->source = HATTN__KC_MEMORY;
  } else {
    if (grow((void **)&kc->kernels, &kc->capkernels, kc->nkernels + 1, sizeof *kc->kernels) ||
        (k = malloc(sizeof *k)) == NULL) {
      snprintf(err, errlen, "out of memory");
      return HATTN_ENOMEM;
    }
    *k = cand;
    if (pre != NULL) {
      rc = be->load_prebuilt(kc->dev, &k->desc, &k->cfg, (void (*)(void))pre->pb.fn, pre->pb.cubin,
                             pre->pb.cubin_size, &k->kern, err, errlen);
      k->source = HATTN__KC_PREBUILT;
    } else {
      rc = load_kernel(kc, &id, k, err, errlen);
    }
    if (rc != HATTN_OK) {
      free(k);
      return rc;
    }
    kc->kernels[kc->nkernels++] = k;
  }
  k->tuned = cand.tuned, k->lk_log2 = cand.lk_log2, k->bh_class = cand.bh_class, k->cfg.threads = cand.cfg.threads;
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
