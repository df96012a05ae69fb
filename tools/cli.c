/*
** cli.c: the command-line helpers the subcommands share (tools.h): reading
** a spec, parsing lengths and dtypes, run-time data for plan and report,
** output directories, and printing layers, counts and causal pair counts.
*/
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hattn.h"
#include "tools.h"

char *tool_read_text(const char *path, size_t *len_out) {
  FILE *f = fopen(path, "rb");
  char *text = NULL;
  size_t len = 0, cap = 0, n;

  if (f == NULL) {
    fprintf(stderr, "hattn: cannot open %s: %s\n", path, strerror(errno));
    return NULL;
  }
  do {
    if (len == cap) {
      char *t;
      cap = cap ? cap * 2 : 65536;
      if (cap > (size_t)64 << 20 || (t = realloc(text, cap)) == NULL) {
        fprintf(stderr, "hattn: %s is too large for a spec\n", path);
        goto fail;
      }
      text = t;
    }
    n = fread(text + len, 1, cap - len, f);
    len += n;
  } while (n > 0);
  if (ferror(f)) {
    fprintf(stderr, "hattn: cannot read %s: %s\n", path, strerror(errno));
    goto fail;
  }
  fclose(f);
  *len_out = len;
  return text;
fail:
  free(text);
  fclose(f);
  return NULL;
}

hattn__spec *tool_load_spec(const char *path) {
  size_t len = 0;
  char *text = tool_read_text(path, &len);
  hattn__spec *spec = NULL;
  hattn__diags diags = {0};
  int rc;

  if (text == NULL) return NULL;
  rc = hattn__spec_parse(text, len, path, &spec, &diags);
  if (rc != HATTN_OK) {
    if (diags.text) fputs(diags.text, stderr);
    fprintf(stderr, "hattn: %s: %s\n", path, hattn_strerror(rc));
  }
  hattn__diags_clear(&diags);
  free(text);
  return spec;
}

void tool_kept_keys(const hattn__mask *mask, int64_t n, uint8_t *keep) {
  int64_t period = hattn__mask_period(mask, 4096), k, t;
  for (k = 0; k < n; k++) {
    keep[k] = 0;
    for (t = 0; t < period && !keep[k]; t++) keep[k] = hattn__mask_eval3(mask, n - 1 + t, k) != HATTN_TRI_FALSE;
  }
}

int tool_parse_len(const char *opt, const char *s, int allow_zero, int64_t *out) {
  char *end;
  long long v;
  int64_t mul = 1;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (end == s || errno || v < 0) goto bad;
  if (*end == 'k' || *end == 'K') mul = 1024, end++;
  else if (*end == 'm' || *end == 'M') mul = 1048576, end++;
  if (*end != '\0' || v > (long long)(INT32_MAX / mul)) goto bad;
  if (v == 0 && !allow_zero) goto bad;
  *out = (int64_t)v * mul;
  return 0;
bad:
  fprintf(stderr, "hattn: %s: expected a %s length such as 4096 or 128k (below 2^31), got '%s'\n",
          opt, allow_zero ? "non-negative" : "positive", s);
  return -1;
}

int tool_parse_db(const char *s, const char **out) {
  if (*s == '\0') {
    fprintf(stderr, "hattn: --db: an empty path names no database file, and nothing would be kept: name a file, "
                    "or leave --db out for the default one\n");
    return -1;
  }
  *out = s;
  return 0;
}

int tool_parse_pair(const char *opt, const char *s, int allow_zero, int64_t *a, int64_t *b) {
  const char *comma = strchr(s, ',');
  char first[64];
  if (comma == NULL) {
    if (tool_parse_len(opt, s, allow_zero, a)) return -1;
    *b = *a;
    return 0;
  }
  if ((size_t)(comma - s) >= sizeof first) return tool_parse_len(opt, s, allow_zero, a);
  memcpy(first, s, (size_t)(comma - s));
  first[comma - s] = '\0';
  if (tool_parse_len(opt, first, allow_zero, a)) return -1;
  return tool_parse_len(opt, comma + 1, allow_zero, b);
}

