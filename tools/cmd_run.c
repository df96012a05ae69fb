/*
** cmd_run.c: hattn run and hattn verify: run one pattern's CPU or CUDA
** kernel on random inputs (or inputs read from .npy files), write the
** tensors as .npy files, and compare the output with the float64 reference.
*/
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hattn.h"
#include "npy.h"
#include "reference.h"
#include "dtype.h"
#include "kernel_cache.h"
#include "plan.h"
#include "tools.h"

#define RUN_OPTIONS                                                                          \
  "options:\n"                                                                               \
  "  -p, --pattern P       the pattern (optional when the file has one)\n"                  \
  "      --backend B       cpu (the default) or cuda (GPU 0 through the CUDA driver)\n"    \
  "  -B, --batch N         batch entries (default 1)\n"                                     \
  "  -H, --heads N         query heads (default 8)\n"                                       \
  "      --kv-heads N      key/value heads, dividing --heads (default --heads)\n"           \
  "  -d, --head-dim D      head dimension (default 128)\n"                                  \
  "  -s, --seqlen N[,M]    query and key lengths (M = N when absent)\n"                     \
  "  -t, --dtype T         fp32 (the cpu default), fp16 or bf16 (the cuda default)\n"     \
  "      --seed S          seed of the random inputs (default: from the clock; printed)\n" \
  "  -o, --out DIR         write q.npy k.npy v.npy o.npy lse.npy to DIR (created)\n"        \
  "  -i, --in DIR          read q.npy k.npy v.npy from DIR instead of drawing them;\n"     \
  "                        options not given are taken from their shapes and dtype\n"     \
  "      --threads N       worker threads (default HATTN_NUM_THREADS, else the cores)\n"   \
  "  -b, --block BM,BN     tile size of the kernel (default: chosen for head_dim)\n"       \
  "      --rows R          query rows held in registers (default: chosen; cpu only)\n"    \
  "      --db PATH         take the kernel from the runtime's lookup: this process,\n"    \
  "                        then the database at PATH (a tuned winner), then a compile\n"   \
  "                        of the default configuration, stored there\n"                  \
  "      --docs LEN        document: packed documents of LEN tokens (default one)\n"        \
  "      --doc-lens A,B,.. document: these lengths; the last takes the rest\n"            \
  "      --layout NAME=F   blocks(NAME): a layout file (see hattn plan --help)\n"           \
  "      --page-size P     paged K and V: scatter K and V into pages of P positions\n"     \
  "                        (a power of two, 1 to 256) of a shuffled pool, unused\n"       \
  "                        pages NaN, and run the kernel through a block table (cpu)\n"   \
  "      --page-layout L   the pool's layout with --page-size: nhd [pages, P,\n"          \
  "                        kv_heads, D] (the default) or hnd [pages, kv_heads, P, D]\n"  \
  "      --q-offset N      query row q is at position q + N (default: lk - lq, the\n"   \
  "                        queries end with the keys; N may be negative)\n"             \
  "      --k-offset N      key row k is at position k + N, N >= 0 (default 0): a chunk\n" \
  "                        of queries or a slice of the keys at its true positions\n"   \
  "      --kv-lens A,B,..  a variable-length batch: the key length of each batch\n"     \
  "                        entry (--batch is their count; lk is the longest unless\n"   \
  "                        --seqlen N,M says); keys past an entry's length are\n"       \
  "                        padding, never read (cpu)\n"                                  \
  "      --q-lens A,B,..   the query length of each batch entry likewise (lq the\n"     \
  "                        longest unless --seqlen says); an entry's queries end\n"    \
  "                        with its keys, and rows past its length get O 0 and\n"      \
  "                        LSE -inf\n"                                                     \
  "  -h, --help            this text\n"                                                     \
  "\n"                                                                                       \
  "Q and O are [batch, heads, N, D], K and V [batch, kv_heads, M, D], in the dtype\n"     \
  "('<f4', '<f2', or '<u2' holding bf16 words); LSE is float32 [batch, heads, N],\n"      \
  "the natural log of each row's sum of exp(score).  Random inputs are uniform in\n"      \
  "[-1, 1), drawn for Q, then K, then V by splitmix64 from the seed, and rounded\n"       \
  "to the dtype (to nearest even).  topk(K) is routed from the inputs.  The time is\n"  \
  "the median of up to 20 runs of the kernel (as many as about a second holds) after\n" \
  "the backend's warm-up runs: the wall clock on the cpu, device events on cuda.\n"     \
  "With --page-size the .npy files still hold the logical, unpaged K and V.  With\n"      \
  "--kv-lens or --q-lens they hold the padded batch: [batch, heads, lq, D] and\n"       \
  "[batch, kv_heads, lk, D], each entry's sequence in its first rows.\n"

static const char run_usage[] =
  "usage: hattn run FILE --seqlen N[,M] [options]\n"
  "\n"
  "Run pattern P of the spec FILE on the CPU (or CUDA) backend and print a summary:\n"
  "pattern, shape, dtype, kernel configuration and time.\n"
  "\n" RUN_OPTIONS;

static const char verify_usage[] =
  "usage: hattn verify FILE --seqlen N[,M] [options]\n"
  "\n"
  "Run pattern P of the spec FILE on the CPU (or CUDA) backend, compute the same attention\n"
  "in float64 from the same (dtype-rounded) inputs, and print the relative\n"
  "Frobenius error of O and of LSE.  Exits 0 when both are within the dtype's\n"
  "tolerance (fp32 1e-5, fp16 and bf16 1e-2), 1 when not, 2 on bad input.  When the\n"
  "reference will take longer than HATTN_VERIFY_NOTE_S seconds (default 10), a note\n"
  "on stderr says so first.\n"
  "\n" RUN_OPTIONS;

/* ---- numbers ------------------------------------------------------------- */


static tool_npy_type npy_type_of(hattn__dtype t) {
  return t == HATTN_DTYPE_FP16 ? TOOL_NPY_F2 : t == HATTN_DTYPE_BF16 ? TOOL_NPY_U2 : TOOL_NPY_F4;
}

/* ---- options -------------------------------------------------------------- */

typedef struct run_args {
  const char *file, *pattern, *backend, *in_dir, *out_dir;
  int64_t batch, heads, kv_heads, head_dim, lq, lk; /* 0: not given */
  hattn__dtype dtype;
  int have_dtype, have_seed;
  uint64_t seed;
  int64_t threads, bm, bn, rows;                      /* 0: the default */
  const char *db;                                     /* --db: kernels from the runtime's lookup */
  int64_t page_size;                                  /* --page-size, 0: contiguous K and V */
  const char *page_layout;                            /* --page-layout, NULL: nhd */
  tool_rtdata rt;
  int64_t q_offset, k_offset;                         /* --q-offset, --k-offset */
  int have_q_offset, have_k_offset;
  int have_lk;                                        /* --seqlen N,M gave M */
  int32_t *q_lens, *k_lens;                           /* --q-lens, --kv-lens, or NULL */
  int64_t nq_lens, nk_lens;
} run_args;

