/*
** attn_decode.cuh: the decode kernel body: few queries per sequence (1 to
** 16, single-token and speculative decode), where attention reads each key
** and value once and the work is the memory traffic.  On the architecture
** layer of templates/arch_sm80.cuh (mma.sync; it runs on sm_80 and later,
** sm_90a included) and the pieces of templates/cuda_common.cuh, with the
** pattern contract there.  The entry points hattn_attn_decode and
** hattn_attn_combine take struct hattn_cuda_args (gen/cuda_abi.h).
**
** Packed GQA.  The query heads that share a KV head (PACK = heads /
** kv_heads of them, or 1 when the plan routes per head) are rows of one
** tile: packed row r of group grp is query row r % lq of head grp * PACK +
** r / lq.  So each K and V byte is read once for the whole group.  CTA (x,
** y, z) computes packed rows [16 x, 16 x + 16) of group y (flattened as b *
** (heads / PACK) + grp) over split z of the group's key blocks.
**
** Split KV.  The key blocks of the plan (bm = 16: one query block holds all
** lq <= 16 queries; FULL then PARTIAL, or a band's closed-form interval) are
** cut into gridDim.z contiguous splits, so that batch x groups x splits CTAs
** fill the device.  Inside a CTA, warp w takes every WARPS-th block of the
** split from the w-th on, streaming it through its own STAGES buffers of K
** and V (16-byte cp.async, the swizzle of attn_fwd.cuh); each warp keeps
** the 16 rows' online softmax state, and at the end the warps' states merge
** through shared memory.  One split: O (with learned sinks) and LSE are
** written directly.  More: each split writes its normalised O in float32
** and its LSE to args.split_o / args.split_lse, and hattn_attn_combine
** (one warp a row) merges them by LSE, adds the sink term, and writes O and
** LSE.
**
** Shared memory: sQ [16][HEAD_DIM], then per warp STAGES x (K, V) tiles of
** DECODE_BLOCK_N x HEAD_DIM; the warps' final states reuse the K/V space.
*/

/* ---- the decode kernel body ----------------------------------------------- */

