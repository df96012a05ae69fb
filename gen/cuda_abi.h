/*
** cuda_abi.h: the calling convention between the CUDA kernels that
** gen/emit_cuda.c writes and the runtime that launches them.  This file is
** valid C and CUDA C++: the emitter pastes it, verbatim from the copy
** embedded in the library, into every generated source.
**
** A kernel is  extern "C" __global__ void NAME(const hattn_cuda_args args)
** launched on a grid of (number of query blocks, batch * heads) CTAs of
** hattn__cuda_config.warps * 32 threads, with the dynamic shared memory
** that hattn__cuda_smem_bytes says.  CTA (x, y) computes query block x of
** flattened head y = b * heads + h.
**
** Every forward module also holds NAME_paged, the same kernel on paged K
** and V (block_table set; launched alike), and NAME_decode and
** NAME_combine, the decode kernels of few queries per sequence
** (templates/attn_decode.cuh), on the same arguments: NAME_decode on a grid of (ceil(pack * lq / 16), batch *
** heads / pack, nsplit) CTAs of hattn__cuda_decode_warps * 32 threads with
** hattn__cuda_decode_smem_bytes of dynamic shared memory, for a plan of
** 16 x hattn__cuda_decode_block_n blocks (pack = heads / kv_heads, or 1 for
** a plan per head); then, when nsplit > 1, NAME_combine on ceil(batch *
** heads * lq / 4) CTAs of 128 threads.  Internal; not installed.
*/
#ifndef HATTN_GEN_CUDA_ABI_H
#define HATTN_GEN_CUDA_ABI_H

#define HATTN_CUDA_ABI_VERSION 4

typedef struct hattn_cuda_args {
  /* Tensors in device memory.  Q and O are [batch, heads, lq, head_dim],
  ** K and V [batch, kv_heads, lk, head_dim], bf16 or fp16, with element
  ** strides (index 0 batch, 1 head, 2 sequence, 3 head dim, which is 1);
  ** every row start 16-byte aligned.  LSE float32 [batch, heads, lq] with
  ** lse_stride, or NULL. */
  const void *q, *k, *v;
  void *o;
  float *lse;
  long long q_stride[4], k_stride[4], v_stride[4], o_stride[4], lse_stride[3];
  int heads, kv_heads, lq, lk;
  float scale_log2;          /* the score scale times log2(e) */
  float scale;               /* the score scale */
  const float *alibi_slopes; /* [heads], device memory, or NULL */
  /* The plan for block_m x block_n blocks (gen/plan.h), in device memory
  ** as int32: the FULL key blocks of query block i of table t are
  ** full_idx[t * idx_stride + full_off[t * off_stride + i] ...
  ** full_off[t * off_stride + i + 1]), PARTIAL likewise; t = per_head ?
  ** y : 0.  Offsets are relative to the table's own idx start. */
  const int *full_off, *full_idx, *partial_off, *partial_idx;
  long long off_stride, full_idx_stride, partial_idx_stride;
  int per_head;
  /* Run-time data of PARTIAL blocks, in device memory: doc_id[kpos]
  ** (int32, [lk]); layout bits (uint8) and shape per layout number;
  ** random bit sets (uint64 words, rows of random_words per query 64-block)
  ** per random atom in depth-first order; routed blocks as gen/mask.h, in
  ** rows of topk_k = hattn__topk_staged_width(K, lk) (gen/lower.h). */
  const int *doc_id;
  const unsigned char *layout_bits[4];
  long long layout_shape[4][4];  /* bm, bn, nqb, nkb */
  const unsigned long long *random_bits[4];
  long long random_words;
  const int *topk_blocks;
  int topk_k;
  /* Learned sink logits per query head ([heads], device memory, natural-log
  ** units like the modified scores), or NULL: one more term e^sink[h] with
  ** no value in each row's softmax (gen/mask.h).  Added in version 2. */
  const float *sink_logits;
  /* The decode kernels (templates/attn_decode.cuh): the batch, the number
  ** of key splits, and float32 device memory for the splits' results when
  ** there are more than one: split_o [nsplit][batch][heads][lq][head_dim],
  ** split_lse [nsplit][batch][heads][lq] (natural log, no sink), merged by
  ** the combine kernel.  Added in version 3. */
  int batch, nsplit;
  float *split_o, *split_lse;
  /* Paged K and V (hattn_paged_kv), or block_table NULL: K and V are then
  ** pools whose k_stride[0] and v_stride[0] are 0, stride 1 between kv
  ** heads and stride 2 between the slots of a page; key row k of batch
  ** entry b is slot k & (2^page_shift - 1) of page block_table[b *
  ** table_stride + (k >> page_shift)], k_page_stride (v_page_stride)
  ** elements apart.  The kernels trust the entries.  Added in version 3. */
  const int *block_table;
  long long table_stride, k_page_stride, v_page_stride;
  int page_shift;
  /* The positions of query row 0 and key row 0: query row q is at q_pos0 +
  ** q and key row k at k_pos0 + k (gen/mask.h; lk - lq and 0 unless the
  ** caller sets offsets); every position lies in (-2^30, 2^30).  Added in
  ** version 3. */
  long long q_pos0, k_pos0;
  /* Variable-length batches (templates/cuda_common.cuh, hattn_seq_of), or
  ** all four NULL: every batch entry has lq queries and lk keys.  Device
  ** int32 arrays.  Packed form: cu_q [batch + 1] cumulative offsets, batch
  ** entry b's query rows are rows cu_q[b] .. cu_q[b + 1] of Q and O (whose
  ** batch strides are then 0), cu_k likewise for K and V.  Padded form:
  ** len_q [batch] (len_k) the query (key) rows of entry b, its first rows
  ** of the batch entry; rows of O past them are written 0, their LSE -inf.
  ** Either form sets an entry's positions to qpos = q + lk_b - lq_b, kpos
  ** = k, and its lengths lie in [0, lq] and [0, lk] (lq and lk the
  ** maxima); the kernels trust them.  Added in version 4. */
  const int *cu_q, *cu_k, *len_q, *len_k;
} hattn_cuda_args;

