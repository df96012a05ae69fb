/*
** cuda_common.cuh: the pieces that every kernel body shares, on top of the
** architecture layer (templates/arch_sm80.cuh): the tile loader and the
** key-block walker; and the contract between a kernel body and the
** generated pattern.  Pasted by gen/emit_cuda.c after the architecture
** layer and before the kernel body.
**
** The pattern contract.  A kernel body is a function template whose
** arguments are a configuration and a pattern, both types; the emitter
** writes them (struct hattn_config, struct hattn_pattern) after the body and
** instantiates the body with them in the extern "C" entry point.  The body
** uses nothing else of the generated code.  The configuration:
**   static constexpr int block_m, block_n   query rows per CTA, keys per block
**   static constexpr int head_dim           64, 128 or 256
**   static constexpr int warps, stages      warps per CTA, K/V buffers
**   static constexpr bool is_bf16           bf16, else fp16
** The pattern (qpos = q + args.q_pos0 and kpos = k + args.k_pos0, the
** positions of query row q and key row k):
**   static bool visible(q, qpos, kpos, args, bh)
**                            whether key kpos is visible to query row q of
**                            flattened head bh (called for q < lq, k < lk)
**   static float score(s, qpos, kpos, slope)
**                            the score modifiers, from q.k * scale
**   static float slope(args, h)
**                            the ALiBi slope of head h (0 without ALiBi)
**   static constexpr bool has_score_mod
**                            whether score() is more than the identity
**   static constexpr bool band; static constexpr long long band_lo, band_hi
**                            whether the mask is the band of distances
**                            band_lo <= qpos - kpos <= band_hi, whose key
**                            blocks come in closed form (hattn_key_blocks)
*/

/* ---- tile loads ---------------------------------------------------------- */

/* Copy ROWS rows of HEAD_DIM elements starting at row ROW0 of the matrix at
** SRC (bytes; row stride STRIDE elements) into the swizzled tile at DST;
** rows at or beyond NROWS are zero-filled.  Without PANELS (the mma.sync
** kernel) the tile is whole rows of HEAD_DIM * 2 bytes, 16-byte chunk c of
** row r at chunk position c ^ (r & 7); with PANELS (wgmma) it is HEAD_DIM
** / 64 panels of ROWS rows x 128 bytes, chunk c of row r in panel c / 8 at
** position (c % 8) ^ (r & 7).  Thread TID copies chunk TID % CHUNKS of rows
** TID / CHUNKS + RSTEP i: one running global address and, where RSTEP is a
** multiple of 8, one swizzled chunk for all i.  TID goes through
** hattn_opaque, so that the compiler recomputes these few values per call
** instead of keeping every copy's address of every call site in registers
** across the key-block loop (128 x 64 tiles spilled). */
template <int ROWS, int HEAD_DIM, int THREADS, bool PANELS>
__device__ __forceinline__ void hattn_load_rows(unsigned dst, const char *src, long long stride,
                                                int row0, int nrows, int tid) {
  constexpr int CHUNKS = HEAD_DIM / 8;
  static_assert(THREADS % CHUNKS == 0, "whole rows per pass");
  constexpr int RSTEP = THREADS / CHUNKS;
  static_assert(ROWS % RSTEP == 0, "whole passes");
  constexpr unsigned ROW_BYTES = PANELS ? 128 : HEAD_DIM * 2;
  const int id = (int)hattn_opaque((unsigned)tid);
  const int r0 = id / CHUNKS, c = id % CHUNKS;
  const char *g = src + ((long long)(row0 + r0) * stride + c * 8) * 2;
  const long long gstep = stride * 2 * RSTEP;
  const unsigned d0 = dst + (PANELS ? (c / 8) * ROWS * 128 : 0) + r0 * ROW_BYTES;
  const int cs = PANELS ? c % 8 : c;            /* the chunk within its row */
#pragma unroll
  for (int i = 0; i < ROWS / RSTEP; i++) {
    const int r = r0 + i * RSTEP;
    const bool valid = row0 + r < nrows;
    const unsigned sw = RSTEP % 8 == 0 ? (unsigned)((cs ^ (r0 & 7)) << 4)
                                       : (unsigned)((cs ^ (r & 7)) << 4);
    hattn_cp_async16(d0 + i * RSTEP * ROW_BYTES + sw, valid ? g : src, valid);
    g += gstep;
  }
}