template <class Config, class Pattern>
__device__ __forceinline__ void hattn_attn_decode(const hattn_cuda_args &args) {
  constexpr int ROWS = 16;                       /* packed rows a CTA */
  constexpr int BLOCK_N = Config::decode_block_n, HEAD_DIM = Config::head_dim;
  constexpr int WARPS = Config::decode_warps, STAGES = Config::decode_stages;
  constexpr bool IS_BF16 = Config::is_bf16;
  constexpr int THREADS = WARPS * 32;
  constexpr int NT = BLOCK_N / 8, DT = HEAD_DIM / 8, KD = HEAD_DIM / 16;
  constexpr int CHUNKS = HEAD_DIM / 8;           /* 16-byte chunks a row */
  constexpr unsigned RB = HEAD_DIM * 2;
  constexpr unsigned Q_BYTES = ROWS * RB, KV_BYTES = BLOCK_N * RB;
  constexpr unsigned WARP_BYTES = STAGES * 2 * KV_BYTES;
  constexpr float LOG2E = 1.4426950408889634f;
  constexpr float LN2 = 0.6931471805599453f;
  static_assert(BLOCK_N % 16 == 0 && HEAD_DIM % 64 == 0, "tile sizes");
  static_assert(STAGES >= 2 && STAGES <= 3, "2 or 3 stages");
  static_assert(WARPS * (2 * ROWS + ROWS * HEAD_DIM) * 4 <= WARPS * WARP_BYTES, "the merge fits in K/V space");

  extern __shared__ __align__(1024) unsigned char hattn_smem[];
  const unsigned sQ = hattn_smem_addr(hattn_smem);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const unsigned sW = sQ + Q_BYTES + warp * WARP_BYTES;   /* this warp's buffers */
  if (sQ % RB != 0) __trap();

  const int lq = args.lq;                        /* query rows of every entry, or the most */
  const int pack = args.per_head ? 1 : args.heads / args.kv_heads;
  const int groups = args.heads / pack;
  const int b = blockIdx.y / groups, grp = blockIdx.y % groups;
  const int kvh = grp * pack / (args.heads / args.kv_heads);
  const int nrows = pack * lq;                   /* packed rows of the group */
  const int r0 = blockIdx.x * ROWS;
  const hattn_seq seq = hattn_seq_of(args, b);   /* the entry's rows and positions */
  const int lk = seq.lk;
  const int qoff = seq.qoff, koff = seq.koff;    /* qpos = q + qoff, kpos = k + koff */

  /* The packed rows of this lane's two accumulator rows (g, g + 8): their
  ** query row, head and ALiBi slope. */
  int rq[2], rh[2];
  float rslope[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int pr = min(r0 + g + 8 * r, nrows - 1);
    rq[r] = pr % lq;
    rh[r] = grp * pack + pr / lq;
    rslope[r] = Pattern::slope(args, rh[r]);
  }

  /* Q: the packed rows, zero past the group's and past the entry's
  ** queries, in the swizzled layout. */
  for (int idx = tid; idx < ROWS * CHUNKS; idx += THREADS) {
    const int row = idx / CHUNKS, c = idx % CHUNKS, pr = r0 + row;
    const bool valid = pr < nrows && pr % lq < seq.lq;
    const int h = grp * pack + (valid ? pr / lq : 0), q = valid ? pr % lq : 0;
    const char *src = (const char *)args.q +
                      ((long long)b * args.q_stride[0] + (long long)h * args.q_stride[1] +
                       (seq.q_row0 + q) * args.q_stride[2] + c * 8) * 2;
    hattn_cp_async16(sQ + row * RB + ((unsigned)(c ^ (row & 7)) << 4), src, valid);
  }
  hattn_cp_async_commit();

  /* This split's key blocks; this warp's are every WARPS-th from the
  ** warp's own. */
  const hattn_key_blocks<Pattern, ROWS, BLOCK_N> kblocks(args, seq, 0, b * args.heads + grp * pack);
  const int split = blockIdx.z, nsplit = gridDim.z;
  const int jb = (int)((long long)kblocks.n * split / nsplit);
  const int je = (int)((long long)kblocks.n * (split + 1) / nsplit);
  const int mine = je - jb > warp ? (je - jb - warp + WARPS - 1) / WARPS : 0;
  auto pos_of = [&](int i) { return jb + warp + i * WARPS; };

  const char *kg = (const char *)args.k +
                   ((long long)b * args.k_stride[0] + (long long)kvh * args.k_stride[1] + seq.k_row0 * args.k_stride[2]) * 2;
  const char *vg = (const char *)args.v +
                   ((long long)b * args.v_stride[0] + (long long)kvh * args.v_stride[1] + seq.k_row0 * args.v_stride[2]) * 2;
  /* Paged or not is decided here, per block (a uniform branch): decode
  ** is bound by memory, and one body serves both. */
  auto load_block = [&](int i, int stage) {
    const int kb = kblocks.at(pos_of(i));
    const unsigned dK = sW + stage * 2 * KV_BYTES;
    if (args.block_table != 0) {
      hattn_load_kv<BLOCK_N, HEAD_DIM, 32, false, false, true>(dK, args, kg, b, kb * BLOCK_N, lk, lane);
      hattn_load_kv<BLOCK_N, HEAD_DIM, 32, false, true, true>(dK + KV_BYTES, args, vg, b, kb * BLOCK_N, lk, lane);
    } else {
      hattn_load_kv<BLOCK_N, HEAD_DIM, 32, false, false, false>(dK, args, kg, b, kb * BLOCK_N, lk, lane);
      hattn_load_kv<BLOCK_N, HEAD_DIM, 32, false, true, false>(dK + KV_BYTES, args, vg, b, kb * BLOCK_N, lk, lane);
    }
  };
#pragma unroll
  for (int i = 0; i < STAGES - 1; i++) {
    if (i < mine) load_block(i, i);
    hattn_cp_async_commit();
  }
  hattn_cp_async_wait<STAGES - 1>();             /* Q landed */
  __syncthreads();

  const unsigned offQ = (lane % 16) * RB + (((lane / 16) ^ (lane & 7)) << 4);
  const unsigned offK = (lane % 8 + (lane / 16) * 8) * RB + ((((lane / 8) % 2) ^ (lane & 7)) << 4);
  const unsigned offV = (lane % 8 + ((lane / 8) % 2) * 8) * RB + (((lane / 16) ^ (lane & 7)) << 4);
  unsigned qf[KD][4];
#pragma unroll
  for (int kk = 0; kk < KD; kk++) hattn_ldmatrix_x4(qf[kk], (sQ + offQ) ^ (kk * 32));

  float m_i[2] = {hattn_neg_inf(), hattn_neg_inf()}, l_i[2] = {0.0f, 0.0f};
  float acc_o[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; dt++)
#pragma unroll
    for (int c = 0; c < 4; c++) acc_o[dt][c] = 0.0f;

  for (int i = 0; i < mine; i++) {
    const int stage = i % STAGES;
    /* Block i landed (the newest STAGES - 2 groups may be pending); after
    ** the warp barrier every lane's copies are visible and every lane is
    ** done with block i - 1, whose buffer takes block i + STAGES - 1. */
    hattn_cp_async_wait<STAGES - 2>();
    __syncwarp();
    if (i + STAGES - 1 < mine) load_block(i + STAGES - 1, (i + STAGES - 1) % STAGES);
    hattn_cp_async_commit();

    const int p = pos_of(i);
    const bool partial = kblocks.partial(p);
    const int k0 = kblocks.at(p) * BLOCK_N;
    const unsigned aK = sW + stage * 2 * KV_BYTES + offK, aV = sW + stage * 2 * KV_BYTES + KV_BYTES + offV;

    /* ---- S = Q K^T ---- */
    float s[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int c = 0; c < 4; c++) s[nt][c] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++)
#pragma unroll
      for (int np = 0; np < NT / 2; np++) {
        unsigned kf[4];
        hattn_ldmatrix_x4(kf, (aK ^ (kk * 32)) + np * 16 * RB);
        hattn_mma<IS_BF16>(s[2 * np], qf[kk], kf[0], kf[1]);
        hattn_mma<IS_BF16>(s[2 * np + 1], qf[kk], kf[2], kf[3]);
      }

    /* ---- modifiers, then the mask (s[nt][c]: row g + 8 (c / 2), key k0 +
    ** 8 nt + 2 t + c % 2) ---- */
    if constexpr (Pattern::has_score_mod) {
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++)
          s[nt][c] = Pattern::score(s[nt][c] * args.scale, rq[c / 2] + qoff, k0 + nt * 8 + 2 * t + c % 2 + koff,
                                    rslope[c / 2]) * LOG2E;
    }
    if (partial) {
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int k = k0 + nt * 8 + 2 * t + c % 2, q = rq[c / 2];
          if (!(k < lk && Pattern::visible(q, q + qoff, k + koff, args, b * args.heads + rh[c / 2])))
            s[nt][c] = hattn_neg_inf();
        }
    } else if (k0 + BLOCK_N > lk) {
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++)
          if (k0 + nt * 8 + 2 * t + c % 2 >= lk) s[nt][c] = hattn_neg_inf();
    }

    /* ---- online softmax (attn_fwd.cuh's, one 16-row slab) ---- */
    const float sl2 = Pattern::has_score_mod ? 1.0f : args.scale_log2;
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float mx = hattn_neg_inf();
#pragma unroll
      for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      mx = fmaxf(m_i[r], mx * sl2);
      const float mref = mx == hattn_neg_inf() ? 0.0f : mx;
      alpha[r] = hattn_ex2(m_i[r] - mref);
      m_i[r] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        s[nt][2 * r] = hattn_ex2(fmaf(s[nt][2 * r], sl2, -mref));
        s[nt][2 * r + 1] = hattn_ex2(fmaf(s[nt][2 * r + 1], sl2, -mref));
        sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      l_i[r] = l_i[r] * alpha[r] + sum;
    }
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
#pragma unroll
      for (int c = 0; c < 4; c++) acc_o[dt][c] *= alpha[c / 2];

    /* ---- O += P V ---- */
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
      unsigned pa[4];
      pa[0] = hattn_pack2<IS_BF16>(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = hattn_pack2<IS_BF16>(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = hattn_pack2<IS_BF16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = hattn_pack2<IS_BF16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < DT / 2; dp++) {
        unsigned vf[4];
        hattn_ldmatrix_x4_trans(vf, (aV ^ (dp * 32)) + kk * 16 * RB);
        hattn_mma<IS_BF16>(acc_o[2 * dp], pa, vf[0], vf[1]);
        hattn_mma<IS_BF16>(acc_o[2 * dp + 1], pa, vf[2], vf[3]);
      }
    }
  }
  hattn_cp_async_wait<0>();
  __syncthreads();                               /* every warp is done with K and V */

  /* ---- the warps' states, merged through shared memory ---- */
  /* Warp w's rows: max (base 2) and sum at float index w * 32 + row and w *
  ** 32 + 16 + row, O at WARPS * 32 + (w * 16 + row) * HEAD_DIM + col. */
  float *st = (float *)(hattn_smem + Q_BYTES);
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float l = l_i[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = g + 8 * r;
    if (t == 0) {
      st[warp * 32 + row] = m_i[r];
      st[warp * 32 + 16 + row] = l;
    }
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
      float *o = st + WARPS * 32 + (warp * 16 + row) * HEAD_DIM + dt * 8 + 2 * t;
      o[0] = acc_o[dt][2 * r];
      o[1] = acc_o[dt][2 * r + 1];
    }
  }
  __syncthreads();

  for (int idx = tid; idx < ROWS * HEAD_DIM; idx += THREADS) {
    const int row = idx / HEAD_DIM, col = idx % HEAD_DIM, pr = r0 + row;
    if (pr >= nrows) continue;
    const int q = pr % lq, h = grp * pack + pr / lq;
    if (q >= seq.lq_out) continue;               /* past a packed entry's queries */
    float m = hattn_neg_inf();
#pragma unroll
    for (int w = 0; w < WARPS; w++) m = fmaxf(m, st[w * 32 + row]);
    const float mref = m == hattn_neg_inf() ? 0.0f : m;
    float l = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) {
      const float f = hattn_ex2(st[w * 32 + row] - mref);
      l += st[w * 32 + 16 + row] * f;
      acc += st[WARPS * 32 + (w * 16 + row) * HEAD_DIM + col] * f;
    }
    const bool none = q >= seq.lq;               /* past a padded entry's queries: sees no key */
    const long long orow = ((long long)b * args.heads + h) * lq + q;   /* [b][h][q] */
    if (nsplit == 1) {
      /* The epilogue of attn_fwd.cuh: the sink term, then O and LSE. */
      const float sink = args.sink_logits != 0 ? args.sink_logits[h] * LOG2E : hattn_neg_inf();
      float mn = fmaxf(m, sink);
      mn = mn == hattn_neg_inf() ? 0.0f : mn;
      const float fix = exp2f(m - mn);
      const float lt = none ? 0.0f : l * fix + exp2f(sink - mn);
      const float inv = lt == 0.0f ? 0.0f : fix / lt;
      unsigned short *o = (unsigned short *)args.o +
                          (long long)b * args.o_stride[0] + (long long)h * args.o_stride[1] +
                          (seq.q_row0 + q) * args.o_stride[2] + col;
      *o = (unsigned short)(hattn_pack2<IS_BF16>(none ? 0.0f : acc * inv, 0.0f) & 0xffffu);
      if (col == 0 && args.lse != 0)
        args.lse[b * args.lse_stride[0] + h * args.lse_stride[1] + (seq.q_row0 + q) * args.lse_stride[2]] =
            lt == 0.0f ? hattn_neg_inf() : (mn + log2f(lt)) * LN2;
    } else {
      /* This split's normalised O and natural-log LSE, without the sink. */
      const long long rows = (long long)gridDim.y / groups * args.heads * lq;   /* batch * heads * lq */
      args.split_o[((long long)split * rows + orow) * HEAD_DIM + col] = l == 0.0f || none ? 0.0f : acc / l;
      if (col == 0)
        args.split_lse[(long long)split * rows + orow] = l == 0.0f || none ? hattn_neg_inf() : (m + log2f(l)) * LN2;
    }
  }
}

