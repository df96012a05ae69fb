/*
** tables.h: the run-time tables of a problem (plan lists, document ids,
** block layouts, random bit sets, top-k blocks, ALiBi slopes, sink
** logits), built once per problem into one host buffer with an offset per
** table, which every backend reads: the CPU in place, CUDA after one
** upload.  The only place where the runtime asks the mask which run-time
** tables it needs.  Internal; not installed.
*/
#ifndef HATTN_RUNTIME_TABLES_H
#define HATTN_RUNTIME_TABLES_H

#include <stddef.h>
#include <stdint.h>

#include "mask.h"
#include "plan.h"
#include "reference.h"
#include "spec.h"

/* An offset that names no table. */
#define HATTN__TABLE_NONE ((size_t)-1)

/*
** The tables of one problem.  BUF holds every table, each segment 256-byte
** aligned and zero-padded, SIZE bytes in all (and at least 64 zeroed
** bytes beyond SIZE, so a kernel's vector read past a table's end stays
** inside the buffer).  Each offset is HATTN__TABLE_NONE where the table
** is absent.
**
** The plan's lists (when asked for) come first, as int32: the FULL key
** blocks of query block i of table t are full_idx[t * full_idx_stride +
** full_off[t * off_stride + i] .. full_off[t * off_stride + i + 1]),
** offsets relative to each table's own idx start; PARTIAL likewise.
** Then, in this order: SINK (float [heads], when the caller passed sink
** logits), SLOPES (float [heads], patterns with alibi), DOC_ID (int32
** [lk + 1], document()), LAYOUT[l] (uint8 [nqb * nkb] per spec layout,
** blocks()), RANDOM[j] (uint64, rows of RANDOM_WORDS words per query
** 64-block, per random() atom in depth-first order), TOPK (int32 [batch *
** heads * ceil(lk / 64) * topk_k], topk(): rows of the caller's distinct
** routed blocks padded with -1, topk_k = hattn__topk_staged_width(K, lk),
** lower.h).
*/
/* The most the bit sets of a problem's random() atoms may take, together:
** 64 MiB, reached at about 1.4m keys with one atom (docs/spec.md, Limits). */
#define HATTN_RANDOM_MAX_BYTES ((int64_t)1 << 26)

typedef struct hattn__tables {
  unsigned char *buf;
  size_t size, cap;
  size_t full_off, partial_off, full_idx, partial_idx;
  int64_t off_stride, full_idx_stride, partial_idx_stride;
  int per_head;
  size_t sink, slopes, doc_id, topk;
  int nlayouts;                 /* layouts staged: the spec's, when the mask reads any */
  size_t *layout;               /* [nlayouts] */
  int nrandom;
  size_t *random;               /* [nrandom] */
  int64_t random_words;         /* 0 without random() atoms */
  int64_t topk_k;               /* 0 without topk() */
} hattn__tables;

/*
** Build the tables of pattern P for SHAPE and ENV (checked with
** hattn__env_check) into *T; PLAN, when not NULL, has its lists staged
** first as int32 (the lists must fit, and the random bit sets in
** HATTN_RANDOM_MAX_BYTES: HATTN_ENOTSUP otherwise).  Returns
** HATTN_OK, or HATTN_ENOMEM / HATTN_ENOTSUP with a sentence in ERR (*T is
** then empty).  Free with hattn__tables_clear.
*/
int hattn__tables_build(const hattn__pattern *p, const hattn__shape *shape, const hattn__mask_env *env,
                        const hattn__plan *plan, hattn__tables *t, char *err, size_t errlen);

/* Free what T holds and empty it; an empty T is fine. */
void hattn__tables_clear(hattn__tables *t);

/* The table at offset OFF of T, or NULL when OFF is HATTN__TABLE_NONE. */
static inline void *hattn__tables_at(const hattn__tables *t, size_t off) {
  return off == HATTN__TABLE_NONE ? NULL : (void *)(t->buf + off);
}

/* Whether ENV's run-time data was made for SHAPE and is well formed for
** MASK (hattn__mask_env_check): HATTN_OK, or HATTN_EINPUT with a sentence
** in ERR.  Every backend checks it before building tables. */
int hattn__env_check(const hattn__mask_env *env, const hattn__shape *shape, const hattn__mask *mask,
                     char *err, size_t errlen);

#endif /* HATTN_RUNTIME_TABLES_H */
