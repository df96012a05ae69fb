/*
** elf_load.c: loading the CPU kernels' ELF64 x86-64 relocatable objects
** without LLVM.  See elf_load.h.
**
** The image is one anonymous mapping in up to three parts, each starting
** on a page: the executable sections and a stub per external function
** (read and execute), the read-only sections and the GOT (read), and the
** writable sections (read and write).  It is written while it is read and
** write, then protected part by part, so that no page is ever writable and
** executable at once.  Everything lies within HATTN__ELF_MAX_IMAGE bytes,
** so a 32-bit PC-relative relocation reaches any of it; external functions
** are reached through their stub (a jump through the GOT).
**
** What LLVM 16 emits for hattn's kernels (every example spec, x86-64-v3 and
** -v4, fp32/fp16/bf16, head dims 64/128/256, PIC): sections .text,
** .rodata, .rodata.cst4/8/16/32 (alignment up to 32), .rela.text with
** R_X86_64_PC32 (constants) and R_X86_64_PLT32 (calls), and one external
** function, memset.  CPUs without FMA, SSE4.1 or F16C (x86-64, x86-64-v2)
** add fmaf, rintf, __extendhfsf2 and __truncsfhf2.
*/
#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "elf_load.h"

#if defined(__x86_64__) && !defined(_WIN32)

#include <emmintrin.h>
#include <math.h>
#include <sys/mman.h>
#include <unistd.h>

/* The largest image the loader maps: hattn's kernels take about 100 KiB. */
#define HATTN__ELF_MAX_IMAGE (UINT64_C(256) << 20)

/* The largest section alignment honoured. */
#define MAX_ALIGN 4096

/* Sizes of the ELF64 records read. */
#define EHDR_SIZE 64
#define SHDR_SIZE 64
#define SYM_SIZE 24
#define RELA_SIZE 24

/* The ELF constants used (elf.h is not assumed). */
enum {
  E_REL = 1,
  E_X86_64 = 62,
  S_NULL = 0,
  S_PROGBITS = 1,
  S_SYMTAB = 2,
  S_STRTAB = 3,
  S_RELA = 4,
  S_NOTE = 7,
  S_NOBITS = 8,
  S_REL = 9,
  S_INIT_ARRAY = 14,
  S_FINI_ARRAY = 15,
  S_PREINIT_ARRAY = 16,
  S_SYMTAB_SHNDX = 18,
  S_X86_64_UNWIND = 0x70000001,
  F_WRITE = 0x1,
  F_ALLOC = 0x2,
  F_EXEC = 0x4,
  F_TLS = 0x400,
  F_COMPRESSED = 0x800,
  N_UNDEF = 0,
  N_LORESERVE = 0xff00,
  N_ABS = 0xfff1,
  N_COMMON = 0xfff2,
  N_XINDEX = 0xffff,
  B_GLOBAL = 1,
  B_WEAK = 2,
  T_NOTYPE = 0,
  T_FUNC = 2
};

/* Relocation types handled. */
enum {
  R_NONE = 0,
  R_64 = 1,
  R_PC32 = 2,
  R_PLT32 = 4,
  R_GOTPCREL = 9,
  R_32 = 10,
  R_32S = 11,
  R_PC64 = 24,
  R_GOTOFF64 = 25,
  R_GOTPC32 = 26,
  R_GOTPC64 = 29,
  R_GOTPCRELX = 41,
  R_REX_GOTPCRELX = 42
};

/* The parts of the image. */
enum { PART_NONE = 0, PART_X, PART_R, PART_RW };

struct hattn__elf_image {
  unsigned char *base;
  size_t size;
};

/* ---- the functions kernels may call ---------------------------------------- */

/* __extendhfsf2 as LLVM calls it on CPUs without F16C: the half in the low
** 16 bits of xmm0, the float back in xmm0 (an __m128i argument and a float
** result are both passed in xmm0). */
static float elf_extendhfsf2(__m128i h) {
  uint32_t x = (uint32_t)_mm_cvtsi128_si32(h) & 0xffffu;
  uint32_t sign = (x & 0x8000u) << 16, ex = (x >> 10) & 0x1fu, man = x & 0x3ffu, bits;
  float f;
  if (ex == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13) | (man ? 0x00400000u : 0); /* NaNs quiet */
  } else if (ex != 0) {
    bits = sign | ((ex + 112u) << 23) | (man << 13);
  } else {
    f = (float)man * 0x1p-24f; /* zero or a subnormal, exact */
    memcpy(&bits, &f, 4);
    bits |= sign;
  }
  memcpy(&f, &bits, 4);
  return f;
}