/* ---- the combine kernel body ----------------------------------------------- */

/* The merge of the decode kernel's splits (gridDim.z of the decode launch,
** args.nsplit here): one warp a row of batch * heads * lq rows, 4 warps a
** CTA.  The rule of hattn_merge (hattn.h) with the learned sink as one more
** part that carries no value. */
template <class Config>
__device__ __forceinline__ void hattn_attn_combine(const hattn_cuda_args &args) {
  constexpr int HEAD_DIM = Config::head_dim;
  constexpr bool IS_BF16 = Config::is_bf16;
  constexpr float LOG2E = 1.4426950408889634f;
  const int lane = threadIdx.x % 32;
  const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const long long rows = (long long)args.batch * args.heads * args.lq;
  if (row >= rows) return;
  const int q = (int)(row % args.lq), h = (int)(row / args.lq % args.heads);
  const int b = (int)(row / args.lq / args.heads);
  const hattn_seq seq = hattn_seq_of(args, b);
  if (q >= seq.lq_out) return;                   /* past a packed entry's queries */
  const int n = args.nsplit;
  float m = args.sink_logits != 0 ? args.sink_logits[h] : hattn_neg_inf();
  bool nan = false;
  for (int i = 0; i < n; i++) {
    const float x = args.split_lse[(long long)i * rows + row];
    if (x != x) nan = true;
    m = fmaxf(m, x);
  }
  if (nan) m = __int_as_float(0x7fffffff);
  const float mref = m == hattn_neg_inf() ? 0.0f : m;
  float sum = args.sink_logits != 0 ? hattn_ex2((args.sink_logits[h] - mref) * LOG2E) : 0.0f;
  float acc[HEAD_DIM / 32];
#pragma unroll
  for (int j = 0; j < HEAD_DIM / 32; j++) acc[j] = 0.0f;
  for (int i = 0; i < n; i++) {
    const float x = args.split_lse[(long long)i * rows + row];
    if (x == hattn_neg_inf() && !nan) continue;
    const float w = hattn_ex2((x - mref) * LOG2E);
    sum += w;
    const float *o = args.split_o + ((long long)i * rows + row) * HEAD_DIM;
#pragma unroll
    for (int j = 0; j < HEAD_DIM / 32; j++) acc[j] += w * o[j * 32 + lane];
  }
  if (q >= seq.lq) sum = 0.0f;                   /* past a padded entry's queries: sees no key */
  const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
  unsigned short *o = (unsigned short *)args.o + (long long)b * args.o_stride[0] + (long long)h * args.o_stride[1] +
                      (seq.q_row0 + q) * args.o_stride[2];
#pragma unroll
  for (int j = 0; j < HEAD_DIM / 32; j++)
    o[j * 32 + lane] = (unsigned short)(hattn_pack2<IS_BF16>(acc[j] * inv, 0.0f) & 0xffffu);
  if (lane == 0 && args.lse != 0)
    args.lse[b * args.lse_stride[0] + h * args.lse_stride[1] + (seq.q_row0 + q) * args.lse_stride[2]] =
        sum == 0.0f ? hattn_neg_inf() : mref + logf(sum);
}
