/*
** npy.c: NumPy .npy files.  See npy.h.  The format: the magic "\x93NUMPY",
** a major and minor version byte, the header length (2 bytes little-endian
** in 1.0, 4 bytes in 2.0), then a Python dict literal padded with spaces
** and ended by '\n' so that the data starts at a multiple of 64 bytes, then
** the data.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "npy.h"

static const char magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

static const char *const descrs[] = {"<f4", "<f2", "<u2", "<f8"};
static const int sizes[] = {4, 2, 2, 8};

const char *tool_npy_descr(tool_npy_type type) { return descrs[type]; }
int tool_npy_size(tool_npy_type type) { return sizes[type]; }

static int host_little_endian(void) {
  uint16_t x = 1;
  unsigned char c;
  memcpy(&c, &x, 1);
  return c == 1;
}

/* Reverse the bytes of each of N elements of SIZE bytes at P. */
static void swap_bytes(unsigned char *p, size_t n, int size) {
  size_t i;
  int a;
  for (i = 0; i < n; i++, p += size)
    for (a = 0; a < size / 2; a++) {
      unsigned char t = p[a];
      p[a] = p[size - 1 - a];
      p[size - 1 - a] = t;
    }
}

/* The number of elements of SHAPE, or -1 when it does not fit in memory. */
static int64_t count_of(int rank, const int64_t *shape, int size) {
  int64_t n = 1;
  int i;
  for (i = 0; i < rank; i++) {
    if (shape[i] < 0) return -1;
    if (shape[i] > 0 && n > (INT64_MAX / 2 / size) / shape[i]) return -1;
    n *= shape[i];
  }
  return n;
}

int tool_npy_write(const char *path, tool_npy_type type, int rank, const int64_t *shape,
                   const void *data, char *err, size_t errlen) {
  char hdr[256];
  unsigned char pre[10];
  int len, total, i, size = sizes[type];
  int64_t n = count_of(rank, shape, size);
  FILE *f = NULL;
  size_t nbytes;

  if (rank < 0 || rank > TOOL_NPY_MAX_RANK || n < 0) {
    snprintf(err, errlen, "cannot write %s: bad shape of rank %d", path, rank);
    return -1;
  }
  nbytes = (size_t)n * (size_t)size;
  len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (", descrs[type]);
  for (i = 0; i < rank; i++)
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "%s%lld", i ? ", " : "", (long long)shape[i]);
  len += snprintf(hdr + len, sizeof hdr - (size_t)len, "%s), }", rank == 1 ? "," : "");
  /* Pad with spaces and a final newline so the data starts at a multiple of 64. */
  total = (10 + len + 1 + 63) / 64 * 64;
  while (10 + len + 1 < total) hdr[len++] = ' ';
  hdr[len++] = '\n';
  memcpy(pre, magic, 6);
  pre[6] = 1;
  pre[7] = 0;
  pre[8] = (unsigned char)(len & 0xff);
  pre[9] = (unsigned char)(len >> 8);

  if ((f = fopen(path, "wb")) == NULL) {
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
  }
  if (fwrite(pre, 1, 10, f) != 10 || fwrite(hdr, 1, (size_t)len, f) != (size_t)len) goto fail_write;
  if (host_little_endian() || size == 1) {
    if (nbytes > 0 && fwrite(data, 1, nbytes, f) != nbytes) goto fail_write;
  } else {
    unsigned char buf[65536];
    size_t off, chunk;
    for (off = 0; off < nbytes; off += chunk) {
      chunk = nbytes - off < sizeof buf ? nbytes - off : sizeof buf;
      memcpy(buf, (const unsigned char *)data + off, chunk);
      swap_bytes(buf, chunk / (size_t)size, size);
      if (fwrite(buf, 1, chunk, f) != chunk) goto fail_write;
    }
  }
  if (fclose(f) != 0) {
    f = NULL;
    goto fail_write;
  }
  return 0;
fail_write:
  snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
  if (f) fclose(f);
  return -1;
}