/* __truncsfhf2: the float in xmm0, the half (rounded to nearest even) back
** in the low 16 bits of xmm0. */
static __m128i elf_truncsfhf2(float f) {
  uint32_t x, ax, sign, h;
  memcpy(&x, &f, 4);
  sign = (x >> 16) & 0x8000u;
  ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) {
    h = 0x7e00u | ((ax >> 13) & 0x3ffu); /* a quiet NaN keeping the high payload */
  } else if (ax >= 0x477ff000u) {
    h = 0x7c00u; /* infinity, or rounds to it */
  } else if (ax >= 0x38800000u) {
    uint32_t v = ax - 0x38000000u;
    h = (v + 0xfffu + ((v >> 13) & 1u)) >> 13;
  } else {
    /* Adding 0.5 rounds to a multiple of 2^-24, the half subnormal step. */
    float t, a;
    uint32_t tb;
    memcpy(&a, &ax, 4);
    t = a + 0.5f;
    memcpy(&tb, &t, 4);
    h = tb - 0x3f000000u;
  }
  return _mm_cvtsi32_si128((int)(sign | h));
}

typedef void (*any_fn)(void);

/* The undefined symbols a kernel may have, and their addresses. */
static const struct {
  const char *name;
  any_fn addr;
} g_externals[] = {
#define EXT(f) {#f, (any_fn)(f)}
    EXT(memset), EXT(memcpy), EXT(memmove),
    EXT(expf), EXT(exp2f), EXT(expm1f), EXT(logf), EXT(log2f), EXT(log1pf), EXT(powf),
    EXT(tanhf), EXT(sqrtf), EXT(fmaf), EXT(fabsf), EXT(rintf), EXT(nearbyintf), EXT(floorf),
    EXT(ceilf), EXT(truncf), EXT(roundf), EXT(fmaxf), EXT(fminf), EXT(sinf), EXT(cosf),
    EXT(exp), EXT(exp2), EXT(expm1), EXT(log), EXT(log2), EXT(log1p), EXT(pow), EXT(tanh),
    EXT(sqrt), EXT(fma), EXT(fabs), EXT(rint), EXT(nearbyint), EXT(floor), EXT(ceil),
    EXT(trunc), EXT(round), EXT(fmax), EXT(fmin), EXT(sin), EXT(cos),
#undef EXT
    {"__extendhfsf2", (any_fn)elf_extendhfsf2},
    {"__truncsfhf2", (any_fn)elf_truncsfhf2},
};

#define EXTERNALS_TEXT                                                                    \
  "memset, memcpy, memmove, the float and double libm functions exp, exp2, expm1, log, "  \
  "log2, log1p, pow, tanh, sqrt, fma, fabs, rint, nearbyint, floor, ceil, trunc, round, " \
  "fmax, fmin, sin, cos, and __extendhfsf2, __truncsfhf2"

/* Whether NAME is in the table; then *ADDR is its address. */
static int external_find(const char *name, uintptr_t *addr) {
  size_t i;
  for (i = 0; i < sizeof g_externals / sizeof g_externals[0]; i++)
    if (strcmp(g_externals[i].name, name) == 0) {
      *addr = (uintptr_t)g_externals[i].addr;
      return 1;
    }
  return 0;
}

/* ---- reading ------------------------------------------------------------------- */

/* Little-endian fields at P (the buffer need not be aligned). */
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t rd32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* A section header. */
typedef struct shdr {
  uint32_t name, type, link, info;
  uint64_t flags, offset, size, align, entsize;
} shdr;

/* A symbol. */
typedef struct sym {
  uint32_t name;
  unsigned char bind, type;
  uint16_t shndx;
  uint64_t value;
} sym;

/* The state of one load. */
typedef struct ld {
  const unsigned char *b;       /* the object file, N bytes */
  size_t n;
  size_t shnum;
  shdr *sh;                     /* shnum section headers */
  unsigned char *part;          /* per section: PART_* */
  uint64_t *at;                 /* per section: its offset in the image */
  size_t shstr;                 /* the section name table, 0: none */
  size_t symtab;                /* the symbol table's section */
  size_t nsym;
  uint64_t symoff, stroff, strsize;
  uintptr_t *ext;               /* per symbol: the address of an external, else 0 */
  unsigned char *gotsym;        /* per symbol: 1 for _GLOBAL_OFFSET_TABLE_ (the GOT's address) */
  int64_t *got, *stub;          /* per symbol: its GOT slot / stub, or -1 */
  size_t ngot, nstub;
  uint64_t got_at, stub_at, part_end[4];
  unsigned char *base;          /* the mapping, size bytes */
  size_t size;
  char *err;
  size_t errlen;
} ld;

