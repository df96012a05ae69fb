/*
** attn_fwd.cuh: the forward attention kernel body (the FlashAttention 2
** recipe, mma.sync, sm_80 and later) on the architecture layer of
** templates/arch_sm80.cuh and the pieces of templates/cuda_common.cuh.
** hattn_attn_fwd<Config, Pattern>(args) takes the configuration and the
** generated pattern as types (the contract in templates/cuda_common.cuh)
** and its arguments as struct hattn_cuda_args (gen/cuda_abi.h).
**
** One CTA computes BLOCK_M query rows of one flattened head bh (grid x: the
** query block, grid y: bh).  Warp w owns rows [w * WROWS, (w + 1) * WROWS)
** of the tile, WROWS = 16 * MT, as MT slabs of 16 rows.  The key blocks (in
** closed form for a band mask, else the plan's FULL then PARTIAL ones)
** stream through STAGES shared-memory buffers
** of K and V filled by 16-byte cp.async.  Per key block:
**   S = Q K^T        mma.m16n8k16, Q fragments from registers (head dim up
**                    to 128) or ldmatrix from shared memory, K by ldmatrix
**   mask, modifiers  PARTIAL blocks evaluate Pattern::visible per element; every
**                    block masks keys >= lk
**   online softmax   base 2, row statistics shared by the 4 lanes of a quad
**   O += P V         P re-packed from the S accumulators, V by ldmatrix.trans
** and finally O / l goes through shared memory (each warp's rows of sQ) to
** 16-byte coalesced stores, and LSE is written.
**
** Shared memory (dynamic, 1024-byte aligned), elements of 2 bytes:
**   sQ [BLOCK_M][HEAD_DIM], sK [STAGES][BLOCK_N][HEAD_DIM], sV likewise.
** Every row is HEAD_DIM / 8 chunks of 16 bytes; chunk c of row r is stored
** at chunk position c ^ (r & 7) (HEAD_DIM >= 64, so at least 8 chunks): the
** 8 row addresses of one ldmatrix 8x8 matrix fall into 8 distinct 16-byte
** bank groups, so ldmatrix and cp.async are free of bank conflicts.
**
** Fragment layouts of mma.m16n8k16 (PTX ISA), g = lane / 4, t = lane % 4:
**   A 16x16 row-major, 4 registers of 2 elements (low half = lower column):
**     a0 (row g,   cols 2t, 2t+1)   a1 (row g+8, cols 2t, 2t+1)
**     a2 (row g,   cols 2t+8, +9)   a3 (row g+8, cols 2t+8, +9)
**   B 16x8 (k x n), 2 registers:
**     b0 (rows k = 2t, 2t+1, col n = g)   b1 (rows k = 2t+8, 2t+9, col g)
**   C/D 16x8 fp32, 4 registers:
**     c0, c1 (row g, cols 2t, 2t+1)   c2, c3 (row g+8, cols 2t, 2t+1)
** ldmatrix .x4: lanes 8i .. 8i+7 give the 8 row addresses of matrix i; the
** result register i of lane l holds row l / 4, cols 2 (l % 4) + {0, 1} of
** matrix i, or with .trans, rows 2 (l % 4) + {0, 1} of column l / 4.
*/

/* ---- the kernel body ----------------------------------------------------- */

