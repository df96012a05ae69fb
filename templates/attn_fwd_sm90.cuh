/*
** attn_fwd_sm90.cuh: the forward attention kernel body for sm_90a (Hopper):
** warpgroup MMA (wgmma), on the architecture layers of
** templates/arch_sm80.cuh and templates/arch_sm90.cuh and the pieces of
** templates/cuda_common.cuh; the warpgroup counterpart of
** templates/attn_fwd.cuh (the mma.sync kernel for sm_80 and later), with
** the same contract: hattn_attn_fwd_sm90<Config, Pattern>(args) takes the
** configuration and the generated pattern as types (templates/
** cuda_common.cuh) and its arguments as struct hattn_cuda_args.
** Config::warps is block_m / 16.
**
** One CTA computes BLOCK_M = 64 WG query rows of one flattened head as WG
** warpgroups of 4 warps; warpgroup w owns rows [64 w, 64 w + 64) and warp
** i of it the 16 rows [64 w + 16 i, + 16).  Per key block j (in closed
** form for a band mask, else the plan's PARTIAL then FULL blocks; keys
** descending), each warpgroup
**   issues  S_j = Q K_j^T         wgmma m64nBLOCK_Nk16, Q and K from shared
**                                 memory, HEAD_DIM / 16 instructions
**   issues  O += P_{j-1} V_{j-1}  wgmma m64nHEAD_DIMk16, P from registers
**   waits for S_j, masks it and runs the online softmax on it while the
**           P V products of block j - 1 still run on the tensor cores
**   waits for those, rescales O where a row maximum grew, packs P_j
** (FlashAttention 3's overlap of softmax and the second GEMM inside a
** warpgroup).  After the last block, O += P V of it.
**
** Loads are 16-byte cp.async by all threads into STAGES = 2 buffers each
** of K and V (3 buffers were slower on an H200), one group per key block:
** the group issued at block j holds K_{j+STAGES-1} and V_{j+STAGES-2} (V
** one block behind K, because P V of block j - 1 still reads its buffer
** during block j).  One CTA
** barrier per key block: after it, every thread's copies of the group
** that block j needs are visible, and every warpgroup has finished reading
** the buffers that the next group overwrites.
**
** Shared memory (dynamic, 1024-byte aligned), elements of 2 bytes, in the
** layout that wgmma reads with 128-byte swizzling: a tile of ROWS rows and
** HEAD_DIM columns is HEAD_DIM / 64 panels of ROWS rows x 64 columns (128
** bytes a row); 16-byte chunk c of row r of a panel sits at chunk position
** c ^ (r & 7).  Eight rows (1024 bytes) form one swizzle atom.
**   sQ [BLOCK_M] (panels), sK [STAGES][BLOCK_N], sV [STAGES][BLOCK_N]
** wgmma descriptors (PTX ISA, "matrix descriptor"): start address, leading
** and stride byte offsets (all >> 4), and the swizzle mode (bits 62-63, 1 =
** 128 bytes).  Q and K are K-major (the head dim is contiguous): stride
** offset 1024 (from one 8-row atom to the next), a k-step of 16 columns is
** 32 bytes further inside the panel.  V is the B operand of P V with keys as
** K and the head dim as N, so N-major (imm-trans-b 1): leading offset
** BLOCK_N * 128 (from one 64-column panel to the next), stride offset 1024
** (from 8 keys to the next 8), a k-step of 16 keys is 2048 bytes further.
**
** Fragments (PTX ISA), per warp, g = lane / 4, t = lane % 4: the fp32
** accumulator of m64nNk16 holds, for column tile i (8 columns), d[4 i],
** d[4 i + 1] (row g, cols 8 i + 2 t, + 1) and d[4 i + 2], d[4 i + 3] (row
** g + 8); the register A operand of m64nNk16 is mma.m16n8k16's A: a0 (row
** g, cols 2 t, + 1), a1 (row g + 8), a2 (row g, cols 2 t + 8, + 9), a3 (row
** g + 8).  So S's accumulators of column tiles 2 kk and 2 kk + 1 pack into
** the A operand of keys 16 kk .. + 15, as in the mma.sync kernel.
*/

/* ---- pieces of both bodies ------------------------------------------------ */