/* A list of lengths for option OPT ("--kv-lens"): S is comma-separated
** integers in [0, HATTN_MAX_SEQLEN]; *OUT (malloc'd) and *N, or -1 with a
** message. */
static int parse_lens(const char *opt, const char *s, int32_t **out, int64_t *n) {
  const char *c = s;
  int64_t cap = 1, i = 0;
  int32_t *l;
  for (; *c; c++) cap += *c == ',';
  free(*out);
  if ((*out = l = malloc((size_t)cap * sizeof *l)) == NULL) {
    fprintf(stderr, "hattn: %s: out of memory\n", opt);
    return -1;
  }
  for (c = s; i < cap; i++) {
    char *end;
    long long v;
    errno = 0;
    v = strtoll(c, &end, 10);
    if (end == c || (*end != ',' && *end != '\0') || errno || v < 0 || v > HATTN_MAX_SEQLEN) {
      fprintf(stderr, "hattn: %s: expected lengths A,B,... (integers from 0 to %lld), got '%s'\n", opt,
              (long long)HATTN_MAX_SEQLEN, s);
      return -1;
    }
    l[i] = (int32_t)v;
    c = end + (*end == ',');
  }
  *n = cap;
  return 0;
}

/* A signed position offset for option OPT: -1 with a message when S is not
** an integer within [-HATTN_MAX_SEQLEN, HATTN_MAX_SEQLEN]. */
static int parse_offset(const char *opt, const char *s, int64_t *out) {
  char *end;
  long long v;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (end == s || *end || errno || v < -HATTN_MAX_SEQLEN || v > HATTN_MAX_SEQLEN) {
    fprintf(stderr, "hattn: %s: expected an integer in [-%lld, %lld], got '%s'\n", opt,
            (long long)HATTN_MAX_SEQLEN, (long long)HATTN_MAX_SEQLEN, s);
    return -1;
  }
  *out = (int64_t)v;
  return 0;
}

static int parse_seed(const char *s, uint64_t *out) {
  char *end;
  unsigned long long v;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (end == s || *end || errno || *s == '-') {
    fprintf(stderr, "hattn: --seed: expected a non-negative integer below 2^64, got '%s'\n", s);
    return -1;
  }
  *out = (uint64_t)v;
  return 0;
}

/* Parse ARGV into A: 1 for --help (printed), 0 to go on, -1 on a usage
** error (printed). */
static int parse_args(int argc, char **argv, const char *usage, run_args *a) {
  enum { O_BACKEND = 256, O_KVHEADS, O_SEED, O_THREADS, O_ROWS, O_DB, O_PAGE_SIZE, O_PAGE_LAYOUT, O_QOFF, O_KOFF,
         O_QLENS, O_KVLENS };
  static const struct option opts[] = {
    {"pattern", required_argument, 0, 'p'},  {"backend", required_argument, 0, O_BACKEND},
    {"batch", required_argument, 0, 'B'},    {"heads", required_argument, 0, 'H'},
    {"kv-heads", required_argument, 0, O_KVHEADS}, {"head-dim", required_argument, 0, 'd'},
    {"seqlen", required_argument, 0, 's'},   {"dtype", required_argument, 0, 't'},
    {"seed", required_argument, 0, O_SEED},  {"out", required_argument, 0, 'o'},
    {"in", required_argument, 0, 'i'},       {"threads", required_argument, 0, O_THREADS},
    {"db", required_argument, 0, O_DB},
    {"block", required_argument, 0, 'b'},    {"rows", required_argument, 0, O_ROWS},
    {"docs", required_argument, 0, 'D'},     {"doc-lens", required_argument, 0, 'L'},
    {"layout", required_argument, 0, 'Y'},   {"help", no_argument, 0, 'h'},
    {"page-size", required_argument, 0, O_PAGE_SIZE}, {"page-layout", required_argument, 0, O_PAGE_LAYOUT},
    {"q-offset", required_argument, 0, O_QOFF}, {"k-offset", required_argument, 0, O_KOFF},
    {"q-lens", required_argument, 0, O_QLENS}, {"kv-lens", required_argument, 0, O_KVLENS},
    {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "p:B:H:d:s:t:o:i:b:h", opts, NULL)) != -1) {
    int r = tool_rtdata_option(&a->rt, c, optarg);
    if (r < 0) return -1;
    if (r > 0) continue;
    switch (c) {
    case 'p': a->pattern = optarg; break;
    case O_BACKEND: a->backend = optarg; break;
    case 'B': if (tool_parse_len("--batch", optarg, 0, &a->batch)) return -1; break;
    case 'H': if (tool_parse_len("--heads", optarg, 0, &a->heads)) return -1; break;
    case O_KVHEADS: if (tool_parse_len("--kv-heads", optarg, 0, &a->kv_heads)) return -1; break;
    case 'd': if (tool_parse_len("--head-dim", optarg, 0, &a->head_dim)) return -1; break;
    case 's':
      if (tool_parse_pair("--seqlen", optarg, 0, &a->lq, &a->lk)) return -1;
      a->have_lk = strchr(optarg, ',') != NULL;
      break;
    case O_QLENS: if (parse_lens("--q-lens", optarg, &a->q_lens, &a->nq_lens)) return -1; break;
    case O_KVLENS: if (parse_lens("--kv-lens", optarg, &a->k_lens, &a->nk_lens)) return -1; break;
    case 't':
      if (tool_parse_dtype("--dtype", optarg, &a->dtype)) return -1;
      a->have_dtype = 1;
      break;
    case O_SEED:
      if (parse_seed(optarg, &a->seed)) return -1;
      a->have_seed = 1;
      break;
    case 'o': a->out_dir = optarg; break;
    case 'i': a->in_dir = optarg; break;
    case O_THREADS: if (tool_parse_len("--threads", optarg, 0, &a->threads)) return -1; break;
    case 'b': if (tool_parse_pair("--block", optarg, 0, &a->bm, &a->bn)) return -1; break;
    case O_ROWS: if (tool_parse_len("--rows", optarg, 0, &a->rows)) return -1; break;
    case O_DB: if (tool_parse_db(optarg, &a->db)) return -1; break;
    case O_PAGE_SIZE:
      if (tool_parse_len("--page-size", optarg, 0, &a->page_size)) return -1;
      if (a->page_size < 1 || a->page_size > HATTN_MAX_PAGE_SIZE || (a->page_size & (a->page_size - 1)) != 0) {
        fprintf(stderr, "hattn %s: --page-size: %s is not a power of two from 1 to %d\n", argv[0], optarg,
                HATTN_MAX_PAGE_SIZE);
        return -1;
      }
      break;
    case O_PAGE_LAYOUT:
      if (strcmp(optarg, "nhd") != 0 && strcmp(optarg, "hnd") != 0) {
        fprintf(stderr, "hattn %s: --page-layout: expected nhd or hnd, got '%s'\n", argv[0], optarg);
        return -1;
      }
      a->page_layout = optarg;
      break;
    case O_QOFF:
      if (parse_offset("--q-offset", optarg, &a->q_offset)) return -1;
      a->have_q_offset = 1;
      break;
    case O_KOFF:
      if (parse_offset("--k-offset", optarg, &a->k_offset)) return -1;
      a->have_k_offset = 1;
      break;
    case 'h': fputs(usage, stdout); return 1;
    default: fputs(usage, stderr); return -1;
    }
  }
  if (optind != argc - 1) {
    fprintf(stderr, "hattn %s: expected one spec FILE\n\n%s", argv[0], usage);
    return -1;
  }
  a->file = argv[optind];
  if (a->page_layout != NULL && a->page_size == 0) {
    fprintf(stderr, "hattn %s: --page-layout needs --page-size\n", argv[0]);
    return -1;
  }
  if (a->lq == 0 && a->in_dir == NULL && a->q_lens == NULL) {
    fprintf(stderr, "hattn %s: --seqlen is required (or --in DIR, or --q-lens)\n\n%s", argv[0], usage);
    return -1;
  }
  if (a->q_lens != NULL && a->k_lens != NULL && a->nq_lens != a->nk_lens) {
    fprintf(stderr, "hattn %s: --q-lens has %lld lengths and --kv-lens %lld: one of each per batch entry\n",
            argv[0], (long long)a->nq_lens, (long long)a->nk_lens);
    return -1;
  }
  return 0;
}

