/*
** test_backend.c: the conformance suite of every backend (runtime/backend.h)
** against the float64 reference (gen/reference.h), in the style of
** llama.cpp's test-backend-ops: one table of cases, and a loop over the
** backends through the backend table (hattn__backend_get).
**
** For each case and each backend whose device opened: the kernel is made by
** the table's compile operation (the CPU's is an LLVM object file loaded by
** the ELF loader; CUDA's the emitter and NVRTC), or, for cases marked
** RELOAD, its binary is taken back with the binary operation and loaded
** again with the load operation, as a kernel from the database is; then the
** per-problem state (problem_create) and launch, on fresh random inputs with
** O and LSE poisoned (every byte 0xff, a NaN in fp32, fp16 and bf16).  O and
** LSE are compared with hattn__reference given the same dtype-rounded
** inputs: relative Frobenius error below 1e-5 for fp32 and 1e-2 for
** fp16/bf16; rows that see no key must be exactly zero with LSE -inf.  A
** case a backend does not support (config_check says HATTN_ENOTSUP: CUDA
** has no fp32 and only head dims 64, 128, 256), or whose tiles are another
** backend's, is counted as not supported and not run there.
**
** The seed comes from the clock unless HATTN_TEST_SEED is set, and is
** printed on the first line; every backend gets the same inputs for a case.
** HATTN_TEST_VEC=8 makes the CPU's default tiles use 8-float vectors (AVX2
** code) on an AVX-512 host.  HATTN_TEST_BACKEND=cuda (a comma-separated
** list of backend names) runs only those backends.  A backend whose device cannot be opened (CUDA
** without a GPU or without NVRTC) is skipped with a [SKIP] line; the
** program exits 77 only if no backend ran at all.  The tests run in one
** process (CK_NOFORK): a CUDA context and the CPU's thread pool do not
** survive fork(), and the kernels are shared by all cases.
*/
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "backend.h"
#include "cpu_config.h"
#include "cuda.h"
#include "kernel_cache.h"
#include "mask.h"
#include "reference.h"
#include "spec.h"

static uint64_t g_seed;
static int g_vec = 8;           /* the host's floats per vector, set in main */

#include "testutil.h"

/* ---- the case table ------------------------------------------------------ */

typedef struct tcase {
  const char *mask;             /* "causal & window(8)", or with " with ..." */
  hattn__dtype dtype;
  int64_t b, h, hk, lq, lk, d;
  int bshd;                     /* [B, S, H, D] strides instead of [B, H, S, D] */
  int no_lse;
  int one_token_docs;           /* every document one token long */
  int max_doc;                  /* longest random document (0: 60) */
  int reload;                   /* run the kernel loaded back from its binary */
  /* CPU tiles (0: the default's); a case with any is the CPU's only.
  ** BN_VECS: bn is that many host vectors. */
  int bm, bn, rows, vec, bn_vecs;
  uint64_t salt;                /* the inputs' seed: seed ^ salt */
  /* 'q', 'k' or 'v' (0: none): one element of row NAN_ROW of that tensor
  ** (batch 0, head 0, dim 3) is NaN, and must reach exactly the rows of O
  ** and LSE that the reference says it reaches. */
  char nan_in;
  int64_t nan_row;
} tcase;

#define MAX_CASES 1024
static tcase g_cases[MAX_CASES];
static int g_ncases;

/* A case with the common defaults: batch 1, 2 heads sharing one KV head,
** head dim 64, [B, H, S, D]. */
static tcase *add(const char *mask, hattn__dtype dt, int64_t lq, int64_t lk) {
  tcase *t;
  if (g_ncases == MAX_CASES) {
    fprintf(stderr, "more than %d cases\n", MAX_CASES);
    exit(1);
  }
  t = &g_cases[g_ncases];
  memset(t, 0, sizeof *t);
  t->mask = mask;
  t->dtype = dt;
  t->b = 1;
  t->h = 2;
  t->hk = 1;
  t->lq = lq;
  t->lk = lk;
  t->d = 64;
  t->salt = (uint64_t)g_ncases + 1;
  g_ncases++;
  return t;
}

/* Every atom, in two sizes of parameters (tiles of the CPU and of the GPU). */
static const char *const g_atoms[] = {
    "full", "causal", "window(16)", "window(5, 7)", "window(0, 9)", "dilated(4, 3)", "stride(5)",
    "sink(4)", "global(3)", "chunk(32)", "document", "blocks(L)", "random(2, 7)",
    "topk(2)", "!causal", "!stride(3)",
};
static const char *const g_atoms_wide[] = {
    "window(64)", "dilated(8, 3)", "stride(7)", "sink(16)", "global(5)", "chunk(96)", "random(2, 3)",
};

static const char *const g_combos[] = {
    "causal & (window(16) | sink(4))", "document & causal", "window(8, 8) | global(3)",
    "causal & stride(5)", "dilated(4, 3) | sink(2)", "chunk(32) & causal", "!causal & window(0, 9)",
    "blocks(L) | causal & window(4)", "random(2, 7) | causal", "topk(2) & causal",
    "causal & !document", "(random(1, 3) | random(2, 9)) & !sink(10)", "blocks(A) & !blocks(B) | sink(1)",
};
static const char *const g_combos_wide[] = {
    "causal", "window(64)", "causal & (window(100) | sink(16))", "document & causal",
    "window(30, 30) | global(5)", "causal & stride(7)", "dilated(8, 3)", "chunk(96) & causal",
    "!causal & window(0, 40)", "blocks(L)", "random(2, 3) | causal", "topk(2) & causal",
    "blocks(A) & !blocks(B) | sink(1)", "(random(1, 3) | random(2, 9)) & !sink(10)",
};