/* hattn_load_rows for K (IS_V false) or V of batch entry B: SRC is the kv
** head's rows (bytes; the batch entry's too unless paged).  Contiguous:
** row r at r * stride[2] elements.  Paged (A.block_table set,
** gen/cuda_abi.h): row r in page block_table[B * table_stride + (r >>
** page_shift)] at page_stride elements a page, slot r & (2^page_shift - 1)
** at stride[2] elements a slot.  PAGED is a template argument, so that a
** contiguous kernel holds no code or registers of the paged path; the
** paged path loads its rows' table entries first (independent loads, then
** the copies). */
template <int ROWS, int HEAD_DIM, int THREADS, bool PANELS, bool IS_V, bool PAGED>
__device__ __forceinline__ void hattn_load_kv(unsigned dst, const hattn_cuda_args &a, const char *src, int b, int row0,
                                              int nrows, int tid) {
  const long long stride = IS_V ? a.v_stride[2] : a.k_stride[2];
  if constexpr (!PAGED) {
    hattn_load_rows<ROWS, HEAD_DIM, THREADS, PANELS>(dst, src, stride, row0, nrows, tid);
    return;
  }
  constexpr int CHUNKS = HEAD_DIM / 8;
  constexpr int RSTEP = THREADS / CHUNKS;
  constexpr int N = ROWS / RSTEP;
  constexpr unsigned ROW_BYTES = PANELS ? 128 : HEAD_DIM * 2;
  const long long page_stride = IS_V ? a.v_page_stride : a.k_page_stride;
  const int *table = a.block_table + (long long)b * a.table_stride;
  const int shift = a.page_shift, mask = (1 << shift) - 1;
  const int id = (int)hattn_opaque((unsigned)tid);
  const int r0 = id / CHUNKS, c = id % CHUNKS;
  const unsigned d0 = dst + (PANELS ? (c / 8) * ROWS * 128 : 0) + r0 * ROW_BYTES;
  const int cs = PANELS ? c % 8 : c;
  int page[N];
#pragma unroll
  for (int i = 0; i < N; i++) {
    const int row = row0 + r0 + i * RSTEP;
    page[i] = row < nrows ? __ldg(table + (row >> shift)) : 0;
  }
#pragma unroll
  for (int i = 0; i < N; i++) {
    const int r = r0 + i * RSTEP, row = row0 + r;
    const bool valid = row < nrows;
    const char *g = valid ? src + ((long long)page[i] * page_stride + (long long)(row & mask) * stride + c * 8) * 2
                          : src;
    hattn_cp_async16(d0 + i * RSTEP * ROW_BYTES + (unsigned)((cs ^ (r & 7)) << 4), g, valid);
  }
}

/* ---- the rows of a batch entry ------------------------------------------- */

/* Batch entry b's rows and positions (gen/cuda_abi.h): without a
** variable-length batch, the problem's lq and lk at the plan's positions;
** with one, the entry's own lengths (packed: their rows start at q_row0 and
** k_row0 of the packed tensors) at positions qpos = q + lk - lq.  lq_out is
** how many rows of O and LSE the kernels write: the entry's own (packed),
** else the problem's lq, rows past the entry's lq written as rows that see
** no key (O 0, LSE -inf).  lists says whether the plan's key-block lists
** hold: they were made for the plan's positions, so for an entry at
** others the kernels walk every key block below lk as PARTIAL instead. */
struct hattn_seq {
  int lq, lk, lq_out;
  long long q_row0, k_row0;
  int qoff, koff;          /* qpos = q + qoff, kpos = k + koff */
  bool lists;
};

__device__ __forceinline__ hattn_seq hattn_seq_of(const hattn_cuda_args &a, int b) {
  hattn_seq s;
  s.lq = s.lq_out = a.lq;
  s.lk = a.lk;
  s.q_row0 = s.k_row0 = 0;
  s.qoff = (int)a.q_pos0;
  s.koff = (int)a.k_pos0;
  s.lists = true;
  if (a.cu_q != 0 || a.cu_k != 0 || a.len_q != 0 || a.len_k != 0) {
    if (a.cu_q != 0) {
      s.q_row0 = __ldg(a.cu_q + b);
      s.lq = s.lq_out = __ldg(a.cu_q + b + 1) - (int)s.q_row0;
    } else if (a.len_q != 0) {
      s.lq = __ldg(a.len_q + b);
    }
    if (a.cu_k != 0) {
      s.k_row0 = __ldg(a.cu_k + b);
      s.lk = __ldg(a.cu_k + b + 1) - (int)s.k_row0;
    } else if (a.len_k != 0) {
      s.lk = __ldg(a.len_k + b);
    }
    s.qoff = s.lk - s.lq;
    s.koff = 0;
    s.lists = s.qoff == (int)a.q_pos0 && a.k_pos0 == 0;
  }
  return s;
}