/* The query block *QB and flattened head *BH of this CTA.  CTAs start in
** the order of their linear index; it maps to (qb, bh) by a bijection, the
** last query block of every head first, so that under causal masks the
** longest CTAs start first.  Where the query blocks read on average more
** than a third of the key blocks (dense, causal; known in closed form for a
** band mask, else from the plan's first table), the heads go in chunks of
** HC whose K and V (HC * lk * HEAD_DIM * 4 bytes, at most 16 MB) stay in L2
** while every query block of the chunk reads them; otherwise one chunk of
** all heads.  Measured on an H200 at 4k and 16k: chunks gave dense and
** causal 3-6%, and cost window and document patterns 2-5%. */
template <class Pattern, int BLOCK_M, int BLOCK_N, int HEAD_DIM>
__device__ __forceinline__ void hattn_sm90_tile(const hattn_cuda_args &args, int &qb, int &bh) {
  const int nqb = gridDim.x, nbh = gridDim.y;
  const int lin = blockIdx.y * nqb + blockIdx.x;
  const long long nkb = (args.lk + BLOCK_N - 1) / BLOCK_N;
  long long planned;                            /* key blocks of all query blocks */
  if constexpr (Pattern::band) {
    const long long width = min(Pattern::band_hi, (long long)args.lk) - max(Pattern::band_lo, -(long long)args.lk) + 1;
    planned = nqb * min(nkb, (width + BLOCK_M - 1) / BLOCK_N + 1);
  } else {
    planned = (long long)(args.full_off[nqb] - args.full_off[0]) + (args.partial_off[nqb] - args.partial_off[0]);
  }
  const long long kv_head_bytes = (long long)args.lk * HEAD_DIM * 4;
  const int hc = 3 * planned > nkb * nqb
                     ? (int)max(1LL, min((long long)nbh, (16LL << 20) / max(kv_head_bytes, 1LL)))
                     : nbh;
  const int chunk = lin / (hc * nqb), in_chunk = lin % (hc * nqb);
  const int chunk_heads = min(hc, nbh - chunk * hc);
  qb = nqb - 1 - in_chunk / chunk_heads;
  bh = chunk * hc + in_chunk % chunk_heads;
}

/* Issue S = Q K^T of this warpgroup: its rows of Q at shared address AQ,
** the key block at SK + STAGE * the bytes of a block (both K-major
** panels); committed, not waited for.  The accumulators of the P V
** products before it are pinned (PIN_O), so that the compiler keeps their
** reads and writes on their side of the fence.  (The warp-specialised
** kernel has the block's address formed after the fence and the other
** before it, STAGE 0: each compiles so to the code that was measured.) */
template <class Config>
__device__ __forceinline__ void hattn_sm90_issue_s(float (&s)[Config::block_n / 2],
                                                   float (&acc_o)[Config::head_dim / 2],
                                                   unsigned (&pk)[Config::block_n / 16][4], unsigned aQ,
                                                   unsigned sK0, int stage, bool pin_o) {
  constexpr int BLOCK_M = Config::block_m, BLOCK_N = Config::block_n;
  if (pin_o) {
#pragma unroll
    for (int i = 0; i < Config::head_dim / 2; i++) hattn_wg_pin(acc_o[i]);
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; kk++)
#pragma unroll
      for (int c = 0; c < 4; c++) hattn_wg_pin(pk[kk][c]);
  }
  hattn_wg_fence();
  const unsigned sK = sK0 + stage * (BLOCK_N * Config::head_dim * 2);
#pragma unroll
  for (int kk = 0; kk < Config::head_dim / 16; kk++) {
    const unsigned panel = (kk / 4) * 128, col = (kk % 4) * 32;
    hattn_wgmma_ss<BLOCK_N, Config::is_bf16>(s, hattn_wg_desc(aQ + panel * BLOCK_M + col, 16, 1024),
                                             hattn_wg_desc(sK + panel * BLOCK_N + col, 16, 1024), kk > 0);
  }
  hattn_wg_commit();
}

/* Issue O += P V with P packed in PK and the value block at SV (N-major
** panels); committed, not waited for. */
template <class Config>
__device__ __forceinline__ void hattn_sm90_issue_pv(float (&acc_o)[Config::head_dim / 2],
                                                    unsigned (&pk)[Config::block_n / 16][4], unsigned sV) {
  constexpr int BLOCK_N = Config::block_n;
  hattn_wg_fence();
#pragma unroll
  for (int kk = 0; kk < BLOCK_N / 16; kk++)
    hattn_wgmma_rs<Config::head_dim, Config::is_bf16>(acc_o, pk[kk],
                                                      hattn_wg_desc(sV + kk * 16 * 128, BLOCK_N * 128, 1024));
  hattn_wg_commit();
}

/* O += P V of the last key block, its values at SV, waited for. */
template <class Config>
__device__ __forceinline__ void hattn_sm90_last_pv(float (&acc_o)[Config::head_dim / 2],
                                                   unsigned (&pk)[Config::block_n / 16][4], unsigned sV) {
#pragma unroll
  for (int i = 0; i < Config::head_dim / 2; i++) hattn_wg_pin(acc_o[i]);
#pragma unroll
  for (int kk = 0; kk < Config::block_n / 16; kk++)
#pragma unroll
    for (int c = 0; c < 4; c++) hattn_wg_pin(pk[kk][c]);
  hattn_sm90_issue_pv<Config>(acc_o, pk, sV);
  hattn_wg_wait<0>();
#pragma unroll
  for (int i = 0; i < Config::head_dim / 2; i++) hattn_wg_pin(acc_o[i]);
}