static const char *const g_mods[] = {
    "causal with scale(0.3)", "causal with softcap(5)", "window(40) with alibi",
    "full with alibi(0.25)", "causal & window(20) with softcap(20), alibi",
    "document with softcap(2), alibi(0.5), scale(0.05)",
};
static const char *const g_mods_wide[] = {
    "causal with scale(0.3)", "causal with softcap(5)", "window(64) with alibi",
    "full with alibi(0.3)", "causal & window(20) with softcap(20), alibi",
    "document & causal with softcap(2), alibi(0.5), scale(0.05)",
};

/* Kernels loaded back from their binaries (the database's path; for the
** CPU the ELF loader's) on odd shapes: Lq != Lk, no multiple of a tile,
** GQA. */
static const char *const g_reload_masks[] = {
    "full", "causal", "causal & window(40)", "sink(4) | window(30)", "document & causal",
    "causal with softcap(5)", "window(40) with alibi", "dilated(4, 3) | sink(2)",
};
static const int64_t g_reload_shapes[3][5] = {{2, 4, 2, 77, 131}, {1, 3, 1, 150, 93}, {1, 2, 2, 1, 65}};

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void cases_make(void) {
  static const int64_t lens[3][2] = {{150, 150}, {70, 200}, {200, 70}};
  static const int64_t lens_wide[3][2] = {{300, 300}, {150, 400}, {400, 150}};
  static const int64_t hks[] = {8, 4, 2, 1};
  static const int64_t dims[] = {32, 64, 80, 128, 256, 3, 20};
  static const int64_t seqs[] = {1, 7, 63, 64, 65, 77, 300, 1000};
  static const char *const len_masks[] = {"causal", "full", "document & causal", "chunk(16) | sink(1)"};
  static const hattn__dtype dts[] = {HATTN_DTYPE_FP32, HATTN_DTYPE_FP16, HATTN_DTYPE_BF16};
  const hattn__dtype F32 = HATTN_DTYPE_FP32, F16 = HATTN_DTYPE_FP16, BF16 = HATTN_DTYPE_BF16;
  tcase *t;
  int i, j, m;

  /* Atoms: Lq = Lk, Lq < Lk (queries at the end), Lq > Lk (negative qpos). */
  for (i = 0; i < N(g_atoms); i++)
    for (j = 0; j < 3; j++) {
      add(g_atoms[i], F32, lens[j][0], lens[j][1]);
      add(g_atoms[i], BF16, lens_wide[j][0], lens_wide[j][1]);
    }
  for (i = 0; i < N(g_atoms_wide); i++)
    for (j = 0; j < 3; j++) add(g_atoms_wide[i], BF16, lens_wide[j][0], lens_wide[j][1]);

  /* Combinations. */
  for (i = 0; i < N(g_combos); i++) {
    add(g_combos[i], F32, 190, 190);
    add(g_combos[i], F32, 100, 260)->b = 2;
  }
  for (i = 0; i < N(g_combos_wide); i++) {
    t = add(g_combos_wide[i], BF16, 1000, 1000);
    t->h = 1;
    t->d = 128;
    t = add(g_combos_wide[i], F16, 77, 300);
    t->b = 2;
    t->d = 128;
  }

  /* Score modifiers. */
  for (i = 0; i < N(g_mods); i++) {
    add(g_mods[i], F32, 140, 140)->h = 4;
    add(g_mods[i], BF16, 33, 140);
  }
  for (i = 0; i < N(g_mods_wide); i++) {
    t = add(g_mods_wide[i], BF16, 200, 200);
    t->h = 4;
    t->hk = 2;
    add(g_mods_wide[i], F16, 33, 300);
  }

  /* GQA: heads / kv_heads = 1, 2, 4, 8. */
  for (i = 0; i < N(hks); i++) {
    t = add("causal & window(50)", F32, 90, 90);
    t->h = 8;
    t->hk = hks[i];
    t = add("topk(1) & causal", F32, 129, 129);
    t->h = 8;
    t->hk = hks[i];
    t = add("causal & window(50)", BF16, 300, 300);
    t->h = 8;
    t->hk = hks[i];
    t = add("topk(1) & causal", BF16, 129, 200);
    t->h = 8;
    t->hk = hks[i];
  }

  /* Head dims. */
  for (i = 0; i < N(dims); i++) {
    add("causal", F32, 100, 100)->d = dims[i];
    add("sink(3) | window(30)", F16, 40, 100)->d = dims[i];
  }
  for (i = 0; i < 3; i++) {
    static const int64_t wide[] = {64, 128, 256};
    add("causal", BF16, 300, 300)->d = wide[i];
    add("sink(3) | window(30)", F16, 77, 300)->d = wide[i];
    t = add("full", F16, 300, 77);
    t->d = wide[i];
    t->bshd = 1;
  }

  /* Sequence lengths around and across tiles, and against 65. */
  for (i = 0; i < N(seqs); i++)
    for (m = 0; m < N(len_masks); m++) {
      hattn__dtype dt = seqs[i] == 77 || seqs[i] == 300 ? BF16 : F32;
      add(len_masks[m], dt, seqs[i], seqs[i])->h = 1;
      if (seqs[i] == 1000) {
        add(len_masks[m], BF16, 1000, 1000)->h = 1;
        continue;
      }
      add(len_masks[m], dt, seqs[i], 65)->h = 1;
      add(len_masks[m], dt, 65, seqs[i])->h = 1;
    }
  /* The GPU's 1, 7 and 1000 against 65 in bf16. */
  for (i = 0; i < 3; i++) {
    static const int64_t l[] = {1, 7, 1000};
    for (m = 0; m < N(len_masks); m++) {
      add(len_masks[m], BF16, l[i], 65)->h = 1;
      add(len_masks[m], BF16, 65, l[i])->h = 1;
    }
  }
  for (m = 0; m < N(len_masks); m++) add(len_masks[m], BF16, 1, 1)->h = 1;
  for (m = 0; m < N(len_masks); m++) add(len_masks[m], BF16, 7, 7)->h = 1;

  /* Decode: 1 to 16 queries against many keys, the query heads of a KV
  ** head packed in one tile (heads / kv_heads 1, 4 and 8) and, on the GPU,
  ** the keys cut into splits (batch 1 makes few CTAs); masks in closed
  ** form, planned, and routed per head (no packing). */
  {
    static const char *const dec_masks[] = {
        "full", "causal", "causal & window(300)", "sink(4) | window(100)", "document & causal",
        "topk(2) & causal", "causal with softcap(5), alibi", "chunk(96) & causal",
    };
    static const int64_t dec_lq[] = {1, 3, 16}, dec_lk[] = {5000, 777, 5000}, dec_hk[] = {8, 2, 1};
    for (i = 0; i < N(dec_masks); i++)
      for (j = 0; j < 3; j++) {
        t = add(dec_masks[i], BF16, dec_lq[j], dec_lk[j]);
        t->h = 8;
        t->hk = dec_hk[j];
        t->d = 128;
      }
    t = add("causal", F16, 4, 3000);
    t->b = 3, t->h = 8, t->hk = 2;
    t = add("causal & window(200)", BF16, 2, 4000);
    t->h = 4, t->hk = 1, t->d = 256;
    t = add("full", BF16, 5, 2500);
    t->h = 6, t->hk = 3, t->bshd = 1, t->d = 128;
  }

  /* Empty problems. */
  add("full", F32, 5, 0);
  add("causal", F32, 0, 9);
  add("causal", BF16, 3, 0);
  add("full", BF16, 5, 0);
  add("causal", BF16, 0, 9);
  add("causal", F16, 3, 0);

  /* Documents. */
  add("document", F32, 120, 120)->one_token_docs = 1;
  add("document & causal", F32, 120, 120)->one_token_docs = 1;
  add("document & window(10)", F32, 300, 300)->b = 2;
  add("document & causal", F32, 80, 300);
  add("document", BF16, 200, 200)->one_token_docs = 1;
  add("document & causal", BF16, 200, 200)->one_token_docs = 1;
  t = add("document & window(10)", BF16, 300, 300);
  t->b = 2;
  t->max_doc = 150;
  t = add("document & causal", BF16, 80, 1000);
  t->d = 128;
  t->max_doc = 150;
  t = add("document & causal", F16, 1000, 1000);
  t->h = 1;
  t->d = 128;
  t->max_doc = 150;

  /* Tensor layouts and dtypes: [B, H, S, D] with "full" and [B, S, H, D]
  ** with "causal & window(33)", at head dim 80 (the CPU's) and 128 (the
  ** GPU's, with "causal" on 300 x 300 beside it). */
  for (i = 0; i < N(dts); i++)
    for (j = 0; j < 2; j++)
      for (m = 0; m < 2; m++) {
        if (m == 1 && dts[i] == F32) continue;
        t = add(j ? "causal & window(33)" : "full", dts[i], 77, 131);
        t->bshd = j;
        t->b = 2;
        t->h = 4;
        t->hk = 2;
        t->d = m ? 128 : 80;
        if (m == 0) continue;
        t = add("causal", dts[i], 300, 300);
        t->bshd = j;
        t->b = 2;
        t->h = 4;
        t->hk = 2;
        t->d = 128;
      }

  /* NaN in Q, K or V is not "masked" (bug: the row of a NaN query came out
  ** 0 with LSE -inf, a NaN key vanished from every row).  NaN in V is put
  ** where every row of any tile sees it (key 0 of causal, any key of full):
  ** a kernel's P V multiplies masked keys by 0 too, and 0 * NaN is NaN. */
  t = add("causal", F32, 100, 100);
  t->nan_in = 'q', t->nan_row = 37;
  t = add("causal", BF16, 300, 300);
  t->nan_in = 'q', t->nan_row = 200;
  t = add("causal with softcap(5)", F16, 200, 200);
  t->nan_in = 'q', t->nan_row = 0;
  t = add("causal & window(40) | sink(4)", F32, 150, 150);
  t->nan_in = 'k', t->nan_row = 70;
  t = add("causal", BF16, 300, 300);
  t->nan_in = 'k', t->nan_row = 150;
  t = add("causal with alibi", F16, 200, 200);
  t->nan_in = 'k', t->nan_row = 3;
  t = add("causal", F32, 100, 100);
  t->nan_in = 'v', t->nan_row = 0;
  t = add("full", BF16, 77, 300);
  t->nan_in = 'v', t->nan_row = 150;

  /* topk(K) with K past the key blocks that exist (bug: a table of K
  ** entries a row, 8.5 GB at K = 2^31 - 1): rows of K = 5 entries padded
  ** with -1 beside 3 blocks, rows of min(K, blocks) at K = 2^31 - 1, and
  ** K = 100 of 110 blocks (a row loop, not unrolled). */
  add("topk(5) & causal", F32, 129, 129);
  add("topk(2147483647) & causal", F32, 129, 129);
  add("topk(2147483647) & causal", BF16, 300, 300);
  t = add("topk(100) & causal | window(8)", BF16, 200, 7000);
  t->h = 1;

  /* No LSE. */
  add("random(1, 4) | document", BF16, 150, 150)->no_lse = 1;

  /* CPU tiles: rows 1, bn = one vector, 8-float vectors on any host, odd
  ** bm, large bn, no LSE, 16-float vectors. */
  t = add("causal & (window(16) | sink(4))", F32, 150, 150);
  t->rows = 1;
  t->bm = 16;
  add("causal & (window(16) | sink(4))", F32, 150, 150)->bn_vecs = 1;
  t = add("causal & (window(16) | sink(4))", F32, 150, 150);
  t->vec = 8;
  t->bn = 8;
  t->rows = 3;
  t->bm = 9;
  t = add("causal & (window(16) | sink(4))", F32, 150, 150);
  t->vec = 8;
  t->bn = 128;
  t->bm = 128;
  t->d = 72;
  t = add("random(1, 4) | document", F32, 150, 150);
  t->no_lse = 1;
  t->rows = 2;
  t->bm = 6;
  t->bn_vecs = 2;
  t = add("causal with softcap(3)", F32, 150, 150);
  t->vec = 16;
  t->bn = 16;
  t->rows = 8;
  t->bm = 32;

  /* Loaded back from the binary. */
  for (i = 0; i < N(g_reload_masks); i++)
    for (j = 0; j < 2; j++)
      for (m = 0; m < 2; m++) {
        int s;
        for (s = 0; s < 3; s++) {
          t = add(g_reload_masks[i], j ? BF16 : F32, g_reload_shapes[s][3], g_reload_shapes[s][4]);
          t->b = g_reload_shapes[s][0];
          t->h = g_reload_shapes[s][1];
          t->hk = g_reload_shapes[s][2];
          t->d = m ? 128 : 64;
          t->max_doc = 50;
          t->reload = 1;
        }
      }
}

