/*
** emit_cuda.c: the CUDA kernel emitter.  See emit_cuda.h and cuda_abi.h.
**
** A generated source is, in order: a line that says it is generated, a
** comment with the pattern's canonical text and key, the text of
** cuda_abi.h, the architecture layer (templates/arch_sm80.cuh, and
** templates/arch_sm90.cuh for the warpgroup kernel), the pieces the kernel
** bodies share (templates/cuda_common.cuh), the kernel body of the kernel
** kind and configuration (templates/attn_fwd.cuh or, for the warpgroup
** kernel, templates/attn_fwd_sm90.cuh: a function template over a Config
** and a Pattern type), then what is generated: the configuration as struct
** hattn_config; the element predicate hattn_visible() written from the
** lowered mask (one line per operation, operands before their users), the score
** modifiers hattn_score() and hattn_slope() and the band constants of
** closed-form key blocks, gathered as struct hattn_pattern; and the extern
** "C" entry point that instantiates the body with the two.  The body comes
** before the generated code and uses none of it but its template arguments
** (the contract of templates/cuda_common.cuh).  Nothing of the spec's text
** reaches the source except the canonical text, inside a comment.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "emit_cuda.h"
#include "lower.h"
#include "templates.h"

/* ---- a growing string ---------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_grow(sbuf *b, size_t need) {
  size_t cap;
  char *p;
  if (b->oom || b->len + need + 1 <= b->cap) return;
  cap = b->cap ? b->cap : 4096;
  while (cap < b->len + need + 1) cap *= 2;
  p = realloc(b->p, cap);
  if (p == NULL) {
    b->oom = 1;
    return;
  }
  b->p = p;
  b->cap = cap;
}

static void sb_puts(sbuf *b, const char *s) {
  size_t n = strlen(s);
  sb_grow(b, n);
  if (b->oom) return;
  memcpy(b->p + b->len, s, n + 1);
  b->len += n;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  sb_grow(b, (size_t)n);
  if (b->oom) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* ---- the element predicate ------------------------------------------------ */

static void comment_text(sbuf *b, const char *s);