/* The scores S of key block k0 / BLOCK_N for this thread's rows (CTA rows
** r0 and r0 + 8 of query block q0 / BLOCK_M, lane quad position t), in
** place: the modifiers, the mask where PARTIAL, keys past the entry's end;
** then the online softmax.  S becomes P (unnormalised, base 2), M_I and L_I
** move on, ALPHA gets the factor by which each row's O must be rescaled.
** Returns whether any row's maximum grew.
**
** s[4 nt + c]: row r0 + 8 (c / 2), key k0 + 8 nt + 2 t + c % 2.  In the
** base-2 domain with modifiers, else raw (scaled in the softmax).  The
** block's kind is tested once, outside the element loops: tested per
** element, it became a branch and a convergence barrier per element in
** every block (ptxas), which cost FULL blocks about 20%. */
template <class Config, class Pattern>
__device__ __forceinline__ bool hattn_sm90_softmax(const hattn_cuda_args &args, const hattn_seq &seq,
                                                   float (&s)[Config::block_n / 2], float (&m_i)[2],
                                                   float (&l_i)[2], float (&alpha)[2], int q0, int r0, int k0,
                                                   bool partial, int t, float slope, int bh) {
  constexpr int NT = Config::block_n / 8;
  constexpr float LOG2E = 1.4426950408889634f;
  const int lq = seq.lq, lk = seq.lk, qoff = seq.qoff, koff = seq.koff;
  if constexpr (Pattern::has_score_mod) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int qpos = q0 + r0 + 8 * (c / 2) + qoff;
        const int kpos = k0 + nt * 8 + 2 * t + c % 2 + koff;
        s[4 * nt + c] = Pattern::score(s[4 * nt + c] * args.scale, qpos, kpos, slope) * LOG2E;
      }
  }
  if (partial) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int q = q0 + r0 + 8 * (c / 2);
        const int k = k0 + nt * 8 + 2 * t + c % 2;
        /* Pattern::visible only inside the matrix (it may index by kpos). */
        if (!(k < lk && q < lq && Pattern::visible(q, q + qoff, k + koff, args, bh)))
          s[4 * nt + c] = hattn_neg_inf();
      }
  } else if (k0 + Config::block_n > lk) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++)
        if (k0 + nt * 8 + 2 * t + c % 2 >= lk) s[4 * nt + c] = hattn_neg_inf();
  }

  const float sl2 = Pattern::has_score_mod ? 1.0f : args.scale_log2;
  bool grew = false;
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float mx = hattn_neg_inf();
#pragma unroll
    for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[4 * nt + 2 * r], s[4 * nt + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    mx = fmaxf(m_i[r], mx * sl2);
    const float mref = mx == hattn_neg_inf() ? 0.0f : mx;
    grew |= mx != m_i[r];
    alpha[r] = hattn_ex2(m_i[r] - mref);
    m_i[r] = mx;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      s[4 * nt + 2 * r] = hattn_ex2(fmaf(s[4 * nt + 2 * r], sl2, -mref));
      s[4 * nt + 2 * r + 1] = hattn_ex2(fmaf(s[4 * nt + 2 * r + 1], sl2, -mref));
      sum += s[4 * nt + 2 * r] + s[4 * nt + 2 * r + 1];
    }
    l_i[r] = l_i[r] * alpha[r] + sum;
  }
  return grew;
}

/* Once the P V products that read O have finished: O *= ALPHA where some
** row's maximum GREW (any in the warp), then P (S) packed into the A
** operand of the next P V: the accumulators of S's column tiles 2 kk and
** 2 kk + 1 are the A fragment of keys 16 kk .. + 15. */
template <class Config>
__device__ __forceinline__ void hattn_sm90_rescale_pack(float (&acc_o)[Config::head_dim / 2],
                                                        unsigned (&pk)[Config::block_n / 16][4],
                                                        const float (&s)[Config::block_n / 2],
                                                        const float (&alpha)[2], bool grew) {
  constexpr bool IS_BF16 = Config::is_bf16;
#pragma unroll
  for (int i = 0; i < Config::head_dim / 2; i++) hattn_wg_pin(acc_o[i]);
  if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
    for (int i = 0; i < Config::head_dim / 2; i++) acc_o[i] *= alpha[(i / 2) % 2];
  }