/* ---- tensors -------------------------------------------------------------- */

/* The tensors of one problem: Q, K, V, O in the dtype, LSE in float32, and
** double copies of the inputs when the reference or routing needs them. */
typedef struct run_data {
  hattn__shape shape;
  hattn__dtype dtype;
  size_t nq, nkv, nlse;       /* elements of Q (and O), of K (and V), of LSE */
  void *q, *k, *v, *o;
  float *lse;
  double *qd, *kd, *vd;
  int32_t *topk;
} run_data;

static void data_free(run_data *d) {
  free(d->q);
  free(d->k);
  free(d->v);
  free(d->o);
  free(d->lse);
  free(d->qd);
  free(d->kd);
  free(d->vd);
  free(d->topk);
}

/* A * B * C * D, or -1 when the product passes 2^40 elements. */
static int64_t count4(int64_t a, int64_t b, int64_t c, int64_t d) {
  const int64_t lim = (int64_t)1 << 40;
  if (a > lim / b) return -1;
  a *= b;
  if (a > lim / c) return -1;
  a *= c;
  if (a > lim / d) return -1;
  return a * d;
}

/* Check that the file PATH read into X holds a [d0, d1, d2, d3] array of
** dtype T; prints why not and returns -1. */
static int check_input(const char *cmd, const char *path, const tool_npy *x, hattn__dtype t,
                       const int64_t want[4]) {
  int i;
  if (x->type != npy_type_of(t)) {
    fprintf(stderr, "hattn %s: %s holds '%s' elements, but the dtype is %s ('%s')\n", cmd, path,
            tool_npy_descr(x->type), hattn__dtype_name(t), tool_npy_descr(npy_type_of(t)));
    return -1;
  }
  for (i = 0; i < 4 && x->rank == 4; i++)
    if (x->shape[i] != want[i]) break;
  if (x->rank != 4 || i < 4) {
    char got[128];
    int n = 0;
    for (i = 0; i < x->rank; i++)
      n += snprintf(got + n, sizeof got - (size_t)n, "%s%lld", i ? ", " : "", (long long)x->shape[i]);
    got[n] = '\0';
    fprintf(stderr, "hattn %s: %s has shape (%s), but the options ask for (%lld, %lld, %lld, %lld)\n",
            cmd, path, got, (long long)want[0], (long long)want[1], (long long)want[2],
            (long long)want[3]);
    return -1;
  }
  return 0;
}

/* Take what the options leave open from the shapes and dtype of Q and K. */
static int fill_from_inputs(const char *cmd, run_args *a, const char *qpath, const tool_npy *q,
                            const char *kpath, const tool_npy *k) {
  int i;
  if (q->rank != 4 || k->rank != 4) {
    fprintf(stderr, "hattn %s: %s must have rank 4 ([batch, heads, seqlen, head_dim]), it has rank %d\n",
            cmd, q->rank != 4 ? qpath : kpath, q->rank != 4 ? q->rank : k->rank);
    return -1;
  }
  for (i = 0; i < 8; i++) {
    int64_t n = i < 4 ? q->shape[i] : k->shape[i - 4];
    if (n < 1 || n > INT32_MAX) {
      fprintf(stderr, "hattn %s: %s has a dimension of %lld; every dimension must be in [1, 2^31)\n", cmd,
              i < 4 ? qpath : kpath, (long long)n);
      return -1;
    }
  }
  if (!a->have_dtype) {
    if (q->type == TOOL_NPY_F4) a->dtype = HATTN_DTYPE_FP32;
    else if (q->type == TOOL_NPY_F2) a->dtype = HATTN_DTYPE_FP16;
    else if (q->type == TOOL_NPY_U2) a->dtype = HATTN_DTYPE_BF16;
    else {
      fprintf(stderr, "hattn %s: %s holds '%s' elements; inputs are '<f4', '<f2' or '<u2' (bf16)\n", cmd,
              qpath, tool_npy_descr(q->type));
      return -1;
    }
    a->have_dtype = 1;
  }
  if (a->batch == 0) a->batch = q->shape[0];
  if (a->heads == 0) a->heads = q->shape[1];
  if (a->lq == 0) a->lq = q->shape[2], a->lk = k->shape[2];
  if (a->head_dim == 0) a->head_dim = q->shape[3];
  if (a->kv_heads == 0) a->kv_heads = k->shape[1];
  return 0;
}

/* Read q.npy, k.npy and v.npy from A->in_dir into X and take the shape and
** dtype the options leave open from them, or print why not and return -1. */
static int read_inputs(const char *cmd, run_args *a, tool_npy x[3]) {
  static const char *const names[3] = {"q.npy", "k.npy", "v.npy"};
  char path[3][4096], err[4400];
  int i;
  for (i = 0; i < 3; i++) {
    snprintf(path[i], sizeof path[i], "%s/%s", a->in_dir, names[i]);
    if (tool_npy_read(path[i], &x[i], err, sizeof err)) {
      fprintf(stderr, "hattn %s: %s\n", cmd, err);
      return -1;
    }
  }
  return fill_from_inputs(cmd, a, path[0], &x[0], path[1], &x[1]);
}