/* The line of operation I of M: "const bool vI = ...;", one case per
** operation of lower.h.  Returns HATTN_OK, or HATTN_ENOTSUP with a sentence
** in ERR when the kernel's arguments have no room for the table. */
static int emit_op(sbuf *b, const hattn__mask *m, int i, char *err, size_t errlen) {
  const hattn__op *op = &m->ops[i];
  long long A = (long long)op->a;
  const char *sep = "";
  int j;
  switch (op->kind) {
  case HATTN_OP_DIST:
    sb_printf(b, "  const bool v%d = ", i);
    if (op->lo > -HATTN_MASK_INF) sb_printf(b, "%sd >= %lld", sep, (long long)op->lo), sep = " && ";
    if (op->hi < HATTN_MASK_INF) sb_printf(b, "%sd <= %lld", sep, (long long)op->hi), sep = " && ";
    /* C++ %: the remainder takes the sign of d, as in mask.c. */
    if (op->m > 1) sb_printf(b, "%sd %% %lld == 0", sep, (long long)op->m), sep = " && ";
    sb_puts(b, *sep ? ";" : "true;");
    break;
  case HATTN_OP_KPOS_LT:
    sb_printf(b, "  const bool v%d = kpos < %lld;", i, A);
    break;
  case HATTN_OP_QPOS_LT:
    sb_printf(b, "  const bool v%d = qpos < %lld;", i, A);
    break;
  case HATTN_OP_CHUNK:
    sb_printf(b, "  const bool v%d = hattn_floordiv(qpos, %lld) == kpos / %lld;", i, A, A);
    break;
  case HATTN_OP_DOC:
    sb_puts(b, "  /* a query position outside [0, lk) is in no document; key positions are rows */\n");
    sb_printf(b, "  const bool v%d = qpos >= 0 && qpos < a.lk && a.doc_id[qpos] == a.doc_id[kpos];", i);
    break;
  case HATTN_OP_LAYOUT:
    if (op->a >= 4) {
      snprintf(err, errlen,
               "the CUDA backend supports at most 4 block layouts, but the pattern uses layout number %lld",
               A);
      return HATTN_ENOTSUP;
    }
    sb_printf(b, "  /* layout %lld, by row indices q and k */\n", A);
    sb_printf(b, "  const long long bq%d = q / a.layout_shape[%lld][0];\n", i, A);
    sb_printf(b, "  const long long bk%d = (kpos - a.k_pos0) / a.layout_shape[%lld][1];\n", i, A);
    sb_printf(b, "  const bool v%d = bq%d < a.layout_shape[%lld][2] && bk%d < a.layout_shape[%lld][3] &&\n",
              i, i, A, i, A);
    sb_printf(b, "      a.layout_bits[%lld][bq%d * a.layout_shape[%lld][3] + bk%d] != 0;", A, i, A, i);
    break;
  case HATTN_OP_RANDOM:
    if (op->a >= 4) {
      snprintf(err, errlen, "the CUDA backend supports at most 4 random atoms in a pattern");
      return HATTN_ENOTSUP;
    }
    sb_printf(b, "  /* bit (kpos / 64) of row (qpos / 64) of random table %lld */\n", A);
    sb_printf(b, "  const bool v%d = qpos >= 0 &&\n", i);
    sb_printf(b, "      ((a.random_bits[%lld][(long long)(qpos >> 6) * a.random_words + (kpos >> 12)] >> ((kpos >> 6) & 63)) & 1ull) != 0;",
              A);
    break;
  case HATTN_OP_TOPK:
    sb_puts(b, "  /* key 64-block among the routed blocks of query 64-block qpos / 64 */\n");
    sb_printf(b, "  bool v%d = false;\n", i);
    sb_puts(b, "  if (qpos >= 0) {\n");
    sb_puts(b, "    const int *row = a.topk_blocks + ((long long)bh * ((a.lk + 63) >> 6) + (qpos >> 6)) * a.topk_k;\n");
    /* Rows of K entries up to HATTN_TOPK_UNROLL, else of the staged width
    ** a.topk_k, which is at most the key blocks that exist (gen/lower.h). */
    if (A <= HATTN_TOPK_UNROLL)
      sb_printf(b, "    for (int i = 0; i < %lld; i++)\n", A);
    else
      sb_puts(b, "    for (int i = 0; i < a.topk_k; i++)\n");
    sb_printf(b, "      if (row[i] == (kpos >> 6)) v%d = true;\n", i);
    sb_puts(b, "  }");
    break;
  case HATTN_OP_NOT:
    sb_printf(b, "  const bool v%d = !v%d;", i, op->args[0]);
    break;
  case HATTN_OP_AND:
  case HATTN_OP_OR:
    sb_printf(b, "  const bool v%d = ", i);
    for (j = 0; j < op->nargs; j++)
      sb_printf(b, "%sv%d", j ? (op->kind == HATTN_OP_AND ? " && " : " || ") : "", op->args[j]);
    sb_puts(b, ";");
    break;
  default:
    snprintf(err, errlen, "the CUDA emitter met an unknown mask operation %d", (int)op->kind);
    return HATTN_EINVAL;
  }
  if (op->what) {
    sb_puts(b, "  /* ");
    comment_text(b, op->what);
    sb_puts(b, " */");
  }
  sb_puts(b, "\n");
  return HATTN_OK;
}

static int emit_visible(sbuf *b, const hattn__pattern *pat, char *err, size_t errlen) {
  const hattn__mask *m = pat->lowered;
  int i, rc = HATTN_OK, need_d = 0;
  sb_puts(b,
          "/*\n"
          "** Whether key row k (position kpos = k + a.k_pos0) is visible to query row q\n"
          "** (position qpos = q + a.q_pos0) of flattened head bh; gen/mask.c's\n"
          "** hattn__mask_visible.  Called only for q < lq and k < lk.\n"
          "*/\n"
          "__device__ __forceinline__ bool hattn_visible(int q, int qpos, int kpos,\n"
          "                                              const hattn_cuda_args &a, int bh) {\n");
  sb_puts(b, "  (void)q;\n  (void)qpos;\n  (void)kpos;\n  (void)a;\n  (void)bh;\n");
  for (i = 0; i < m->nops; i++) need_d |= m->ops[i].kind == HATTN_OP_DIST;
  if (need_d) sb_puts(b, "  const int d = qpos - kpos;\n");
  for (i = 0; i < m->nops && rc == HATTN_OK; i++) rc = emit_op(b, m, i, err, errlen);
  sb_printf(b, "  return v%d;\n}\n\n", m->nops - 1);
  return rc;
}

/* ---- closed-form key blocks ---------------------------------------------- */