/* ---- backends -------------------------------------------------------------- */

typedef struct backend {
  const hattn__backend_i *be;
  void *dev;
  int ran, unsupported;
} backend;

#define MAX_BACKENDS 8
static backend g_be[MAX_BACKENDS];
static int g_nbe;

/* Memory on a backend's device: the host's for the CPU, device memory
** (runtime/cuda.h) for CUDA. */
static int on_gpu(const backend *b) { return b->be->id == HATTN__BACKEND_CUDA; }

static void *mem_alloc(const backend *b, size_t bytes) {
  char err[512];
  void *p = NULL;
  int rc;
  if (!on_gpu(b)) {
    p = malloc(bytes + 1);
    ck_assert_ptr_nonnull(p);
    return p;
  }
  rc = hattn__cuda_alloc(b->dev, bytes + 16, &p, err, sizeof err);
  CHECK(rc == HATTN_OK, "alloc: %s", err);
  return p;
}

static void mem_free(const backend *b, void *p) {
  if (!on_gpu(b)) free(p);
  else hattn__cuda_free(b->dev, p);
}

static void mem_upload(const backend *b, void *dst, const void *src, size_t bytes) {
  char err[512];
  int rc;
  if (!on_gpu(b)) {
    memcpy(dst, src, bytes);
    return;
  }
  rc = hattn__cuda_upload(b->dev, dst, src, bytes, err, sizeof err);
  CHECK(rc == HATTN_OK, "upload: %s", err);
}