/* Allocate D for the shape in A, and fill Q, K, V from the files X (when
** given) or the seeded generator.  Makes double copies when WANT_DOUBLE. */
static int make_inputs(const char *cmd, const run_args *a, run_data *d, tool_npy *x, int want_double) {
  const hattn__shape *s = &d->shape;
  int64_t nq = count4(s->batch, s->heads, s->lq, s->head_dim);
  int64_t nkv = count4(s->batch, s->kv_heads, s->lk, s->head_dim);
  int64_t nlse = count4(s->batch, s->heads, s->lq, 1);
  int esz = hattn__dtype_size(d->dtype), i;
  size_t j;

  if (nq < 0 || nkv < 0 || nlse < 0) {
    fprintf(stderr, "hattn %s: the problem is too large (over 2^40 elements in a tensor)\n", cmd);
    return -1;
  }
  d->nq = (size_t)nq;
  d->nkv = (size_t)nkv;
  d->nlse = (size_t)nlse;
  if (x) {
    const int64_t wq[4] = {s->batch, s->heads, s->lq, s->head_dim};
    const int64_t wk[4] = {s->batch, s->kv_heads, s->lk, s->head_dim};
    char path[4096];
    for (i = 0; i < 3; i++) {
      snprintf(path, sizeof path, "%s/%c.npy", a->in_dir, "qkv"[i]);
      if (check_input(cmd, path, &x[i], d->dtype, i == 0 ? wq : wk)) return -1;
    }
    d->q = x[0].data;
    d->k = x[1].data;
    d->v = x[2].data;
    x[0].data = x[1].data = x[2].data = NULL;
  } else {
    uint64_t state = a->seed;
    d->q = malloc(d->nq * (size_t)esz + 1);
    d->k = malloc(d->nkv * (size_t)esz + 1);
    d->v = malloc(d->nkv * (size_t)esz + 1);
    if (!d->q || !d->k || !d->v) goto nomem;
    for (j = 0; j < d->nq; j++)
      hattn__elem_set(d->q, d->dtype, j, (float)(hattn__splitmix64(&state) >> 40) * 0x1p-23f - 1.0f);
    for (j = 0; j < d->nkv; j++)
      hattn__elem_set(d->k, d->dtype, j, (float)(hattn__splitmix64(&state) >> 40) * 0x1p-23f - 1.0f);
    for (j = 0; j < d->nkv; j++)
      hattn__elem_set(d->v, d->dtype, j, (float)(hattn__splitmix64(&state) >> 40) * 0x1p-23f - 1.0f);
  }
  d->o = malloc(d->nq * (size_t)esz + 1);
  d->lse = malloc(d->nlse * sizeof *d->lse + 1);
  if (!d->o || !d->lse) goto nomem;
  if (want_double) {
    d->qd = malloc(d->nq * sizeof *d->qd + 1);
    d->kd = malloc(d->nkv * sizeof *d->kd + 1);
    d->vd = malloc(d->nkv * sizeof *d->vd + 1);
    if (!d->qd || !d->kd || !d->vd) goto nomem;
    for (j = 0; j < d->nq; j++) d->qd[j] = hattn__elem_get(d->q, d->dtype, j);
    for (j = 0; j < d->nkv; j++) d->kd[j] = hattn__elem_get(d->k, d->dtype, j);
    for (j = 0; j < d->nkv; j++) d->vd[j] = hattn__elem_get(d->v, d->dtype, j);
  }
  return 0;
nomem:
  fprintf(stderr, "hattn %s: out of memory for the tensors\n", cmd);
  return -1;
}

/* Route topk(K) from the inputs for every batch entry into ENV. */
static int route_topk(const char *cmd, run_data *d, hattn__mask_env *env) {
  const hattn__shape *s = &d->shape;
  int64_t nb = hattn__nblocks64(s->lk), per = s->heads * nb * env->topk_k, b;
  if ((d->topk = malloc((size_t)(s->batch * per) * sizeof *d->topk + 1)) == NULL) {
    fprintf(stderr, "hattn %s: out of memory for the routing tables\n", cmd);
    return -1;
  }
  for (b = 0; b < s->batch; b++)
    if (hattn__topk_route(d->qd + (size_t)(b * s->heads * s->lq * s->head_dim),
                          d->kd + (size_t)(b * s->kv_heads * s->lk * s->head_dim), s->heads,
                          s->kv_heads, s->lq, s->lk, s->head_dim, env->topk_k,
                          d->topk + b * per) != HATTN_OK) {
      fprintf(stderr, "hattn %s: out of memory routing topk\n", cmd);
      return -1;
    }
  env->topk_blocks = d->topk;
  return 0;
}

static int write_outputs(const char *cmd, const char *dir, const run_data *d) {
  const hattn__shape *s = &d->shape;
  const int64_t sq[4] = {s->batch, s->heads, s->lq, s->head_dim};
  const int64_t sk[4] = {s->batch, s->kv_heads, s->lk, s->head_dim};
  tool_npy_type t = npy_type_of(d->dtype);
  char path[4200], err[4400];
  struct {
    const char *name;
    tool_npy_type type;
    int rank;
    const int64_t *shape;
    const void *data;
  } files[5] = {{"q", t, 4, sq, d->q}, {"k", t, 4, sk, d->k}, {"v", t, 4, sk, d->v},
                {"o", t, 4, sq, d->o}, {"lse", TOOL_NPY_F4, 3, sq, d->lse}};
  int i;
  if (tool_make_dir(cmd, dir)) return -1;
  for (i = 0; i < 5; i++) {
    snprintf(path, sizeof path, "%s/%s.npy", dir, files[i].name);
    if (tool_npy_write(path, files[i].type, files[i].rank, files[i].shape, files[i].data, err,
                       sizeof err)) {
      fprintf(stderr, "hattn %s: %s\n", cmd, err);
      return -1;
    }
  }
  return 0;
}

/* ---- the kernel ----------------------------------------------------------- */

/* The most timed runs of a kernel. */
#define RUN_REPS 20

/* How many timed runs the time operation makes: as many as about a second
** holds at SAMPLE_S seconds each, 1 to RUN_REPS. */
static int run_reps(void *ctx, double sample_s) {
  (void)ctx;
  if (!(sample_s > 1.0 / RUN_REPS)) return RUN_REPS;
  return sample_s >= 1.0 ? 1 : (int)(1.0 / sample_s);
}