static void emit_band(sbuf *b, const hattn__pattern *pat) {
  const hattn__mask *m = pat->lowered;
  sb_puts(b, "/*\n"
             "** Closed-form key blocks: where the mask is a band of distances,\n"
             "** HATTN_BAND_LO <= qpos - kpos <= HATTN_BAND_HI, the kernel computes its\n"
             "** key blocks and which of them are FULL (hattn_band_blocks) instead of\n"
             "** reading the plan's lists.\n"
             "*/\n");
  sb_printf(b, "constexpr bool HATTN_BAND = %s;\n", m->band ? "true" : "false");
  sb_printf(b, "constexpr long long HATTN_BAND_LO = %lldLL;\n", (long long)m->band_lo);
  sb_printf(b, "constexpr long long HATTN_BAND_HI = %lldLL;\n\n", (long long)m->band_hi);
}

/* ---- modifiers ------------------------------------------------------------ */

/* V as a C++ float literal ("50.0f", "0.0199999996f"): round trip exact. */
static const char *float_lit(char *buf, size_t n, double v) {
  snprintf(buf, n - 3, "%.9g", v);
  if (strpbrk(buf, ".e") == NULL) strcat(buf, ".0");
  strcat(buf, "f");
  return buf;
}

static void emit_modifiers(sbuf *b, const hattn__pattern *pat) {
  char l1[48], l2[48];
  int has_mod = pat->softcap > 0 || pat->alibi != HATTN_ALIBI_NONE;
  sb_printf(b, "/* Whether hattn_score is more than the identity. */\n"
               "constexpr bool HATTN_HAS_SCORE_MOD = %s;\n\n",
            has_mod ? "true" : "false");
  sb_puts(b, "/* The ALiBi slope of head h (0 without ALiBi). */\n"
             "__device__ __forceinline__ float hattn_slope(const hattn_cuda_args &a, int h) {\n");
  switch (pat->alibi) {
  case HATTN_ALIBI_STANDARD:
    sb_puts(b, "  /* standard slopes m_h = 2^(-8 (h + 1) / H), unless the caller gave them */\n"
               "  if (a.alibi_slopes != 0) return a.alibi_slopes[h];\n"
               "  return exp2f(-8.0f * (float)(h + 1) / (float)a.heads);\n");
    break;
  case HATTN_ALIBI_FIXED:
    sb_printf(b, "  (void)a;\n  (void)h;\n  return %s;  /* alibi(M) */\n",
              float_lit(l1, sizeof l1, pat->alibi_slope));
    break;
  default:
    sb_puts(b, "  (void)a;\n  (void)h;\n  return 0.0f;\n");
    break;
  }
  sb_puts(b, "}\n\n");
  sb_puts(b, "/* The score of a pair from q.k * scale, in natural units: softcap, then ALiBi. */\n"
             "__device__ __forceinline__ float hattn_score(float s, int qpos, int kpos, float slope) {\n"
             "  (void)qpos;\n  (void)kpos;\n  (void)slope;\n");
  if (pat->softcap > 0)
    sb_printf(b, "  s = %s * tanhf(s * %s);  /* softcap(%.9g) */\n",
              float_lit(l1, sizeof l1, pat->softcap), float_lit(l2, sizeof l2, 1.0 / pat->softcap),
              pat->softcap);
  if (pat->alibi != HATTN_ALIBI_NONE)
    sb_puts(b, "  s += slope * (float)(kpos - qpos);  /* alibi */\n");
  sb_puts(b, "  return s;\n}\n\n");
}

/* ---- the kernel bodies and their arguments -------------------------------- */

/* A kernel body of templates/: the kernel kind it computes and on which
** kernel (WGMMA 0: mma.sync, sm_80 and later; 1: warpgroup MMA, sm_90a),
** its text and file, and the function template that the entry point
** instantiates as FN<hattn_config, hattn_pattern>(args). */
typedef struct kernel_body {
  hattn__cuda_kernel_kind kind;
  int wgmma;
  const char *text;
  const char *file;
  const char *fn;
} kernel_body;

static const kernel_body kernel_bodies[] = {
  {HATTN_CUDA_KERNEL_FWD, 0, hattn__tmpl_attn_fwd, "attn_fwd.cuh", "hattn_attn_fwd"},
  {HATTN_CUDA_KERNEL_FWD, 1, hattn__tmpl_attn_fwd_sm90, "attn_fwd_sm90.cuh", "hattn_attn_fwd_sm90"},
  {HATTN_CUDA_KERNEL_FWD, 2, hattn__tmpl_attn_fwd_sm90, "attn_fwd_sm90.cuh", "hattn_attn_fwd_sm90_ws"},
};