static void mem_download(const backend *b, void *dst, const void *src, size_t bytes) {
  char err[512];
  int rc;
  if (!on_gpu(b)) {
    memcpy(dst, src, bytes);
    return;
  }
  rc = hattn__cuda_download(b->dev, dst, src, bytes, err, sizeof err);
  CHECK(rc == HATTN_OK, "download: %s", err);
}

/* Every byte 0xff: a NaN in fp32, fp16 and bf16. */
static void mem_poison(const backend *b, void *dst, size_t bytes) {
  char err[512];
  int rc;
  if (!on_gpu(b)) {
    memset(dst, 0xff, bytes);
    return;
  }
  rc = hattn__cuda_memset(b->dev, dst, 0xff, bytes, err, sizeof err);
  CHECK(rc == HATTN_OK, "memset: %s", err);
}

/* Kernels made in this test, per backend, keyed by what they are
** specialised on; owned by the device. */
#define CACHE_MAX 1024
static struct {
  int be;
  char key[700];
  void *kern;
} g_cache[CACHE_MAX];
static int g_ncache;

/* The configuration of case TC on backend B: 0, or HATTN_ENOTSUP when the
** case is not this backend's. */
static int case_config(const backend *b, const tcase *tc, const hattn__kernel_desc *desc, hattn__config *cfg,
                       char *err, size_t errlen) {
  int cpu_tiles = tc->bm || tc->bn || tc->rows || tc->vec || tc->bn_vecs;
  const char *forced = getenv("HATTN_TEST_VEC");
  memset(cfg, 0, sizeof *cfg);
  if (cpu_tiles && b->be->id != HATTN__BACKEND_CPU) {
    snprintf(err, errlen, "CPU tiles");
    return HATTN_ENOTSUP;
  }
  b->be->config_default(b->dev, desc, cfg);
  if (b->be->id == HATTN__BACKEND_CPU) {
    int vec = tc->vec ? tc->vec : forced && atoi(forced) == 8 ? 8 : g_vec;
    if (vec != cfg->cpu.vec) hattn__cpu_config_default(desc->head_dim, vec, &cfg->cpu);
    if (tc->rows) cfg->cpu.rows = tc->rows;
    if (tc->bm) cfg->cpu.bm = tc->bm;
    if (tc->bn) cfg->cpu.bn = tc->bn;
    if (tc->bn_vecs) cfg->cpu.bn = tc->bn_vecs * g_vec;
  }
  return b->be->config_check(desc, cfg, err, errlen);
}

