/*
** host_cpu.c: what the host CPU is and what it can run, read from CPUID
** and XGETBV without LLVM, so that the runtime-only library names CPU
** kernels exactly as the compiling library does.  See cpu.h.
*/
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>

/* One instruction-set feature: its LLVM name and where CPUID reports it. */
typedef struct feature {
  const char *name;
  unsigned leaf, subleaf;
  char reg;                    /* 'b', 'c' or 'd' */
  int bit;
  int state;                   /* 0: no OS state; 1: AVX (YMM); 2: AVX-512 (ZMM); 3: AMX tiles */
} feature;

/* Every extension LLVM may use for the kernels' code.  The kernel target
** hashes the whole set, so a kernel is never loaded on a CPU that lacks one
** of them; the short list (cpu.h) names the ones that matter to speed. */
static const feature features[] = {
  {"sse3", 1, 0, 'c', 0, 0},          {"ssse3", 1, 0, 'c', 9, 0},
  {"fma", 1, 0, 'c', 12, 1},          {"sse4.1", 1, 0, 'c', 19, 0},
  {"sse4.2", 1, 0, 'c', 20, 0},       {"movbe", 1, 0, 'c', 22, 0},
  {"popcnt", 1, 0, 'c', 23, 0},       {"aes", 1, 0, 'c', 25, 0},
  {"avx", 1, 0, 'c', 28, 1},          {"f16c", 1, 0, 'c', 29, 1},
  {"pclmul", 1, 0, 'c', 1, 0},        {"bmi", 7, 0, 'b', 3, 0},
  {"avx2", 7, 0, 'b', 5, 1},          {"bmi2", 7, 0, 'b', 8, 0},
  {"avx512f", 7, 0, 'b', 16, 2},      {"avx512dq", 7, 0, 'b', 17, 2},
  {"adx", 7, 0, 'b', 19, 0},          {"avx512ifma", 7, 0, 'b', 21, 2},
  {"avx512cd", 7, 0, 'b', 28, 2},     {"avx512bw", 7, 0, 'b', 30, 2},
  {"avx512vl", 7, 0, 'b', 31, 2},     {"avx512vbmi", 7, 0, 'c', 1, 2},
  {"avx512vbmi2", 7, 0, 'c', 6, 2},   {"gfni", 7, 0, 'c', 8, 0},
  {"vaes", 7, 0, 'c', 9, 1},          {"vpclmulqdq", 7, 0, 'c', 10, 1},
  {"avx512vnni", 7, 0, 'c', 11, 2},   {"avx512bitalg", 7, 0, 'c', 12, 2},
  {"avx512vpopcntdq", 7, 0, 'c', 14, 2}, {"avx512fp16", 7, 0, 'd', 23, 2},
  {"amx-bf16", 7, 0, 'd', 22, 3},     {"amx-tile", 7, 0, 'd', 24, 3},
  {"amx-int8", 7, 0, 'd', 25, 3},     {"avxvnni", 7, 1, 'a', 4, 1},
  {"avx512bf16", 7, 1, 'a', 5, 2},    {"lzcnt", 0x80000001u, 0, 'c', 5, 0},
  {"fma4", 0x80000001u, 0, 'c', 16, 1},
};

/* The short list: features that change what a kernel can do or how fast. */
static const char *const short_list[] = {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                                         "avx512dq", "avx512bf16", "avx512fp16", "amx-tile", "amx-bf16",
                                         NULL};

static int has(const feature *f, unsigned max_leaf, unsigned max_ext, unsigned long long xcr0) {
  unsigned r[4] = {0, 0, 0, 0}, v;
  if (f->leaf >= 0x80000000u ? f->leaf > max_ext : f->leaf > max_leaf) return 0;
  __cpuid_count(f->leaf, f->subleaf, r[0], r[1], r[2], r[3]);
  v = f->reg == 'a' ? r[0] : f->reg == 'b' ? r[1] : f->reg == 'c' ? r[2] : r[3];
  if (!((v >> f->bit) & 1u)) return 0;
  /* The OS must save the registers: XMM+YMM (bits 1, 2), opmask and ZMM
  ** (5, 6, 7), AMX tile config and data (17, 18). */
  if (f->state >= 1 && (xcr0 & 0x6) != 0x6) return 0;
  if (f->state == 2 && (xcr0 & 0xe0) != 0xe0) return 0;
  if (f->state == 3 && (xcr0 & 0x60000) != 0x60000) return 0;
  return 1;
}

