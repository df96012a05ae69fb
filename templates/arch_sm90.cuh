/*
** arch_sm90.cuh: the architecture layer of sm_90a (Hopper), on top of
** templates/arch_sm80.cuh: inline-PTX wrappers of warpgroup MMA (wgmma: its
** shared-memory descriptors, fences, commit and wait, the instructions of
** the shapes the kernels use), of the proxy fence between cp.async and
** wgmma, and of what the warp-specialised kernel adds: mbarriers, TMA
** tensor loads, named barriers and setmaxnreg.  Pasted by gen/emit_cuda.c
** into the sources of the warpgroup kernels only, which compile for sm_90a
** alone.
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

/* ---- mbarriers, TMA, named barriers, register reallocation --------------- */

/* Initialise the mbarrier at shared address BAR to expect COUNT arrivals a
** phase; then make the initialisation visible to the async proxy (TMA). */
__device__ __forceinline__ void hattn_mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void hattn_mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

/* Arrive on BAR. */
__device__ __forceinline__ void hattn_mbar_arrive(unsigned bar) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.shared::cta.b64 st, [%0]; }\n" :: "r"(bar) : "memory");
}

/* Arrive on BAR and add BYTES to the transaction count that its phase
** waits for (the bytes that TMA loads will complete on it). */
__device__ __forceinline__ void hattn_mbar_arrive_tx(unsigned bar, unsigned bytes) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1; }\n"
               :: "r"(bar), "r"(bytes) : "memory");
}

/* Arrive on BAR once this thread's cp.async copies so far have landed
** (the arrival is counted in BAR's COUNT: .noinc). */
__device__ __forceinline__ void hattn_mbar_arrive_cp_async(unsigned bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" :: "r"(bar) : "memory");
}

/* Wait until the phase of BAR with parity PARITY has completed. */
__device__ __forceinline__ void hattn_mbar_wait(unsigned bar, unsigned parity) {
  /* (A label inside braces is local to them in PTX.) */
  asm volatile("{ .reg .pred done;\n"
               "WAIT:\n"
               "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
               "@!done bra WAIT;\n"
               "}\n" :: "r"(bar), "r"(parity) : "memory");
}

/* TMA: load the box at coordinates (C0, C1, C2, C3) (innermost first) of
** the 4-d tensor that the tensor map at generic address MAP describes into
** shared memory at DST, completing its bytes on the mbarrier BAR.  Parts
** of the box outside the tensor are filled with zeros. */
__device__ __forceinline__ void hattn_tma_load_4d(unsigned dst, const void *map, unsigned bar, int c0, int c1,
                                                  int c2, int c3) {
  asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
               " [%0], [%1, {%3, %4, %5, %6}], [%2];\n"
               :: "r"(dst), "l"((unsigned long long)map), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
               : "memory");
}

__device__ __forceinline__ void hattn_tma_prefetch_map(const void *map) {
  asm volatile("prefetch.tensormap [%0];\n" :: "l"((unsigned long long)map) : "memory");
}

/* Named barrier ID (1 .. 15) among THREADS threads: wait for all, or
** arrive without waiting. */
__device__ __forceinline__ void hattn_bar_sync(unsigned id, unsigned threads) {
  asm volatile("bar.sync %0, %1;\n" :: "r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void hattn_bar_arrive(unsigned id, unsigned threads) {
  asm volatile("bar.arrive %0, %1;\n" :: "r"(id), "r"(threads) : "memory");
}

/* The warpgroup's registers a thread: give back down to N, or take up to N
** (every thread of the warpgroup, with the same N). */
template <int N>
__device__ __forceinline__ void hattn_setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(N));
}

template <int N>
__device__ __forceinline__ void hattn_setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(N));
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