/* ---- reading ------------------------------------------------------------- */

/* A cursor over the header text. */
typedef struct cursor {
  const char *s, *end;
} cursor;

static void skip_ws(cursor *c) {
  while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')) c->s++;
}

static int eat(cursor *c, char ch) {
  skip_ws(c);
  if (c->s < c->end && *c->s == ch) {
    c->s++;
    return 1;
  }
  return 0;
}

/* A Python string literal in ' or " quotes without escapes, into BUF. */
static int read_str(cursor *c, char *buf, size_t cap) {
  char q;
  size_t n = 0;
  skip_ws(c);
  if (c->s >= c->end || (*c->s != '\'' && *c->s != '"')) return -1;
  q = *c->s++;
  while (c->s < c->end && *c->s != q) {
    if (*c->s == '\\' || n + 1 >= cap) return -1;
    buf[n++] = *c->s++;
  }
  if (c->s >= c->end) return -1;
  c->s++;
  buf[n] = '\0';
  return 0;
}

static int read_word(cursor *c, const char *w) {
  size_t n = strlen(w);
  skip_ws(c);
  if ((size_t)(c->end - c->s) >= n && !memcmp(c->s, w, n)) {
    c->s += n;
    return 1;
  }
  return 0;
}

/* A shape tuple: "()", "(5,)", "(2, 3)", "(2, 3,)". */
static int read_shape(cursor *c, int *rank, int64_t *shape, const char **why) {
  *rank = 0;
  if (!eat(c, '(')) return *why = "expected a tuple for 'shape'", -1;
  for (;;) {
    int64_t v = 0;
    int digits = 0;
    skip_ws(c);
    if (c->s < c->end && *c->s == ')') break;
    while (c->s < c->end && *c->s >= '0' && *c->s <= '9') {
      if (v > (INT64_MAX - 9) / 10) return *why = "a dimension of 'shape' is too large", -1;
      v = v * 10 + (*c->s++ - '0');
      digits++;
    }
    if (digits == 0) return *why = "expected a non-negative integer in 'shape'", -1;
    if (*rank == TOOL_NPY_MAX_RANK) return *why = "'shape' has more than 4 dimensions", -1;
    shape[(*rank)++] = v;
    if (eat(c, ',')) continue;
    skip_ws(c);
    if (c->s < c->end && *c->s == ')') break;
    return *why = "expected ',' or ')' in 'shape'", -1;
  }
  c->s++;
  return 0;
}