static const kernel_body *kernel_body_find(hattn__cuda_kernel_kind kind, int wgmma) {
  size_t i;
  for (i = 0; i < sizeof kernel_bodies / sizeof kernel_bodies[0]; i++)
    if (kernel_bodies[i].kind == kind && kernel_bodies[i].wgmma == wgmma) return &kernel_bodies[i];
  return NULL;
}

/* The entry point FN_NAME SUFFIX of BODY, PAGED ("true" or "false") its
** template argument: one parameter, the arguments, or for the
** warp-specialised kernel (wgmma 2) the TMA descriptors too, with launch
** bounds that leave each warpgroup the registers the body gives it
** (setmaxnreg): one CTA an SM with two consumer warpgroups or at head dim
** 256, else two. */
static void emit_entry(sbuf *b, const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                       const kernel_body *body, const char *fn_name, const char *suffix, const char *paged) {
  if (cfg->wgmma == 2) {
    int ctas = cfg->block_m == 64 && desc->head_dim <= 128 ? 2 : 1;
    sb_printf(b, "extern \"C\" __global__ void __launch_bounds__(%d, %d)\n"
                 "%s%s(const hattn_cuda_args args, const __grid_constant__ hattn_cuda_tmaps maps) {\n",
              cfg->warps * 32, ctas, fn_name, suffix);
    sb_printf(b, "  %s<hattn_config, hattn_pattern, %s>(args, maps);\n}\n", body->fn, paged);
  } else {
    sb_printf(b, "extern \"C\" __global__ void __launch_bounds__(%d)\n%s%s(const hattn_cuda_args args) {\n",
              cfg->warps * 32, fn_name, suffix);
    sb_printf(b, "  %s<hattn_config, hattn_pattern, %s>(args);\n}\n", body->fn, paged);
  }
}

/* The body's Config argument. */
static void emit_config(sbuf *b, const hattn__kernel_desc *desc, const hattn__cuda_config *cfg) {
  sb_puts(b, "/* The tile configuration: the kernel body's Config argument. */\n"
             "struct hattn_config {\n");
  sb_printf(b, "  static constexpr int block_m = %d;\n", cfg->block_m);
  sb_printf(b, "  static constexpr int block_n = %d;\n", cfg->block_n);
  sb_printf(b, "  static constexpr int head_dim = %d;\n", desc->head_dim);
  sb_printf(b, "  static constexpr int warps = %d;\n", cfg->warps);
  sb_printf(b, "  static constexpr int stages = %d;\n", cfg->stages);
  sb_printf(b, "  static constexpr bool is_bf16 = %s;  /* else fp16 */\n",
            desc->dtype == HATTN_DTYPE_BF16 ? "true" : "false");
  sb_puts(b, "  /* The decode kernels' tiles (gen/cuda_config.h). */\n");
  sb_printf(b, "  static constexpr int decode_block_n = %d;\n", hattn__cuda_decode_block_n(cfg, desc->head_dim));
  sb_printf(b, "  static constexpr int decode_warps = %d;\n", hattn__cuda_decode_warps(cfg));
  sb_printf(b, "  static constexpr int decode_stages = %d;\n};\n\n", HATTN_CUDA_DECODE_STAGES);
}

/* The body's Pattern argument: the predicate, the modifiers and the band
** constants written before it, under the names of the contract. */
static void emit_pattern_type(sbuf *b) {
  sb_puts(b, "/* The pattern above: the kernel body's Pattern argument. */\n"
             "struct hattn_pattern {\n"
             "  static constexpr bool band = HATTN_BAND;\n"
             "  static constexpr long long band_lo = HATTN_BAND_LO, band_hi = HATTN_BAND_HI;\n"
             "  static constexpr bool has_score_mod = HATTN_HAS_SCORE_MOD;\n"
             "  static __device__ __forceinline__ bool visible(int q, int qpos, int kpos,\n"
             "                                                 const hattn_cuda_args &a, int bh) {\n"
             "    return hattn_visible(q, qpos, kpos, a, bh);\n"
             "  }\n"
             "  static __device__ __forceinline__ float score(float s, int qpos, int kpos, float slope) {\n"
             "    return hattn_score(s, qpos, kpos, slope);\n"
             "  }\n"
             "  static __device__ __forceinline__ float slope(const hattn_cuda_args &a, int h) {\n"
             "    return hattn_slope(a, h);\n"
             "  }\n"
             "};\n\n");
}

