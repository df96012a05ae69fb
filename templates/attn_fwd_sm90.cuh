/*
** attn_fwd_sm90.cuh: the forward attention kernel body for sm_90a (Hopper):
** warpgroup MMA (wgmma), pasted by gen/emit_cuda.c after
** templates/cuda_common.cuh and the generated pattern functions, in place
** of templates/attn_fwd.cuh (the mma.sync kernel for sm_80 and later).  It
** expects the same definitions as that file: struct hattn_cuda_args,
** hattn_visible, hattn_score, hattn_slope, HATTN_HAS_SCORE_MOD and the
** HATTN_BAND constants.
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

/* ---- wgmma ---------------------------------------------------------------- */

/* The descriptor of a shared-memory operand at shared address ADDR, with
** leading and stride byte offsets LBO and SBO, 128-byte swizzled. */
__device__ __forceinline__ unsigned long long hattn_wg_desc(unsigned addr, unsigned lbo, unsigned sbo) {
  return (unsigned long long)((addr & 0x3ffff) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
         ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}

/* Orders this thread's register writes before the wgmma that read them. */
__device__ __forceinline__ void hattn_wg_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void hattn_wg_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

/* Wait until at most N of the warpgroup's committed wgmma groups are pending. */
template <int N>
__device__ __forceinline__ void hattn_wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory");
}

/* Makes this thread's generic-proxy writes to shared memory (cp.async,
** st.shared) visible to the async proxy that wgmma reads through. */
__device__ __forceinline__ void hattn_fence_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* Keep the compiler from moving the reads or writes of V across a wgmma
** fence, issue or wait (the compiler does not know that wgmma is
** asynchronous). */
__device__ __forceinline__ void hattn_wg_pin(float &v) { asm volatile("" : "+f"(v)::"memory"); }
__device__ __forceinline__ void hattn_wg_pin(unsigned &v) { asm volatile("" : "+r"(v)::"memory"); }

/* The wgmma instructions, one macro per shape and operand form, with the
** element type TY ("bf16" or "f16") pasted into the instruction.  SS: A
** and B from shared-memory descriptors DA and DB, both K-major, D zeroed
** first unless ACC.  RS: A from registers (4 a thread, the mma.m16n8k16
** A layout per warp), B from descriptor DB, N-major (transposed), D += A B. */
#define HATTN_WGMMA_SS_N64(TY)                                                \
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %34, 0;\n"                     \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY "\n"   \
               "{%0, %1, %2, %3, %4, %5, %6, %7, "                            \
               "%8, %9, %10, %11, %12, %13, %14, %15, "                       \
               "%16, %17, %18, %19, %20, %21, %22, %23, "                     \
               "%24, %25, %26, %27, %28, %29, %30, %31},\n"                   \
               " %32, %33, p, 1, 1, 0, 0; }\n"                                \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),              \
                 "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),              \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),            \
                 "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),          \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),          \
                 "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),          \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),          \
                 "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])           \
               : "l"(da), "l"(db), "r"(acc))

#define HATTN_WGMMA_SS_N128(TY)                                               \
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %66, 0;\n"                     \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY "\n"  \
               "{%0, %1, %2, %3, %4, %5, %6, %7, "                            \
               "%8, %9, %10, %11, %12, %13, %14, %15, "                       \
               "%16, %17, %18, %19, %20, %21, %22, %23, "                     \
               "%24, %25, %26, %27, %28, %29, %30, %31, "                     \
               "%32, %33, %34, %35, %36, %37, %38, %39, "                     \
               "%40, %41, %42, %43, %44, %45, %46, %47, "                     \
               "%48, %49, %50, %51, %52, %53, %54, %55, "                     \
               "%56, %57, %58, %59, %60, %61, %62, %63},\n"                   \
               " %64, %65, p, 1, 1, 0, 0; }\n"                                \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),              \
                 "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),              \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),            \
                 "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),          \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),          \
                 "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),          \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),          \
                 "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),          \
                 "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),          \
                 "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),          \
                 "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),          \
                 "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),          \
                 "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),          \
                 "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),          \
                 "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),          \
                 "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])           \
               : "l"(da), "l"(db), "r"(acc))

#define HATTN_WGMMA_RS_N64(TY)                                                \
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %37, 0;\n"                     \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY "\n"   \
               "{%0, %1, %2, %3, %4, %5, %6, %7, "                            \
               "%8, %9, %10, %11, %12, %13, %14, %15, "                       \
               "%16, %17, %18, %19, %20, %21, %22, %23, "                     \
               "%24, %25, %26, %27, %28, %29, %30, %31},\n"                   \
               " {%32, %33, %34, %35}, %36, p, 1, 1, 1; }\n"                  \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),              \
                 "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),              \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),            \
                 "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),          \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),          \
                 "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),          \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),          \
                 "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])           \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc))