/* qsort's order of doubles, ascending. */
static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

/* Paged K and V on the host: pools of A->page_size positions in A's
** layout, every page NaN until the logical K and V of D are scattered
** into the pages of a block table that lists a random permutation of the
** pool (one page more than the batch needs stays unused). */
typedef struct run_pages {
  int64_t need, npages;       /* pages per sequence, pages in the pool */
  size_t nelem;               /* elements of one pool */
  void *k, *v;
  int32_t *table;             /* [batch, need] */
} run_pages;

static int make_pages(const char *cmd, const run_args *a, const run_data *d, run_pages *pg) {
  const hattn__shape *s = &d->shape;
  int64_t P = a->page_size, b, h, t, i, *perm = NULL;
  int hnd = a->page_layout != NULL && strcmp(a->page_layout, "hnd") == 0;
  size_t esz = (size_t)hattn__dtype_size(d->dtype);
  uint64_t state = a->seed ^ 0x70616765ull;

  pg->need = (s->lk + P - 1) / P;
  pg->npages = s->batch * pg->need + 1;
  if (count4(pg->npages, P, s->kv_heads, s->head_dim) < 0 || pg->npages > INT32_MAX) {
    fprintf(stderr, "hattn %s: the page pool is too large\n", cmd);
    return -1;
  }
  pg->nelem = (size_t)(pg->npages * P * s->kv_heads * s->head_dim);
  pg->k = malloc(pg->nelem * esz + 1);
  pg->v = malloc(pg->nelem * esz + 1);
  pg->table = malloc((size_t)(s->batch * pg->need) * sizeof *pg->table + 1);
  perm = malloc((size_t)pg->npages * sizeof *perm);
  if (!pg->k || !pg->v || !pg->table || !perm) {
    free(perm);
    fprintf(stderr, "hattn %s: out of memory for the page pool\n", cmd);
    return -1;
  }
  for (i = 0; i < pg->npages; i++) perm[i] = i;
  for (i = pg->npages - 1; i > 0; i--) {
    int64_t j = (int64_t)(hattn__splitmix64(&state) % (uint64_t)(i + 1)), x = perm[i];
    perm[i] = perm[j], perm[j] = x;
  }
  for (i = 0; i < s->batch * pg->need; i++) pg->table[i] = (int32_t)perm[i];
  free(perm);
  for (i = 0; i < (int64_t)pg->nelem; i++) {
    hattn__elem_set(pg->k, d->dtype, (size_t)i, NAN);
    hattn__elem_set(pg->v, d->dtype, (size_t)i, NAN);
  }
  for (b = 0; b < s->batch; b++)
    for (h = 0; h < s->kv_heads; h++)
      for (t = 0; t < s->lk; t++) {
        int64_t page = pg->table[b * pg->need + t / P], slot = t % P;
        size_t src = (size_t)(((b * s->kv_heads + h) * s->lk + t) * s->head_dim);
        size_t dst = (size_t)((hnd ? (page * s->kv_heads + h) * P + slot : (page * P + slot) * s->kv_heads + h) *
                              s->head_dim);
        memcpy((char *)pg->k + dst * esz, (char *)d->k + src * esz, (size_t)s->head_dim * esz);
        memcpy((char *)pg->v + dst * esz, (char *)d->v + src * esz, (size_t)s->head_dim * esz);
      }
  return 0;
}

static void pages_free(run_pages *pg) {
  free(pg->k);
  free(pg->v);
  free(pg->table);
}

/* One launch of KERN on SET: on PROB with the lengths LENS in the device's
** memory when not NULL (a backend whose kernels read them), through VL (a
** variable-length batch of a problem per pair of lengths) when not NULL,
** else on PROB; K and V paged as PG says when not NULL. */
static int launch_one(const hattn__backend_i *be, void *dev, void *kern, void *prob, const hattn__lens *lens,
                      const hattn__varlen *vl, const hattn__shape *s, hattn__dtype dtype, hattn__tensor_set *set,
                      const hattn__paged *pg, char *err, size_t errlen) {
  if (lens != NULL)
    return be->launch_varlen(dev, kern, prob, &set->q, &set->k, &set->v, pg, lens, &set->o, &set->lse, NULL, 1, err,
                             errlen);
  if (vl != NULL)
    return hattn__varlen_launch(be, dev, kern, vl, s, dtype, &set->q, &set->k, &set->v, pg, &set->o, &set->lse, err,
                                errlen);
  if (pg != NULL)
    return be->launch_paged(dev, kern, prob, &set->q, &set->k, &set->v, pg, &set->o, &set->lse, NULL, 1, err,
                            errlen);
  return be->launch(dev, kern, prob, &set->q, &set->k, &set->v, &set->o, &set->lse, NULL, err, errlen);
}

