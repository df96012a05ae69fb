/*
** cuda_common.cuh: PTX wrappers shared by the kernel bodies
** (templates/attn_fwd.cuh for sm_80 and later, templates/attn_fwd_sm90.cuh
** for sm_90a), pasted by gen/emit_cuda.c before the generated pattern
** functions.
*/

/* ---- PTX wrappers -------------------------------------------------------- */

/* The shared-state-space address of a generic pointer into shared memory. */
__device__ __forceinline__ unsigned hattn_smem_addr(const void *p) {
  unsigned r;
  asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }"
               : "=r"(r) : "l"(p));
  return r;
}

/* Copy 16 bytes global -> shared; with VALID false write 16 zero bytes
** (src-size 0: nothing is read from SRC). */
__device__ __forceinline__ void hattn_cp_async16(unsigned dst, const void *src, bool valid) {
  int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(n)
               : "memory");
}

__device__ __forceinline__ void hattn_cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* Wait until at most N of this thread's committed groups are pending. */
template <int N>
__device__ __forceinline__ void hattn_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}

__device__ __forceinline__ void hattn_ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ void hattn_ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

/* D += A B for one m16n8k16 tile with fp32 accumulators. */
template <bool IS_BF16>
__device__ __forceinline__ void hattn_mma(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                          unsigned b1) {
  if constexpr (IS_BF16) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

/* Two floats rounded to nearest-even and packed: LO in bits 0-15. */
template <bool IS_BF16>
__device__ __forceinline__ unsigned hattn_pack2(float lo, float hi) {
  unsigned r;
  if constexpr (IS_BF16)
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ void hattn_st_shared32(unsigned addr, unsigned v) {
  asm volatile("st.shared.b32 [%0], %1;\n" :: "r"(addr), "r"(v) : "memory");
}

__device__ __forceinline__ uint4 hattn_ld_shared128(unsigned addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr) : "memory");
  return v;
}

__device__ __forceinline__ float hattn_neg_inf() { return __int_as_float(0xff800000); }

/* 2^x by one MUFU.EX2 (flush-to-zero; exp2f adds range fix-ups). */
__device__ __forceinline__ float hattn_ex2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
}

/* X, opaque to the compiler: keeps it from hoisting the addresses derived
** from X out of the key-block loop into registers of their own. */
__device__ __forceinline__ unsigned hattn_opaque(unsigned x) {
  asm volatile("mov.b32 %0, %0;\n" : "+r"(x));
  return x;
}

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

/* The key blocks of query block QB of flattened head BH, by position p in
** [0, n): for a band mask (BAND, distances LO .. HI) the blocks of the
** interval, ascending, in closed form; else the plan's lists, FULL then
** PARTIAL blocks, each ascending.  Both kernels walk them through this. */
template <bool BAND, long long LO, long long HI, int BLOCK_M, int BLOCK_N>
struct hattn_key_blocks {
  hattn_band band;          /* BAND */
  const int *fidx, *pidx;   /* the lists: FULL, PARTIAL */
  int nf, n, lk;

  __device__ __forceinline__ hattn_key_blocks(const hattn_cuda_args &a, int qb, int bh)
      : fidx(0), pidx(0), nf(0), n(0), lk(a.lk) {
    const int q0 = qb * BLOCK_M;
    band = hattn_band_blocks<BLOCK_N>(q0, min(q0 + BLOCK_M, a.lq), a.lk - a.lq, a.lk, LO, HI);
    if constexpr (BAND) {
      n = q0 < a.lq ? band.kb1 - band.kb0 : 0;
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
    if constexpr (BAND) return band.kb0 + p;
    else return p < nf ? fidx[p] : pidx[p - nf];
  }
  /* Whether the block at position P is PARTIAL (its mask is evaluated). */
  __device__ __forceinline__ bool partial(int p) const {
    if constexpr (BAND) return !hattn_band_full<BLOCK_N>(band, band.kb0 + p, lk, LO, HI);
    else return p >= nf;
  }
};