int tool_npy_read(const char *path, tool_npy *out, char *err, size_t errlen) {
  unsigned char pre[12];
  char *hdr = NULL, key[32], descr[32] = "";
  const char *why = NULL;
  size_t hlen, got;
  int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0, t, ntype = 4;
  int64_t n;
  cursor c;
  FILE *f;
  struct stat st;
  int ch;

  memset(out, 0, sizeof *out);
  if ((f = fopen(path, "rb")) == NULL) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return -1;
  }
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "cannot read %s: it is a directory, not a .npy file", path);
    goto fail;
  }
  got = fread(pre, 1, 10, f);
  if (got < 8 || memcmp(pre, magic, 6) != 0) {
    snprintf(err, errlen, "%s is not a .npy file (it does not start with the magic string \\x93NUMPY)", path);
    goto fail;
  }
  if ((pre[6] != 1 && pre[6] != 2) || pre[7] != 0) {
    snprintf(err, errlen, "%s has .npy format version %d.%d; hattn reads versions 1.0 and 2.0", path,
             pre[6], pre[7]);
    goto fail;
  }
  if (got < 10 || (pre[6] == 2 && fread(pre + 10, 1, 2, f) != 2)) {
    snprintf(err, errlen, "%s is truncated inside its header", path);
    goto fail;
  }
  hlen = pre[6] == 1 ? (size_t)pre[8] | (size_t)pre[9] << 8
                     : (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
  if (hlen > 1 << 20) {
    snprintf(err, errlen, "%s has a header of %zu bytes; hattn reads headers up to 1 MiB", path, hlen);
    goto fail;
  }
  if ((hdr = malloc(hlen + 1)) == NULL) {
    snprintf(err, errlen, "out of memory reading %s", path);
    goto fail;
  }
  if (fread(hdr, 1, hlen, f) != hlen) {
    snprintf(err, errlen, "%s is truncated inside its header", path);
    goto fail;
  }
  hdr[hlen] = '\0';

  /* The dict: each of descr, fortran_order and shape exactly once. */
  c.s = hdr;
  c.end = hdr + hlen;
  if (!eat(&c, '{')) {
    why = "expected '{'";
    goto bad_header;
  }
  while (!eat(&c, '}')) {
    if (read_str(&c, key, sizeof key) || !eat(&c, ':')) {
      why = "expected a quoted key and ':'";
      goto bad_header;
    }
    if (!strcmp(key, "descr") && !have_descr) {
      have_descr = 1;
      if (read_str(&c, descr, sizeof descr)) {
        why = "expected a quoted string for 'descr'";
        goto bad_header;
      }
    } else if (!strcmp(key, "fortran_order") && !have_order) {
      have_order = 1;
      if (read_word(&c, "True")) fortran = 1;
      else if (!read_word(&c, "False")) {
        why = "expected True or False for 'fortran_order'";
        goto bad_header;
      }
    } else if (!strcmp(key, "shape") && !have_shape) {
      have_shape = 1;
      if (read_shape(&c, &out->rank, out->shape, &why)) goto bad_header;
    } else {
      snprintf(err, errlen, "%s has a malformed header: unexpected or repeated key '%s'", path, key);
      goto fail;
    }
    if (!eat(&c, ',')) {
      if (!eat(&c, '}')) {
        why = "expected ',' or '}'";
        goto bad_header;
      }
      break;
    }
  }
  skip_ws(&c);
  if (c.s != c.end) {
    why = "unexpected text after the dict";
    goto bad_header;
  }
  if (!have_descr || !have_order || !have_shape) {
    why = "the keys 'descr', 'fortran_order' and 'shape' are all required";
    goto bad_header;
  }
  for (t = 0; t < ntype; t++)
    if (!strcmp(descr, descrs[t])) break;
  if (t == ntype) {
    snprintf(err, errlen, "%s has dtype '%s'; hattn reads '<f4', '<f2', '<u2' (bf16 words) and '<f8'",
             path, descr);
    goto fail;
  }
  out->type = (tool_npy_type)t;
  if (fortran) {
    snprintf(err, errlen, "%s is stored in Fortran order (fortran_order True); hattn reads C order only", path);
    goto fail;
  }
  n = count_of(out->rank, out->shape, sizes[t]);
  if (n < 0) {
    snprintf(err, errlen, "%s has a shape too large for memory", path);
    goto fail;
  }
  out->nbytes = (size_t)n * (size_t)sizes[t];
  if ((out->data = malloc(out->nbytes + 1)) == NULL) {
    snprintf(err, errlen, "out of memory for the %zu bytes of %s", out->nbytes, path);
    goto fail;
  }
  if ((got = fread(out->data, 1, out->nbytes, f)) != out->nbytes) {
    snprintf(err, errlen, "%s is truncated: its shape needs %zu bytes of data, the file holds %zu", path,
             out->nbytes, got);
    goto fail;
  }
  if ((ch = fgetc(f)) != EOF) {
    snprintf(err, errlen, "%s has bytes after the %zu bytes of data its shape needs", path, out->nbytes);
    goto fail;
  }
  if (ferror(f)) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    goto fail;
  }
  if (!host_little_endian()) swap_bytes(out->data, (size_t)n, sizes[t]);
  free(hdr);
  fclose(f);
  return 0;
bad_header:
  snprintf(err, errlen, "%s has a malformed header: %s", path, why);
fail:
  free(hdr);
  fclose(f);
  tool_npy_free(out);
  return -1;
}

void tool_npy_free(tool_npy *a) {
  free(a->data);
  memset(a, 0, sizeof *a);
}
