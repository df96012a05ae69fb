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

/* ---- the kernel body ----------------------------------------------------- */

template <class Config, class Pattern, bool PAGED>
__device__ __forceinline__ void hattn_attn_fwd_sm90(const hattn_cuda_args &args) {
  constexpr int BLOCK_M = Config::block_m, BLOCK_N = Config::block_n;
  constexpr int HEAD_DIM = Config::head_dim, STAGES = Config::stages;
  constexpr bool IS_BF16 = Config::is_bf16;
  constexpr int WG = BLOCK_M / 64;             /* warpgroups */
  constexpr int THREADS = WG * 128;
  constexpr int NT = BLOCK_N / 8;              /* 8-key column tiles of S */
  constexpr int DT = HEAD_DIM / 8;             /* 8-wide column tiles of O */
  constexpr int KD = HEAD_DIM / 16;            /* k-steps of Q K^T */
  constexpr int KN = BLOCK_N / 16;             /* k-steps of P V */
  constexpr float LOG2E = 1.4426950408889634f;
  constexpr float LN2 = 0.6931471805599453f;
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
  /* CTAs start in the order of their linear index; it maps to (qb, bh) by
  ** a bijection, the last query block of every head first, so that under
  ** causal masks the longest CTAs start first.  Where the query blocks read
  ** on average more than a third of the key blocks (dense, causal; known in
  ** closed form for a band mask, else from the plan's first table), the
  ** heads go in chunks of HC whose K and V (HC * lk * HEAD_DIM * 4 bytes,
  ** at most 16 MB) stay in L2 while every query block of the chunk reads
  ** them; otherwise one chunk of all heads.
  ** Measured on an H200 at 4k and 16k: chunks gave dense and causal 3-6%,
  ** and cost window and document patterns 2-5%. */
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
  const int qb = nqb - 1 - in_chunk / chunk_heads, bh = chunk * hc + in_chunk % chunk_heads;
  const int b = bh / args.heads, h = bh % args.heads;
  const int kvh = h / (args.heads / args.kv_heads);
  const int q0 = qb * BLOCK_M;
  const hattn_seq seq = hattn_seq_of(args, b);  /* the entry's rows and positions */
  if (q0 >= seq.lq_out) return;                 /* past a packed entry's rows */
  const int lq = seq.lq, lk = seq.lk;
  const int qoff = seq.qoff, koff = seq.koff;   /* qpos = q + qoff, kpos = k + koff */
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
    const unsigned sKs = sK + buf * KV_BYTES;
    if (j > 0) {
#pragma unroll
      for (int i = 0; i < DT * 4; i++) hattn_wg_pin(acc_o[i]);
#pragma unroll
      for (int kk = 0; kk < KN; kk++)
#pragma unroll
        for (int c = 0; c < 4; c++) hattn_wg_pin(pk[kk][c]);
    }
    hattn_wg_fence();
#pragma unroll
    for (int kk = 0; kk < KD; kk++) {
      const unsigned panel = (kk / 4) * 128, col = (kk % 4) * 32;
      hattn_wgmma_ss<BLOCK_N, IS_BF16>(
          s, hattn_wg_desc(aQ + panel * BLOCK_M + col, 16, 1024),
          hattn_wg_desc(sKs + panel * BLOCK_N + col, 16, 1024), kk > 0);
    }
    hattn_wg_commit();
    if (j > 0) {
      const unsigned sVp = sV + prev * KV_BYTES;
      hattn_wg_fence();                         /* (ptxas would insert it) */
#pragma unroll
      for (int kk = 0; kk < KN; kk++)
        hattn_wgmma_rs<HEAD_DIM, IS_BF16>(acc_o, pk[kk],
                                          hattn_wg_desc(sVp + kk * 16 * 128, BLOCK_N * 128, 1024));
      hattn_wg_commit();
      hattn_wg_wait<1>();                       /* S ready; P V may run on */
    } else {
      hattn_wg_wait<0>();
    }
#pragma unroll
    for (int i = 0; i < NT * 4; i++) hattn_wg_pin(s[i]);

    /* ---- scores: modifiers, then the mask ---- */
    /* s[4 nt + c]: row r0 + 8 (c / 2), key k0 + 8 nt + 2 t + c % 2.  In the
    ** base-2 domain with modifiers, else raw (scaled in the softmax).  The
    ** block's kind is tested once, outside the element loops: tested per
    ** element, it became a branch and a convergence barrier per element
    ** in every block (ptxas), which cost FULL blocks about 20%. */
    const int k0 = kb * BLOCK_N;
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
    } else if (k0 + BLOCK_N > lk) {
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++)
          if (k0 + nt * 8 + 2 * t + c % 2 >= lk) s[4 * nt + c] = hattn_neg_inf();
    }

    /* ---- online softmax ---- */
    const float sl2 = Pattern::has_score_mod ? 1.0f : args.scale_log2;
    float alpha[2];
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

    /* ---- O += P V of the block before has finished: rescale, pack P ---- */
    hattn_wg_wait<0>();