/* ---- the whole source ------------------------------------------------------ */

/* Append S to B inside a comment: no "*" followed by "/", and only printable
** ASCII (the canonical text is ASCII already; this is a guard). */
static void comment_text(sbuf *b, const char *s) {
  char prev = 0;
  for (; *s; s++) {
    char c = *s;
    char one[2];
    if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e) c = '?';
    if (c == '/' && prev == '*') sb_puts(b, " ");
    one[0] = c;
    one[1] = 0;
    sb_puts(b, one);
    prev = c;
  }
}

static int valid_name(const char *s) {
  const char *c;
  if (s == NULL || *s == 0) return 0;
  if (*s >= '0' && *s <= '9') return 0;
  for (c = s; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
          *c == '_'))
      return 0;
  return 1;
}

int hattn__emit_cuda_kernel(hattn__cuda_kernel_kind kind, const hattn__kernel_desc *desc,
                            const hattn__cuda_config *cfg, const char *fn_name, char **out, char *err,
                            size_t errlen) {
  sbuf b = {0};
  const hattn__pattern *pat = desc->pattern;
  const kernel_body *body;
  int rc;

  *out = NULL;
  if (pat == NULL || pat->lowered == NULL) {
    snprintf(err, errlen, "no pattern to emit");
    return HATTN_EINVAL;
  }
  if (!valid_name(fn_name)) {
    snprintf(err, errlen, "a kernel name must be letters, digits and '_', not starting with a digit");
    return HATTN_EINVAL;
  }
  rc = hattn__cuda_config_check(desc, cfg, err, errlen);
  if (rc != HATTN_OK) return rc;
  body = kernel_body_find(kind, cfg->wgmma);
  if (body == NULL) {
    snprintf(err, errlen, "the CUDA emitter has no kernel of kind %d%s", (int)kind,
             cfg->wgmma ? " on wgmma" : "");
    return HATTN_ENOTSUP;
  }

  sb_puts(&b, "// Generated by hattn (gen/emit_cuda.c): do not edit.\n");
  sb_puts(&b, "/*\n** pattern: ");
  comment_text(&b, pat->canon ? pat->canon : "?");
  sb_printf(&b, "\n** key:     0x%016llx\n", (unsigned long long)pat->key);
  sb_printf(&b, "** dtype %s, head dim %d; block_m %d, block_n %d, %d warps, %d stages%s;\n"
                "** %zu bytes of dynamic shared memory, grid (ceil(lq / %d), batch * heads).\n*/\n\n",
            hattn__dtype_name(desc->dtype), desc->head_dim, cfg->block_m, cfg->block_n, cfg->warps,
            cfg->stages, cfg->wgmma == 2 ? ", warp-specialised, TMA and wgmma (sm_90a)" : cfg->wgmma ? ", wgmma (sm_90a)" : "", hattn__cuda_smem_bytes(desc, cfg),
            cfg->block_m);
  sb_puts(&b, hattn__tmpl_cuda_abi);
  if (cfg->wgmma)
    sb_puts(&b, "\n#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)\n"
                "#error \"this kernel uses wgmma: compile it for sm_90a\"\n"
                "#endif\n");
  sb_puts(&b, "\n/* ---- the architecture layer (templates/arch_sm80.cuh) ---- */\n\n");
  sb_puts(&b, hattn__tmpl_arch_sm80);
  if (cfg->wgmma) {
    sb_puts(&b, "\n/* ---- the architecture layer (templates/arch_sm90.cuh) ---- */\n\n");
    sb_puts(&b, hattn__tmpl_arch_sm90);
  }
  sb_puts(&b, "\n/* ---- shared pieces of the kernel bodies (templates/cuda_common.cuh) ---- */\n\n");
  sb_puts(&b, hattn__tmpl_cuda_common);
  sb_printf(&b, "\n/* ---- the kernel body (templates/%s) ---- */\n\n", body->file);
  sb_puts(&b, body->text);
  if (kind == HATTN_CUDA_KERNEL_FWD) {
    sb_puts(&b, "\n/* ---- the decode kernel bodies (templates/attn_decode.cuh) ---- */\n\n");
    sb_puts(&b, hattn__tmpl_attn_decode);
  }
  sb_puts(&b, "\n/* ---- the configuration ---- */\n\n");
  emit_config(&b, desc, cfg);
  sb_puts(&b, "/* ---- the pattern ---- */\n\n");
  sb_puts(&b, "/* Floor division by a positive divisor (a may be negative). */\n"
              "__device__ __forceinline__ int hattn_floordiv(int a, int b) {\n"
              "  const int q = a / b;\n"
              "  return (a % b != 0 && a < 0) ? q - 1 : q;\n"
              "}\n\n");
  rc = emit_visible(&b, pat, err, errlen);
  if (rc != HATTN_OK) goto fail;
  emit_modifiers(&b, pat);
  emit_band(&b, pat);
  emit_pattern_type(&b);
  sb_puts(&b, "/* ---- the entry point ---- */\n\n");
  emit_entry(&b, desc, cfg, body, fn_name, "", "false");
  if (kind == HATTN_CUDA_KERNEL_FWD) {
    sb_puts(&b, "\n/* The same on paged K and V (args.block_table set). */\n");
    emit_entry(&b, desc, cfg, body, fn_name, "_paged", "true");
    sb_puts(&b, "\n/* Few queries a sequence: packed GQA over split keys, then the splits' merge\n"
                "** (cuda_abi.h says how each is launched). */\n");
    sb_printf(&b, "extern \"C\" __global__ void __launch_bounds__(%d)\n%s_decode(const hattn_cuda_args args) {\n",
              hattn__cuda_decode_warps(cfg) * 32, fn_name);
    sb_puts(&b, "  hattn_attn_decode<hattn_config, hattn_pattern>(args);\n}\n\n");
    sb_printf(&b, "extern \"C\" __global__ void __launch_bounds__(128)\n%s_combine(const hattn_cuda_args args) {\n",
              fn_name);
    sb_puts(&b, "  hattn_attn_combine<hattn_config>(args);\n}\n");
  }
  if (b.oom) {
    rc = HATTN_ENOMEM;
    snprintf(err, errlen, "out of memory while writing the CUDA source");
    goto fail;
  }
  *out = b.p;
  return HATTN_OK;
fail:
  if (b.oom && rc == HATTN_OK) rc = HATTN_ENOMEM;
  free(b.p);
  return rc;
}