static void *cache_find(int be, const char *key) {
  int i;
  for (i = 0; i < g_ncache; i++)
    if (g_cache[i].be == be && strcmp(g_cache[i].key, key) == 0) return g_cache[i].kern;
  return NULL;
}

static void cache_add(int be, const char *key, void *kern) {
  if (g_ncache == CACHE_MAX) return;
  g_cache[g_ncache].be = be;
  snprintf(g_cache[g_ncache].key, sizeof g_cache[g_ncache].key, "%s", key);
  g_cache[g_ncache++].kern = kern;
}

/* The kernel of DESC and CFG on B: compiled (once), or for a RELOAD case
** loaded (once) from the compiled kernel's binary. */
static void *kernel_get(const backend *b, const tcase *tc, const hattn__kernel_desc *desc,
                        const hattn__config *cfg) {
  char key[700], text[128], name[64], err[16384];
  void *kern, *again = NULL;
  const void *bin;
  size_t size;
  int rc, id = (int)(b - g_be);

  b->be->config_text(cfg, 0, text, sizeof text);
  snprintf(key, sizeof key, "%s/%d/%d/%s", desc->pattern->canon, (int)desc->dtype, desc->head_dim, text);
  /* The name of the kernel's function: any identifier, one per kernel. */
  snprintf(name, sizeof name, "test_%d", g_ncache);
  if ((kern = cache_find(id, key)) == NULL) {
    rc = b->be->compile(b->dev, desc, cfg, name, &kern, err, sizeof err);
    CHECK(rc == HATTN_OK, "%s: compile '%s' (%s, d %d, %s): %s", b->be->name, tc->mask,
          hattn__dtype_name(desc->dtype), desc->head_dim, text, err);
    cache_add(id, key, kern);
  }
  if (!tc->reload) return kern;
  strcat(key, "/reloaded");
  if ((again = cache_find(id, key)) != NULL) return again;
  b->be->binary(kern, &bin, &size);
  CHECK(bin != NULL && size > 0, "%s: no binary for '%s'", b->be->name, tc->mask);
  /* The key names the function inside the binary: the compiled one's. */
  for (rc = 0; rc < g_ncache; rc++)
    if (g_cache[rc].kern == kern) snprintf(name, sizeof name, "test_%d", rc);
  rc = b->be->load(b->dev, desc, cfg, name, bin, size, &again, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s: load '%s' (%s, d %d, %s) from its %zu-byte binary: %s", b->be->name, tc->mask,
        hattn__dtype_name(desc->dtype), desc->head_dim, text, size, err);
  ck_assert_ptr_nonnull(again);
  cache_add(id, key, again);
  return again;
}

/* ---- one case on one backend ------------------------------------------------- */