const char *tool_commas(int64_t n, char buf[32]) {
  char digits[24];
  int len, i, o = 0;
  len = snprintf(digits, sizeof digits, "%lld", (long long)(n < 0 ? -n : n));
  if (n < 0) buf[o++] = '-';
  for (i = 0; i < len; i++) {
    if (i > 0 && (len - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
  return buf;
}

/* ---- run-time data ------------------------------------------------------- */

int tool_rtdata_option(tool_rtdata *rt, int opt, const char *arg) {
  switch (opt) {
  case 'D':
    return tool_parse_len("--docs", arg, 0, &rt->doc_len) == 0 ? 1 : -1;
  case 'L':
    rt->doc_lens = arg;
    return 1;
  case 'Y': {
    size_t n = strcspn(arg, "=");
    int i;
    if (rt->nlayout_args == (int)(sizeof rt->layout_args / sizeof rt->layout_args[0])) {
      fprintf(stderr, "hattn: --layout: too many layouts\n");
      return -1;
    }
    for (i = 0; arg[n] == '=' && i < rt->nlayout_args; i++) {
      if (strncmp(rt->layout_args[i], arg, n + 1) == 0) {
        fprintf(stderr, "hattn: --layout: layout '%.*s' is given twice (%s and %s)\n", (int)n, arg,
                rt->layout_args[i], arg);
        return -1;
      }
    }
    rt->layout_args[rt->nlayout_args++] = arg;
    return 1;
  }
  default:
    return 0;
  }
}

/* Document offsets for lk keys: from --doc-lens (the last document takes
** what is left), else documents of --docs tokens, else one document. */
static int make_offsets(tool_rtdata *rt, int64_t lk, hattn__mask_env *env) {
  int64_t n = 0, cap = 16, pos = 0;
  const char *s = rt->doc_lens;
  free(rt->offsets);
  rt->offsets = NULL;
  if (rt->doc_len > 0 && (lk + rt->doc_len - 1) / rt->doc_len > TOOL_MAX_DOCS) {
    fprintf(stderr, "hattn: --docs: %lld keys in documents of %lld make %lld documents, more than the limit "
            "of %d (2^20)\n", (long long)lk, (long long)rt->doc_len, (long long)((lk + rt->doc_len - 1) / rt->doc_len),
            TOOL_MAX_DOCS);
    return -1;
  }
  if ((rt->offsets = malloc((size_t)cap * sizeof *rt->offsets)) == NULL) goto nomem;
  rt->offsets[n++] = 0;
  while (pos < lk) {
    int64_t len = lk;
    if (s && *s) {
      char tok[32];
      size_t t = strcspn(s, ",");
      if (t == 0) {
        fprintf(stderr, "hattn: --doc-lens: expected lengths separated by commas, got an empty one\n");
        return -1;
      }
      if (t >= sizeof tok) { /* longer than any length below 2^31 */
        fprintf(stderr, "hattn: --doc-lens: expected a non-negative length such as 4096 or 128k "
                        "(below 2^31), got '%.*s'\n", (int)t, s);
        return -1;
      }
      memcpy(tok, s, t);
      tok[t] = '\0';
      if (tool_parse_len("--doc-lens", tok, 1, &len)) return -1;
      s += t + (s[t] == ',');
    } else if (rt->doc_len > 0) {
      len = rt->doc_len;
    }
    pos = pos + len < lk ? pos + len : lk;
    if (n == cap) {
      int64_t *t2 = realloc(rt->offsets, (size_t)(cap *= 2) * sizeof *t2);
      if (t2 == NULL) goto nomem;
      rt->offsets = t2;
    }
    rt->offsets[n++] = pos;
  }
  env->doc_offsets = rt->offsets;
  env->ndocs = n - 1;
  return 0;
nomem:
  fprintf(stderr, "hattn: out of memory for the offsets of %lld documents\n", (long long)n);
  return -1;
}

/* Read a layout file: a line "BM BN", then one line of 0/1 (or . and #) per
** query block. */
static int read_layout(const char *path, hattn__layout *l, uint8_t **bits) {
  FILE *f = fopen(path, "r");
  char line[65536];
  long long bm, bn;
  int64_t rows = 0, cols = -1, cap = 0;
  uint8_t *b = NULL;
  struct stat st;
  int rc = -1;
  if (f == NULL) {
    fprintf(stderr, "hattn: --layout: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fprintf(stderr, "hattn: --layout: cannot read %s: it is a directory, not a layout file\n", path);
    goto done;
  }
  if (!fgets(line, sizeof line, f) || sscanf(line, "%lld %lld", &bm, &bn) != 2 || bm <= 0 ||
      bn <= 0 || bm > INT32_MAX || bn > INT32_MAX) {
    fprintf(stderr, "hattn: --layout: %s:1: expected the block size \"BM BN\"\n", path);
    goto done;
  }
  while (fgets(line, sizeof line, f)) {
    int64_t n = (int64_t)strcspn(line, "\r\n"), i;
    if (n == 0) continue;
    if (cols < 0) cols = n;
    if (n != cols) {
      fprintf(stderr, "hattn: --layout: %s:%lld: every row must have %lld blocks\n", path,
              (long long)(rows + 2), (long long)cols);
      goto done;
    }
    if ((rows + 1) * cols > cap) {
      uint8_t *t;
      cap = cap ? cap * 2 : cols * 64;
      if ((t = realloc(b, (size_t)cap)) == NULL) goto done;
      b = t;
    }
    for (i = 0; i < n; i++) {
      char c = line[i];
      if (c != '0' && c != '1' && c != '.' && c != '#') {
        fprintf(stderr, "hattn: --layout: %s:%lld: blocks are 0/1 or ./#\n", path,
                (long long)(rows + 2));
        goto done;
      }
      b[rows * cols + i] = (c == '1' || c == '#');
    }
    rows++;
  }
  l->bm = bm;
  l->bn = bn;
  l->nqb = rows;
  l->nkb = cols < 0 ? 0 : cols;
  l->bits = b;
  *bits = b;
  b = NULL;
  rc = 0;
done:
  free(b);
  fclose(f);
  return rc;
}

int tool_rtdata_env(tool_rtdata *rt, const hattn__spec *spec, const hattn__pattern *p,
                    int64_t lq, int64_t lk, hattn__mask_env *env) {
  int i, j;
  memset(env, 0, sizeof *env);
  env->lq = lq;
  env->lk = lk;
  env->batch = env->heads = 1;
  if ((p->needs & HATTN_NEEDS_DOCUMENT) && make_offsets(rt, lk, env)) return -1;
  if (p->needs & HATTN_NEEDS_BLOCKS) {
    if (rt->layouts == NULL) {
      rt->nlayouts = spec->nlayouts;
      rt->layouts = calloc((size_t)spec->nlayouts + 1, sizeof *rt->layouts);
      rt->layout_bits = calloc((size_t)spec->nlayouts + 1, sizeof *rt->layout_bits);
      if (!rt->layouts || !rt->layout_bits) {
        fprintf(stderr, "hattn: out of memory for %d layouts\n", spec->nlayouts);
        return -1;
      }
      for (i = 0; i < spec->nlayouts; i++) {
        const char *name = spec->layouts[i];
        size_t n = strlen(name);
        for (j = 0; j < rt->nlayout_args; j++) {
          const char *a = rt->layout_args[j];
          if (!strncmp(a, name, n) && a[n] == '=') {
            if (read_layout(a + n + 1, &rt->layouts[i], &rt->layout_bits[i])) return -1;
            break;
          }
        }
        if (j == rt->nlayout_args) {
          fprintf(stderr, "hattn: pattern '%s' uses blocks(%s): give its layout with --layout %s=FILE\n",
                  p->name, name, name);
          return -1;
        }
      }
    }
    env->layouts = rt->layouts;
    env->nlayouts = rt->nlayouts;
  }
  if (p->needs & HATTN_NEEDS_TOPK) {
    /* Rows of min(K, the key blocks that exist) entries: never more. */
    int64_t k = hattn__topk_width(p->lowered->topk_k, lk), nb = hattn__nblocks64(lk), b, t;
    free(rt->topk);
    if ((rt->topk = malloc((size_t)(nb * k + 1) * sizeof *rt->topk)) == NULL) {
      fprintf(stderr, "hattn: out of memory for the topk table of %lld x %lld blocks\n", (long long)nb,
              (long long)k);
      return -1;
    }
    /* A stand-in for data-dependent routing: the K most recent eligible blocks. */
    for (b = 0; b < nb; b++)
      for (t = 0; t < k; t++) rt->topk[b * k + t] = b - (k - 1) + t >= 0 ? (int32_t)(b - (k - 1) + t) : -1;
    env->topk_blocks = rt->topk;
    env->topk_k = k;
  }
  return 0;
}

void tool_rtdata_free(tool_rtdata *rt) {
  int i;
  free(rt->offsets);
  for (i = 0; rt->layout_bits && i < rt->nlayouts; i++) free(rt->layout_bits[i]);
  free(rt->layout_bits);
  free(rt->layouts);
  free(rt->topk);
  memset(rt, 0, sizeof *rt);
}

int tool_parse_dtype(const char *opt, const char *s, hattn__dtype *out) {
  if (!strcmp(s, "fp32")) *out = HATTN_DTYPE_FP32;
  else if (!strcmp(s, "fp16")) *out = HATTN_DTYPE_FP16;
  else if (!strcmp(s, "bf16")) *out = HATTN_DTYPE_BF16;
  else {
    fprintf(stderr, "hattn: %s: unknown dtype '%s' (expected fp32, fp16 or bf16)\n", opt, s);
    return -1;
  }
  return 0;
}

int tool_make_dir(const char *cmd, const char *dir) {
  char path[4096];
  size_t i, n = strlen(dir);
  struct stat st;
  if (n == 0 || n >= sizeof path) {
    fprintf(stderr, "hattn %s: --out: bad directory name\n", cmd);
    return -1;
  }
  memcpy(path, dir, n + 1);
  for (i = 1; i <= n; i++) {
    if (path[i] != '/' && path[i] != '\0') continue;
    path[i] = '\0';
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
      fprintf(stderr, "hattn %s: cannot create the directory %s: %s\n", cmd, path, strerror(errno));
      return -1;
    }
    path[i] = dir[i];
  }
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "hattn %s: %s is not a directory\n", cmd, dir);
    return -1;
  }
  return 0;
}

int64_t tool_causal_pairs(int64_t lq, int64_t lk) {
  /* Row q sees min(max(q + lk - lq + 1, 0), lk) keys. */
  int64_t sum = 0, q;
  for (q = 0; q < lq; q++) {
    int64_t n = q + lk - lq + 1;
    sum += n < 0 ? 0 : n > lk ? lk : n;
  }
  return sum;
}

void tool_print_layers(FILE *out, const int *set, int n) {
  int i = 0, first = 1;
  while (i < n) {
    int j = i + 1, step = i + 1 < n ? set[i + 1] - set[i] : 1;
    while (j < n && set[j] - set[j - 1] == step) j++;
    if (!first) fputs(", ", out);
    first = 0;
    if (j - i >= 3 || (j - i == 2 && step == 1)) {
      fprintf(out, "%d-%d", set[i], set[j - 1]);
      if (step != 1) fprintf(out, " step %d", step);
      i = j;
    } else {
      fprintf(out, "%d", set[i]);
      i++;
    }
  }
}

void tool_print_layer_heads(FILE *out, const hattn__spec *spec, const hattn__model *m, int layer) {
  const int *row = m->assign + (size_t)layer * (size_t)m->heads;
  int h = 0, first = 1, uniform = 1;
  for (h = 1; h < m->heads; h++) uniform &= row[h] == row[0];
  if (uniform) {
    fputs(spec->patterns[row[0]].name, out);
    return;
  }
  for (h = 0; h < m->heads;) {
    int j = h + 1;
    while (j < m->heads && row[j] == row[h]) j++;
    fprintf(out, "%sheads %d", first ? "" : ", ", h);
    if (j - 1 > h) fprintf(out, "-%d", j - 1);
    fprintf(out, " %s", spec->patterns[row[h]].name);
    first = 0;
    h = j;
  }
}

const hattn__backend_i *tool_backend(const char *cmd, const char *name) {
  const char *names;
  const hattn__backend_i *be = hattn__backend_find(name ? name : "cpu", &names);
  if (be == NULL) fprintf(stderr, "hattn %s: --backend: unknown backend '%s' (expected %s)\n", cmd, name, names);
  return be;
}

int tool_backend_dtype(const char *cmd, const hattn__backend_i *be, hattn__dtype dtype) {
  char list[64] = "";
  int t, n = 0, k = 0;
  if (be->dtypes & 1u << dtype) return 0;
  for (t = HATTN_DTYPE_FP32; t <= HATTN_DTYPE_BF16; t++) n += (be->dtypes >> t) & 1;
  for (t = HATTN_DTYPE_FP32; t <= HATTN_DTYPE_BF16; t++) {
    if (!(be->dtypes & 1u << t)) continue;
    k++;
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k == 1 ? "" : k == n ? " and " : ", ",
             hattn__dtype_name((hattn__dtype)t));
  }
  fprintf(stderr, "hattn %s: the %s backend runs %s, not %s (use --dtype)\n", cmd, be->name, list,
          hattn__dtype_name(dtype));
  return -1;
}