template <class Config, class Pattern, bool PAGED>
__device__ __forceinline__ void hattn_attn_fwd(const hattn_cuda_args &args) {
  constexpr int BLOCK_M = Config::block_m, BLOCK_N = Config::block_n;
  constexpr int HEAD_DIM = Config::head_dim, WARPS = Config::warps, STAGES = Config::stages;
  constexpr bool IS_BF16 = Config::is_bf16;
  constexpr int THREADS = WARPS * 32;
  constexpr int WROWS = BLOCK_M / WARPS;       /* query rows per warp */
  constexpr int MT = WROWS / 16;               /* 16-row slabs per warp */
  constexpr int NT = BLOCK_N / 8;              /* 8-key column tiles of S */
  constexpr int DT = HEAD_DIM / 8;             /* 8-wide column tiles of O */
  constexpr int KD = HEAD_DIM / 16;            /* k-steps of Q K^T */
  /* Q fragments in registers only for one 16-row slab a warp: at two slabs
  ** (128 x 64 tiles of 4 warps) they would push the kernel past 255. */
  constexpr bool Q_IN_REGS = HEAD_DIM <= 128 && WROWS == 16;
  constexpr unsigned RB = HEAD_DIM * 2;        /* bytes of a tile row */
  constexpr float LOG2E = 1.4426950408889634f;
  constexpr float LN2 = 0.6931471805599453f;
  constexpr unsigned Q_BYTES = BLOCK_M * HEAD_DIM * 2;
  constexpr unsigned KV_BYTES = BLOCK_N * HEAD_DIM * 2;
  static_assert(MT >= 1 && WROWS % 16 == 0, "each warp owns a multiple of 16 rows");
  static_assert(BLOCK_N % 16 == 0 && HEAD_DIM % 64 == 0, "tile sizes");
  static_assert(STAGES >= 1 && STAGES <= 3, "1 to 3 stages");

  /* 1024-aligned: the ldmatrix addresses below XOR column offsets into
  ** the low bits of a whole address (tile bases are multiples of HEAD_DIM * 2
  ** bytes from here). */
  extern __shared__ __align__(1024) unsigned char hattn_smem[];
  const unsigned sQ = hattn_smem_addr(hattn_smem);
  const unsigned sK = sQ + Q_BYTES;
  const unsigned sV = sK + STAGES * KV_BYTES;
  if (sQ % RB != 0) __trap();                   /* the XOR addressing needs it */

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  /* CTAs start in the order of their linear index (x fastest); this maps
  ** it to the last query block of every head first, then the one before:
  ** under causal masks the longest CTAs start first and the shortest form
  ** the tail of the launch.  A bijection of the grid onto (qb, bh). */
  const int lin = blockIdx.y * gridDim.x + blockIdx.x;
  const int qb = gridDim.x - 1 - lin / gridDim.y, bh = lin % gridDim.y;
  const int b = bh / args.heads, h = bh % args.heads;
  const int kvh = h / (args.heads / args.kv_heads);
  const int q0 = qb * BLOCK_M;                  /* first query row of the CTA */
  const hattn_seq seq = hattn_seq_of(args, b);  /* the entry's rows and positions */
  if (q0 >= seq.lq_out) return;                 /* past a packed entry's rows */
  const int lq = seq.lq, lk = seq.lk;
  const int qoff = seq.qoff, koff = seq.koff;   /* qpos = q + qoff, kpos = k + koff */
  const float slope = Pattern::slope(args, h);

  const char *qg = (const char *)args.q + (b * args.q_stride[0] + h * args.q_stride[1] + seq.q_row0 * args.q_stride[2]) * 2;
  const char *kg = (const char *)args.k + (b * args.k_stride[0] + kvh * args.k_stride[1] + seq.k_row0 * args.k_stride[2]) * 2;
  const char *vg = (const char *)args.v + (b * args.v_stride[0] + kvh * args.v_stride[1] + seq.k_row0 * args.v_stride[2]) * 2;

  /* This query block's key blocks, in the order of hattn_key_blocks. */
  const hattn_key_blocks<Pattern, BLOCK_M, BLOCK_N> kblocks(args, seq, qb, bh);
  const int nblocks = kblocks.n;
  auto block_at = [&](int j) { return kblocks.at(j); };
  auto partial_at = [&](int j) { return kblocks.partial(j); };

  /* Q: its own cp.async group, committed first. */
  hattn_load_rows<BLOCK_M, HEAD_DIM, THREADS, false>(sQ, qg, args.q_stride[2], q0, lq, tid);
  hattn_cp_async_commit();

  /* Prologue: key blocks 0 .. STAGES-2, one group each (empty groups too, so
  ** that group j + 1 always holds key block j). */
#pragma unroll
  for (int j = 0; j < STAGES - 1; j++) {
    if (j < nblocks) {
      const int kb = block_at(j);
      hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, false, false, PAGED>(sK + j * KV_BYTES, args, kg, b,
                                                              kb * BLOCK_N, lk, tid);
      hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, false, true, PAGED>(sV + j * KV_BYTES, args, vg, b,
                                                             kb * BLOCK_N, lk, tid);
    }
    hattn_cp_async_commit();
  }

  /* Wait for Q alone (the STAGES - 1 newest groups may still be pending). */
  hattn_cp_async_wait<STAGES - 1>();
  __syncthreads();

  const int wrow0 = warp * WROWS;               /* first tile row of this warp */

  /* ldmatrix lane offsets.  Lane l of a 16x16 operand tile addresses row
  ** R(l) with R(l) & 7 = l & 7 and chunk 2 kk + c0(l), c0 in {0, 1}; its
  ** swizzled chunk (2 kk + c0) ^ (l & 7) = ((c0 ^ (l & 7)) ^ 2 kk), so the
  ** address of k-step kk is (base + R(l) * RB + 16 (c0 ^ (l & 7))) ^ 32 kk,
  ** given a base that is a multiple of RB (32 kk < RB).  Row offsets that
  ** are multiples of 8 rows are added afterwards as immediates. */
  const unsigned offQ = (wrow0 + lane % 16) * RB + (((lane / 16) ^ (lane & 7)) << 4);
  const unsigned offK = (lane % 8 + (lane / 16) * 8) * RB + ((((lane / 8) % 2) ^ (lane & 7)) << 4);
  const unsigned offV = (lane % 8 + ((lane / 8) % 2) * 8) * RB + (((lane / 16) ^ (lane & 7)) << 4);

  /* Q fragments (A operands): qf[mt][kk] covers rows wrow0 + 16 mt .. + 15,
  ** head-dim columns 16 kk .. + 15.  Lane l addresses row (l % 16), column
  ** 8 (l / 16) of the 16x16 tile: matrices 0..3 = a0..a3. */
  unsigned qf[Q_IN_REGS ? MT : 1][Q_IN_REGS ? KD : 1][4];
  if constexpr (Q_IN_REGS) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int kk = 0; kk < KD; kk++)
        hattn_ldmatrix_x4(qf[mt][kk], ((sQ + offQ) ^ (kk * 32)) + mt * 16 * RB);
  }

  /* Running state of rows (wrow0 + 16 mt + g) [index 0] and (+ 8) [index 1]:
  ** the maximum in the base-2 domain, this lane's partial row sum, and O. */
  float m_i[MT][2], l_i[MT][2];
  float acc_o[MT][DT][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
      m_i[mt][r] = hattn_neg_inf();
      l_i[mt][r] = 0.0f;
    }
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
#pragma unroll
      for (int c = 0; c < 4; c++) acc_o[mt][dt][c] = 0.0f;
  }

  for (int j = 0; j < nblocks; j++) {
    const int stage = j % STAGES;
    if constexpr (STAGES == 1) {
      /* Everyone is done with the only buffer before it is refilled. */
      __syncthreads();
      const int kb = block_at(j);
      hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, false, false, PAGED>(sK, args, kg, b, kb * BLOCK_N, lk, tid);
      hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, false, true, PAGED>(sV, args, vg, b, kb * BLOCK_N, lk, tid);
      hattn_cp_async_commit();
      hattn_cp_async_wait<0>();
      __syncthreads();
    } else {
      /* Block j's group is complete; after the barrier every thread's copies
      ** are visible and every warp has finished block j - 1, whose buffer
      ** now receives block j + STAGES - 1. */
      hattn_cp_async_wait<(STAGES >= 2 ? STAGES - 2 : 0)>();
      __syncthreads();
      const int jn = j + STAGES - 1;
      if (jn < nblocks) {
        const int kbn = block_at(jn);
        const int sn = jn % STAGES;
        hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, false, false, PAGED>(sK + sn * KV_BYTES, args, kg, b,
                                                                kbn * BLOCK_N, lk, tid);
        hattn_load_kv<BLOCK_N, HEAD_DIM, THREADS, false, true, PAGED>(sV + sn * KV_BYTES, args, vg, b,
                                                               kbn * BLOCK_N, lk, tid);
      }
      hattn_cp_async_commit();
    }
    const bool partial = partial_at(j);
    const int kb = block_at(j);
    const int k0 = kb * BLOCK_N;                /* first key row of the block */
    const unsigned sKs = sK + stage * KV_BYTES, sVs = sV + stage * KV_BYTES;
    const unsigned aQ = hattn_opaque(sQ + offQ), aK = sKs + offK, aV = sVs + offV;

    /* ---- S = Q K^T ---- */
    float s[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) s[mt][nt][c] = 0.0f;
    /* K rows n .. n+15 as the B operands of column tiles n/8 and n/8 + 1:
    ** matrices (keys +0..7, dims +0..7) = b0 of the first tile, (keys
    ** +0..7, dims +8..15) = its b1, then the same for keys +8..15.  Lane
    ** l addresses key row (l % 8) + 8 (l / 16), column 8 ((l / 8) % 2). */
    if constexpr (Q_IN_REGS) {
#pragma unroll
      for (int kk = 0; kk < KD; kk++) {
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
          unsigned kf[4];
          hattn_ldmatrix_x4(kf, (aK ^ (kk * 32)) + np * 16 * RB);
#pragma unroll
          for (int mt = 0; mt < MT; mt++) {
            hattn_mma<IS_BF16>(s[mt][2 * np], qf[mt][kk], kf[0], kf[1]);
            hattn_mma<IS_BF16>(s[mt][2 * np + 1], qf[mt][kk], kf[2], kf[3]);
          }
        }
      }
    } else {
      /* Software-pipelined by one ldmatrix: the K fragment of the next
      ** (kk, np) and the Q fragments of step kk + 1 load while the mma of
      ** the current one run.  Two register buffers each; the loop is
      ** unrolled by two (KD is even) so that buffer indices stay constant;
      ** NT / 2 is even, so the K buffer of (kk, np) is np % 2. */
      unsigned a[2][MT][4], kf[2][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) hattn_ldmatrix_x4(a[0][mt], aQ + mt * 16 * RB);
      hattn_ldmatrix_x4(kf[0], aK);
#pragma unroll 1
      for (int kk = 0; kk < KD; kk += 2) {
#pragma unroll
        for (int u = 0; u < 2; u++) {
          const int k = kk + u;
#pragma unroll
          for (int np = 0; np < NT / 2; np++) {
            const int cur = np & 1;
            if (np + 1 < NT / 2) {
              hattn_ldmatrix_x4(kf[1 - cur], (aK ^ (k * 32)) + (np + 1) * 16 * RB);
            } else if (u == 0 || k + 1 < KD) {
              hattn_ldmatrix_x4(kf[1 - cur], aK ^ ((k + 1) * 32));
            }
            if (np == 0 && (u == 0 || k + 1 < KD)) {
#pragma unroll
              for (int mt = 0; mt < MT; mt++)
                hattn_ldmatrix_x4(a[1 - u][mt], (aQ ^ ((k + 1) * 32)) + mt * 16 * RB);
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
              hattn_mma<IS_BF16>(s[mt][2 * np], a[u][mt], kf[cur][0], kf[cur][1]);
              hattn_mma<IS_BF16>(s[mt][2 * np + 1], a[u][mt], kf[cur][2], kf[cur][3]);
            }
          }
        }
      }
    }

    /* ---- scores: modifiers, then the mask ---- */
    /* s[mt][nt][c]: row wrow0 + 16 mt + g + 8 (c / 2), key k0 + 8 nt + 2 t +
    ** c % 2.  In the base-2 domain with modifiers, else raw (scale > 0, so
    ** the raw maximum scales to the base-2 one and the softmax folds the
    ** scale into one FFMA per element).  The block's kind is tested once,
    ** outside the element loops (per element, ptxas made it a branch per
    ** score in every block; see attn_fwd_sm90.cuh). */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      if constexpr (Pattern::has_score_mod) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int c = 0; c < 4; c++) {
            const int qpos = q0 + wrow0 + mt * 16 + g + 8 * (c / 2) + qoff;
            const int kpos = k0 + nt * 8 + 2 * t + c % 2 + koff;
            s[mt][nt][c] = Pattern::score(s[mt][nt][c] * args.scale, qpos, kpos, slope) * LOG2E;
          }
      }
      if (partial) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int c = 0; c < 4; c++) {
            const int q = q0 + wrow0 + mt * 16 + g + 8 * (c / 2);
            const int k = k0 + nt * 8 + 2 * t + c % 2;
            if (!(k < lk && q < lq && Pattern::visible(q, q + qoff, k + koff, args, bh)))
              s[mt][nt][c] = hattn_neg_inf();
          }
      } else if (k0 + BLOCK_N > lk) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int c = 0; c < 4; c++)
            if (k0 + nt * 8 + 2 * t + c % 2 >= lk) s[mt][nt][c] = hattn_neg_inf();
      }
    }

    /* ---- online softmax ---- */
    const float sl2 = Pattern::has_score_mod ? 1.0f : args.scale_log2;
    float alpha[MT][2];
    bool grew = false;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
      for (int r = 0; r < 2; r++) {
        float mx = hattn_neg_inf();
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
          mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
        /* The quad's 4 lanes hold the row's other columns. */
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        /* To the base-2 domain of m_i (scale > 0: -inf stays -inf). */
        mx = fmaxf(m_i[mt][r], mx * sl2);
        /* A row that has seen no key keeps max -inf: subtract 0 instead, so
        ** that exp2(-inf - m) is 0, never NaN. */
        const float mref = mx == hattn_neg_inf() ? 0.0f : mx;
        grew |= mx != m_i[mt][r];
        alpha[mt][r] = hattn_ex2(m_i[mt][r] - mref);
        m_i[mt][r] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
          s[mt][nt][2 * r] = hattn_ex2(fmaf(s[mt][nt][2 * r], sl2, -mref));
          s[mt][nt][2 * r + 1] = hattn_ex2(fmaf(s[mt][nt][2 * r + 1], sl2, -mref));
          sum += s[mt][nt][2 * r] + s[mt][nt][2 * r + 1];
        }
        l_i[mt][r] = l_i[mt][r] * alpha[mt][r] + sum;
      }
    }
    /* O *= alpha only where some row's maximum grew (alpha 1 elsewhere):
    ** once the maxima settle, most key blocks skip these MT x HEAD_DIM / 2
    ** multiplies a thread. */
    if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