static void run_case(backend *b, const tcase *tc) {
  char err[16384], text[512], cfgtext[128];
  hattn__spec *spec = NULL;
  hattn__diags diags;
  hattn__kernel_desc desc;
  hattn__config cfg;
  hattn__shape shape;
  hattn__mask_env env;
  hattn__tensor tq, tk, tv, to, tl;
  test_rundata rd;
  rng r;
  int64_t B = tc->b, H = tc->h, HK = tc->hk, LQ = tc->lq, LK = tc->lk, D = tc->d;
  int64_t nq = B * H * LQ * D, nk = B * HK * LK * D, nl = B * H * LQ, i0, i1, i2, i3, st[4];
  size_t esz, bq, bk, bl;
  int rc;
  void *kern, *prob = NULL, *q, *k, *v, *o, *dq, *dk, *dv, *dout, *dl;
  float *lse;
  double *rq, *rk, *rv, *ro, *rl, *xo, *xl, eo, el, tol;

  snprintf(text, sizeof text, "pattern p = %s\n", tc->mask);
  memset(&diags, 0, sizeof diags);
  rc = hattn__spec_parse(text, strlen(text), "test", &spec, &diags);
  CHECK(rc == HATTN_OK, "spec '%s': %s", tc->mask, diags.text ? diags.text : "?");
  hattn__diags_clear(&diags);
  desc.pattern = &spec->patterns[0];
  desc.dtype = tc->dtype;
  desc.head_dim = (int)D;
  rc = case_config(b, tc, &desc, &cfg, err, sizeof err);
  if (rc == HATTN_ENOTSUP) {
    b->unsupported++;
    hattn__spec_destroy(spec);
    return;
  }
  b->be->config_text(&cfg, 0, cfgtext, sizeof cfgtext);
  CHECK(rc == HATTN_OK, "%s: configuration '%s' of '%s' (%s, d %lld): %s", b->be->name, cfgtext, tc->mask,
        hattn__dtype_name(tc->dtype), (long long)D, err);
  kern = kernel_get(b, tc, &desc, &cfg);
  b->ran++;

  r.s = g_seed ^ (tc->salt * UINT64_C(0x2545f4914f6cdd1d));
  rng_next(&r);
  shape.batch = B;
  shape.heads = H;
  shape.kv_heads = HK;
  shape.lq = LQ;
  shape.lk = LK;
  shape.head_dim = D;
  memset(&env, 0, sizeof env);
  env.lq = LQ;
  env.lk = LK;
  env.batch = B;
  env.heads = H;

  esz = (size_t)hattn__dtype_size(tc->dtype);
  bq = (size_t)nq * esz;
  bk = (size_t)nk * esz;
  bl = (size_t)nl * sizeof(float);
  q = malloc(bq + 1);
  o = malloc(bq + 1);
  k = malloc(bk + 1);
  v = malloc(bk + 1);
  lse = malloc(bl + 1);
  rq = malloc((size_t)(nq + 1) * sizeof *rq);
  ro = malloc((size_t)(nq + 1) * sizeof *ro);
  xo = malloc((size_t)(nq + 1) * sizeof *xo);
  rk = malloc((size_t)(nk + 1) * sizeof *rk);
  rv = malloc((size_t)(nk + 1) * sizeof *rv);
  rl = malloc((size_t)(nl + 1) * sizeof *rl);
  xl = malloc((size_t)(nl + 1) * sizeof *xl);
  ck_assert(q && o && k && v && lse && rq && ro && xo && rk && rv && rl && xl);

  /* Inputs: the reference gets exactly the values the kernel reads. */
  strides_of(tc->bshd, H, LQ, D, tq.stride);
  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < H; i1++)
      for (i2 = 0; i2 < LQ; i2++)
        for (i3 = 0; i3 < D; i3++) {
          size_t at = (size_t)(i0 * tq.stride[0] + i1 * tq.stride[1] + i2 * tq.stride[2] + i3);
          rq[((i0 * H + i1) * LQ + i2) * D + i3] = put(q, at, tc->dtype, 2.0 * rng_unit(&r));
        }
  strides_of(tc->bshd, HK, LK, D, st);
  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < HK; i1++)
      for (i2 = 0; i2 < LK; i2++)
        for (i3 = 0; i3 < D; i3++) {
          size_t at = (size_t)(i0 * st[0] + i1 * st[1] + i2 * st[2] + i3);
          size_t ri = (size_t)(((i0 * HK + i1) * LK + i2) * D + i3);
          rk[ri] = put(k, at, tc->dtype, 2.0 * rng_unit(&r));
          rv[ri] = put(v, at, tc->dtype, rng_unit(&r));
        }
  if (tc->nan_in) {
    int nq_ = tc->nan_in == 'q';
    size_t at = (size_t)(tc->nan_row * (nq_ ? tq.stride[2] : st[2]) + 3);
    size_t ri = (size_t)(tc->nan_row * D + 3);
    if (nq_) rq[ri] = put(q, at, tc->dtype, NAN);
    else if (tc->nan_in == 'k') rk[ri] = put(k, at, tc->dtype, NAN);
    else rv[ri] = put(v, at, tc->dtype, NAN);
  }
  dq = mem_alloc(b, bq);
  dout = mem_alloc(b, bq);
  dk = mem_alloc(b, bk);
  dv = mem_alloc(b, bk);
  dl = mem_alloc(b, bl);
  mem_upload(b, dq, q, bq);
  mem_upload(b, dk, k, bk);
  mem_upload(b, dv, v, bk);
  tq.data = dq;
  tk.data = dk;
  tv.data = dv;
  to.data = dout;
  memcpy(tk.stride, st, sizeof st);
  memcpy(tv.stride, st, sizeof st);
  memcpy(to.stride, tq.stride, sizeof st);
  tl.data = tc->no_lse ? NULL : dl;
  tl.stride[0] = H * LQ;
  tl.stride[1] = LQ;
  tl.stride[2] = 1;
  tl.stride[3] = 0;

  test_rundata_make(&rd, &r, spec, desc.pattern, B, H, HK, LQ, LK, D, rq, rk, tc->one_token_docs,
                    tc->max_doc ? tc->max_doc : 60, &env);

  /* Poison, run, compare. */
  rc = b->be->problem_create(b->dev, &desc, &cfg, &shape, &env, &prob, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s: problem '%s': %s", b->be->name, tc->mask, err);
  mem_poison(b, dout, bq);
  mem_poison(b, dl, bl);
  rc = b->be->launch(b->dev, kern, prob, &tq, &tk, &tv, &to, &tl, NULL, err, sizeof err);
  CHECK(rc == HATTN_OK, "%s: launch '%s' (%s, b %lld h %lld hk %lld lq %lld lk %lld d %lld): %s", b->be->name,
        tc->mask, hattn__dtype_name(tc->dtype), (long long)B, (long long)H, (long long)HK, (long long)LQ,
        (long long)LK, (long long)D, err);
  mem_download(b, o, dout, bq);
  mem_download(b, lse, dl, bl);
  rc = hattn__reference(desc.pattern, &shape, &env, rd.nlay, rq, rk, rv, ro, rl, err, sizeof err);
  CHECK(rc == HATTN_OK, "reference '%s': %s", tc->mask, err);
  if (tc->nan_in) {
    for (i0 = 0; i0 < nq && !isnan(ro[i0]); i0++)
      ;
    CHECK(i0 < nq, "'%s': the NaN in %c reaches no row of the reference", tc->mask, tc->nan_in);
  }

  for (i0 = 0; i0 < B; i0++)
    for (i1 = 0; i1 < H; i1++)
      for (i2 = 0; i2 < LQ; i2++) {
        size_t row = (size_t)((i0 * H + i1) * LQ + i2);
        for (i3 = 0; i3 < D; i3++) {
          size_t at = (size_t)(i0 * to.stride[0] + i1 * to.stride[1] + i2 * to.stride[2] + i3);
          xo[row * (size_t)D + (size_t)i3] = get(o, at, tc->dtype);
        }
        xl[row] = lse[row];
        if (isinf(rl[row])) { /* a row that sees nothing */
          for (i3 = 0; i3 < D; i3++)
            CHECK(xo[row * (size_t)D + (size_t)i3] == 0.0,
                  "%s: '%s' (%s, b %lld h %lld lq %lld lk %lld d %lld): empty row %lld has O[%lld] = %g",
                  b->be->name, tc->mask, hattn__dtype_name(tc->dtype), (long long)B, (long long)H,
                  (long long)LQ, (long long)LK, (long long)D, (long long)i2, (long long)i3,
                  xo[row * (size_t)D + (size_t)i3]);
          if (!tc->no_lse)
            CHECK(xl[row] == -INFINITY, "%s: '%s': empty row %lld has LSE %g", b->be->name, tc->mask,
                  (long long)i2, xl[row]);
        }
      }
  tol = tc->dtype == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2;
  eo = hattn__rel_error(xo, ro, (size_t)nq);
  CHECK(eo < tol, "%s: '%s' (%s, b %lld h %lld hk %lld lq %lld lk %lld d %lld, %s, %s%s): O error %g", b->be->name,
        tc->mask, hattn__dtype_name(tc->dtype), (long long)B, (long long)H, (long long)HK, (long long)LQ,
        (long long)LK, (long long)D, tc->bshd ? "bshd" : "bhsd", cfgtext, tc->reload ? ", reloaded" : "", eo);
  if (!tc->no_lse) {
    el = hattn__rel_error(xl, rl, (size_t)nl);
    if (el >= tol && el < INFINITY) {
      /* A few LSE values near zero (one visible key whose score is a small
      ** difference of products) make the relative norm ill-conditioned:
      ** then every value must be within tol of the reference, relatively or
      ** absolutely. */
      el = 0;
      for (i0 = 0; i0 < nl; i0++)
        if (isfinite(rl[i0])) {
          double dv_ = fabs(xl[i0] - rl[i0]) / fmax(1.0, fabs(rl[i0]));
          if (dv_ > el) el = dv_;
        }
    }
    CHECK(el < tol, "%s: '%s' (%s, lq %lld lk %lld d %lld): LSE error %g", b->be->name, tc->mask,
          hattn__dtype_name(tc->dtype), (long long)LQ, (long long)LK, (long long)D, el);
  } else {
    for (i0 = 0; i0 < nl; i0++) CHECK(isnan(lse[i0]), "%s: LSE written although NULL", b->be->name);
  }

  b->be->problem_destroy(prob);
  mem_free(b, dq);
  mem_free(b, dk);
  mem_free(b, dv);
  mem_free(b, dout);
  mem_free(b, dl);
  test_rundata_free(&rd);
  free(q);
  free(o);
  free(k);
  free(v);
  free(lse);
  free(rq);
  free(ro);
  free(xo);
  free(rk);
  free(rv);
  free(rl);
  free(xl);
  hattn__spec_destroy(spec);
}