#pragma unroll
  for (int kk = 0; kk < Config::block_n / 16; kk++) {
    pk[kk][0] = hattn_pack2<IS_BF16>(s[8 * kk + 0], s[8 * kk + 1]);
    pk[kk][1] = hattn_pack2<IS_BF16>(s[8 * kk + 2], s[8 * kk + 3]);
    pk[kk][2] = hattn_pack2<IS_BF16>(s[8 * kk + 4], s[8 * kk + 5]);
    pk[kk][3] = hattn_pack2<IS_BF16>(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

/* The epilogue of one warp: O / l of its 16 rows (CTA rows WROW0 ..
** + 15; this thread's r0 and r0 + 8) through its own rows of the Q tile at
** shared address SQ (which only its warpgroup's wgmma read, all
** complete), and the LSE.  Rows are written rounded, in the panel layout;
** the 4-byte stores of one instruction hit 32 distinct banks; then
** 16-byte chunks back, whole rows of the warp's 16 per instruction. */
template <class Config>
__device__ __forceinline__ void hattn_sm90_epilogue(const hattn_cuda_args &args, const hattn_seq &seq,
                                                    float (&acc_o)[Config::head_dim / 2], const float (&m_i)[2],
                                                    const float (&l_i)[2], unsigned sQ, int b, int h, int q0,
                                                    int r0, int wrow0, int lane) {
  constexpr int BLOCK_M = Config::block_m, HEAD_DIM = Config::head_dim, DT = HEAD_DIM / 8;
  constexpr bool IS_BF16 = Config::is_bf16;
  constexpr float LOG2E = 1.4426950408889634f;
  constexpr float LN2 = 0.6931471805599453f;
  const int t = lane % 4, lq = seq.lq;
  const float sink = args.sink_logits != 0 ? args.sink_logits[h] * LOG2E : hattn_neg_inf();
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float l = l_i[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    float mn = fmaxf(m_i[r], sink);
    mn = mn == hattn_neg_inf() ? 0.0f : mn;
    const float fix = exp2f(m_i[r] - mn);
    l = l * fix + exp2f(sink - mn);
    const int row = r0 + 8 * r;
    const int q = q0 + row;
    /* l is 0 only in a row that saw no key (O 0, LSE -inf), as is a row past
    ** a padded entry's queries.  A NaN in Q or K that the row sees made its
    ** scores, l and O NaN (fmaxf skips NaN, ex2 keeps it): l == 0, not l >
    ** 0, so that NaN stays NaN in O and LSE. */
    if (q >= lq) l = 0.0f;
    /* 0, not acc * 0 (which is -0 where acc < 0): rows past the entry's
    ** queries are +0, as the CPU writes them. */
    const float inv = l == 0.0f ? 0.0f : fix / l;
    if (q >= lq)
#pragma unroll
      for (int dt = 0; dt < DT; dt++) acc_o[4 * dt + 2 * r] = acc_o[4 * dt + 2 * r + 1] = 0.0f;
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
      const unsigned v = hattn_pack2<IS_BF16>(acc_o[4 * dt + 2 * r] * inv, acc_o[4 * dt + 2 * r + 1] * inv);
      hattn_st_shared32(sQ + (dt / 8) * BLOCK_M * 128 + row * 128 + (((unsigned)((dt % 8) ^ (row & 7))) << 4) + 4 * t, v);
    }
    if (args.lse != 0 && t == 0 && q < seq.lq_out) {
      const float lse = l == 0.0f ? hattn_neg_inf() : (mn + log2f(l)) * LN2;
      args.lse[b * args.lse_stride[0] + h * args.lse_stride[1] + (seq.q_row0 + q) * args.lse_stride[2]] = lse;
    }
  }
  __syncwarp();
  char *og = (char *)args.o + (b * args.o_stride[0] + h * args.o_stride[1] + seq.q_row0 * args.o_stride[2]) * 2;
  constexpr int CHUNKS = HEAD_DIM / 8;
#pragma unroll
  for (int i = 0; i < 16 * CHUNKS / 32; i++) {
    const int idx = i * 32 + lane;
    const int row = wrow0 + idx / CHUNKS, c = idx % CHUNKS;
    const uint4 v = hattn_ld_shared128(sQ + (c / 8) * BLOCK_M * 128 + row * 128 + (((unsigned)((c % 8) ^ (row & 7))) << 4));
    const int q = q0 + row;
    if (q < seq.lq_out) *(uint4 *)(og + ((long long)q * args.o_stride[2] + c * 8) * 2) = v;
  }
}

/* ---- the kernel body ----------------------------------------------------- */

template <class Config, class Pattern, bool PAGED>
__device__ __forceinline__ void hattn_attn_fwd_sm90(const hattn_cuda_args &args) {
  constexpr int BLOCK_M = Config::block_m, BLOCK_N = Config::block_n;
  constexpr int HEAD_DIM = Config::head_dim, STAGES = Config::stages;
  constexpr int WG = BLOCK_M / 64;             /* warpgroups */
  constexpr int THREADS = WG * 128;
  constexpr int NT = BLOCK_N / 8;              /* 8-key column tiles of S */
  constexpr int DT = HEAD_DIM / 8;             /* 8-wide column tiles of O */
  constexpr int KN = BLOCK_N / 16;             /* k-steps of P V */
  constexpr unsigned Q_BYTES = BLOCK_M * HEAD_DIM * 2;
  constexpr unsigned KV_BYTES = BLOCK_N * HEAD_DIM * 2;
  static_assert(BLOCK_M % 64 == 0 && (HEAD_DIM == 64 || HEAD_DIM == 128 || HEAD_DIM == 256),
                "tile sizes");
  static_assert(BLOCK_N == 64 || BLOCK_N == 128, "key blocks of 64 or 128");
  static_assert(STAGES == 2, "2 buffers of K and V");

  extern __shared__ __align__(1024) unsigned char hattn_smem[];
  const unsigned sQ = hattn_smem_addr(hattn_smem);
  const unsigned sK = sQ + Q_BYTES;
  const unsigned sV = sK + STAGES * KV_BYTES;
  if (sQ % 1024 != 0) __trap();                 /* swizzle atoms must be aligned */

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4;
  const int g = lane / 4, t = lane % 4;
  int qb, bh;
  hattn_sm90_tile<Pattern, BLOCK_M, BLOCK_N, HEAD_DIM>(args, qb, bh);
  const int b = bh / args.heads, h = bh % args.heads;
  const int kvh = h / (args.heads / args.kv_heads);
  const int q0 = qb * BLOCK_M;
  const hattn_seq seq = hattn_seq_of(args, b);  /* the entry's rows and positions */
  if (q0 >= seq.lq_out) return;                 /* past a packed entry's rows */
  const int lq = seq.lq, lk = seq.lk;
  const float slope = Pattern::slope(args, h);

  const char *qg = (const char *)args.q + (b * args.q_stride[0] + h * args.q_stride[1] + seq.q_row0 * args.q_stride[2]) * 2;
  const char *kg = (const char *)args.k + (b * args.k_stride[0] + kvh * args.k_stride[1] + seq.k_row0 * args.k_stride[2]) * 2;
  const char *vg = (const char *)args.v + (b * args.v_stride[0] + kvh * args.v_stride[1] + seq.k_row0 * args.v_stride[2]) * 2;

  /* This query block's key blocks (hattn_key_blocks), walked from the last
  ** position to the first: keys go down from the diagonal, and the plan's
  ** PARTIAL blocks come before its FULL ones, as FlashAttention 2 and 3
  ** walk them; causal gained 1-2% on an H200. */
  const hattn_key_blocks<Pattern, BLOCK_M, BLOCK_N> kblocks(args, seq, qb, bh);
  const int nblocks = kblocks.n;
  auto block_at = [&](int j) { return kblocks.at(nblocks - 1 - j); };
  auto partial_at = [&](int j) { return kblocks.partial(nblocks - 1 - j); };
  /* Q and K_0: the first group. */
  hattn_load_rows<BLOCK_M, HEAD_DIM, THREADS, true>(sQ, qg, args.q_stride[2], q0, lq, tid);
  if (nblocks > 0)
    hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, true, false, PAGED>(sK, args, kg, b, block_at(0) * BLOCK_N, lk, tid);
  hattn_cp_async_commit();

  /* Rows of this thread, relative to the CTA: r0 = 64 wg + 16 (warp % 4) + g
  ** [index 0] and r0 + 8 [index 1]. */
  const int r0 = wg * 64 + (warp % 4) * 16 + g;
  float m_i[2] = {hattn_neg_inf(), hattn_neg_inf()}, l_i[2] = {0.0f, 0.0f};
  float acc_o[DT * 4];
#pragma unroll
  for (int i = 0; i < DT * 4; i++) acc_o[i] = 0.0f;
  unsigned pk[KN][4];                           /* P of the previous block */
  const unsigned aQ = sQ + wg * 64 * 128;       /* this warpgroup's rows of Q */

  for (int j = 0; j < nblocks; j++) {
    const int buf = j % STAGES, prev = (j + STAGES - 1) % STAGES;
    /* K_j and V_{j-1} have landed (this thread's copies; the STAGES - 2
    ** newer groups may still be pending); after the barrier everyone's,
    ** and every warpgroup has finished block j - 1's Q K^T and block j - 2's
    ** P V, whose buffers the next group overwrites. */
    hattn_cp_async_wait<STAGES - 2>();
    hattn_fence_async_shared();
    __syncthreads();
    /* The next group: K_{j+STAGES-1} and V_{j+STAGES-2}. */
    if (j + STAGES - 1 < nblocks)
      hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, true, false, PAGED>(sK + prev * KV_BYTES, args, kg, b,
                                                             block_at(j + STAGES - 1) * BLOCK_N, lk,
                                                             tid);
    if (j + STAGES - 2 < nblocks)
      hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, true, true, PAGED>(sV + ((j + STAGES - 2) % STAGES) * KV_BYTES, args,
                                                            vg, b,
                                                            block_at(j + STAGES - 2) * BLOCK_N, lk,
                                                            tid);
    hattn_cp_async_commit();
    const bool partial = partial_at(j);
    const int kb = block_at(j);

    /* ---- issue S = Q K^T, then O += P V of the block before ---- */
    float s[NT * 4];
    hattn_sm90_issue_s<Config>(s, acc_o, pk, aQ, sK + buf * KV_BYTES, 0, j > 0);
    if (j > 0) {
      hattn_sm90_issue_pv<Config>(acc_o, pk, sV + prev * KV_BYTES);
      hattn_wg_wait<1>();                       /* S ready; P V may run on */
    } else {
      hattn_wg_wait<0>();
    }
#pragma unroll
    for (int i = 0; i < NT * 4; i++) hattn_wg_pin(s[i]);

    /* ---- scores, mask and online softmax, under the P V of block j - 1 ---- */
    float alpha[2];
    const bool grew = hattn_sm90_softmax<Config, Pattern>(args, seq, s, m_i, l_i, alpha, q0, r0, kb * BLOCK_N,
                                                          partial, t, slope, bh);

    /* ---- O += P V of the block before has finished: rescale, pack P ---- */
    hattn_wg_wait<0>();
    hattn_sm90_rescale_pack<Config>(acc_o, pk, s, alpha, grew);
  }

  /* ---- O += P V of the last block ---- */
  if (nblocks > 0) {
    hattn_cp_async_wait<0>();
    hattn_fence_async_shared();
    __syncthreads();
    hattn_sm90_last_pv<Config>(acc_o, pk, sV + ((nblocks - 1) % STAGES) * KV_BYTES);
  }
  /* No copy may still be landing when the CTA exits (Q, when there was no
  ** key block at all). */
  hattn_cp_async_wait<0>();

  /* ---- epilogue: O / l through shared memory, LSE ---- */
  hattn_sm90_epilogue<Config>(args, seq, acc_o, m_i, l_i, sQ, b, h, q0, r0, wg * 64 + (warp % 4) * 16, lane);
}

/* ---- the warp-specialised kernel body ------------------------------------ */

/* hattn_attn_fwd_sm90_ws<Config, Pattern, PAGED>(args, maps): the same
** contract, with FlashAttention 3's division of labour.  Config::warps is
** block_m / 16 + 4: warpgroup 0 is the producer, warpgroups 1 .. WG the
** consumers, each of 64 query rows as in hattn_attn_fwd_sm90 (the same
** intra-warpgroup overlap of one block's softmax with the block before's
** P V).
**
** The producer gives registers back (setmaxnreg) and loads: with TMA where
** MAPS.on (contiguous Q, K and V; one thread issues every tile, two
** 64-column panels a tile at head dim 128, the 128-byte swizzle done by the
** copy engine), else with cp.async by its 128 threads (paged K and V,
** variable-length batches, strides that TMA cannot describe).  Each load
** completes on an mbarrier ("full": Q, K_j, V_j separately); each consumer
** warp arrives on an "empty" barrier when its wgmma have finished reading a
** buffer, and the producer waits for it before refilling: no CTA barrier
** in the key-block loop.  K_j's buffer is free after S_j, V_j's after the P
** V of block j.
**
** With two consumer warpgroups, their GEMMs take turns (named barriers 1
** and 2, "ping-pong"): a warpgroup issues its S = Q K^T and P V when the
** other has issued its own, so that one's softmax runs under the other's
** GEMMs.
**
** Shared memory: the tiles of hattn_attn_fwd_sm90 (sQ, sK[STAGES],
** sV[STAGES], 1024-byte aligned), then the mbarriers, 8 bytes each: Q, K
** full[STAGES], V full[STAGES], K empty[STAGES], V empty[STAGES].  Phase
** parity of buffer use n = j / STAGES is n & 1. */
template <class Config, class Pattern, bool PAGED>
__device__ __forceinline__ void hattn_attn_fwd_sm90_ws(const hattn_cuda_args &args, const hattn_cuda_tmaps &maps) {
  constexpr int BLOCK_M = Config::block_m, BLOCK_N = Config::block_n;
  constexpr int HEAD_DIM = Config::head_dim, STAGES = Config::stages;
  constexpr int WG = BLOCK_M / 64;             /* consumer warpgroups */
  constexpr int NT = BLOCK_N / 8, DT = HEAD_DIM / 8, KN = BLOCK_N / 16;
  constexpr unsigned Q_BYTES = BLOCK_M * HEAD_DIM * 2;
  constexpr unsigned KV_BYTES = BLOCK_N * HEAD_DIM * 2;
  constexpr bool PINGPONG = WG == 2;
  /* Registers a thread after setmaxnreg: all the warpgroups' within the
  ** SM's 64K, for the CTAs an SM that the launch bounds allow (one with
  ** two consumer warpgroups or at head dim 256, else two). */
  constexpr int PRODUCER_REGS = 40;
  constexpr int CONSUMER_REGS = WG == 2 ? 232 : HEAD_DIM <= 128 ? 216 : 240;
  static_assert(WG == 1 || WG == 2, "one or two consumer warpgroups");
  static_assert(HEAD_DIM == 64 || HEAD_DIM == 128 || HEAD_DIM == 256, "head dims");
  static_assert(BLOCK_N == 64 || BLOCK_N == 128, "key blocks of 64 or 128");
  static_assert(STAGES == 2 || STAGES == 3, "2 or 3 buffers of K and V");
  static_assert(Config::warps == 4 * WG + 4, "a producer warpgroup");

  extern __shared__ __align__(1024) unsigned char hattn_smem[];
  const unsigned sQ = hattn_smem_addr(hattn_smem);
  const unsigned sK = sQ + Q_BYTES;
  const unsigned sV = sK + STAGES * KV_BYTES;
  const unsigned bar_q = sV + STAGES * KV_BYTES;
  const unsigned kfull = bar_q + 8, vfull = kfull + 8 * STAGES;
  const unsigned kempty = vfull + 8 * STAGES, vempty = kempty + 8 * STAGES;
  if (sQ % 1024 != 0) __trap();                 /* swizzle atoms must be aligned */

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wgi = warp / 4;                     /* 0: the producer */
  int qb, bh;
  hattn_sm90_tile<Pattern, BLOCK_M, BLOCK_N, HEAD_DIM>(args, qb, bh);
  const int b = bh / args.heads, h = bh % args.heads;
  const int kvh = h / (args.heads / args.kv_heads);
  const int q0 = qb * BLOCK_M;
  const hattn_seq seq = hattn_seq_of(args, b);
  if (q0 >= seq.lq_out) return;                 /* the whole CTA, before any barrier */
  const bool tma = !PAGED && maps.on;
  const hattn_key_blocks<Pattern, BLOCK_M, BLOCK_N> kblocks(args, seq, qb, bh);
  const int nblocks = kblocks.n;
  auto block_at = [&](int j) { return kblocks.at(nblocks - 1 - j); };

  if (tid == 0) {
    const unsigned loads = tma ? 1 : 128;       /* arrivals a phase: the issuing thread, or every copier */
    hattn_mbar_init(bar_q, loads);
#pragma unroll
    for (int i = 0; i < STAGES; i++) {
      hattn_mbar_init(kfull + 8 * i, loads);
      hattn_mbar_init(vfull + 8 * i, loads);
      hattn_mbar_init(kempty + 8 * i, 4 * WG);  /* a consumer warp's lane 0 each */
      hattn_mbar_init(vempty + 8 * i, 4 * WG);
    }
    hattn_mbar_init_fence();
  }
  __syncthreads();

  /* ---- the producer ---- */
  if (wgi == 0) {
    hattn_setmaxnreg_dec<PRODUCER_REGS>();
    if (tma) {
      if (tid != 0) return;
      hattn_tma_prefetch_map(&maps.q);
      hattn_tma_prefetch_map(&maps.k);
      hattn_tma_prefetch_map(&maps.v);
      hattn_mbar_arrive_tx(bar_q, Q_BYTES);
#pragma unroll
      for (int p = 0; p < HEAD_DIM / 64; p++) hattn_tma_load_4d(sQ + p * BLOCK_M * 128, &maps.q, bar_q, p * 64, q0, h, b);
      for (int j = 0; j < nblocks; j++) {
        const int st = j % STAGES, k0 = block_at(j) * BLOCK_N;
        const unsigned parity = (j / STAGES + 1) & 1;   /* of the use before */
        if (j >= STAGES) hattn_mbar_wait(kempty + 8 * st, parity);
        hattn_mbar_arrive_tx(kfull + 8 * st, KV_BYTES);
#pragma unroll
        for (int p = 0; p < HEAD_DIM / 64; p++)
          hattn_tma_load_4d(sK + st * KV_BYTES + p * BLOCK_N * 128, &maps.k, kfull + 8 * st, p * 64, k0, kvh, b);
        if (j >= STAGES) hattn_mbar_wait(vempty + 8 * st, parity);
        hattn_mbar_arrive_tx(vfull + 8 * st, KV_BYTES);
#pragma unroll
        for (int p = 0; p < HEAD_DIM / 64; p++)
          hattn_tma_load_4d(sV + st * KV_BYTES + p * BLOCK_N * 128, &maps.v, vfull + 8 * st, p * 64, k0, kvh, b);
      }
    } else {
      const char *qg = (const char *)args.q + (b * args.q_stride[0] + h * args.q_stride[1] + seq.q_row0 * args.q_stride[2]) * 2;
      const char *kg = (const char *)args.k + (b * args.k_stride[0] + kvh * args.k_stride[1] + seq.k_row0 * args.k_stride[2]) * 2;
      const char *vg = (const char *)args.v + (b * args.v_stride[0] + kvh * args.v_stride[1] + seq.k_row0 * args.v_stride[2]) * 2;
      hattn_load_rows<BLOCK_M, HEAD_DIM, 128, true>(sQ, qg, args.q_stride[2], q0, seq.lq, tid);
      hattn_mbar_arrive_cp_async(bar_q);
      for (int j = 0; j < nblocks; j++) {
        const int st = j % STAGES, k0 = block_at(j) * BLOCK_N;
        const unsigned parity = (j / STAGES + 1) & 1;
        if (j >= STAGES) hattn_mbar_wait(kempty + 8 * st, parity);
        hattn_load_kv<BLOCK_N, HEAD_DIM, 128, true, false, PAGED>(sK + st * KV_BYTES, args, kg, b, k0, seq.lk, tid);
        hattn_mbar_arrive_cp_async(kfull + 8 * st);
        if (j >= STAGES) hattn_mbar_wait(vempty + 8 * st, parity);
        hattn_load_kv<BLOCK_N, HEAD_DIM, 128, true, true, PAGED>(sV + st * KV_BYTES, args, vg, b, k0, seq.lk, tid);
        hattn_mbar_arrive_cp_async(vfull + 8 * st);
      }
      hattn_cp_async_wait<0>();                 /* nothing in flight past the thread's exit */
    }
    return;
  }

  /* ---- the consumers ---- */
  hattn_setmaxnreg_inc<CONSUMER_REGS>();
  const int cw = wgi - 1;                       /* consumer warpgroup: rows 64 cw .. + 63 */
  const int g = lane / 4, t = lane % 4;
  const int r0 = cw * 64 + (warp % 4) * 16 + g;
  const float slope = Pattern::slope(args, h);
  float m_i[2] = {hattn_neg_inf(), hattn_neg_inf()}, l_i[2] = {0.0f, 0.0f};
  float acc_o[DT * 4];
#pragma unroll
  for (int i = 0; i < DT * 4; i++) acc_o[i] = 0.0f;
  unsigned pk[KN][4];                           /* P of the previous block */
  const unsigned aQ = sQ + cw * 64 * 128;       /* this warpgroup's rows of Q */
  /* Ping-pong: warpgroup 1 lets warpgroup 0 go first. */
  if (PINGPONG && cw == 1) hattn_bar_arrive(1, 256);
  hattn_mbar_wait(bar_q, 0);

  for (int j = 0; j < nblocks; j++) {
    const int st = j % STAGES, prev = (j + STAGES - 1) % STAGES;
    hattn_mbar_wait(kfull + 8 * st, (j / STAGES) & 1);
    if (j > 0) hattn_mbar_wait(vfull + 8 * prev, ((j - 1) / STAGES) & 1);
    /* cp.async wrote through the generic proxy; wgmma reads through the
    ** async one. */
    if (!tma) hattn_fence_async_shared();
    const bool partial = kblocks.partial(nblocks - 1 - j);
    const int kb = block_at(j);

    /* ---- issue S = Q K^T, then O += P V of the block before ---- */
    float s[NT * 4];
    if (PINGPONG) hattn_bar_sync(1 + cw, 256);
    hattn_sm90_issue_s<Config>(s, acc_o, pk, aQ, sK, st, j > 0);
    if (j > 0) {
      hattn_sm90_issue_pv<Config>(acc_o, pk, sV + prev * KV_BYTES);
      if (PINGPONG) hattn_bar_arrive(2 - cw, 256);
      hattn_wg_wait<1>();                       /* S ready; P V may run on */
    } else {
      if (PINGPONG) hattn_bar_arrive(2 - cw, 256);
      hattn_wg_wait<0>();
    }
#pragma unroll
    for (int i = 0; i < NT * 4; i++) hattn_wg_pin(s[i]);
    __syncwarp();
    if (lane == 0) hattn_mbar_arrive(kempty + 8 * st);  /* K_j read */

    /* ---- scores, mask and online softmax, under the P V of block j - 1 ---- */
    float alpha[2];
    const bool grew = hattn_sm90_softmax<Config, Pattern>(args, seq, s, m_i, l_i, alpha, q0, r0, kb * BLOCK_N,
                                                          partial, t, slope, bh);

    /* ---- O += P V of the block before has finished: rescale, pack P ---- */
    hattn_wg_wait<0>();
    if (j > 0) {
      __syncwarp();
      if (lane == 0) hattn_mbar_arrive(vempty + 8 * prev);  /* V_{j-1} read */
    }
    hattn_sm90_rescale_pack<Config>(acc_o, pk, s, alpha, grew);
  }
  /* The arrival that ping-pong left on warpgroup 0's barrier. */
  if (PINGPONG && cw == 0) hattn_bar_sync(1, 256);

  /* ---- O += P V of the last block ---- */
  if (nblocks > 0) {
    const int last = nblocks - 1;
    hattn_mbar_wait(vfull + 8 * (last % STAGES), (last / STAGES) & 1);
    if (!tma) hattn_fence_async_shared();
    hattn_sm90_last_pv<Config>(acc_o, pk, sV + (last % STAGES) * KV_BYTES);
  }

  /* ---- epilogue: O / l through this warp's rows of sQ, LSE ---- */
  hattn_sm90_epilogue<Config>(args, seq, acc_o, m_i, l_i, sQ, b, h, q0, r0, cw * 64 + (warp % 4) * 16, lane);
}