#define HATTN_WGMMA_RS_N128(TY)                                               \
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %69, 0;\n"                     \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY "\n"  \
               "{%0, %1, %2, %3, %4, %5, %6, %7, "                            \
               "%8, %9, %10, %11, %12, %13, %14, %15, "                       \
               "%16, %17, %18, %19, %20, %21, %22, %23, "                     \
               "%24, %25, %26, %27, %28, %29, %30, %31, "                     \
               "%32, %33, %34, %35, %36, %37, %38, %39, "                     \
               "%40, %41, %42, %43, %44, %45, %46, %47, "                     \
               "%48, %49, %50, %51, %52, %53, %54, %55, "                     \
               "%56, %57, %58, %59, %60, %61, %62, %63},\n"                   \
               " {%64, %65, %66, %67}, %68, p, 1, 1, 1; }\n"                  \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),              \
                 "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),              \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),            \
                 "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),          \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),          \
                 "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),          \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),          \
                 "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),          \
                 "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),          \
                 "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),          \
                 "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),          \
                 "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),          \
                 "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),          \
                 "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),          \
                 "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),          \
                 "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])           \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc))

#define HATTN_WGMMA_RS_N256(TY)                                               \
  asm volatile("{ .reg .pred p; setp.ne.b32 p, %133, 0;\n"                    \
               "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY "\n"  \
               "{%0, %1, %2, %3, %4, %5, %6, %7, "                            \
               "%8, %9, %10, %11, %12, %13, %14, %15, "                       \
               "%16, %17, %18, %19, %20, %21, %22, %23, "                     \
               "%24, %25, %26, %27, %28, %29, %30, %31, "                     \
               "%32, %33, %34, %35, %36, %37, %38, %39, "                     \
               "%40, %41, %42, %43, %44, %45, %46, %47, "                     \
               "%48, %49, %50, %51, %52, %53, %54, %55, "                     \
               "%56, %57, %58, %59, %60, %61, %62, %63, "                     \
               "%64, %65, %66, %67, %68, %69, %70, %71, "                     \
               "%72, %73, %74, %75, %76, %77, %78, %79, "                     \
               "%80, %81, %82, %83, %84, %85, %86, %87, "                     \
               "%88, %89, %90, %91, %92, %93, %94, %95, "                     \
               "%96, %97, %98, %99, %100, %101, %102, %103, "                 \
               "%104, %105, %106, %107, %108, %109, %110, %111, "             \
               "%112, %113, %114, %115, %116, %117, %118, %119, "             \
               "%120, %121, %122, %123, %124, %125, %126, %127},\n"           \
               " {%128, %129, %130, %131}, %132, p, 1, 1, 1; }\n"             \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),              \
                 "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),              \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),            \
                 "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),          \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),          \
                 "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),          \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),          \
                 "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),          \
                 "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),          \
                 "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),          \
                 "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),          \
                 "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),          \
                 "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),          \
                 "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),          \
                 "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),          \
                 "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),          \
                 "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]),          \
                 "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),          \
                 "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]),          \
                 "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),          \
                 "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),          \
                 "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),          \
                 "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]),          \
                 "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),          \
                 "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]),          \
                 "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),      \
                 "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]),      \
                 "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),      \
                 "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]),      \
                 "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),      \
                 "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]),      \
                 "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])       \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc))

/* S = Q K^T (N = BLOCK_N: 64 or 128) and O += P V (N = HEAD_DIM: 64, 128
** or 256). */
template <int N, bool IS_BF16>
__device__ __forceinline__ void hattn_wgmma_ss(float (&d)[N / 2], unsigned long long da,
                                               unsigned long long db, int acc) {
  static_assert(N == 64 || N == 128, "wgmma widths 64 and 128");
  if constexpr (N == 64 && IS_BF16) HATTN_WGMMA_SS_N64("bf16");
  else if constexpr (N == 64) HATTN_WGMMA_SS_N64("f16");
  else if constexpr (IS_BF16) HATTN_WGMMA_SS_N128("bf16");
  else HATTN_WGMMA_SS_N128("f16");
}

template <int N, bool IS_BF16>
__device__ __forceinline__ void hattn_wgmma_rs(float (&d)[N / 2], const unsigned (&a)[4],
                                               unsigned long long db) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma widths 64, 128 and 256");
  const int acc = 1;
  if constexpr (N == 64 && IS_BF16) HATTN_WGMMA_RS_N64("bf16");
  else if constexpr (N == 64) HATTN_WGMMA_RS_N64("f16");
  else if constexpr (N == 128 && IS_BF16) HATTN_WGMMA_RS_N128("bf16");
  else if constexpr (N == 128) HATTN_WGMMA_RS_N128("f16");
  else if constexpr (IS_BF16) HATTN_WGMMA_RS_N256("bf16");
  else HATTN_WGMMA_RS_N256("f16");
}

/* ---- the kernel body ----------------------------------------------------- */

