/*
** cpu_abi.h: the calling convention between the CPU kernels that
** gen/emit_llvm.c writes and the runtime that calls them.  A CPU kernel is
** one function, specialised for one pattern, dtype, head dim and tile
** configuration:
**
**   void NAME(const hattn_cpu_args *args, int64_t bh, int64_t qb,
**             float *scratch);
**
** It computes the output rows of query block QB (rows [qb*bm, min(lq,
** (qb+1)*bm))) of flattened head BH = b * heads + h, reading the FULL and
** PARTIAL key blocks of that query block from the plan tables in ARGS, and
** writes O and LSE for those rows (the module also holds NAME_decode, for
** 1 to 16 query rows: see hattn_cpu_split below).  SCRATCH is at least
** hattn_cpu_scratch_bytes(config) bytes, 64-byte aligned, private to the
** calling thread.  Kernels never allocate, never call back, and touch
** nothing but ARGS' tensors and SCRATCH.
**
** This header is part of what generated object files depend on: a change
** to hattn_cpu_args bumps HATTN_CPU_ABI_VERSION.  Installed beside hattn.h
** only because the header `hattn gen` writes (hattn_kernels.h) includes it;
** programs pass its struct along and read nothing of it: not API.
*/
#ifndef HATTN_GEN_CPU_ABI_H
#define HATTN_GEN_CPU_ABI_H

#include <stdint.h>

/* Version 4 changed nothing here: the CUDA kernels' arguments grew, and one
** number (HATTN_PREBUILT_ABI) names both. */
#define HATTN_CPU_ABI_VERSION 4

/* The arguments of one launch.  Field offsets are what the emitted code
** reads: keep every field 8 bytes wide and never reorder them. */
typedef struct hattn_cpu_args {
  /* Tensors.  Q and O are [batch, heads, lq, head_dim], K and V are
  ** [batch, kv_heads, lk, head_dim], all with the element strides below
  ** (index 0 batch, 1 head, 2 sequence, 3 head dim; stride 3 must be 1).
  ** Elements are the kernel's dtype (fp32, or fp16/bf16 as uint16_t).
  ** LSE is float32 [batch, heads, lq] with strides lse_stride (may be NULL). */
  const void *q, *k, *v;
  void *o;
  float *lse;
  int64_t q_stride[4], k_stride[4], v_stride[4], o_stride[4];
  int64_t lse_stride[3];
  int64_t heads, kv_heads, lq, lk;
  /* Score modifiers: the score scale (1/sqrt(head_dim) or scale(X)), and
  ** the ALiBi slope of each head h (NULL without alibi).  softcap and a
  ** fixed alibi(M) are compiled into the kernel. */
  double scale;
  const float *alibi_slopes;
  /* The plan (gen/plan.h) for bm x bn blocks: table t = (plan_per_head ?
  ** bh : 0); FULL key blocks of query block i are
  ** full_idx[t][full_off[t][i] .. full_off[t][i+1]), PARTIAL likewise. */
  const int64_t *const *full_off;
  const int32_t *const *full_idx;
  const int64_t *const *partial_off;
  const int32_t *const *partial_idx;
  int64_t plan_per_head;
  /* Run-time data for the element predicate of PARTIAL blocks.
  ** doc_id[pos] is the document of key position pos (int32, [lk]);
  ** layouts[i] are the spec's block layouts; random_bits[j] is the bit set
  ** of the j-th random() atom of the mask (in depth-first, left-to-right
  ** order of the canonical tree) over (query 64-block, key 64-block)
  ** pairs: row i (qpos / 64) holds words_per_row 64-bit words, bit kb of
  ** the row is key 64-block kb, words_per_row = ceil(ceil(lk / 64) / 64);
  ** topk_blocks as in gen/mask.h (flattened head bh), rows of topk_k =
  ** hattn__topk_staged_width(K, lk) entries (gen/lower.h). */
  const int32_t *doc_id;
  const struct hattn_cpu_layout *layouts;
  const uint64_t *const *random_bits;
  int64_t random_words_per_row;
  const int32_t *topk_blocks;
  int64_t topk_k;
  /* Learned sink logits per query head ([heads], natural-log units like
  ** the modified scores), or NULL: each row's softmax gets one more term
  ** e^sink[h] with no value (O and LSE as gen/mask.h says).  Added in
  ** version 2. */
  const float *sink_logits;
  /* Paged K and V (version 3), or block_table NULL: K and V as above.
  ** Otherwise K and V are pools of pages of 2^page_shift key positions:
  ** key k of batch entry b is slot s = k & (2^page_shift - 1) of page
  ** p = block_table[b * block_table_stride + (k >> page_shift)], and its
  ** element d of kv head kh is at k + p * k_page_stride + kh * k_stride[1]
  ** + s * k_stride[2] + d (V likewise); k_stride[0] and v_stride[0] are 0.
  ** The runtime has checked every entry the kernel reads. */
  const int32_t *block_table;
  int64_t block_table_stride;
  int64_t page_shift;
  int64_t k_page_stride, v_page_stride;
  /* The positions of query row 0 and key row 0: query row q is at q_pos0 +
  ** q and key row k at k_pos0 + k (gen/mask.h; lk - lq and 0 unless the
  ** caller sets offsets); every position lies in (-2^30, 2^30).  Added in
  ** version 3. */
  int64_t q_pos0, k_pos0;
} hattn_cpu_args;

/* One work item of the decode kernel, the module's second function:
**
**   void NAME_decode(const hattn_cpu_args *args, const hattn_cpu_split *split,
**                    float *scratch);
**
** It computes, for batch entry B, the PACK query heads H0 .. H0 + PACK - 1
** (all of one KV head, or one head when the plan is per head) and all of
** their lq rows (lq at most the kernel's bm, so every row is in query
** block 0), rows = PACK * lq packed row r = (h - H0) * lq + q, the
** attention over the key blocks BEGIN .. END of query block 0's list in
** plan table TABLE: the FULL blocks, then the PARTIAL ones, counted
** together.  It writes no output: PART (64-byte aligned) receives, for
** rows rounded up to the kernel's rows (rp), the unnormalised accumulator
** acc[rp][dp] (dp: head_dim rounded up to a vector), the scaled query rows
** q[rp][dp] (its own), the running maxima m[rp] in base 2 and the sums
** l[rp]: O of the split is acc / l, its LSE ln 2 * (m + log2 l).  SCRATCH
** is the forward kernel's.  The runtime merges the splits of a row,
** learned sinks included.  Kernels without this function (object files of
** an older hattn) run decode through NAME. */
typedef struct hattn_cpu_split {
  int64_t b, h0, pack, table;
  int64_t begin, end;
  float *part;
} hattn_cpu_split;

/* A block layout as the kernels read it. */
typedef struct hattn_cpu_layout {
  int64_t bm, bn, nqb, nkb;
  const uint8_t *bits;
} hattn_cpu_layout;

#endif /* HATTN_GEN_CPU_ABI_H */