/* The median of N sorted SAMPLES (microseconds) in milliseconds. */
static double median_ms(double *samples, int n) {
  qsort(samples, (size_t)n, sizeof *samples, cmp_double);
  return n > 0 ? (n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2])) / 1e3 : 0;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/*
** Get pattern P's kernel on device 0 of backend BE: compiled with the
** tiles of A, or from the runtime's lookup with --db.  Upload D's inputs
** and the plan, run once on outputs poisoned with 0xFF bytes (NaN),
** download O and LSE into D, then time the kernel with the backend's time
** operation (its warm-up, then the median of up to RUN_REPS runs, as many
** as about a second holds).  Writes the configuration into CONFIG and the
** time into *MS.  Returns TOOL_OK, or prints why not and returns TOOL_USAGE.
*/
static int run_kernel(const char *cmd, const hattn__backend_i *be, const run_args *a, const hattn__pattern *p,
                      const hattn__mask_env *env, run_data *d, char *config, size_t configlen, double *ms) {
  const hattn__shape *s = &d->shape;
  const hattn__tile tile = {(int)a->bm, (int)a->bn, (int)a->rows, 0};
  const char *from = "compiled";
  void *dev = NULL, *kern = NULL, *prob = NULL, *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL, *dl = NULL;
  void *dt = NULL, *dlens = NULL;
  hattn__varlen *vl = NULL;
  hattn__lens lens, *lensp = NULL;
  run_pages pages;
  hattn__paged paged;
  size_t nk = d->nkv;
  size_t esz = (size_t)hattn__dtype_size(d->dtype);
  hattn__kcache *kc = NULL;
  hattn__kernel_desc desc;
  hattn__config cfg;
  hattn__tensor_set set;
  hattn__ident id;
  double samples[RUN_REPS];
  char err[16384], text[200], key[HATTN__KC_KEY_LEN];
  int rc = TOOL_USAGE, n = 0;

  memset(&cfg, 0, sizeof cfg);
  memset(&pages, 0, sizeof pages);
  if (a->page_size > 0 && (be->version < 6 || be->launch_paged == NULL)) {
    fprintf(stderr, "hattn %s: paged K and V (--page-size) are not supported on the %s backend yet\n", cmd,
            be->name);
    goto done;
  }
  if (a->page_size > 0) {
    if (make_pages(cmd, a, d, &pages)) goto done;
    nk = pages.nelem;
  }
  if (be->dev_open(0, (int)a->threads, &dev, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn %s: %s\n", cmd, err);
    goto done;
  }
  desc.pattern = p;
  desc.dtype = d->dtype;
  desc.head_dim = (int)s->head_dim;
  if (a->db) {
    /* The runtime's lookup: memory, then the database, then a compile of
    ** the default configuration that it stores. */
    hattn__kcache_opts ko = {be->id, a->db, 0, dev};
    hattn__kc_kernel *kk;
    if (hattn__kcache_open(&ko, &kc, err, sizeof err) != HATTN_OK ||
        hattn__kcache_get(kc, p, d->dtype, (int)s->head_dim, s->lq, s->lk, s->batch * s->heads, &kk, err, sizeof err) !=
            HATTN_OK) {
      fprintf(stderr, "hattn %s: cannot get the kernel of '%s': %s\n", cmd, p->name, err);
      goto done;
    }
    kern = kk->kern;
    cfg = kk->cfg;
    from = hattn__kc_source_name(kk->source);
  } else {
    be->config_default(dev, &desc, &cfg);
    if (be->config_tile(&desc, &tile, &cfg, err, sizeof err) != HATTN_OK ||
        be->config_check(&desc, &cfg, err, sizeof err) != HATTN_OK) {
      fprintf(stderr, "hattn %s: %s\n", cmd, err);
      goto done;
    }
    be->ident(dev, &id);
    be->config_text(&cfg, 0, text, sizeof text);
    hattn__kc_key(p->canon, d->dtype, (int)s->head_dim, be->id, id.target, text, key);
    if (be->compile == NULL) snprintf(err, sizeof err, "this hattn compiles no %s kernels", be->name);
    if (be->compile == NULL || be->compile(dev, &desc, &cfg, key, &kern, err, sizeof err) != HATTN_OK) {
      fprintf(stderr, "hattn %s: cannot compile the kernel of '%s': %s\n", cmd, p->name, err);
      goto done;
    }
  }
  cfg.threads = (int)a->threads;
  /* Lengths: to the device where the kernels read them (CUDA), else a
  ** problem per pair of lengths (varlen.c). */
  memset(&lens, 0, sizeof lens);
  if ((a->q_lens != NULL || a->k_lens != NULL) && be->version >= 8 && be->launch_varlen != NULL) {
    size_t nb = (size_t)s->batch * sizeof(int32_t);
    if (be->mem_alloc(dev, 2 * nb, &dlens, err, sizeof err) != HATTN_OK ||
        (a->q_lens && be->mem_upload(dev, dlens, a->q_lens, nb, err, sizeof err) != HATTN_OK) ||
        (a->k_lens && be->mem_upload(dev, (char *)dlens + nb, a->k_lens, nb, err, sizeof err) != HATTN_OK)) {
      fprintf(stderr, "hattn %s: %s\n", cmd, err);
      goto done;
    }
    lens.q_lens = a->q_lens ? dlens : NULL;
    lens.k_lens = a->k_lens ? (const int32_t *)((char *)dlens + nb) : NULL;
    lensp = &lens;
  }
  if ((lensp == NULL && (a->q_lens != NULL || a->k_lens != NULL)
           ? hattn__varlen_create(be, dev, &desc, &cfg, s, env, a->q_lens, a->k_lens, &vl, err, sizeof err)
           : be->problem_create(dev, &desc, &cfg, s, env, &prob, err, sizeof err)) != HATTN_OK ||
      be->mem_alloc(dev, d->nq * esz, &dq, err, sizeof err) != HATTN_OK ||
      be->mem_alloc(dev, nk * esz, &dk, err, sizeof err) != HATTN_OK ||
      be->mem_alloc(dev, nk * esz, &dv, err, sizeof err) != HATTN_OK ||
      be->mem_alloc(dev, d->nq * esz, &dout, err, sizeof err) != HATTN_OK ||
      be->mem_alloc(dev, d->nlse * sizeof(float), &dl, err, sizeof err) != HATTN_OK ||
      be->mem_upload(dev, dq, d->q, d->nq * esz, err, sizeof err) != HATTN_OK ||
      be->mem_upload(dev, dk, pages.k ? pages.k : d->k, nk * esz, err, sizeof err) != HATTN_OK ||
      be->mem_upload(dev, dv, pages.v ? pages.v : d->v, nk * esz, err, sizeof err) != HATTN_OK ||
      be->mem_set(dev, dout, 0xff, d->nq * esz, err, sizeof err) != HATTN_OK ||
      be->mem_set(dev, dl, 0xff, d->nlse * sizeof(float), err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn %s: %s\n", cmd, err);
    goto done;
  }
  set.q.data = dq, set.k.data = dk, set.v.data = dv, set.o.data = dout, set.lse.data = dl;
  hattn__tensor_strides(s, &set.q, &set.k, &set.v, &set.o, &set.lse);
  if (a->page_size > 0 || vl != NULL || lensp != NULL) {
    /* Paged: the pools as cpu.h's hattn__paged reads them, the table
    ** uploaded; and variable-length batches.  Timed by the wall clock
    ** around each launch (the time operation launches one problem on
    ** contiguous K and V only). */
    int64_t P = a->page_size, D = s->head_dim, HK = s->kv_heads;
    int reps;
    int hnd = a->page_layout != NULL && strcmp(a->page_layout, "hnd") == 0;
    size_t tbytes = (size_t)(s->batch * pages.need) * sizeof(int32_t);
    double t0;
    if (a->page_size > 0) {
      set.k.stride[0] = set.v.stride[0] = 0;
      set.k.stride[1] = set.v.stride[1] = hnd ? P * D : D;
      set.k.stride[2] = set.v.stride[2] = hnd ? D : HK * D;
      if (be->mem_alloc(dev, tbytes, &dt, err, sizeof err) != HATTN_OK ||
          be->mem_upload(dev, dt, pages.table, tbytes, err, sizeof err) != HATTN_OK) {
        fprintf(stderr, "hattn %s: %s\n", cmd, err);
        goto done;
      }
      paged.block_table = dt;
      paged.table_stride = pages.need;
      paged.page_size = P;
      paged.npages = pages.npages;
      paged.k_page_stride = paged.v_page_stride = P * HK * D;
    }
    /* The first run writes the outputs from poison and is the warm-up. */
    t0 = now_us();
    if (launch_one(be, dev, kern, prob, lensp, vl, s, d->dtype, &set, a->page_size > 0 ? &paged : NULL, err, sizeof err) !=
            HATTN_OK ||
        be->mem_download(dev, d->o, dout, d->nq * esz, err, sizeof err) != HATTN_OK ||
        be->mem_download(dev, d->lse, dl, d->nlse * sizeof(float), err, sizeof err) != HATTN_OK) {
      fprintf(stderr, "hattn %s: %s\n", cmd, err);
      goto done;
    }
    reps = run_reps(NULL, (now_us() - t0) / 1e6);
    for (n = 0; n < reps; n++) {
      t0 = now_us();
      if (launch_one(be, dev, kern, prob, lensp, vl, s, d->dtype, &set, a->page_size > 0 ? &paged : NULL, err,
                     sizeof err) != HATTN_OK) {
        fprintf(stderr, "hattn %s: %s\n", cmd, err);
        goto done;
      }
      samples[n] = now_us() - t0;
    }
    *ms = median_ms(samples, n);
  } else if (be->launch(dev, kern, prob, &set.q, &set.k, &set.v, &set.o, &set.lse, NULL, err, sizeof err) != HATTN_OK ||
      be->mem_download(dev, d->o, dout, d->nq * esz, err, sizeof err) != HATTN_OK ||
      be->mem_download(dev, d->lse, dl, d->nlse * sizeof(float), err, sizeof err) != HATTN_OK ||
      be->time(dev, kern, prob, &desc, &cfg, &set, 1, 0, run_reps, NULL, RUN_REPS, samples, &n, err, sizeof err) !=
          HATTN_OK) {
    fprintf(stderr, "hattn %s: %s\n", cmd, err);
    goto done;
  } else {
    *ms = median_ms(samples, n);
  }
  be->config_describe(dev, &cfg, text, sizeof text);
  snprintf(config, configlen, "%s, kernel %s", text, from);
  rc = TOOL_OK;
done:
  if (dev != NULL) {
    be->mem_free(dev, dq);
    be->mem_free(dev, dk);
    be->mem_free(dev, dv);
    be->mem_free(dev, dout);
    be->mem_free(dev, dl);
    be->mem_free(dev, dt);
    be->mem_free(dev, dlens);
  }
  pages_free(&pages);
  hattn__varlen_destroy(be, vl);
  if (prob != NULL) be->problem_destroy(prob);
  hattn__kcache_close(kc);
  be->dev_close(dev);
  return rc;
}

/* ---- run and verify -------------------------------------------------------- */

/* What the float64 reference does a second, in visible pairs times head
** dim (one thread, measured at head dim 128). */
#define REF_RATE 3e8

/* The seconds past which verify says how long the reference will take,
** unless HATTN_VERIFY_NOTE_S says otherwise. */
#define REF_NOTE_S 10.0

/* Say on stderr how long the float64 reference of P at shape S and ENV
** will take, when that is more than HATTN_VERIFY_NOTE_S (default
** REF_NOTE_S) seconds: its work is the visible pairs times the head dim. */
static void reference_note(const char *cmd, const hattn__pattern *p, const hattn__shape *s,
                           const hattn__mask_env *env) {
  const char *e = getenv("HATTN_VERIFY_NOTE_S");
  double limit = e && *e ? atof(e) : REF_NOTE_S, pairs = 0, secs;
  hattn__plan *plan = NULL;
  char err[256], buf[32];
  int64_t t;
  if (hattn__plan_build(p->lowered, env, 128, 128, &plan, err, sizeof err) != HATTN_OK) return;
  for (t = 0; t < plan->ntables; t++) pairs += (double)hattn__plan_count_visible(plan, p->lowered, t, env);
  if (plan->ntables == 1) pairs *= (double)(s->batch * s->heads);
  hattn__plan_destroy(plan);
  secs = pairs * (double)s->head_dim / REF_RATE;
  if (secs >= limit)
    fprintf(stderr, "hattn %s: note: the float64 reference does %s visible pairs at head dim %lld; this takes about "
                    "%.2g s\n", cmd, tool_commas((int64_t)pairs, buf), (long long)s->head_dim, secs);
}

static int run_main(int argc, char **argv, int verify) {
  const char *cmd = verify ? "verify" : "run";
  run_args a;
  run_data d;
  tool_npy x[3];
  hattn__spec *spec = NULL;
  hattn__mask_env env;
  const hattn__pattern *p;
  double *oref = NULL, *lref = NULL, *ogot = NULL, *lgot = NULL, ms = 0, eo = 0, el = 0, tol = 0;
  char config[256] = "", err[1024];
  const hattn__backend_i *be;
  int rc = TOOL_USAGE, pi, r;
  size_t j;

  memset(&a, 0, sizeof a);
  memset(&d, 0, sizeof d);
  memset(x, 0, sizeof x);
  r = parse_args(argc, argv, verify ? verify_usage : run_usage, &a);
  if (r != 0) {
    rc = r > 0 ? TOOL_OK : TOOL_USAGE;
    goto done;
  }
  if ((be = tool_backend(cmd, a.backend)) == NULL) goto done;
  if ((spec = tool_load_spec(a.file)) == NULL) goto done;
  if (a.pattern == NULL && spec->npatterns != 1) {
    fprintf(stderr, "hattn %s: %s has %d patterns: name one with --pattern\n", cmd, a.file,
            spec->npatterns);
    goto done;
  }
  pi = a.pattern ? hattn__spec_find_pattern(spec, a.pattern) : 0;
  if (pi < 0) {
    fprintf(stderr, "hattn %s: no pattern '%s' in %s\n", cmd, a.pattern, a.file);
    goto done;
  }
  p = &spec->patterns[pi];
  if (a.in_dir && read_inputs(cmd, &a, x)) goto done;
  if (a.q_lens != NULL || a.k_lens != NULL) {
    /* A variable-length batch: one length per entry; the padded lengths
    ** are the longest unless --seqlen or --in says. */
    int64_t n = a.q_lens ? a.nq_lens : a.nk_lens, mq = 0, mk = 0, i;
    if (a.batch == 0) a.batch = n;
    if (a.batch != n) {
      fprintf(stderr, "hattn %s: %s has %lld lengths, but the batch is %lld: one length per batch entry\n", cmd,
              a.q_lens ? "--q-lens" : "--kv-lens", (long long)n, (long long)a.batch);
      goto done;
    }
    for (i = 0; i < n; i++) {
      if (a.q_lens && a.q_lens[i] > mq) mq = a.q_lens[i];
      if (a.k_lens && a.k_lens[i] > mk) mk = a.k_lens[i];
    }
    if (a.lq == 0) a.lq = mq, a.lk = mq;
    if (a.in_dir == NULL && !a.have_lk && a.k_lens) a.lk = mk;
  }

  /* The shape: the options, then what --in gave, then the defaults. */
  if (a.batch == 0) a.batch = 1;
  if (a.heads == 0) a.heads = 8;
  if (a.kv_heads == 0) a.kv_heads = a.heads;
  if (a.head_dim == 0) a.head_dim = 128;
  if (a.heads % a.kv_heads != 0) {
    fprintf(stderr, "hattn %s: --kv-heads %lld must divide --heads %lld\n", cmd, (long long)a.kv_heads,
            (long long)a.heads);
    goto done;
  }
  if (!a.have_dtype) a.dtype = be->dtype_default;
  if (tool_backend_dtype(cmd, be, a.dtype)) goto done;
  if (a.head_dim > 1024) {
    fprintf(stderr, "hattn %s: --head-dim %lld is above the limit of 1024\n", cmd, (long long)a.head_dim);
    goto done;
  }
  if (!a.have_seed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    a.seed = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32;
    a.seed %= 1000000000000ull; /* short enough to retype */
  }
  d.shape.batch = a.batch;
  d.shape.heads = a.heads;
  d.shape.kv_heads = a.kv_heads;
  d.shape.lq = a.lq;
  d.shape.lk = a.lk;
  d.shape.head_dim = a.head_dim;
  d.dtype = a.dtype;
  if (make_inputs(cmd, &a, &d, a.in_dir ? x : NULL, verify || (p->needs & HATTN_NEEDS_TOPK))) goto done;

  if (tool_rtdata_env(&a.rt, spec, p, a.lq, a.lk, &env)) goto done;
  env.batch = a.batch;
  env.heads = a.heads;
  if (a.have_q_offset || a.have_k_offset) {
    env.offsets_set = 1;
    env.q_offset = a.have_q_offset ? a.q_offset : a.lk - a.lq;
    env.k_offset = a.k_offset;
    if (hattn__mask_env_check(p->lowered, &env, spec->nlayouts, err, sizeof err) != HATTN_OK) {
      fprintf(stderr, "hattn %s: %s\n", cmd, err);
      goto done;
    }
  }
  if (hattn__varlen_check(be, p, &d.shape, env.offsets_set, a.q_lens, a.k_lens, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn %s: %s\n", cmd, err);
    goto done;
  }
  if ((p->needs & HATTN_NEEDS_TOPK) && route_topk(cmd, &d, &env)) goto done;

  if (verify) reference_note(cmd, p, &d.shape, &env);
  rc = run_kernel(cmd, be, &a, p, &env, &d, config, sizeof config, &ms);
  if (rc != TOOL_OK) goto done;
  rc = TOOL_USAGE;

  if (verify) {
    oref = malloc(d.nq * sizeof *oref + 1);
    ogot = malloc(d.nq * sizeof *ogot + 1);
    lref = malloc(d.nlse * sizeof *lref + 1);
    lgot = malloc(d.nlse * sizeof *lgot + 1);
    if (!oref || !ogot || !lref || !lgot) {
      fprintf(stderr, "hattn %s: out of memory for the reference\n", cmd);
      goto done;
    }
    if ((a.q_lens != NULL || a.k_lens != NULL
             ? hattn__reference_varlen(p, &d.shape, &env, spec->nlayouts, a.q_lens, a.k_lens, d.qd, d.kd, d.vd, oref,
                                       lref, err, sizeof err)
             : hattn__reference(p, &d.shape, &env, spec->nlayouts, d.qd, d.kd, d.vd, oref, lref, err,
                                sizeof err)) != HATTN_OK) {
      fprintf(stderr, "hattn %s: the reference: %s\n", cmd, err);
      goto done;
    }
    for (j = 0; j < d.nq; j++) ogot[j] = hattn__elem_get(d.o, d.dtype, j);
    for (j = 0; j < d.nlse; j++) lgot[j] = d.lse[j];
    eo = hattn__rel_error(ogot, oref, d.nq);
    el = hattn__rel_error(lgot, lref, d.nlse);
  }
  if (a.out_dir && write_outputs(cmd, a.out_dir, &d)) goto done;

  printf("%s = %s | q %lldx%lldx%lldx%lld kv %lldx%lldx%lldx%lld %s", p->name, p->canon,
         (long long)a.batch, (long long)a.heads, (long long)a.lq, (long long)a.head_dim,
         (long long)a.batch, (long long)a.kv_heads, (long long)a.lk, (long long)a.head_dim,
         hattn__dtype_name(d.dtype));
  if (a.page_size > 0)
    printf(" paged %lld %s", (long long)a.page_size, a.page_layout ? a.page_layout : "nhd");
  if (a.in_dir) printf(" from %s", a.in_dir);
  else printf(" seed %llu", (unsigned long long)a.seed);
  if (env.offsets_set) printf(" | q_offset %lld k_offset %lld", (long long)env.q_offset, (long long)env.k_offset);
  if (a.q_lens != NULL || a.k_lens != NULL) {
    int64_t i;
    printf(" | lens");
    for (i = 0; i < a.batch; i++)
      printf("%s%d/%d", i ? "," : " ", (int)(a.q_lens ? a.q_lens[i] : a.lq), (int)(a.k_lens ? a.k_lens[i] : a.lk));
  }
  printf(" | %s | kernel %.3f ms", config, ms);
  if (a.out_dir) printf(" | wrote %s", a.out_dir);
  rc = TOOL_OK;
  if (verify) {
    tol = d.dtype == HATTN_DTYPE_FP32 ? 1e-5 : 1e-2;
    r = eo <= tol && el <= tol;
    printf(" | error O %.3g LSE %.3g, tolerance %g: %s", eo, el, tol, r ? "ok" : "FAIL");
    if (!r) rc = TOOL_FAIL;
  }
  printf("\n");
  fflush(stdout);
  if (rc == TOOL_FAIL)
    fprintf(stderr, "hattn verify: the error of %s exceeds the %s tolerance %g\n",
            eo > tol ? "O" : "LSE", hattn__dtype_name(d.dtype), tol);
done:
  free(oref);
  free(ogot);
  free(lref);
  free(lgot);
  data_free(&d);
  tool_npy_free(&x[0]);
  tool_npy_free(&x[1]);
  tool_npy_free(&x[2]);
  hattn__spec_destroy(spec);
  tool_rtdata_free(&a.rt);
  free(a.q_lens);
  free(a.k_lens);
  return rc;
}

int hattn__cmd_run(int argc, char **argv) { return run_main(argc, argv, 0); }

int hattn__cmd_verify(int argc, char **argv) { return run_main(argc, argv, 1); }