/* ---- tests ------------------------------------------------------------------ */

START_TEST(test_case) {
  int i;
  for (i = 0; i < g_nbe; i++) run_case(&g_be[i], &g_cases[_i]);
}
END_TEST

/* Version 3: what the tools need is in every table; version 4: CUDA's
** asynchronous launch for hattn_run (the CPU's launch is synchronous);
** version 5: every table of libhattn merges (hattn_merge); version 6: the
** CPU launches paged K and V, CUDA does not yet (hattn_run_paged); version
** 7: the CPU runs variable-length batches (a problem per pair of lengths);
** version 8: CUDA's kernels read the lengths (launch_varlen); version 9:
** the CPU runs on a caller's thread pool (dev_threadpool), CUDA has no host
** threads to give. */
START_TEST(test_tools_entries) {
  int id;
  for (id = 0; id < MAX_BACKENDS; id++) {
    const hattn__backend_i *be = hattn__backend_get(id);
    if (be == NULL) continue;
    ck_assert_int_eq(be->version, 9);
    ck_assert_ptr_nonnull(be->merge);
    ck_assert_ptr_nonnull(be->config_tile);
    ck_assert_ptr_nonnull(be->config_describe);
    ck_assert_ptr_nonnull(be->gen);
    ck_assert_ptr_nonnull(be->gen_target_option);
    ck_assert_ptr_nonnull(be->compiler_name);
    ck_assert_msg(be->dtypes & 1u << be->dtype_default, "%s: its default dtype is not one it runs", be->name);
  }
  ck_assert_int_eq(hattn__backend_get(HATTN_BACKEND_CPU)->dtype_default, HATTN_DTYPE_FP32);
  ck_assert_int_eq(hattn__backend_get(HATTN_BACKEND_CUDA)->dtype_default, HATTN_DTYPE_BF16);
  ck_assert(!(hattn__backend_get(HATTN_BACKEND_CUDA)->dtypes & 1u << HATTN_DTYPE_FP32));
  ck_assert_ptr_nonnull(hattn__backend_get(HATTN_BACKEND_CUDA)->launch_async);
  ck_assert_ptr_null(hattn__backend_get(HATTN_BACKEND_CPU)->launch_async);
  ck_assert_ptr_nonnull(hattn__backend_get(HATTN_BACKEND_CPU)->launch_paged);
  ck_assert_ptr_nonnull(hattn__backend_get(HATTN_BACKEND_CUDA)->launch_paged);
  ck_assert_int_eq(hattn__backend_get(HATTN_BACKEND_CPU)->varlen, 1);
  ck_assert_int_eq(hattn__backend_get(HATTN_BACKEND_CUDA)->varlen, 0);
  ck_assert_ptr_nonnull(hattn__backend_get(HATTN_BACKEND_CUDA)->launch_varlen);
  ck_assert_ptr_null(hattn__backend_get(HATTN_BACKEND_CPU)->launch_varlen);
  ck_assert_ptr_nonnull(hattn__backend_get(HATTN_BACKEND_CPU)->dev_threadpool);
  ck_assert_ptr_null(hattn__backend_get(HATTN_BACKEND_CUDA)->dev_threadpool);
}
END_TEST