int hattn__emit_cuda(const hattn__kernel_desc *desc, const hattn__cuda_config *cfg,
                     const char *fn_name, char **out, char *err, size_t errlen) {
  return hattn__emit_cuda_kernel(HATTN_CUDA_KERNEL_FWD, desc, cfg, fn_name, out, err, errlen);
}

/* ---- the merge kernel ---------------------------------------------------------- */

/* The body of the merge kernel after hattn_elem, hattn_load and hattn_store
** of its dtype: what hattn_merge (hattn.h) computes, per output element. */
static const char merge_body[] =
    "/* Element (b, h, l, d) of a tensor with element strides S. */\n"
    "__device__ __forceinline__ long long hattn_at(const long long *s, long long b, long long h, long long l,\n"
    "                                              long long d) {\n"
    "  return b * s[0] + h * s[1] + l * s[2] + d * s[3];\n"
    "}\n"
    "\n"
    "/* One thread per output element: the row's largest finite LSE m, then\n"
    "** O = sum_i w_i O_i / sum_i w_i with w_i = exp(LSE_i - m), summed in\n"
    "** float32.  A part whose LSE is -inf adds nothing (its O is not read); a\n"
    "** row no part saw gets O = 0, LSE = -inf; a NaN LSE makes the row NaN. */\n"
    "__device__ __forceinline__ void hattn_merge(const hattn_cuda_merge_args &a) {\n"
    "  const long long n = a.dims[0] * a.dims[1] * a.dims[2] * a.dims[3];\n"
    "  for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;\n"
    "       idx += (long long)gridDim.x * blockDim.x) {\n"
    "    const long long d = idx % a.dims[3], r = idx / a.dims[3];\n"
    "    const long long l = r % a.dims[2], bh = r / a.dims[2];\n"
    "    const long long h = bh % a.dims[1], b = bh / a.dims[1];\n"
    "    float m = -INFINITY, sum = 0.f, acc = 0.f;\n"
    "    bool nan = false;\n"
    "    for (int i = 0; i < a.nparts; i++) {\n"
    "      const float x = a.lse[i][b * a.lse_stride[i][0] + h * a.lse_stride[i][1] + l * a.lse_stride[i][2]];\n"
    "      if (x != x) nan = true;\n"
    "      else if (x > m) m = x;\n"
    "    }\n"
    "    if (nan) m = NAN;\n"
    "    for (int i = 0; i < a.nparts; i++) {\n"
    "      const float x = a.lse[i][b * a.lse_stride[i][0] + h * a.lse_stride[i][1] + l * a.lse_stride[i][2]];\n"
    "      if (x == -INFINITY && !nan) continue;\n"
    "      const float w = expf(x - m);\n"
    "      sum += w;\n"
    "      acc += w * hattn_load((const hattn_elem *)a.o[i], hattn_at(a.o_stride[i], b, h, l, d));\n"
    "    }\n"
    "    hattn_store((hattn_elem *)a.out, hattn_at(a.out_stride, b, h, l, d), m == -INFINITY ? 0.f : acc / sum);\n"
    "    if (d == 0 && a.out_lse != nullptr)\n"
    "      a.out_lse[b * a.out_lse_stride[0] + h * a.out_lse_stride[1] + l * a.out_lse_stride[2]] =\n"
    "          m == -INFINITY ? -INFINITY : m + logf(sum);\n"
    "  }\n"
    "}\n";