/* Put the sentence FMT in L's error buffer; return RC. */
static int fail(ld *l, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(ld *l, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (l->err && l->errlen) vsnprintf(l->err, l->errlen, fmt, ap);
  va_end(ap);
  return rc;
}

/* Whether [OFF, OFF + LEN) lies within N bytes; *END is OFF + LEN
** (UINT64_MAX when that overflows). */
static int within(uint64_t off, uint64_t len, uint64_t n, uint64_t *end) {
  *end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
  return off <= n && len <= n - off;
}

/* The NUL-terminated string at byte NAME of the table at OFF of SIZE bytes
** (within the file), or NULL when it does not lie within the table. */
static const char *str_at(const ld *l, uint64_t off, uint64_t size, uint32_t name) {
  const unsigned char *p;
  if (name >= size) return NULL;
  p = l->b + off + name;
  return memchr(p, 0, (size_t)(size - name)) ? (const char *)p : NULL;
}

/* S made printable for a message, at most 80 characters, into BUF. */
static const char *shown(const char *s, char buf[96]) {
  size_t i;
  for (i = 0; s[i] && i < 80; i++) buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
  if (s[i]) {
    memcpy(buf + i, "...", 3);
    i += 3;
  }
  buf[i] = 0;
  return buf;
}

/* The name of section I for a message ("section 5" when it has none). */
static const char *sec_name(const ld *l, size_t i, char buf[96]) {
  const char *s = NULL;
  if (l->shstr && i < l->shnum) s = str_at(l, l->sh[l->shstr].offset, l->sh[l->shstr].size, l->sh[i].name);
  if (s && *s) return shown(s, buf);
  snprintf(buf, 96, "section %zu", i);
  return buf;
}

/* Symbol I (below l->nsym, so within the file) into *S. */
static void sym_read(const ld *l, size_t i, sym *s) {
  const unsigned char *p = l->b + l->symoff + i * SYM_SIZE;
  s->name = rd32(p);
  s->bind = p[4] >> 4;
  s->type = p[4] & 0xf;
  s->shndx = rd16(p + 6);
  s->value = rd64(p + 8);
}

/* Symbol I's name (checked by read_symbols). */
static const char *sym_name(const ld *l, const sym *s) {
  const char *n = str_at(l, l->stroff, l->strsize, s->name);
  return n ? n : "";
}

/* ---- headers and sections ---------------------------------------------------- */

/* Check the ELF header and every section header against the file; read
** the section headers into L, check their names, and assign each
** allocated section its part of the image.  Finds the symbol table. */
static int read_headers(ld *l) {
  const unsigned char *b = l->b;
  uint64_t shoff, shnum, shstrndx, end;
  size_t i, nsymtab = 0;
  char nb[96];

  if (l->n < EHDR_SIZE)
    return fail(l, HATTN_ECOMPILE, "the object file is truncated (%zu bytes, shorter than the 64-byte ELF header)",
                l->n);
  if (memcmp(b, "\177ELF", 4) != 0)
    return fail(l, HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (no ELF magic number)");
  if (b[4] != 2)
    return fail(l, HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (ELF class %d, not ELF64)", b[4]);
  if (b[5] != 1)
    return fail(l, HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (not little-endian)");
  if (b[6] != 1 || rd32(b + 20) != 1)
    return fail(l, HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (ELF version %d)", b[6]);
  if (rd16(b + 16) != E_REL)
    return fail(l, HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (file type %d, not ET_REL)",
                rd16(b + 16));
  if (rd16(b + 18) != E_X86_64)
    return fail(l, HATTN_ECOMPILE, "not an x86-64 ELF64 relocatable object (machine %d, not x86-64)",
                rd16(b + 18));
  if (rd16(b + 58) != SHDR_SIZE)
    return fail(l, HATTN_ECOMPILE, "the object file's section headers have %d bytes, not 64", rd16(b + 58));

  shoff = rd64(b + 40);
  shnum = rd16(b + 60);
  shstrndx = rd16(b + 62);
  if (shoff == 0) return fail(l, HATTN_ECOMPILE, "the object file has no section header table");
  if (!within(shoff, SHDR_SIZE, l->n, &end))
    return fail(l, HATTN_ECOMPILE, "the object file is truncated (the section header table ends at byte %llu of %zu)",
                (unsigned long long)end, l->n);
  /* Extended numbering: the counts are in section 0. */
  if (shnum == 0) shnum = rd64(b + shoff + 32);
  if (shstrndx == N_XINDEX) shstrndx = rd32(b + shoff + 40);
  if (shnum == 0) return fail(l, HATTN_ECOMPILE, "the object file has no sections");
  if (shnum > (l->n - shoff) / SHDR_SIZE) {
    end = shnum > (UINT64_MAX - shoff) / SHDR_SIZE ? UINT64_MAX : shoff + shnum * SHDR_SIZE;
    return fail(l, HATTN_ECOMPILE, "the object file is truncated (the section header table ends at byte %llu of %zu)",
                (unsigned long long)end, l->n);
  }
  l->shnum = (size_t)shnum;
  l->sh = calloc(l->shnum, sizeof *l->sh);
  l->part = calloc(l->shnum, 1);
  l->at = calloc(l->shnum, sizeof *l->at);
  if (!l->sh || !l->part || !l->at) return fail(l, HATTN_ENOMEM, "out of memory");

  for (i = 0; i < l->shnum; i++) {
    const unsigned char *p = b + shoff + i * SHDR_SIZE;
    shdr *s = &l->sh[i];
    s->name = rd32(p);
    s->type = rd32(p + 4);
    s->flags = rd64(p + 8);
    s->offset = rd64(p + 24);
    s->size = rd64(p + 32);
    s->link = rd32(p + 40);
    s->info = rd32(p + 44);
    s->align = rd64(p + 48);
    s->entsize = rd64(p + 56);
    if (i == 0) continue;
    if (s->type != S_NULL && s->type != S_NOBITS && !within(s->offset, s->size, l->n, &end))
      return fail(l, HATTN_ECOMPILE, "the object file is truncated (section %zu ends at byte %llu of %zu)", i,
                  (unsigned long long)end, l->n);
    if (s->align == 0) s->align = 1;
    if (s->align & (s->align - 1))
      return fail(l, HATTN_ECOMPILE, "section %zu has alignment %llu, which is not a power of two", i,
                  (unsigned long long)s->align);
  }

  /* The section name table; then every name must lie within it. */
  if (shstrndx >= l->shnum)
    return fail(l, HATTN_ECOMPILE, "the section name table is section %llu, but there are %zu sections",
                (unsigned long long)shstrndx, l->shnum);
  if (shstrndx != 0) {
    if (l->sh[shstrndx].type != S_STRTAB)
      return fail(l, HATTN_ECOMPILE, "the section name table (section %llu) is not a string table",
                  (unsigned long long)shstrndx);
    l->shstr = (size_t)shstrndx;
    for (i = 1; i < l->shnum; i++)
      if (!str_at(l, l->sh[shstrndx].offset, l->sh[shstrndx].size, l->sh[i].name))
        return fail(l, HATTN_ECOMPILE,
                    "the name of section %zu (byte %u) is outside the section name table of %llu bytes",
                    i, l->sh[i].name, (unsigned long long)l->sh[shstrndx].size);
  }

  /* What each section is. */
  for (i = 1; i < l->shnum; i++) {
    const shdr *s = &l->sh[i];
    switch (s->type) {
    case S_SYMTAB:
      nsymtab++;
      l->symtab = i;
      break;
    case S_REL:
      return fail(l, HATTN_ECOMPILE, "section %s holds SHT_REL relocations; the loader supports SHT_RELA only",
                  sec_name(l, i, nb));
    case S_SYMTAB_SHNDX:
      return fail(l, HATTN_ECOMPILE,
                  "the object file uses extended section indices (%s), which the loader does not support",
                  sec_name(l, i, nb));
    default: break;
    }
    if (!(s->flags & F_ALLOC)) continue;
    if (s->flags & F_TLS)
      return fail(l, HATTN_ECOMPILE, "section %s holds thread-local data, which the loader does not support",
                  sec_name(l, i, nb));
    if (s->flags & F_COMPRESSED)
      return fail(l, HATTN_ECOMPILE,
                  "section %s is compressed, which the loader does not support", sec_name(l, i, nb));
    switch (s->type) {
    case S_PROGBITS:
    case S_NOBITS:
    case S_X86_64_UNWIND:
      if ((s->flags & F_EXEC) && (s->flags & F_WRITE))
        return fail(l, HATTN_ECOMPILE, "section %s is both writable and executable", sec_name(l, i, nb));
      if (s->align > MAX_ALIGN)
        return fail(l, HATTN_ECOMPILE, "section %s asks for alignment %llu, more than the loader's %d",
                    sec_name(l, i, nb), (unsigned long long)s->align, MAX_ALIGN);
      l->part[i] = (s->flags & F_EXEC) ? PART_X : (s->flags & F_WRITE) ? PART_RW : PART_R;
      break;
    case S_NOTE: break; /* not needed at run time */
    case S_INIT_ARRAY:
    case S_FINI_ARRAY:
    case S_PREINIT_ARRAY:
      return fail(l, HATTN_ECOMPILE, "section %s holds constructors or destructors, which the loader does not run",
                  sec_name(l, i, nb));
    default:
      return fail(l, HATTN_ECOMPILE, "section %s of type 0x%x is allocated, which the loader does not support",
                  sec_name(l, i, nb), (unsigned)s->type);
    }
  }
  if (nsymtab == 0) return fail(l, HATTN_ECOMPILE, "the object file has no symbol table");
  if (nsymtab > 1) return fail(l, HATTN_ECOMPILE, "the object file has %zu symbol tables, not one", nsymtab);
  return HATTN_OK;
}

/* ---- symbols ------------------------------------------------------------------- */

/* Check the symbol table, every name and every undefined symbol, and give
** each external a stub and a GOT slot. */
static int read_symbols(ld *l) {
  const shdr *st = &l->sh[l->symtab], *str;
  size_t i;
  char nb[96];

  if (st->entsize != SYM_SIZE || st->size % SYM_SIZE != 0)
    return fail(l, HATTN_ECOMPILE,
                "the symbol table has entries of %llu bytes and a size of %llu (entries of 24 bytes expected)",
                (unsigned long long)st->entsize, (unsigned long long)st->size);
  if (st->link == 0 || st->link >= l->shnum || l->sh[st->link].type != S_STRTAB)
    return fail(l, HATTN_ECOMPILE, "the symbol table's string table (section %u) is not a string table", st->link);
  str = &l->sh[st->link];
  l->symoff = st->offset;
  l->nsym = (size_t)(st->size / SYM_SIZE);
  l->stroff = str->offset;
  l->strsize = str->size;
  if (l->nsym == 0) return fail(l, HATTN_ECOMPILE, "the symbol table is empty");
  l->ext = calloc(l->nsym, sizeof *l->ext);
  l->gotsym = calloc(l->nsym, 1);
  l->got = malloc(l->nsym * sizeof *l->got);
  l->stub = malloc(l->nsym * sizeof *l->stub);
  if (!l->ext || !l->gotsym || !l->got || !l->stub) return fail(l, HATTN_ENOMEM, "out of memory");

  for (i = 0; i < l->nsym; i++) {
    sym s;
    const char *name;
    l->got[i] = l->stub[i] = -1;
    if (i == 0) continue;
    sym_read(l, i, &s);
    if ((name = str_at(l, l->stroff, l->strsize, s.name)) == NULL)
      return fail(l, HATTN_ECOMPILE, "symbol %zu has its name at byte %u, outside the string table of %llu bytes", i,
                  s.name, (unsigned long long)l->strsize);
    if (s.shndx == N_UNDEF) {
      if (!*name) return fail(l, HATTN_ECOMPILE, "symbol %zu is undefined and has no name", i);
      if (strcmp(name, "_GLOBAL_OFFSET_TABLE_") == 0) {
        l->gotsym[i] = 1;
        continue;
      }
      if (!external_find(name, &l->ext[i]))
        return fail(l, HATTN_ECOMPILE, "undefined symbol '%s' (the loader resolves only " EXTERNALS_TEXT ")",
                    shown(name, nb));
      l->stub[i] = (int64_t)l->nstub++;
      l->got[i] = (int64_t)l->ngot++;
    } else if (s.shndx == N_COMMON) {
      return fail(l, HATTN_ECOMPILE,
                  "symbol '%s' is a common symbol, which the loader does not support", shown(name, nb));
    } else if (s.shndx == N_ABS) {
      continue;
    } else if (s.shndx >= N_LORESERVE) {
      return fail(l, HATTN_ECOMPILE, "symbol '%s' has the section index 0x%x, which the loader does not support",
                  shown(name, nb), s.shndx);
    } else if (s.shndx >= l->shnum) {
      return fail(l, HATTN_ECOMPILE, "symbol '%s' is in section %u, but there are %zu sections", shown(name, nb),
                  s.shndx, l->shnum);
    } else if (l->part[s.shndx] != PART_NONE && s.value > l->sh[s.shndx].size) {
      char sb[96];
      return fail(l, HATTN_ECOMPILE, "symbol '%s' is at byte %llu of section %s, which has %llu", shown(name, nb),
                  (unsigned long long)s.value, sec_name(l, s.shndx, sb), (unsigned long long)l->sh[s.shndx].size);
    }
  }
  return HATTN_OK;
}

/* The symbol FN_NAME: a global function of an executable section. */
static int find_function(ld *l, const char *fn_name, size_t *out) {
  size_t i;
  char nb[96];
  for (i = 1; i < l->nsym; i++) {
    sym s;
    sym_read(l, i, &s);
    if (strcmp(sym_name(l, &s), fn_name) != 0) continue;
    if (s.shndx == N_UNDEF || (s.bind != B_GLOBAL && s.bind != B_WEAK)) continue;
    if ((s.type != T_FUNC && s.type != T_NOTYPE) || s.shndx >= l->shnum || l->part[s.shndx] != PART_X)
      return fail(l, HATTN_ECOMPILE, "'%s' in the object file is not a global function of an executable section",
                  shown(fn_name, nb));
    if (s.value >= l->sh[s.shndx].size) {
      char sb[96];
      return fail(l, HATTN_ECOMPILE, "function '%s' is at the end of section %s (byte %llu of %llu), not inside it",
                  shown(fn_name, nb), sec_name(l, s.shndx, sb), (unsigned long long)s.value,
                  (unsigned long long)l->sh[s.shndx].size);
    }
    *out = i;
    return HATTN_OK;
  }
  return fail(l, HATTN_ECOMPILE, "no function '%s' in the object file", shown(fn_name, nb));
}

/* The symbol NAME when it is a global function of an executable section
** inside it (*OUT), else 0 and nothing said: an optional entry point. */
static int find_optional(ld *l, const char *name, size_t *out) {
  size_t i;
  for (i = 1; i < l->nsym; i++) {
    sym s;
    sym_read(l, i, &s);
    if (strcmp(sym_name(l, &s), name) != 0) continue;
    if (s.shndx == N_UNDEF || (s.bind != B_GLOBAL && s.bind != B_WEAK)) continue;
    if ((s.type != T_FUNC && s.type != T_NOTYPE) || s.shndx >= l->shnum || l->part[s.shndx] != PART_X ||
        s.value >= l->sh[s.shndx].size)
      return 0;
    *out = i;
    return 1;
  }
  return 0;
}

/* ---- layout ---------------------------------------------------------------------- */

/* X rounded up to a multiple of A, a power of two; X + A does not overflow. */
static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

/* Place every loaded section, the stubs and the GOT; sets l->size. */
static int layout(ld *l, uint64_t page) {
  uint64_t cur = 0;
  size_t i;
  int part;
  char nb[96];
  for (part = PART_X; part <= PART_RW; part++) {
    uint64_t start = cur;
    for (i = 1; i < l->shnum; i++) {
      if (l->part[i] != part) continue;
      cur = align_up(cur, l->sh[i].align);
      if (l->sh[i].size > HATTN__ELF_MAX_IMAGE - cur)
        return fail(l, HATTN_ECOMPILE,
                    "the object file's sections need more than the loader's %llu MiB (%s has %llu bytes)",
                    (unsigned long long)(HATTN__ELF_MAX_IMAGE >> 20), sec_name(l, i, nb),
                    (unsigned long long)l->sh[i].size);
      l->at[i] = cur;
      cur += l->sh[i].size;
    }
    if (part == PART_X && l->nstub) {
      cur = align_up(cur, 16);
      l->stub_at = cur;
      cur += 16 * (uint64_t)l->nstub; /* nstub <= nsym < 2^60 */
    }
    if (part == PART_R) { /* the GOT's address is defined even without slots */
      cur = align_up(cur, 8);
      l->got_at = cur;
      cur += 8 * (uint64_t)l->ngot;
    }
    if (cur > HATTN__ELF_MAX_IMAGE)
      return fail(l, HATTN_ECOMPILE, "the object file needs more than the loader's %llu MiB",
                  (unsigned long long)(HATTN__ELF_MAX_IMAGE >> 20));
    if (cur != start) cur = align_up(cur, page);
    l->part_end[part] = cur;
  }
  l->size = (size_t)(cur ? cur : page);
  return HATTN_OK;
}

/* ---- relocations ------------------------------------------------------------------ */

/* The name of relocation type T, for messages. */
static const char *reloc_name(uint32_t t) {
  switch (t) {
  case R_64: return "R_X86_64_64";
  case R_PC32: return "R_X86_64_PC32";
  case R_PLT32: return "R_X86_64_PLT32";
  case R_GOTPCREL: return "R_X86_64_GOTPCREL";
  case R_32: return "R_X86_64_32";
  case R_32S: return "R_X86_64_32S";
  case R_PC64: return "R_X86_64_PC64";
  case R_GOTOFF64: return "R_X86_64_GOTOFF64";
  case R_GOTPC32: return "R_X86_64_GOTPC32";
  case R_GOTPC64: return "R_X86_64_GOTPC64";
  case R_GOTPCRELX: return "R_X86_64_GOTPCRELX";
  case R_REX_GOTPCRELX: return "R_X86_64_REX_GOTPCRELX";
  default: return "?";
  }
}

/* The bytes relocation type T patches: 4 or 8, 0 for R_NONE, -1 when the
** loader does not support it. */
static int reloc_width(uint32_t t) {
  switch (t) {
  case R_NONE: return 0;
  case R_64: case R_PC64: case R_GOTOFF64: case R_GOTPC64: return 8;
  case R_PC32: case R_PLT32: case R_GOTPCREL: case R_32: case R_32S: case R_GOTPC32:
  case R_GOTPCRELX: case R_REX_GOTPCRELX: return 4;
  default: return -1;
  }
}

/* Whether relocation type T goes through a GOT slot. */
static int is_got(uint32_t t) { return t == R_GOTPCREL || t == R_GOTPCRELX || t == R_REX_GOTPCRELX; }

/*
** Walk every relocation of every loaded section.  Without APPLY: check
** each record (type, symbol, place) and give a GOT slot to every symbol a
** GOT relocation names.  With APPLY (the image mapped and filled): write
** the GOT slots and patch the places, checking that 32-bit values fit.
*/
static int relocate(ld *l, int apply) {
  size_t i, k;
  char nb[96], tb[96], sb[96];
  uintptr_t base = (uintptr_t)l->base, got_base = base + (uintptr_t)l->got_at;

  for (i = 1; i < l->shnum; i++) {
    const shdr *rs = &l->sh[i], *ts;
    size_t nrel, t;
    if (rs->type != S_RELA) continue;
    if (rs->entsize != RELA_SIZE || rs->size % RELA_SIZE != 0)
      return fail(l, HATTN_ECOMPILE,
                  "relocation section %s has entries of %llu bytes and a size of %llu (entries of 24 bytes expected)",
                  sec_name(l, i, nb), (unsigned long long)rs->entsize, (unsigned long long)rs->size);
    if (rs->info == 0 || rs->info >= l->shnum)
      return fail(l, HATTN_ECOMPILE, "relocation section %s applies to section %u, which does not exist",
                  sec_name(l, i, nb), rs->info);
    t = rs->info;
    ts = &l->sh[t];
    /* Skipping it would leave the code it patches unpatched, or let an
    ** edited header turn off relocations: the loader loads what it relocates. */
    if (!(ts->flags & F_ALLOC) || l->part[t] == PART_NONE)
      return fail(l, HATTN_ECOMPILE, "relocation section %s applies to %s, a section the loader does not load",
                  sec_name(l, i, nb), sec_name(l, t, tb));
    if (rs->link != l->symtab)
      return fail(l, HATTN_ECOMPILE, "relocation section %s does not use the symbol table (its link is %u)",
                  sec_name(l, i, nb), rs->link);
    if (ts->type == S_NOBITS)
      return fail(l, HATTN_ECOMPILE, "relocation section %s applies to %s, which has no contents in the file",
                  sec_name(l, i, nb), sec_name(l, t, tb));
    nrel = (size_t)(rs->size / RELA_SIZE);
    for (k = 0; k < nrel; k++) {
      const unsigned char *p = l->b + rs->offset + k * RELA_SIZE;
      uint64_t off = rd64(p), info = rd64(p + 8), end, symi = info >> 32;
      int64_t addend = (int64_t)rd64(p + 16);
      uint32_t type = (uint32_t)info;
      int width = reloc_width(type);
      uintptr_t S = 0, P, v;
      sym s;

      if (width < 0)
        return fail(l, HATTN_ECOMPILE, "unsupported relocation type %u in %s (relocation %zu)", type,
                    sec_name(l, i, nb), k);
      if (width == 0) continue;
      if (symi >= l->nsym)
        return fail(l, HATTN_ECOMPILE, "relocation %zu in %s names symbol %llu, but the symbol table has %zu", k,
                    sec_name(l, i, nb), (unsigned long long)symi, l->nsym);
      if (!within(off, (uint64_t)width, ts->size, &end))
        return fail(l, HATTN_ECOMPILE, "relocation %zu in %s patches bytes %llu to %llu of %s, which has %llu", k,
                    sec_name(l, i, nb), (unsigned long long)off, (unsigned long long)end, sec_name(l, t, tb),
                    (unsigned long long)ts->size);
      s.shndx = N_UNDEF;
      s.name = 0;
      if (symi != 0) {
        sym_read(l, (size_t)symi, &s);
        if (s.shndx != N_UNDEF && s.shndx != N_ABS && l->part[s.shndx] == PART_NONE)
          return fail(l, HATTN_ECOMPILE,
                      "relocation %zu in %s refers to symbol '%s' of %s, a section the loader does not load",
                      k, sec_name(l, i, nb), shown(sym_name(l, &s), sb), sec_name(l, s.shndx, tb));
      }
      if (!apply) {
        if (is_got(type) && l->got[symi] < 0) l->got[symi] = (int64_t)l->ngot++;
        continue;
      }

      /* S: the symbol's address; an external's stub for 32-bit kinds. */
      if (symi == 0) S = 0;
      else if (l->gotsym[symi]) S = got_base;
      else if (s.shndx == N_UNDEF && width == 8) S = l->ext[symi];
      else if (s.shndx == N_UNDEF) S = base + (uintptr_t)(l->stub_at + 16 * (uint64_t)l->stub[symi]);
      else if (s.shndx == N_ABS) S = (uintptr_t)s.value;
      else S = base + (uintptr_t)(l->at[s.shndx] + s.value);
      P = base + (uintptr_t)(l->at[t] + off);
      switch (type) {
      case R_64: v = S + (uintptr_t)addend; break;
      case R_PC32: case R_PLT32: case R_PC64: v = S + (uintptr_t)addend - P; break;
      case R_32: case R_32S: v = S + (uintptr_t)addend; break;
      case R_GOTOFF64: v = S + (uintptr_t)addend - got_base; break;
      case R_GOTPC32: case R_GOTPC64: v = got_base + (uintptr_t)addend - P; break;
      default: { /* the GOT kinds */
        uintptr_t slot = got_base + 8 * (uintptr_t)l->got[symi], sv = l->stub[symi] >= 0 ? l->ext[symi] : S;
        memcpy(l->base + l->got_at + 8 * (uint64_t)l->got[symi], &sv, 8);
        v = slot + (uintptr_t)addend - P;
        break;
      }
      }
      if (width == 8) {
        uint64_t v64 = v;
        memcpy(l->base + l->at[t] + off, &v64, 8);
      } else {
        int ok = type == R_32 ? v <= UINT32_MAX : ((int64_t)v >= INT32_MIN && (int64_t)v <= INT32_MAX);
        uint32_t v32 = (uint32_t)v;
        if (!ok)
          return fail(l, HATTN_ECOMPILE, "relocation %zu in %s (%s against '%s') does not fit in 32 bits", k,
                      sec_name(l, i, nb), reloc_name(type), symi ? shown(sym_name(l, &s), sb) : "");
        memcpy(l->base + l->at[t] + off, &v32, 4);
      }
    }
  }
  return HATTN_OK;
}

/* ---- the entry points ------------------------------------------------------------ */

int hattn__elf_load(const void *bytes, size_t size, const char *fn_name, hattn__elf_image **image, void **fn,
                    char *err, size_t errlen) {
  return hattn__elf_load2(bytes, size, fn_name, NULL, image, fn, NULL, err, errlen);
}

int hattn__elf_load2(const void *bytes, size_t size, const char *fn_name, const char *opt_name,
                     hattn__elf_image **image, void **fn, void **opt_fn, char *err, size_t errlen) {
  ld l;
  long pg = sysconf(_SC_PAGESIZE);
  uint64_t page = pg >= MAX_ALIGN ? (uint64_t)pg : MAX_ALIGN;
  size_t i, fsym = 0, osym = 0;
  int has_opt = 0;
  hattn__elf_image *im = NULL;
  sym s;
  int rc;

  assert(image != NULL && fn != NULL);
  memset(&l, 0, sizeof l);
  l.b = bytes;
  l.n = size;
  l.err = err;
  l.errlen = errlen;
  *image = NULL;
  *fn = NULL;
  if (opt_fn != NULL) *opt_fn = NULL;
  if (bytes == NULL || size == 0) {
    rc = fail(&l, HATTN_EINVAL, "the object file is empty");
    goto done;
  }
  if (fn_name == NULL) {
    rc = fail(&l, HATTN_EINVAL, "no function name was given");
    goto done;
  }
  if ((rc = read_headers(&l)) != HATTN_OK) goto done;
  if ((rc = read_symbols(&l)) != HATTN_OK) goto done;
  if ((rc = find_function(&l, fn_name, &fsym)) != HATTN_OK) goto done;
  if (opt_name != NULL && opt_fn != NULL) has_opt = find_optional(&l, opt_name, &osym);
  if ((rc = relocate(&l, 0)) != HATTN_OK) goto done;
  if ((rc = layout(&l, page)) != HATTN_OK) goto done;

  l.base = mmap(NULL, l.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (l.base == MAP_FAILED) {
    l.base = NULL;
    rc = fail(&l, HATTN_ENOMEM, "cannot map %zu bytes for the object file", l.size);
    goto done;
  }
  for (i = 1; i < l.shnum; i++)
    if (l.part[i] != PART_NONE && l.sh[i].type != S_NOBITS)
      memcpy(l.base + l.at[i], l.b + l.sh[i].offset, (size_t)l.sh[i].size);
  for (i = 1; i < l.nsym; i++)
    if (l.stub[i] >= 0) {
      /* jmp *GOT(%rip), then int3 to the next stub. */
      unsigned char *st = l.base + l.stub_at + 16 * (uint64_t)l.stub[i];
      uint64_t slot = l.got_at + 8 * (uint64_t)l.got[i];
      int32_t rel = (int32_t)((int64_t)slot - (int64_t)(l.stub_at + 16 * (uint64_t)l.stub[i] + 6));
      memset(st, 0xcc, 16);
      st[0] = 0xff;
      st[1] = 0x25;
      memcpy(st + 2, &rel, 4);
      memcpy(l.base + slot, &l.ext[i], 8);
    }
  if ((rc = relocate(&l, 1)) != HATTN_OK) goto done;

  /* Read-only everywhere, then the executable and writable parts. */
  if (mprotect(l.base, l.size, PROT_READ) != 0 ||
      (l.part_end[PART_X] > 0 && mprotect(l.base, (size_t)l.part_end[PART_X], PROT_READ | PROT_EXEC) != 0) ||
      (l.part_end[PART_RW] > l.part_end[PART_R] &&
       mprotect(l.base + l.part_end[PART_R], (size_t)(l.part_end[PART_RW] - l.part_end[PART_R]),
                PROT_READ | PROT_WRITE) != 0)) {
    rc = fail(&l, HATTN_ENOMEM, "cannot set the protection of the object file's memory");
    goto done;
  }
  if ((im = malloc(sizeof *im)) == NULL) {
    rc = fail(&l, HATTN_ENOMEM, "out of memory");
    goto done;
  }
  sym_read(&l, fsym, &s);
  im->base = l.base;
  im->size = l.size;
  l.base = NULL;
  *image = im;
  *fn = im->base + l.at[s.shndx] + s.value;
  if (has_opt) {
    sym_read(&l, osym, &s);
    *opt_fn = im->base + l.at[s.shndx] + s.value;
  }
  rc = HATTN_OK;
done:
  if (l.base) munmap(l.base, l.size);
  free(l.sh);
  free(l.part);
  free(l.at);
  free(l.ext);
  free(l.gotsym);
  free(l.got);
  free(l.stub);
  return rc;
}

void hattn__elf_unload(hattn__elf_image *image) {
  if (image == NULL) return;
  munmap(image->base, image->size);
  free(image);
}

#else /* not x86-64 */

struct hattn__elf_image {
  int unused;
};

int hattn__elf_load(const void *bytes, size_t size, const char *fn_name, hattn__elf_image **image, void **fn,
                    char *err, size_t errlen) {
  (void)bytes;
  (void)size;
  (void)fn_name;
  *image = NULL;
  *fn = NULL;
  snprintf(err, errlen, "loading object files is implemented for x86-64 only");
  return HATTN_ENOTSUP;
}

int hattn__elf_load2(const void *bytes, size_t size, const char *fn_name, const char *opt_name,
                     hattn__elf_image **image, void **fn, void **opt_fn, char *err, size_t errlen) {
  (void)opt_name;
  if (opt_fn != NULL) *opt_fn = NULL;
  return hattn__elf_load(bytes, size, fn_name, image, fn, err, errlen);
}

void hattn__elf_unload(hattn__elf_image *image) { (void)image; }

#endif