#pragma unroll
    for (int i = 0; i < DT * 4; i++) hattn_wg_pin(acc_o[i]);
    if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
      for (int i = 0; i < DT * 4; i++) acc_o[i] *= alpha[(i / 2) % 2];
    }
#pragma unroll
    for (int kk = 0; kk < KN; kk++) {
      pk[kk][0] = hattn_pack2<IS_BF16>(s[8 * kk + 0], s[8 * kk + 1]);
      pk[kk][1] = hattn_pack2<IS_BF16>(s[8 * kk + 2], s[8 * kk + 3]);
      pk[kk][2] = hattn_pack2<IS_BF16>(s[8 * kk + 4], s[8 * kk + 5]);
      pk[kk][3] = hattn_pack2<IS_BF16>(s[8 * kk + 6], s[8 * kk + 7]);
    }
  }

  /* ---- O += P V of the last block ---- */
  if (nblocks > 0) {
    hattn_cp_async_wait<0>();
    hattn_fence_async_shared();
    __syncthreads();
    const unsigned sVl = sV + ((nblocks - 1) % STAGES) * KV_BYTES;
#pragma unroll
    for (int i = 0; i < DT * 4; i++) hattn_wg_pin(acc_o[i]);
#pragma unroll
    for (int kk = 0; kk < KN; kk++)
#pragma unroll
      for (int c = 0; c < 4; c++) hattn_wg_pin(pk[kk][c]);
    hattn_wg_fence();
#pragma unroll
    for (int kk = 0; kk < KN; kk++)
      hattn_wgmma_rs<HEAD_DIM, IS_BF16>(acc_o, pk[kk], hattn_wg_desc(sVl + kk * 16 * 128, BLOCK_N * 128, 1024));
    hattn_wg_commit();
    hattn_wg_wait<0>();
#pragma unroll
    for (int i = 0; i < DT * 4; i++) hattn_wg_pin(acc_o[i]);
  }
  /* No copy may still be landing when the CTA exits (Q, when there was no
  ** key block at all). */
  hattn_cp_async_wait<0>();

  /* ---- epilogue: O / l through shared memory, LSE ---- */
  /* Each warp writes its 16 rows of O, rounded, over its own rows of sQ
  ** (which only its warpgroup's wgmma read, all complete), in the panel
  ** layout; the 4-byte stores of one instruction hit 32 distinct banks. */
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
  /* 16-byte chunks back, whole rows of the warp's 16 per instruction. */
  char *og = (char *)args.o + (b * args.o_stride[0] + h * args.o_stride[1] + seq.q_row0 * args.o_stride[2]) * 2;
  constexpr int CHUNKS = HEAD_DIM / 8;
  const int wrow0 = wg * 64 + (warp % 4) * 16;
#pragma unroll
  for (int i = 0; i < 16 * CHUNKS / 32; i++) {
    const int idx = i * 32 + lane;
    const int row = wrow0 + idx / CHUNKS, c = idx % CHUNKS;
    const uint4 v = hattn_ld_shared128(sQ + (c / 8) * BLOCK_M * 128 + row * 128 + (((unsigned)((c % 8) ^ (row & 7))) << 4));
    const int q = q0 + row;
    if (q < seq.lq_out) *(uint4 *)(og + ((long long)q * args.o_stride[2] + c * 8) * 2) = v;
  }
}
