/*
** arch_sm80.cuh: the architecture layer of sm_80 and later: inline-PTX
** wrappers of the instructions that the kernel bodies use (cp.async,
** ldmatrix, mma.sync m16n8k16, conversions, shared-memory loads and stores,
** ex2).  Pasted by gen/emit_cuda.c into every generated source, first after
** gen/cuda_abi.h; templates/arch_sm90.cuh builds on it.  Nothing here knows
** attention: these are the instructions, one function each.
*/

/* ---- shared memory and cp.async ------------------------------------------ */

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

/* ---- ldmatrix and mma.sync ----------------------------------------------- */

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

/* ---- conversions, shared loads and stores, math ------------------------- */

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