static void probe(hattn__host_cpu *h) {
  unsigned a, b, c, d, max_leaf, max_ext, i;
  unsigned long long xcr0 = 0;
  uint64_t hash = 0xcbf29ce484222325ull;
  char brand[49];
  size_t n = 0, na = 0, j;
  const char *s;

  max_leaf = __get_cpuid_max(0, NULL);
  max_ext = __get_cpuid_max(0x80000000u, NULL);
  __cpuid(1, a, b, c, d);
  if ((c >> 27) & 1u) {        /* OSXSAVE: XGETBV may be used */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = ((unsigned long long)hi << 32) | lo;
  }
  for (i = 0; i < sizeof features / sizeof features[0]; i++) {
    int on = has(&features[i], max_leaf, max_ext, xcr0);
    for (s = features[i].name; *s; s++) hash = (hash ^ (unsigned char)*s) * 0x100000001b3ull;
    hash = (hash ^ (unsigned char)(on ? '+' : '-')) * 0x100000001b3ull;
    if (!on) continue;
    if (na + strlen(features[i].name) + 2 < sizeof h->all)
      na += (size_t)snprintf(h->all + na, sizeof h->all - na, "%s%s", na ? "," : "", features[i].name);
    if (!strcmp(features[i].name, "avx512f")) h->vec = 16;
    for (j = 0; short_list[j]; j++)
      if (!strcmp(short_list[j], features[i].name) && n + strlen(features[i].name) + 2 < sizeof h->features)
        n += (size_t)snprintf(h->features + n, sizeof h->features - n, "%s%s", n ? "," : "", features[i].name);
  }
  memset(brand, 0, sizeof brand);
  if (max_ext >= 0x80000004u) {
    for (i = 0; i < 3; i++) {
      __cpuid(0x80000002u + i, a, b, c, d);
      memcpy(brand + 16 * i, &a, 4), memcpy(brand + 16 * i + 4, &b, 4);
      memcpy(brand + 16 * i + 8, &c, 4), memcpy(brand + 16 * i + 12, &d, 4);
    }
  }
  /* Trim, and keep printable ASCII only: the name goes into messages. */
  for (s = brand; *s == ' '; s++) {}
  n = 0;
  for (; *s && n + 1 < sizeof h->name; s++)
    if (*s >= 0x20 && *s < 0x7f && !(*s == ' ' && n > 0 && h->name[n - 1] == ' ')) h->name[n++] = *s;
  while (n > 0 && h->name[n - 1] == ' ') n--;
  h->name[n] = '\0';
  if (n == 0) snprintf(h->name, sizeof h->name, "x86-64");
  snprintf(h->target, sizeof h->target, "x86-64/%016llx", (unsigned long long)hash);
}

#else /* not x86-64 */

static void probe(hattn__host_cpu *h) {
#if defined(__aarch64__)
  snprintf(h->name, sizeof h->name, "aarch64");
#else
  snprintf(h->name, sizeof h->name, "unknown");
#endif
  /* Nothing is known about the features: no stored kernel is ever shared
  ** between hosts, because the target names the host itself. */
  snprintf(h->target, sizeof h->target, "%s/host-%08lx", h->name, (unsigned long)gethostid());
}

#endif

void hattn__host_cpu_probe(hattn__host_cpu *out) {
  long cores;
  memset(out, 0, sizeof *out);
  out->vec = 8;
  probe(out);
  cores = sysconf(_SC_NPROCESSORS_ONLN);
  out->cores = cores > 0 ? (int)cores : 1;
}