#pragma unroll
          for (int c = 0; c < 4; c++) acc_o[mt][dt][c] *= alpha[mt][c / 2];
    }

    /* ---- O += P V ---- */
    /* P as the A operand of keys 16 kk .. + 15: the accumulators of column
    ** tiles 2 kk (a0, a1) and 2 kk + 1 (a2, a3); packed all at once, so that
    ** the fp32 scores die before the P V products. */
    unsigned pk[NT / 2][MT][4];
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        pk[kk][mt][0] = hattn_pack2<IS_BF16>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pk[kk][mt][1] = hattn_pack2<IS_BF16>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pk[kk][mt][2] = hattn_pack2<IS_BF16>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pk[kk][mt][3] = hattn_pack2<IS_BF16>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
      const unsigned (&pa)[MT][4] = pk[kk];
      /* V rows (keys) 16 kk .. + 15, head-dim columns n .. n+15, transposed:
      ** matrices (keys +0..7, dims +0..7) = b0 of column tile n/8, (keys
      ** +8..15, dims +0..7) = its b1, then dims +8..15 for tile n/8 + 1.
      ** Lane l addresses key row (l % 8) + 8 ((l / 8) % 2), column 8 (l / 16). */
#pragma unroll
      for (int dp = 0; dp < DT / 2; dp++) {
        unsigned vf[4];
        hattn_ldmatrix_x4_trans(vf, (aV ^ (dp * 32)) + kk * 16 * RB);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          hattn_mma<IS_BF16>(acc_o[mt][2 * dp], pa[mt], vf[0], vf[1]);
          hattn_mma<IS_BF16>(acc_o[mt][2 * dp + 1], pa[mt], vf[2], vf[3]);
        }
      }
    }
  }

  /* No copy may still be landing when the CTA exits (empty groups only, but
  ** also Q when there was no key block at all). */
  hattn_cp_async_wait<0>();

  /* ---- epilogue: O / l through shared memory, LSE ---- */
  /* Warp w writes its rows of O, rounded, into its own rows of sQ: only
  ** warp w ever read them, and Q's copies finished before the loop, so no
  ** CTA barrier is needed.  Same swizzle as Q: the 4-byte stores of one
  ** instruction hit 32 distinct banks. */
  const unsigned sO = sQ + wrow0 * RB;
  /* A learned sink logit is one more term of each row's sum, with no value:
  ** mn = max(m, sink), l' = l 2^(m - mn) + 2^(sink - mn), O = acc 2^(m - mn)
  ** / l'.  Without one (sink -inf) this is O = acc / l. */
  const float sink = args.sink_logits != 0 ? args.sink_logits[h] * LOG2E : hattn_neg_inf();
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float l = l_i[mt][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      float mn = fmaxf(m_i[mt][r], sink);
      mn = mn == hattn_neg_inf() ? 0.0f : mn;
      const float fix = exp2f(m_i[mt][r] - mn);
      l = l * fix + exp2f(sink - mn);
      const int row = mt * 16 + g + 8 * r;      /* row of the warp's slab */
      const int q = q0 + wrow0 + row;
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
        for (int dt = 0; dt < DT; dt++) acc_o[mt][dt][2 * r] = acc_o[mt][dt][2 * r + 1] = 0.0f;
#pragma unroll
      for (int dt = 0; dt < DT; dt++) {
        const unsigned v = hattn_pack2<IS_BF16>(acc_o[mt][dt][2 * r] * inv,
                                                acc_o[mt][dt][2 * r + 1] * inv);
        hattn_st_shared32(sO + row * RB + (((unsigned)(dt ^ (row & 7))) << 4) + 4 * t, v);
      }
      if (args.lse != 0 && t == 0 && q < seq.lq_out) {
        const float lse = l == 0.0f ? hattn_neg_inf() : (mn + log2f(l)) * LN2;
        args.lse[b * args.lse_stride[0] + h * args.lse_stride[1] + (seq.q_row0 + q) * args.lse_stride[2]] = lse;
      }
    }
  }
  __syncwarp();
  /* 16-byte chunks back, CHUNKS lanes a row: each instruction stores whole
  ** rows of O (the runtime checks that O's rows start on 16-byte bounds). */
  char *og = (char *)args.o + (b * args.o_stride[0] + h * args.o_stride[1] + seq.q_row0 * args.o_stride[2]) * 2;
  constexpr int CHUNKS = HEAD_DIM / 8;
#pragma unroll
  for (int i = 0; i < WROWS * CHUNKS / 32; i++) {
    const int idx = i * 32 + lane;
    const int row = idx / CHUNKS, c = idx % CHUNKS;
    const uint4 v = hattn_ld_shared128(sO + row * RB + (((unsigned)(c ^ (row & 7))) << 4));
    const int q = q0 + wrow0 + row;
    if (q < seq.lq_out) *(uint4 *)(og + ((long long)q * args.o_stride[2] + c * 8) * 2) = v;
  }
}