int hattn__emit_cuda_merge(hattn__dtype dtype, const char *fn_name, char **out, char *err, size_t errlen) {
  sbuf b = {0};
  int rc = HATTN_OK;

  *out = NULL;
  if (!valid_name(fn_name)) {
    snprintf(err, errlen, "a kernel name must be letters, digits and '_', not starting with a digit");
    return HATTN_EINVAL;
  }
  sb_puts(&b, "// Generated by hattn (gen/emit_cuda.c, hattn__emit_cuda_merge): do not edit.\n");
  sb_printf(&b, "/*\n** The merge of partial attention results by their LSE (hattn_merge), O in %s;\n"
                "** grid-stride over the output's elements, blocks of HATTN_CUDA_MERGE_THREADS.\n*/\n\n",
            hattn__dtype_name(dtype));
  sb_puts(&b, hattn__tmpl_cuda_abi);
  sb_puts(&b, "\n#ifndef INFINITY\n#define INFINITY __int_as_float(0x7f800000)\n#endif\n#ifndef NAN\n#define NAN __int_as_float(0x7fffffff)\n#endif\n\n");
  sb_puts(&b, "/* Loads and stores of the dtype, in float32. */\n");
  switch (dtype) {
  case HATTN_DTYPE_FP16:
    sb_puts(&b, "typedef unsigned short hattn_elem;\n"
                "__device__ __forceinline__ float hattn_load(const hattn_elem *p, long long i) {\n"
                "  float f;\n  asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(p[i]));\n  return f;\n}\n"
                "__device__ __forceinline__ void hattn_store(hattn_elem *p, long long i, float f) {\n"
                "  unsigned short h;\n  asm(\"cvt.rn.f16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(f));\n  p[i] = h;\n}\n\n");
    break;
  case HATTN_DTYPE_BF16:
    sb_puts(&b, "typedef unsigned short hattn_elem;\n"
                "__device__ __forceinline__ float hattn_load(const hattn_elem *p, long long i) {\n"
                "  return __uint_as_float((unsigned)p[i] << 16);\n}\n"
                "__device__ __forceinline__ void hattn_store(hattn_elem *p, long long i, float f) {\n"
                "  unsigned short h;\n  asm(\"cvt.rn.bf16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(f));\n  p[i] = h;\n}\n\n");
    break;
  default:
    sb_puts(&b, "typedef float hattn_elem;\n"
                "__device__ __forceinline__ float hattn_load(const hattn_elem *p, long long i) { return p[i]; }\n"
                "__device__ __forceinline__ void hattn_store(hattn_elem *p, long long i, float f) { p[i] = f; }\n\n");
    break;
  }
  sb_puts(&b, merge_body);
  sb_printf(&b, "\nextern \"C\" __global__ void __launch_bounds__(HATTN_CUDA_MERGE_THREADS)\n"
                "%s(const hattn_cuda_merge_args args) {\n  hattn_merge(args);\n}\n", fn_name);
  if (b.oom) {
    rc = HATTN_ENOMEM;
    snprintf(err, errlen, "out of memory while writing the CUDA source");
    free(b.p);
    return rc;
  }
  *out = b.p;
  return rc;
}