template <int BLOCK_M, int BLOCK_N, int HEAD_DIM, int STAGES, bool IS_BF16>
__device__ __forceinline__ void hattn_attn_fwd_sm90(const hattn_cuda_args &args) {
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
  if constexpr (HATTN_BAND) {
    const long long width = min(HATTN_BAND_HI, (long long)args.lk) - max(HATTN_BAND_LO, -(long long)args.lk) + 1;
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
  const int lq = args.lq, lk = args.lk;
  const int q0 = qb * BLOCK_M;
  const int qoff = lk - lq;
  const float slope = hattn_slope(args, h);

  const char *qg = (const char *)args.q + (b * args.q_stride[0] + h * args.q_stride[1]) * 2;
  const char *kg = (const char *)args.k + (b * args.k_stride[0] + kvh * args.k_stride[1]) * 2;
  const char *vg = (const char *)args.v + (b * args.v_stride[0] + kvh * args.v_stride[1]) * 2;

  /* This query block's key blocks (hattn_key_blocks), walked from the last
  ** position to the first: keys go down from the diagonal, and the plan's
  ** PARTIAL blocks come before its FULL ones, as FlashAttention 2 and 3
  ** walk them; causal gained 1-2% on an H200. */
  const hattn_key_blocks<HATTN_BAND, HATTN_BAND_LO, HATTN_BAND_HI, BLOCK_M, BLOCK_N> kblocks(args, qb, bh);
  const int nblocks = kblocks.n;
  auto block_at = [&](int j) { return kblocks.at(nblocks - 1 - j); };
  auto partial_at = [&](int j) { return kblocks.partial(nblocks - 1 - j); };
  /* Q and K_0: the first group. */
  hattn_load_rows<BLOCK_M, HEAD_DIM, THREADS, true>(sQ, qg, args.q_stride[2], q0, lq, tid);
  if (nblocks > 0)
    hattn_load_rows<BLOCK_N, HEAD_DIM, THREADS, true>(sK, kg, args.k_stride[2], block_at(0) * BLOCK_N, lk, tid);
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
      hattn_load_rows<BLOCK_N, HEAD_DIM, THREADS, true>(sK + prev * KV_BYTES, kg, args.k_stride[2],
                                                        block_at(j + STAGES - 1) * BLOCK_N, lk,
                                                        tid);
    if (j + STAGES - 2 < nblocks)
      hattn_load_rows<BLOCK_N, HEAD_DIM, THREADS, true>(sV + ((j + STAGES - 2) % STAGES) * KV_BYTES,
                                                        vg, args.v_stride[2],
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
    if constexpr (HATTN_HAS_SCORE_MOD) {
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int qpos = q0 + r0 + 8 * (c / 2) + qoff;
          const int kpos = k0 + nt * 8 + 2 * t + c % 2;
          s[4 * nt + c] = hattn_score(s[4 * nt + c] * args.scale, qpos, kpos, slope) * LOG2E;
        }
    }
    if (partial) {
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int q = q0 + r0 + 8 * (c / 2);
          const int kpos = k0 + nt * 8 + 2 * t + c % 2;
          /* hattn_visible only inside the matrix (it may index by kpos). */
          if (!(kpos < lk && q < lq && hattn_visible(q, q + qoff, kpos, args, bh)))
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
    const float sl2 = HATTN_HAS_SCORE_MOD ? 1.0f : args.scale_log2;
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
    const float inv = l > 0.0f ? fix / l : 0.0f;
    const int row = r0 + 8 * r;
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
      const unsigned v = hattn_pack2<IS_BF16>(acc_o[4 * dt + 2 * r] * inv, acc_o[4 * dt + 2 * r + 1] * inv);
      hattn_st_shared32(sQ + (dt / 8) * BLOCK_M * 128 + row * 128 + (((unsigned)((dt % 8) ^ (row & 7))) << 4) + 4 * t, v);
    }
    const int q = q0 + row;
    if (args.lse != 0 && t == 0 && q < lq) {
      const float lse = l > 0.0f ? (mn + log2f(l)) * LN2 : hattn_neg_inf();
      args.lse[b * args.lse_stride[0] + h * args.lse_stride[1] + q * args.lse_stride[2]] = lse;
    }
  }
  __syncwarp();
  /* 16-byte chunks back, whole rows of the warp's 16 per instruction. */
  char *og = (char *)args.o + (b * args.o_stride[0] + h * args.o_stride[1]) * 2;
  constexpr int CHUNKS = HEAD_DIM / 8;
  const int wrow0 = wg * 64 + (warp % 4) * 16;
#pragma unroll
  for (int i = 0; i < 16 * CHUNKS / 32; i++) {
    const int idx = i * 32 + lane;
    const int row = wrow0 + idx / CHUNKS, c = idx % CHUNKS;
    const uint4 v = hattn_ld_shared128(sQ + (c / 8) * BLOCK_M * 128 + row * 128 + (((unsigned)((c % 8) ^ (row & 7))) << 4));
    const int q = q0 + row;
    if (q < lq) *(uint4 *)(og + ((long long)q * args.o_stride[2] + c * 8) * 2) = v;
  }
}