/* hattn__backend_find: by name, and the names there are. */
START_TEST(test_backend_find) {
  const char *names = NULL;
  ck_assert_ptr_eq(hattn__backend_find("cpu", &names), hattn__backend_get(HATTN_BACKEND_CPU));
  ck_assert_ptr_eq(hattn__backend_find("cuda", NULL), hattn__backend_get(HATTN_BACKEND_CUDA));
  ck_assert_ptr_null(hattn__backend_find("tpu", &names));
  ck_assert_str_eq(names, "cpu or cuda");
  ck_assert_ptr_eq(hattn__backend_at(0), hattn__backend_get(HATTN_BACKEND_CPU));
  ck_assert_ptr_eq(hattn__backend_at(1), hattn__backend_get(HATTN_BACKEND_CUDA));
  ck_assert_ptr_null(hattn__backend_at(2));
}
END_TEST

/* config_tile: the CPU takes tiles, register rows and vector widths; CUDA
** takes tiles (a warpgroup per 64 rows for the warpgroup kernel) and
** refuses the CPU's own. */
START_TEST(test_config_tile) {
  const hattn__backend_i *cpu = hattn__backend_get(HATTN_BACKEND_CPU), *cuda = hattn__backend_get(HATTN_BACKEND_CUDA);
  hattn__tile t = {64, 32, 2, 8}, none = {0, 0, 0, 0};
  hattn__config c;
  char err[256] = "";
  memset(&c, 0, sizeof c);
  c.cpu.bm = 128, c.cpu.bn = 64, c.cpu.rows = 4, c.cpu.vec = 16;
  ck_assert_int_eq(cpu->config_tile(NULL, &none, &c, err, sizeof err), HATTN_OK);
  ck_assert_int_eq(c.cpu.bm, 128);
  ck_assert_int_eq(cpu->config_tile(NULL, &t, &c, err, sizeof err), HATTN_OK);
  ck_assert(c.cpu.bm == 64 && c.cpu.bn == 32 && c.cpu.rows == 2 && c.cpu.vec == 8);
  memset(&c, 0, sizeof c);
  c.cuda.block_m = 64, c.cuda.block_n = 64, c.cuda.warps = 4, c.cuda.stages = 2, c.cuda.wgmma = 1;
  ck_assert_int_eq(cuda->config_tile(NULL, &t, &c, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "--rows applies to the cpu backend only");
  t.rows = 0;
  ck_assert_int_eq(cuda->config_tile(NULL, &t, &c, err, sizeof err), HATTN_EINVAL);
  ck_assert_str_eq(err, "--vec applies to the cpu backend only");
  t.vec = 0, t.bm = 128, t.bn = 64;
  ck_assert_int_eq(cuda->config_tile(NULL, &t, &c, err, sizeof err), HATTN_OK);
  ck_assert(c.cuda.block_m == 128 && c.cuda.block_n == 64 && c.cuda.warps == 8);
}
END_TEST

static Suite *backend_suite(void) {
  Suite *s = suite_create("backend");
  TCase *tc = tcase_create("conformance"), *tt = tcase_create("tools");
  tcase_add_loop_test(tc, test_case, 0, g_ncases);
  suite_add_tcase(s, tc);
  tcase_add_test(tt, test_tools_entries);
  tcase_add_test(tt, test_backend_find);
  tcase_add_test(tt, test_config_tile);
  suite_add_tcase(s, tt);
  return s;
}

/* Whether NAME is in the comma-separated LIST. */
static int name_listed(const char *list, const char *name) {
  size_t n = strlen(name);
  const char *p;
  for (p = list; (p = strstr(p, name)) != NULL; p += n)
    if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
  return 0;
}

int main(void) {
  const char *env = getenv("HATTN_TEST_SEED"), *only = getenv("HATTN_TEST_BACKEND");
  const hattn__kc_host *host = NULL;
  char err[1024];
  SRunner *sr;
  int failed, id, i, rc;

  g_seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
  printf("seed: %" PRIu64 " (set HATTN_TEST_SEED to replay)\n", g_seed);
  if (hattn__kc_host_cpu(&host, err, sizeof err) == HATTN_OK) g_vec = host->vec;
  cases_make();
  for (id = 0; id < MAX_BACKENDS; id++) {
    const hattn__backend_i *be = hattn__backend_get(id);
    hattn__ident ident;
    void *dev = NULL;
    if (be == NULL) continue;
    if (only && !name_listed(only, be->name)) {
      printf("[SKIP] %s: not in HATTN_TEST_BACKEND (%s)\n", be->name, only);
      continue;
    }
    if (be->compile == NULL) {
      printf("[SKIP] %s: no compiler registered\n", be->name);
      continue;
    }
    rc = be->dev_open(0, 2, &dev, err, sizeof err);
    if (rc != HATTN_OK) {
      printf("[SKIP] %s: %s\n", be->name, err);
      continue;
    }
    be->ident(dev, &ident);
    printf("%s: %s (%s, %s)\n", be->name, ident.name, ident.target, ident.compiler);
    g_be[g_nbe].be = be;
    g_be[g_nbe++].dev = dev;
  }
  printf("%d cases\n", g_ncases);
  fflush(stdout);
  if (g_nbe == 0) {
    printf("[SKIP] no backend could run\n");
    return 77;
  }

  sr = srunner_create(backend_suite());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  for (i = 0; i < g_nbe; i++) {
    int j, nk = 0;
    for (j = 0; j < g_ncache; j++) nk += g_cache[j].be == i;
    printf("%s: %d cases run, %d not supported, %d kernels\n", g_be[i].be->name, g_be[i].ran,
           g_be[i].unsupported, nk);
    g_be[i].be->dev_close(g_be[i].dev);
  }
  return failed == 0 ? 0 : 1;
}