/* The warp-specialised forward kernel (hattn__cuda_config.wgmma 2) takes a
** second parameter, by value and __grid_constant__ (TMA reads the maps where
** the parameter lives):  NAME(const hattn_cuda_args args, const
** __grid_constant__ hattn_cuda_tmaps maps), NAME_paged likewise.  Where
** MAPS.on, q, k and v are CUtensorMap descriptors (cuTensorMapEncodeTiled)
** of Q [batch][heads][lq][head_dim] and K and V [batch][kv_heads][lk]
** [head_dim], innermost first, with boxes of 64 columns (128 bytes) x
** block_m (block_n) rows and the 128-byte swizzle; else the kernel loads
** with cp.async and ignores them. */
#if defined(__cplusplus)
#define HATTN_CUDA_ALIGN64 alignas(64)
#else
#define HATTN_CUDA_ALIGN64 _Alignas(64)
#endif

typedef struct hattn_cuda_tmap {
  HATTN_CUDA_ALIGN64 unsigned long long opaque[16];
} hattn_cuda_tmap;

typedef struct hattn_cuda_tmaps {
  hattn_cuda_tmap q, k, v;
  int on;
} hattn_cuda_tmaps;

/* The merge kernel (hattn__emit_cuda_merge): extern "C" __global__ void
** NAME(const hattn_cuda_merge_args args), one thread per output element
** (a grid-stride loop), blocks of HATTN_CUDA_MERGE_THREADS threads.  Part
** i's O [dims] of the kernel's dtype is at o[i] with element strides
** o_stride[i] (any, the last included), its LSE float32 [dims[0..2]] at
** lse[i] with lse_stride[i]; out and out_lse (NULL: not written) likewise.
** The parts travel by value, at most HATTN_CUDA_MERGE_MAX_PARTS. */
#define HATTN_CUDA_MERGE_MAX_PARTS 16
#define HATTN_CUDA_MERGE_THREADS 256

typedef struct hattn_cuda_merge_args {
  const void *o[HATTN_CUDA_MERGE_MAX_PARTS];
  const float *lse[HATTN_CUDA_MERGE_MAX_PARTS];
  long long o_stride[HATTN_CUDA_MERGE_MAX_PARTS][4];
  long long lse_stride[HATTN_CUDA_MERGE_MAX_PARTS][3];
  void *out;
  float *out_lse;
  long long out_stride[4], out_lse_stride[3];
  long long dims[4];          /* batch, heads, rows, head dim */
  int nparts;
} hattn_cuda_merge_args;

#endif /* HATTN_GEN_CUDA_ABI_H */