/* ---- closed-form key blocks ------------------------------------------------ */

/* The key blocks of query rows [q0, q1) (q1 > q0, rows below lq) under a
** band mask LO <= qpos - kpos <= HI, qpos = q + qoff: blocks [kb0, kb1) of
** BLOCK_N keys hold every visible key (none when kb0 == kb1); pfirst and
** plast are the rows' first and last positions. */
struct hattn_band {
  int kb0, kb1;
  long long pfirst, plast;
};

template <int BLOCK_N>
__device__ __forceinline__ hattn_band hattn_band_blocks(int q0, int q1, int qoff, int lk, long long lo,
                                                        long long hi) {
  hattn_band r;
  r.pfirst = (long long)q0 + qoff;
  r.plast = (long long)q1 - 1 + qoff;
  const long long k0 = max(0LL, r.pfirst - hi), k1 = min((long long)lk, r.plast - lo + 1);
  r.kb0 = k0 < k1 ? (int)(k0 / BLOCK_N) : 0;
  r.kb1 = k0 < k1 ? (int)((k1 + BLOCK_N - 1) / BLOCK_N) : 0;
  return r;
}

/* Whether key block KB of R is FULL: every row sees every key of it below
** lk (keys at or beyond lk are the kernels' edge case, as for the plan). */
template <int BLOCK_N>
__device__ __forceinline__ bool hattn_band_full(const hattn_band &r, int kb, int lk, long long lo,
                                                long long hi) {
  const long long k0 = (long long)kb * BLOCK_N, klast = min(k0 + BLOCK_N, (long long)lk) - 1;
  return r.pfirst - klast >= lo && r.plast - k0 <= hi;
}

/* The key blocks of query block QB of flattened head BH of an entry with
** rows and positions SEQ, by position p in [0, n): for a band mask
** (Pattern::band, distances band_lo .. band_hi) the blocks of the
** interval, ascending, in closed form; else the plan's lists, FULL then
** PARTIAL blocks, each ascending; or, where the lists do not hold
** (SEQ.lists false), every block below SEQ.lk, all PARTIAL.  Every kernel
** body walks them through this. */
template <class Pattern, int BLOCK_M, int BLOCK_N>
struct hattn_key_blocks {
  hattn_band band;          /* Pattern::band */
  const int *fidx, *pidx;   /* the lists: FULL, PARTIAL */
  int nf, n, lk;
  bool all;                 /* every block below lk, PARTIAL */

  __device__ __forceinline__ hattn_key_blocks(const hattn_cuda_args &a, const hattn_seq &s, int qb, int bh)
      : fidx(0), pidx(0), nf(0), n(0), lk(s.lk), all(false) {
    const int q0 = qb * BLOCK_M;
    /* A band depends on qpos - kpos alone: key rows at q + (qoff - koff). */
    band = hattn_band_blocks<BLOCK_N>(q0, min(q0 + BLOCK_M, s.lq), s.qoff - s.koff, s.lk, Pattern::band_lo,
                                      Pattern::band_hi);
    if (q0 >= s.lq) return;
    if constexpr (Pattern::band) {
      n = band.kb1 - band.kb0;
    } else if (!s.lists) {
      all = true;
      n = (s.lk + BLOCK_N - 1) / BLOCK_N;
    } else {
      const long long tab = a.per_head ? bh : 0;
      const int *foff = a.full_off + tab * a.off_stride + qb;
      const int *poff = a.partial_off + tab * a.off_stride + qb;
      fidx = a.full_idx + tab * a.full_idx_stride + foff[0];
      pidx = a.partial_idx + tab * a.partial_idx_stride + poff[0];
      nf = foff[1] - foff[0];
      n = nf + (poff[1] - poff[0]);
    }
  }
  /* The key block at position P. */
  __device__ __forceinline__ int at(int p) const {
    if constexpr (Pattern::band) return band.kb0 + p;
    else return all ? p : p < nf ? fidx[p] : pidx[p - nf];
  }
  /* Whether the block at position P is PARTIAL (its mask is evaluated). */
  __device__ __forceinline__ bool partial(int p) const {
    if constexpr (Pattern::band) return !hattn_band_full<BLOCK_N>(band, band.kb0 + p, lk, Pattern::band_lo, Pattern::band_hi);
    else return all || p >= nf;
  }
};
