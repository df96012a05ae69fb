/*
** emit_llvm.c: the CPU kernel emitter.  See emit_llvm.h and cpu_abi.h.
**
** One kernel computes one (flattened head, query block) work item with a
** flash-attention loop over the FULL, then the PARTIAL key blocks of its plan
** row.  Per key block the K tile is converted to fp32 and transposed into
** Kt[head_dim][bn], the V tile into Vf[bn][dp] (dp: head_dim rounded up to a
** vector); then, for each group of `rows` query rows, S = Q Kt runs as an
** explicit register-blocked product of <vec x float> accumulators, the score
** modifiers and (PARTIAL blocks only) the element predicate are applied, and
** an online softmax in base 2 updates the row maxima, row sums and the
** accumulator acc += P Vf.
**
** Scratch (floats, every region 64-byte aligned), see hattn__cpu_scratch_plan():
**   Q   [bm][dp]   the block's query rows, times the scale (and log2(e) when
**                  no modifier needs the natural-scale score), zero padded
**   acc [bm][dp]   the output accumulator
**   m   [bm]       running row maxima, in the base-2 domain
**   l   [bm][vec]  running row sums, kept as vectors, reduced at the end
**   Kt  [head_dim][bn], Vf [bn][dp]  the converted key and value tiles
**   S   [rows][bn] scores, then probabilities, of one row group
**
** The module's second function, NAME_decode (cpu_abi.h), serves 1 to 16
** query rows: one work item packs the query heads of a KV head and their
** rows (row r: head h0 + r / lq, query r % lq) and walks a split of query
** block 0's key blocks.  Per key block and group of `rows` packed rows it
** computes each score as a dot product of a query row with a K row read as
** it lies (vectors over head_dim, one horizontal sum a score: no
** transpose, and every K row read once for all packed rows), applies the
** modifiers and (PARTIAL blocks) the predicate per row, runs the online
** softmax and accumulates P V with V rows read as they lie, prefetching
** the rows of the next key block.  Its state (acc, the scaled query rows,
** m and l) lives in the split's part of the problem's scratch, which the
** runtime merges; its scores use the forward kernel's S region.
*/
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "emit_llvm.h"
#include "lower.h"

#ifdef HATTN_HAVE_LLVM

#define LOG2E 1.4426950408889634
#define LN2 0.6931471805599453
#define MAXVEC 16
#define MAXACC 32

/* The state of one emission. */
typedef struct em {
  LLVMContextRef c;
  LLVMModuleRef mod;
  LLVMBuilderRef b;             /* the code */
  LLVMBuilderRef eb;            /* allocas, at the end of the entry block */
  LLVMValueRef fn;
  const hattn__pattern *pat;
  hattn__dtype dtype;
  int d, dp, vec, rows, bm, bn;
  int has_mod;                  /* softcap or alibi: scores leave the base-2 domain */
  hattn__scratch_map sm;
  LLVMTypeRef tvoid, ti1, ti8, ti16, ti32, ti64, tf32, tf16, tptr, telem;
  LLVMTypeRef tvf, tvi, tvb, tvl;   /* <vec x float / i32 / i1 / i64> */
  LLVMValueRef args, bh, qb;
  LLVMValueRef lq, lk, lk32, qoff, koff32, bb, h;
  LLVMValueRef q0, nrow;
  LLVMValueRef kbase, vbase, ks2, vs2;
  LLVMValueRef bt, btrow;       /* paged: the block table (NULL: contiguous K, V) and b's row */
  LLVMValueRef pshift, pmask, kps, vps;  /* paged: log2 P, P - 1, the page strides */
  LLVMValueRef sq, sacc, sm_, sl, skt, svf, ss;  /* scratch regions */
  LLVMValueRef ssink;                             /* the head's sink logit (an alloca) */
  LLVMValueRef slope;           /* float, or NULL without alibi */
  LLVMValueRef accs[MAXACC];    /* allocas of register accumulators */
  int nnodes;                   /* operations of the lowered mask */
  LLVMValueRef *regs;           /* [nnodes]: their registers while pred_vec runs */
} em;

/* Per-row values of one mask operation (see pred_row). */
typedef struct rowval {
  LLVMValueRef a, b, c, d;
} rowval;

/* ---- small builders ---------------------------------------------------- */

static LLVMValueRef i64c(em *e, int64_t v) { return LLVMConstInt(e->ti64, (unsigned long long)v, 1); }
static LLVMValueRef i32c(em *e, int64_t v) { return LLVMConstInt(e->ti32, (unsigned long long)v, 1); }
static LLVMValueRef f32c(em *e, double v) { return LLVMConstReal(e->tf32, v); }

static LLVMValueRef splat_const(em *e, LLVMValueRef c) {
  LLVMValueRef v[MAXVEC];
  int i;
  for (i = 0; i < e->vec; i++) v[i] = c;
  return LLVMConstVector(v, (unsigned)e->vec);
}

/* X (a scalar) in every lane. */
static LLVMValueRef splat(em *e, LLVMValueRef x, const char *name) {
  LLVMTypeRef vt;
  LLVMValueRef ins;
  if (LLVMIsConstant(x)) return splat_const(e, x);
  vt = LLVMVectorType(LLVMTypeOf(x), (unsigned)e->vec);
  ins = LLVMBuildInsertElement(e->b, LLVMGetPoison(vt), x, i32c(e, 0), "");
  return LLVMBuildShuffleVector(e->b, ins, LLVMGetPoison(vt),
                                LLVMConstNull(LLVMVectorType(e->ti32, (unsigned)e->vec)), name);
}

/* A float constant of type T (scalar or vector of float). */
static LLVMValueRef fk(em *e, LLVMTypeRef t, double v) {
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? splat_const(e, f32c(e, v)) : f32c(e, v);
}

static LLVMValueRef intr(em *e, const char *name, LLVMTypeRef *tys, unsigned ntys,
                         LLVMValueRef *args, unsigned nargs, const char *vname) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(e->mod, id, tys, ntys);
  LLVMTypeRef ft = LLVMIntrinsicGetType(e->c, id, tys, ntys);
  return LLVMBuildCall2(e->b, ft, f, args, nargs, vname);
}

static LLVMValueRef intr1(em *e, const char *name, LLVMValueRef x, const char *vname) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return intr(e, name, &t, 1, &x, 1, vname);
}

static LLVMValueRef intr2(em *e, const char *name, LLVMValueRef x, LLVMValueRef y,
                          const char *vname) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef a[2];
  a[0] = x;
  a[1] = y;
  return intr(e, name, &t, 1, a, 2, vname);
}

static LLVMValueRef fma3(em *e, LLVMValueRef x, LLVMValueRef y, LLVMValueRef z, const char *vname) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef a[3];
  a[0] = x;
  a[1] = y;
  a[2] = z;
  return intr(e, "llvm.fma", &t, 1, a, 3, vname);
}

static LLVMValueRef ld(em *e, LLVMTypeRef t, LLVMValueRef p, unsigned align, const char *name) {
  LLVMValueRef v = LLVMBuildLoad2(e->b, t, p, name);
  LLVMSetAlignment(v, align);
  return v;
}

static void st(em *e, LLVMValueRef v, LLVMValueRef p, unsigned align) {
  LLVMValueRef s = LLVMBuildStore(e->b, v, p);
  LLVMSetAlignment(s, align);
}

static LLVMValueRef gep(em *e, LLVMTypeRef t, LLVMValueRef p, LLVMValueRef idx, const char *name) {
  return LLVMBuildInBoundsGEP2(e->b, t, p, &idx, 1, name);
}

/* Float I of scratch region BASE. */
static LLVMValueRef fptr(em *e, LLVMValueRef base, LLVMValueRef i, const char *name) {
  return gep(e, e->tf32, base, i, name);
}

/* The field of hattn_cpu_args at byte offset OFF. */
static LLVMValueRef field(em *e, size_t off, LLVMTypeRef t, const char *name) {
  LLVMValueRef p = gep(e, e->ti8, e->args, i64c(e, (int64_t)off), "");
  return ld(e, t, p, 8, name);
}

static LLVMValueRef add(em *e, LLVMValueRef x, LLVMValueRef y, const char *n) {
  return LLVMBuildAdd(e->b, x, y, n);
}
static LLVMValueRef mul(em *e, LLVMValueRef x, LLVMValueRef y, const char *n) {
  return LLVMBuildMul(e->b, x, y, n);
}
static LLVMValueRef smin(em *e, LLVMValueRef x, LLVMValueRef y, const char *n) {
  return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, x, y, ""), x, y, n);
}

/* A counted loop "for (iv = START; iv < END; iv++)", END signed. */
typedef struct loop {
  LLVMBasicBlockRef head, body, exit;
  LLVMValueRef iv;
} loop;

static LLVMValueRef loop_begin(em *e, loop *l, const char *name, LLVMValueRef start,
                               LLVMValueRef end) {
  char buf[96];
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(e->b);
  snprintf(buf, sizeof buf, "%s.head", name);
  l->head = LLVMAppendBasicBlockInContext(e->c, e->fn, buf);
  l->body = LLVMAppendBasicBlockInContext(e->c, e->fn, name);
  snprintf(buf, sizeof buf, "%s.end", name);
  l->exit = LLVMAppendBasicBlockInContext(e->c, e->fn, buf);
  LLVMBuildBr(e->b, l->head);
  LLVMPositionBuilderAtEnd(e->b, l->head);
  snprintf(buf, sizeof buf, "%s.i", name);
  l->iv = LLVMBuildPhi(e->b, LLVMTypeOf(start), buf);
  LLVMAddIncoming(l->iv, &start, &pre, 1);
  LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, l->iv, end, ""), l->body, l->exit);
  LLVMPositionBuilderAtEnd(e->b, l->body);
  return l->iv;
}

static void loop_end(em *e, loop *l) {
  LLVMValueRef next = LLVMBuildNSWAdd(e->b, l->iv, LLVMConstInt(LLVMTypeOf(l->iv), 1, 0), "");
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(e->b);
  LLVMBuildBr(e->b, l->head);
  LLVMAddIncoming(l->iv, &next, &cur, 1);
  LLVMPositionBuilderAtEnd(e->b, l->exit);
}

/* "if (COND) {": returns the join block for if_end. */
static LLVMBasicBlockRef if_begin(em *e, LLVMValueRef cond, const char *name) {
  char buf[96];
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(e->c, e->fn, name), join;
  snprintf(buf, sizeof buf, "%s.end", name);
  join = LLVMAppendBasicBlockInContext(e->c, e->fn, buf);
  LLVMBuildCondBr(e->b, cond, then, join);
  LLVMPositionBuilderAtEnd(e->b, then);
  return join;
}

static void if_end(em *e, LLVMBasicBlockRef join) {
  LLVMBuildBr(e->b, join);
  LLVMPositionBuilderAtEnd(e->b, join);
}

/* Horizontal reduction of a <vec x float> by max or add (a shuffle tree). */
static LLVMValueRef hreduce(em *e, LLVMValueRef v, int is_max, const char *name) {
  int w = e->vec;
  while (w > 1) {
    LLVMValueRef mask[MAXVEC], hi;
    int i;
    w /= 2;
    for (i = 0; i < e->vec; i++) mask[i] = i32c(e, i < w ? i + w : i);
    hi = LLVMBuildShuffleVector(e->b, v, LLVMGetPoison(e->tvf), LLVMConstVector(mask, (unsigned)e->vec), "");
    v = is_max ? intr2(e, "llvm.maxnum", v, hi, "") : LLVMBuildFAdd(e->b, v, hi, "");
  }
  return LLVMBuildExtractElement(e->b, v, i32c(e, 0), name);
}

/* ---- math -------------------------------------------------------------- */

/* 2^x for float or <vec x float> X with x <= 128: range reduction to
** f in [-0.5, 0.5] and a degree-6 polynomial (relative error ~1e-7); 0 for
** x < -126 and for x = -inf; NaN for NaN.
**
** NaN must come out NaN: it is how a NaN in Q or K reaches the rows that
** see it (the score is NaN, so is its probability, the row sum and the
** output), rather than counting as a masked key.  So x is clamped with
** "x < -127 ? -127 : x", which keeps NaN and is one maxps on x86 (maxnum
** would turn NaN into -127, that is into a probability of 0), and n is taken
** from the bits of x + 1.5 * 2^23, which rounds x to an integer in the low
** bits of the sum, rather than by rint and fptosi, whose result for NaN is
** poison.  Same instruction count as before; nothing is added per element
** to find NaN. */
static LLVMValueRef emit_exp2(em *e, LLVMValueRef x, const char *name) {
  static const double c[7] = {0.9999999999595819, 0.6931472067106389, 0.24022651213367227,
                              0.05550327214170959, 0.009618025626352042, 0.0013400432178621358,
                              0.00015469725882229582};
  const double magic = 12582912.0; /* 1.5 * 2^23: x + magic is in [2^23, 2^24), where the ulp is 1 */
  LLVMTypeRef t = LLVMTypeOf(x);
  int isvec = LLVMGetTypeKind(t) == LLVMVectorTypeKind;
  LLVMTypeRef ti = isvec ? e->tvi : e->ti32;
  LLVMValueRef xc, big, n, f, p, ni, sc, r;
  int i;
  xc = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOLT, x, fk(e, t, -127.0), ""), fk(e, t, -127.0), x,
                       "exp2.x");
  big = LLVMBuildFAdd(e->b, xc, fk(e, t, magic), "exp2.big");
  n = LLVMBuildFSub(e->b, big, fk(e, t, magic), "exp2.n");
  f = LLVMBuildFSub(e->b, xc, n, "exp2.f");
  p = fk(e, t, c[6]);
  for (i = 5; i >= 0; i--) p = fma3(e, p, f, fk(e, t, c[i]), "");
  /* The biased exponent n + 127: the bits of big minus those of magic - 127
  ** (0x4b400000 - 127). */
  ni = LLVMBuildBitCast(e->b, big, ti, "");
  ni = LLVMBuildSub(e->b, ni, isvec ? splat_const(e, i32c(e, 0x4b400000 - 127)) : i32c(e, 0x4b400000 - 127), "");
  ni = LLVMBuildShl(e->b, ni, isvec ? splat_const(e, i32c(e, 23)) : i32c(e, 23), "");
  sc = LLVMBuildBitCast(e->b, ni, t, "exp2.scale");
  r = LLVMBuildFMul(e->b, p, sc, "");
  return LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOLT, x, fk(e, t, -126.0), ""),
                         fk(e, t, 0.0), r, name);
}

/* tanh of a <vec x float>: an odd polynomial below 0.625, else
** 1 - 2 / (e^(2|x|) + 1) with the sign of x. */
static LLVMValueRef emit_tanh(em *e, LLVMValueRef x) {
  static const double c[7] = {0.9999999999396637, -0.3333333057897357, 0.13333204035399832,
                              -0.053946747034178975, 0.021701127005058322, -0.008179040412612372,
                              0.0021447395901186186};
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef ax, x2, p, small, ex, big, signbit;
  int i;
  ax = intr1(e, "llvm.fabs", x, "tanh.ax");
  x2 = LLVMBuildFMul(e->b, x, x, "");
  p = fk(e, t, c[6]);
  for (i = 5; i >= 0; i--) p = fma3(e, p, x2, fk(e, t, c[i]), "");
  small = LLVMBuildFMul(e->b, p, ax, "tanh.small");
  /* ax > 20 ? 20 : ax keeps NaN (minnum would make it 20, and tanh(NaN) 1). */
  ex = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOGT, ax, fk(e, t, 20.0), ""), fk(e, t, 20.0), ax, "");
  ex = emit_exp2(e, LLVMBuildFMul(e->b, ex, fk(e, t, 2.0 * LOG2E), ""), "tanh.e");
  big = LLVMBuildFSub(e->b, fk(e, t, 1.0),
                      LLVMBuildFDiv(e->b, fk(e, t, 2.0), LLVMBuildFAdd(e->b, ex, fk(e, t, 1.0), ""), ""),
                      "tanh.big");
  p = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOLT, ax, fk(e, t, 0.625), ""), small, big, "");
  /* copy the sign of x */
  signbit = LLVMBuildAnd(e->b, LLVMBuildBitCast(e->b, x, e->tvi, ""),
                         splat_const(e, i32c(e, (int64_t)INT32_MIN)), "");
  p = LLVMBuildOr(e->b, LLVMBuildBitCast(e->b, p, e->tvi, ""), signbit, "");
  return LLVMBuildBitCast(e->b, p, t, "tanh");
}

/* log2 of a positive, normal float. */
static LLVMValueRef emit_log2(em *e, LLVMValueRef x) {
  LLVMValueRef bits, ex, m, big, t, t2, p;
  static const double c[6] = {1.0, 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11};
  int i;
  bits = LLVMBuildBitCast(e->b, x, e->ti32, "");
  ex = LLVMBuildSub(e->b, LLVMBuildLShr(e->b, bits, i32c(e, 23), ""), i32c(e, 127), "");
  m = LLVMBuildOr(e->b, LLVMBuildAnd(e->b, bits, i32c(e, 0x7fffff), ""), i32c(e, 0x3f800000), "");
  m = LLVMBuildBitCast(e->b, m, e->tf32, "log2.m");
  big = LLVMBuildFCmp(e->b, LLVMRealOGT, m, f32c(e, 1.4142135623730951), "");
  m = LLVMBuildSelect(e->b, big, LLVMBuildFMul(e->b, m, f32c(e, 0.5), ""), m, "");
  ex = LLVMBuildAdd(e->b, ex, LLVMBuildZExt(e->b, big, e->ti32, ""), "");
  t = LLVMBuildFDiv(e->b, LLVMBuildFSub(e->b, m, f32c(e, 1.0), ""),
                    LLVMBuildFAdd(e->b, m, f32c(e, 1.0), ""), "log2.t");
  t2 = LLVMBuildFMul(e->b, t, t, "");
  p = f32c(e, c[5]);
  for (i = 4; i >= 0; i--) p = fma3(e, p, t2, f32c(e, c[i]), "");
  p = LLVMBuildFMul(e->b, LLVMBuildFMul(e->b, p, t, ""), f32c(e, 2.0 * LOG2E), "");
  return LLVMBuildFAdd(e->b, LLVMBuildSIToFP(e->b, ex, e->tf32, ""), p, "log2");
}

/* ---- tensor elements --------------------------------------------------- */

/* Element IDX of tensor BASE as a float. */
static LLVMValueRef load_elem(em *e, LLVMValueRef base, LLVMValueRef idx, const char *name) {
  LLVMValueRef x;
  switch (e->dtype) {
  case HATTN_DTYPE_FP16:
    x = ld(e, e->ti16, gep(e, e->ti16, base, idx, ""), 2, "");
    return LLVMBuildFPExt(e->b, LLVMBuildBitCast(e->b, x, e->tf16, ""), e->tf32, name);
  case HATTN_DTYPE_BF16:
    x = ld(e, e->ti16, gep(e, e->ti16, base, idx, ""), 2, "");
    x = LLVMBuildShl(e->b, LLVMBuildZExt(e->b, x, e->ti32, ""), i32c(e, 16), "");
    return LLVMBuildBitCast(e->b, x, e->tf32, name);
  default:
    return ld(e, e->tf32, gep(e, e->tf32, base, idx, ""), 4, name);
  }
}

/* Store float F as element IDX of tensor BASE (bf16: round to nearest even). */
static void store_elem(em *e, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef f) {
  LLVMValueRef x, r, nan;
  switch (e->dtype) {
  case HATTN_DTYPE_FP16:
    x = LLVMBuildBitCast(e->b, LLVMBuildFPTrunc(e->b, f, e->tf16, ""), e->ti16, "");
    st(e, x, gep(e, e->ti16, base, idx, ""), 2);
    return;
  case HATTN_DTYPE_BF16:
    x = LLVMBuildBitCast(e->b, f, e->ti32, "");
    r = LLVMBuildAnd(e->b, LLVMBuildLShr(e->b, x, i32c(e, 16), ""), i32c(e, 1), "");
    r = LLVMBuildAdd(e->b, LLVMBuildAdd(e->b, x, i32c(e, 0x7fff), ""), r, "");
    nan = LLVMBuildFCmp(e->b, LLVMRealUNO, f, f, "");
    r = LLVMBuildSelect(e->b, nan, LLVMBuildOr(e->b, x, i32c(e, 0x400000), ""), r, "");
    r = LLVMBuildTrunc(e->b, LLVMBuildLShr(e->b, r, i32c(e, 16), ""), e->ti16, "bf16");
    st(e, r, gep(e, e->ti16, base, idx, ""), 2);
    return;
  default:
    st(e, f, gep(e, e->tf32, base, idx, ""), 4);
    return;
  }
}

/* ---- the element predicate -------------------------------------------- */

/* Floor division of the i32 X by the positive constant A. */
static LLVMValueRef floordiv32(em *e, LLVMValueRef x, int64_t a, const char *name) {
  LLVMValueRef q = LLVMBuildSDiv(e->b, x, i32c(e, a), "");
  LLVMValueRef r = LLVMBuildSRem(e->b, x, i32c(e, a), "");
  LLVMValueRef adj = LLVMBuildAnd(e->b, LLVMBuildICmp(e->b, LLVMIntNE, r, i32c(e, 0), ""),
                                  LLVMBuildICmp(e->b, LLVMIntSLT, x, i32c(e, 0), ""), "");
  return LLVMBuildSub(e->b, q, LLVMBuildZExt(e->b, adj, e->ti32, ""), name);
}

/* Whether qpos (i32) is a key position, and qpos clamped to 0 when not. */
static LLVMValueRef qpos_valid(em *e, LLVMValueRef qpos, LLVMValueRef *clamped) {
  LLVMValueRef ok = LLVMBuildAnd(e->b, LLVMBuildICmp(e->b, LLVMIntSGE, qpos, i32c(e, 0), ""),
                                 LLVMBuildICmp(e->b, LLVMIntSLT, qpos, e->lk32, ""), "qpos.ok");
  *clamped = LLVMBuildSelect(e->b, ok, qpos, i32c(e, 0), "qpos.c");
  return ok;
}

/* The per-row part of the predicate of the lowered mask M for query
** position QPOS (i32) and query row QROW (i64): scalars loaded or computed
** once per row, RV[i] for operation i. */
static void pred_row(em *e, const hattn__mask *m, LLVMValueRef qpos, LLVMValueRef qrow, rowval *rv) {
  LLVMValueRef ok, qc, p, t;
  int i;
  for (i = 0; i < m->nops; i++) {
    const hattn__op *op = &m->ops[i];
    rowval *me = &rv[i];
    switch (op->kind) {
    case HATTN_OP_QPOS_LT:
      me->a = splat(e, LLVMBuildICmp(e->b, LLVMIntSLT, qpos, i32c(e, op->a), ""), "qpos.lt");
      break;
    case HATTN_OP_CHUNK:
      me->a = splat(e, floordiv32(e, qpos, op->a, "chunk.q"), "");
      break;
    case HATTN_OP_DOC:
      ok = qpos_valid(e, qpos, &qc);
      p = field(e, offsetof(hattn_cpu_args, doc_id), e->tptr, "doc_id");
      t = ld(e, e->ti32, gep(e, e->ti32, p, LLVMBuildSExt(e->b, qc, e->ti64, ""), ""), 4, "doc.q");
      me->a = splat(e, t, "");
      me->b = splat(e, ok, "");
      me->c = p;
      break;
    case HATTN_OP_LAYOUT: {
      LLVMValueRef lay, lbm, lbn, nqb, nkb, bits, bq, rok;
      lay = field(e, offsetof(hattn_cpu_args, layouts), e->tptr, "layouts");
      lay = gep(e, e->ti8, lay, i64c(e, op->a * (int64_t)sizeof(hattn_cpu_layout)), "layout");
      lbm = ld(e, e->ti64, gep(e, e->ti8, lay, i64c(e, offsetof(hattn_cpu_layout, bm)), ""), 8, "layout.bm");
      lbn = ld(e, e->ti64, gep(e, e->ti8, lay, i64c(e, offsetof(hattn_cpu_layout, bn)), ""), 8, "layout.bn");
      nqb = ld(e, e->ti64, gep(e, e->ti8, lay, i64c(e, offsetof(hattn_cpu_layout, nqb)), ""), 8, "layout.nqb");
      nkb = ld(e, e->ti64, gep(e, e->ti8, lay, i64c(e, offsetof(hattn_cpu_layout, nkb)), ""), 8, "layout.nkb");
      bits = ld(e, e->tptr, gep(e, e->ti8, lay, i64c(e, offsetof(hattn_cpu_layout, bits)), ""), 8, "layout.bits");
      bq = LLVMBuildUDiv(e->b, qrow, lbm, "layout.bq");
      rok = LLVMBuildICmp(e->b, LLVMIntULT, bq, nqb, "");
      bq = LLVMBuildSelect(e->b, rok, bq, i64c(e, 0), "");
      me->a = gep(e, e->ti8, bits, mul(e, bq, nkb, ""), "layout.row");
      me->b = splat(e, rok, "");
      /* Key rows are below 2^30, so clamping to 2^30 changes no quotient. */
      me->c = splat(e, LLVMBuildTrunc(e->b, smin(e, lbn, i64c(e, 1 << 30), ""), e->ti32, ""), "");
      me->d = splat(e, LLVMBuildTrunc(e->b, smin(e, nkb, i64c(e, 1 << 30), ""), e->ti32, ""), "");
      break;
    }
    case HATTN_OP_RANDOM: {
      LLVMValueRef tab, wpr;
      ok = qpos_valid(e, qpos, &qc);
      tab = field(e, offsetof(hattn_cpu_args, random_bits), e->tptr, "random_bits");
      tab = ld(e, e->tptr, gep(e, e->tptr, tab, i64c(e, op->a), ""), 8, "random.bits");
      wpr = field(e, offsetof(hattn_cpu_args, random_words_per_row), e->ti64, "random.wpr");
      t = LLVMBuildZExt(e->b, LLVMBuildLShr(e->b, qc, i32c(e, 6), ""), e->ti64, "");
      me->a = gep(e, e->ti64, tab, mul(e, t, wpr, ""), "random.row");
      me->b = splat(e, ok, "");
      break;
    }
    case HATTN_OP_TOPK: {
      LLVMValueRef tab, nqb64;
      ok = qpos_valid(e, qpos, &qc);
      tab = field(e, offsetof(hattn_cpu_args, topk_blocks), e->tptr, "topk_blocks");
      nqb64 = LLVMBuildAShr(e->b, add(e, e->lk, i64c(e, 63), ""), i64c(e, 6), "nqb64");
      t = LLVMBuildZExt(e->b, LLVMBuildLShr(e->b, qc, i32c(e, 6), ""), e->ti64, "");
      /* Rows of K entries up to HATTN_TOPK_UNROLL (a constant), else of the
      ** staged width topk_k (gen/lower.h). */
      me->c = op->a <= HATTN_TOPK_UNROLL ? i64c(e, op->a)
                                         : field(e, offsetof(hattn_cpu_args, topk_k), e->ti64, "topk_k");
      t = mul(e, add(e, mul(e, e->bh, nqb64, ""), t, ""), me->c, "");
      me->a = gep(e, e->ti32, tab, t, "topk.row");
      me->b = splat(e, ok, "");
      break;
    }
    default:
      break;
    }
  }
}

/* Operation OP as <vec x i1> for query position QV (splat i32), key
** positions KV (<vec x i32>) and key rows KR (<vec x i32>, KPOS0 the first
** as i64: document() runs with key positions equal to rows); KIN: kr < lk;
** ME its per-row values, REG the registers of earlier operations. */
static LLVMValueRef pred_op(em *e, const hattn__op *op, LLVMValueRef qv, LLVMValueRef kv, LLVMValueRef kr,
                            LLVMValueRef kpos0, LLVMValueRef kin, const rowval *me,
                            const LLVMValueRef *reg) {
  LLVMValueRef d, r = NULL, t, ok, a[4];
  LLVMTypeRef tys[2];
  int i;
#define VI(v) splat_const(e, i32c(e, (v)))
  switch (op->kind) {
  case HATTN_OP_DIST:
    d = LLVMBuildSub(e->b, qv, kv, "d");
    if (op->lo > -HATTN_MASK_INF) r = LLVMBuildICmp(e->b, LLVMIntSGE, d, VI(op->lo), "d.lo");
    if (op->hi < HATTN_MASK_INF) {
      t = LLVMBuildICmp(e->b, LLVMIntSLE, d, VI(op->hi), "d.hi");
      r = r ? LLVMBuildAnd(e->b, r, t, "") : t;
    }
    if (op->m > 1) {
      t = LLVMBuildICmp(e->b, LLVMIntEQ, LLVMBuildSRem(e->b, d, VI(op->m), ""), VI(0), "d.mod");
      r = r ? LLVMBuildAnd(e->b, r, t, "") : t;
    }
    return r ? r : LLVMConstAllOnes(e->tvb);
  case HATTN_OP_KPOS_LT:
    return LLVMBuildICmp(e->b, LLVMIntSLT, kv, VI(op->a), "kpos.lt");
  case HATTN_OP_QPOS_LT:
    return me->a;
  case HATTN_OP_CHUNK:
    return LLVMBuildICmp(e->b, LLVMIntEQ, LLVMBuildSDiv(e->b, kv, VI(op->a), ""), me->a, "chunk");
  case HATTN_OP_DOC:
    a[0] = gep(e, e->ti32, me->c, kpos0, "");
    a[1] = i32c(e, 4);
    a[2] = kin;
    a[3] = VI(-1);
    tys[0] = e->tvi;
    tys[1] = e->tptr;
    t = intr(e, "llvm.masked.load", tys, 2, a, 4, "doc.k");
    return LLVMBuildAnd(e->b, LLVMBuildICmp(e->b, LLVMIntEQ, t, me->a, ""), me->b, "document");
  case HATTN_OP_LAYOUT:
    t = LLVMBuildUDiv(e->b, kr, me->c, "layout.bk");
    ok = LLVMBuildAnd(e->b, LLVMBuildICmp(e->b, LLVMIntULT, t, me->d, ""), me->b, "");
    ok = LLVMBuildAnd(e->b, ok, kin, "");
    a[0] = LLVMBuildInBoundsGEP2(e->b, e->ti8, me->a, &t, 1, "");
    a[1] = i32c(e, 1);
    a[2] = ok;
    a[3] = LLVMConstNull(LLVMVectorType(e->ti8, (unsigned)e->vec));
    tys[0] = LLVMVectorType(e->ti8, (unsigned)e->vec);
    tys[1] = LLVMTypeOf(a[0]);
    t = intr(e, "llvm.masked.gather", tys, 2, a, 4, "layout.bit");
    return LLVMBuildICmp(e->b, LLVMIntNE, t, a[3], "blocks");
  case HATTN_OP_RANDOM: {
    LLVMValueRef kb = LLVMBuildLShr(e->b, kv, VI(6), "kb64"), wi;
    wi = LLVMBuildLShr(e->b, kb, VI(6), "");
    ok = LLVMBuildAnd(e->b, kin, me->b, "");
    a[0] = LLVMBuildInBoundsGEP2(e->b, e->ti64, me->a, &wi, 1, "");
    a[1] = i32c(e, 8);
    a[2] = ok;
    a[3] = LLVMConstNull(e->tvl);
    tys[0] = e->tvl;
    tys[1] = LLVMTypeOf(a[0]);
    t = intr(e, "llvm.masked.gather", tys, 2, a, 4, "random.word");
    kb = LLVMBuildZExt(e->b, LLVMBuildAnd(e->b, kb, VI(63), ""), e->tvl, "");
    t = LLVMBuildAnd(e->b, LLVMBuildLShr(e->b, t, kb, ""), splat_const(e, i64c(e, 1)), "");
    return LLVMBuildICmp(e->b, LLVMIntNE, t, LLVMConstNull(e->tvl), "random");
  }
  case HATTN_OP_TOPK: {
    LLVMValueRef kb = LLVMBuildLShr(e->b, kv, VI(6), "kb64");
    if (op->a <= HATTN_TOPK_UNROLL) {
      r = LLVMConstNull(e->tvb);
      for (i = 0; i < op->a; i++) {
        t = ld(e, e->ti32, gep(e, e->ti32, me->a, i64c(e, i), ""), 4, "topk.blk");
        r = LLVMBuildOr(e->b, r, LLVMBuildICmp(e->b, LLVMIntEQ, kb, splat(e, t, ""), ""), "");
      }
    } else {
      LLVMValueRef acc = LLVMBuildAlloca(e->eb, e->tvb, "topk.acc");
      loop l;
      LLVMValueRef j;
      st(e, LLVMConstNull(e->tvb), acc, 1);
      j = loop_begin(e, &l, "topk.loop", i64c(e, 0), me->c);
      t = ld(e, e->ti32, gep(e, e->ti32, me->a, j, ""), 4, "topk.blk");
      r = LLVMBuildOr(e->b, ld(e, e->tvb, acc, 1, ""),
                      LLVMBuildICmp(e->b, LLVMIntEQ, kb, splat(e, t, ""), ""), "");
      st(e, r, acc, 1);
      loop_end(e, &l);
      r = ld(e, e->tvb, acc, 1, "");
    }
    return LLVMBuildAnd(e->b, r, me->b, "topk");
  }
  case HATTN_OP_NOT:
    return LLVMBuildNot(e->b, reg[op->args[0]], "not");
  case HATTN_OP_AND:
  case HATTN_OP_OR:
    r = reg[op->args[0]];
    for (i = 1; i < op->nargs; i++)
      r = op->kind == HATTN_OP_AND ? LLVMBuildAnd(e->b, r, reg[op->args[i]], "and")
                                   : LLVMBuildOr(e->b, r, reg[op->args[i]], "or");
    return r;
  default:
    return LLVMConstNull(e->tvb);
  }
#undef VI
}

/* The predicate of the lowered mask M as <vec x i1>: every operation in
** order into E->regs, the last one's register returned. */
static LLVMValueRef pred_vec(em *e, const hattn__mask *m, LLVMValueRef qv, LLVMValueRef kv,
                             LLVMValueRef kr, LLVMValueRef kpos0, LLVMValueRef kin, const rowval *rv) {
  int i;
  for (i = 0; i < m->nops; i++)
    e->regs[i] = pred_op(e, &m->ops[i], qv, kv, kr, kpos0, kin, &rv[i], e->regs);
  return e->regs[m->nops - 1];
}

/* ---- the kernel -------------------------------------------------------- */

/* Register accumulators per microkernel: half the vector registers. */
static int acc_budget(const em *e) { return e->vec == 16 ? 24 : 12; }

/* One key block KB (i64) of the FULL (PARTIAL = 0) or PARTIAL list. */
static void emit_block(em *e, LLVMValueRef kb, int partial, rowval *rv) {
  const char *pf = partial ? "partial" : "full";
  char nm[96];
  loop lj, ld_, lg;
  LLVMValueRef k0, nvalid, j, dd, row, x, g, r0, ngroups, ninf;
  LLVMBasicBlockRef join;
  LLVMValueRef alpha[16], qpos[16];
  int nvec = e->bn / e->vec, dpv = e->dp / e->vec, budget = acc_budget(e);
  int nc = budget / e->rows, r, c, c0;
  unsigned va = (unsigned)(e->vec * 4);
  if (nc < 1) nc = 1;
  ninf = f32c(e, -INFINITY);

  k0 = mul(e, kb, i64c(e, e->bn), "k0");
  nvalid = smin(e, LLVMBuildSub(e->b, e->lk, k0, ""), i64c(e, e->bn), "nvalid");

  /* The K and V tiles, converted; padding rows zero. */
  snprintf(nm, sizeof nm, "%s.load", pf);
  j = loop_begin(e, &lj, nm, i64c(e, 0), nvalid);
  {
    LLVMValueRef key = add(e, k0, j, "key"), krow, vrow, pk, pv, in[2], page, slot;
    LLVMBasicBlockRef from[2];
    /* Contiguous: the key's row; paged: its page's slot (cpu_abi.h). */
    krow = mul(e, key, e->ks2, "krow");
    vrow = mul(e, key, e->vs2, "vrow");
    from[0] = LLVMGetInsertBlock(e->b);
    snprintf(nm, sizeof nm, "%s.paged", pf);
    join = if_begin(e, LLVMBuildICmp(e->b, LLVMIntNE, e->bt, LLVMConstNull(e->tptr), ""), nm);
    page = ld(e, e->ti32, gep(e, e->ti32, e->btrow, LLVMBuildAShr(e->b, key, e->pshift, ""), ""), 4, "page");
    page = LLVMBuildSExt(e->b, page, e->ti64, "");
    slot = LLVMBuildAnd(e->b, key, e->pmask, "slot");
    pk = add(e, mul(e, page, e->kps, ""), mul(e, slot, e->ks2, ""), "krow.paged");
    pv = add(e, mul(e, page, e->vps, ""), mul(e, slot, e->vs2, ""), "vrow.paged");
    from[1] = LLVMGetInsertBlock(e->b);
    if_end(e, join);
    in[0] = krow, in[1] = pk;
    krow = LLVMBuildPhi(e->b, e->ti64, "krow.at");
    LLVMAddIncoming(krow, in, from, 2);
    in[0] = vrow, in[1] = pv;
    vrow = LLVMBuildPhi(e->b, e->ti64, "vrow.at");
    LLVMAddIncoming(vrow, in, from, 2);
    row = krow;
    snprintf(nm, sizeof nm, "%s.load.k", pf);
    dd = loop_begin(e, &ld_, nm, i64c(e, 0), i64c(e, e->d));
    x = load_elem(e, e->kbase, add(e, row, dd, ""), "k");
    st(e, x, fptr(e, e->skt, add(e, mul(e, dd, i64c(e, e->bn), ""), j, ""), ""), 4);
    loop_end(e, &ld_);
    row = vrow;
    snprintf(nm, sizeof nm, "%s.load.v", pf);
    dd = loop_begin(e, &ld_, nm, i64c(e, 0), i64c(e, e->d));
    x = load_elem(e, e->vbase, add(e, row, dd, ""), "v");
    st(e, x, fptr(e, e->svf, add(e, mul(e, j, i64c(e, e->dp), ""), dd, ""), ""), 4);
    loop_end(e, &ld_);
    if (e->dp > e->d) {
      snprintf(nm, sizeof nm, "%s.load.vpad", pf);
      dd = loop_begin(e, &ld_, nm, i64c(e, e->d), i64c(e, e->dp));
      st(e, f32c(e, 0), fptr(e, e->svf, add(e, mul(e, j, i64c(e, e->dp), ""), dd, ""), ""), 4);
      loop_end(e, &ld_);
    }
  }
  loop_end(e, &lj);
  snprintf(nm, sizeof nm, "%s.pad", pf);
  j = loop_begin(e, &lj, nm, nvalid, i64c(e, e->bn));
  snprintf(nm, sizeof nm, "%s.pad.k", pf);
  dd = loop_begin(e, &ld_, nm, i64c(e, 0), i64c(e, e->d));
  st(e, f32c(e, 0), fptr(e, e->skt, add(e, mul(e, dd, i64c(e, e->bn), ""), j, ""), ""), 4);
  loop_end(e, &ld_);
  snprintf(nm, sizeof nm, "%s.pad.v", pf);
  dd = loop_begin(e, &ld_, nm, i64c(e, 0), i64c(e, e->dp));
  st(e, f32c(e, 0), fptr(e, e->svf, add(e, mul(e, j, i64c(e, e->dp), ""), dd, ""), ""), 4);
  loop_end(e, &ld_);
  loop_end(e, &lj);

  /* Row groups. */
  ngroups = LLVMBuildSDiv(e->b, add(e, e->nrow, i64c(e, e->rows - 1), ""), i64c(e, e->rows), "ngroups");
  snprintf(nm, sizeof nm, "%s.group", pf);
  g = loop_begin(e, &lg, nm, i64c(e, 0), ngroups);
  r0 = mul(e, g, i64c(e, e->rows), "r0");
  for (r = 0; r < e->rows; r++) {
    LLVMValueRef qrow = add(e, add(e, e->q0, r0, ""), i64c(e, r), "qrow");
    snprintf(nm, sizeof nm, "qpos%d", r);
    qpos[r] = LLVMBuildTrunc(e->b, add(e, qrow, e->qoff, ""), e->ti32, nm);
    if (partial) {
      pred_row(e, e->pat->lowered, qpos[r], qrow, rv + r * e->nnodes);
    }
  }

  /* S = Q Kt, register-blocked: rows x nc vectors at a time. */
  for (c0 = 0; c0 < nvec; c0 += nc) {
    int ncc = nvec - c0 < nc ? nvec - c0 : nc;
    LLVMValueRef kvv[MAXACC];
    for (r = 0; r < e->rows; r++)
      for (c = 0; c < ncc; c++) st(e, LLVMConstNull(e->tvf), e->accs[r * ncc + c], va);
    snprintf(nm, sizeof nm, "%s.qk", pf);
    dd = loop_begin(e, &ld_, nm, i64c(e, 0), i64c(e, e->d));
    for (c = 0; c < ncc; c++) {
      x = add(e, mul(e, dd, i64c(e, e->bn), ""), i64c(e, (c0 + c) * e->vec), "");
      kvv[c] = ld(e, e->tvf, fptr(e, e->skt, x, ""), va, "kt");
    }
    for (r = 0; r < e->rows; r++) {
      LLVMValueRef qs;
      x = add(e, mul(e, add(e, r0, i64c(e, r), ""), i64c(e, e->dp), ""), dd, "");
      qs = splat(e, ld(e, e->tf32, fptr(e, e->sq, x, ""), 4, "q"), "qs");
      for (c = 0; c < ncc; c++) {
        LLVMValueRef p = e->accs[r * ncc + c];
        st(e, fma3(e, qs, kvv[c], ld(e, e->tvf, p, va, ""), "s"), p, va);
      }
    }
    loop_end(e, &ld_);
    for (c = 0; c < ncc; c++) {
      LLVMValueRef kpos0 = add(e, k0, i64c(e, (c0 + c) * e->vec), "krow0"), kv, kr, kin = NULL;
      LLVMValueRef lanes[MAXVEC];
      int i;
      for (i = 0; i < e->vec; i++) lanes[i] = i32c(e, i);
      kr = add(e, splat(e, LLVMBuildTrunc(e->b, kpos0, e->ti32, ""), ""),
               LLVMConstVector(lanes, (unsigned)e->vec), "krow");
      kv = add(e, kr, splat(e, e->koff32, ""), "kpos");
      if (partial) kin = LLVMBuildICmp(e->b, LLVMIntSLT, kr, splat(e, e->lk32, ""), "kin");
      for (r = 0; r < e->rows; r++) {
        LLVMValueRef s = ld(e, e->tvf, e->accs[r * ncc + c], va, "s");
        if (e->pat->softcap > 0) {
          double cap = e->pat->softcap;
          s = emit_tanh(e, LLVMBuildFMul(e->b, s, fk(e, e->tvf, 1.0 / cap), ""));
          s = LLVMBuildFMul(e->b, s, fk(e, e->tvf, cap), "s.capped");
        }
        if (e->slope != NULL) {
          LLVMValueRef dist = LLVMBuildSub(e->b, kv, splat(e, qpos[r], ""), "");
          dist = LLVMBuildSIToFP(e->b, dist, e->tvf, "");
          s = fma3(e, splat(e, e->slope, ""), dist, s, "s.alibi");
        }
        if (e->has_mod) s = LLVMBuildFMul(e->b, s, fk(e, e->tvf, LOG2E), "s2");
        if (partial) {
          LLVMValueRef vis = pred_vec(e, e->pat->lowered, splat(e, qpos[r], ""), kv, kr, kpos0, kin,
                                      rv + r * e->nnodes);
          s = LLVMBuildSelect(e->b, vis, s, splat_const(e, ninf), "s.masked");
        }
        x = add(e, i64c(e, r * e->bn), i64c(e, (c0 + c) * e->vec), "");
        st(e, s, fptr(e, e->ss, x, ""), va);
      }
    }
  }

  /* Keys past lk in the last block: -inf, whatever the pattern says. */
  snprintf(nm, sizeof nm, "%s.ragged", pf);
  join = if_begin(e, LLVMBuildICmp(e->b, LLVMIntSLT, nvalid, i64c(e, e->bn), ""), nm);
  snprintf(nm, sizeof nm, "%s.ragged.cols", pf);
  j = loop_begin(e, &lj, nm, nvalid, i64c(e, e->bn));
  for (r = 0; r < e->rows; r++)
    st(e, ninf, fptr(e, e->ss, add(e, i64c(e, r * e->bn), j, ""), ""), 4);
  loop_end(e, &lj);
  if_end(e, join);

  /* Online softmax, base 2. */
  for (r = 0; r < e->rows; r++) {
    LLVMValueRef sv[64], mx = NULL, mold, mnew, muse, ms, psum = NULL, lp, lv, mp, rr;
    rr = add(e, r0, i64c(e, r), "");
    for (c = 0; c < nvec; c++) {
      sv[c] = ld(e, e->tvf, fptr(e, e->ss, i64c(e, r * e->bn + c * e->vec), ""), va, "s");
      mx = c == 0 ? sv[c] : intr2(e, "llvm.maxnum", mx, sv[c], "");
    }
    mx = hreduce(e, mx, 1, "rowmax");
    mp = fptr(e, e->sm_, rr, "");
    mold = ld(e, e->tf32, mp, 4, "m.old");
    mnew = intr2(e, "llvm.maxnum", mold, mx, "m.new");
    st(e, mnew, mp, 4);
    muse = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOEQ, mnew, ninf, ""), f32c(e, 0), mnew,
                           "m.use");
    snprintf(nm, sizeof nm, "alpha%d", r);
    alpha[r] = emit_exp2(e, LLVMBuildFSub(e->b, mold, muse, ""), nm);
    ms = splat(e, muse, "");
    for (c = 0; c < nvec; c++) {
      LLVMValueRef p = emit_exp2(e, LLVMBuildFSub(e->b, sv[c], ms, ""), "p");
      st(e, p, fptr(e, e->ss, i64c(e, r * e->bn + c * e->vec), ""), va);
      psum = c == 0 ? p : LLVMBuildFAdd(e->b, psum, p, "");
    }
    lp = fptr(e, e->sl, mul(e, rr, i64c(e, e->vec), ""), "");
    lv = ld(e, e->tvf, lp, va, "l");
    st(e, fma3(e, lv, splat(e, alpha[r], ""), psum, "l.new"), lp, va);
  }

  /* acc = acc * alpha + P Vf, register-blocked: rows x nc vectors of head_dim. */
  for (c0 = 0; c0 < dpv; c0 += nc) {
    int ncc = dpv - c0 < nc ? dpv - c0 : nc;
    LLVMValueRef vv[MAXACC];
    for (r = 0; r < e->rows; r++) {
      LLVMValueRef al = splat(e, alpha[r], "");
      for (c = 0; c < ncc; c++) {
        x = add(e, mul(e, add(e, r0, i64c(e, r), ""), i64c(e, e->dp), ""), i64c(e, (c0 + c) * e->vec), "");
        x = LLVMBuildFMul(e->b, ld(e, e->tvf, fptr(e, e->sacc, x, ""), va, "acc"), al, "");
        st(e, x, e->accs[r * ncc + c], va);
      }
    }
    snprintf(nm, sizeof nm, "%s.pv", pf);
    j = loop_begin(e, &lj, nm, i64c(e, 0), nvalid);
    for (c = 0; c < ncc; c++) {
      x = add(e, mul(e, j, i64c(e, e->dp), ""), i64c(e, (c0 + c) * e->vec), "");
      vv[c] = ld(e, e->tvf, fptr(e, e->svf, x, ""), va, "v");
    }
    for (r = 0; r < e->rows; r++) {
      LLVMValueRef ps = splat(e, ld(e, e->tf32, fptr(e, e->ss, add(e, i64c(e, r * e->bn), j, ""), ""), 4, "p"), "");
      for (c = 0; c < ncc; c++) {
        LLVMValueRef p = e->accs[r * ncc + c];
        st(e, fma3(e, ps, vv[c], ld(e, e->tvf, p, va, ""), "acc"), p, va);
      }
    }
    loop_end(e, &lj);
    for (r = 0; r < e->rows; r++)
      for (c = 0; c < ncc; c++) {
        x = add(e, mul(e, add(e, r0, i64c(e, r), ""), i64c(e, e->dp), ""), i64c(e, (c0 + c) * e->vec), "");
        st(e, ld(e, e->tvf, e->accs[r * ncc + c], va, "acc"), fptr(e, e->sacc, x, ""), va);
      }
  }
  loop_end(e, &lg);
}

/* Walk one list of the plan: OFF and IDX are the fields of the table. */
static void emit_list(em *e, size_t off_field, size_t idx_field, int partial, LLVMValueRef t,
                      rowval *rv) {
  const char *pf = partial ? "partial" : "full";
  char nm[64];
  LLVMValueRef offs, idx, i0, i1, i, kb;
  loop l;
  offs = field(e, off_field, e->tptr, "");
  offs = ld(e, e->tptr, gep(e, e->tptr, offs, t, ""), 8, "");
  idx = field(e, idx_field, e->tptr, "");
  idx = ld(e, e->tptr, gep(e, e->tptr, idx, t, ""), 8, "");
  snprintf(nm, sizeof nm, "%s.begin", pf);
  i0 = ld(e, e->ti64, gep(e, e->ti64, offs, e->qb, ""), 8, nm);
  snprintf(nm, sizeof nm, "%s.end", pf);
  i1 = ld(e, e->ti64, gep(e, e->ti64, offs, add(e, e->qb, i64c(e, 1), ""), ""), 8, nm);
  snprintf(nm, sizeof nm, "%s.loop", pf);
  i = loop_begin(e, &l, nm, i0, i1);
  kb = LLVMBuildSExt(e->b, ld(e, e->ti32, gep(e, e->ti32, idx, i, ""), 4, ""), e->ti64, "kb");
  emit_block(e, kb, partial, rv);
  loop_end(e, &l);
}

/* ---- the decode kernel ------------------------------------------------- */

/* The values of one decode launch (emit_decode) its blocks read. */
typedef struct dec {
  LLVMValueRef h0, nrows, ngroups, heads, slopes;
  LLVMValueRef pacc, pq, pm, pl;    /* the split's regions of PART */
} dec;

/* Vector C of the head_dim elements of tensor BASE starting at element
** ROW, widened to <vec x float>; lanes past head_dim read nothing and are
** zero. */
static LLVMValueRef load_row_vec(em *e, LLVMValueRef base, LLVMValueRef row, int c, const char *name) {
  int nlane = e->d - c * e->vec, i;
  int wide = e->dtype == HATTN_DTYPE_FP32;
  LLVMTypeRef vt = wide ? e->tvf : LLVMVectorType(e->ti16, (unsigned)e->vec);
  LLVMValueRef p = gep(e, e->telem, base, add(e, row, i64c(e, (int64_t)c * e->vec), ""), ""), x;
  if (nlane >= e->vec) {
    x = ld(e, vt, p, wide ? 4 : 2, "");
  } else {
    LLVMValueRef lanes[MAXVEC], a[4];
    LLVMTypeRef tys[2];
    for (i = 0; i < e->vec; i++) lanes[i] = LLVMConstInt(e->ti1, i < nlane, 0);
    a[0] = p;
    a[1] = i32c(e, wide ? 4 : 2);
    a[2] = LLVMConstVector(lanes, (unsigned)e->vec);
    a[3] = LLVMConstNull(vt);
    tys[0] = vt;
    tys[1] = e->tptr;
    x = intr(e, "llvm.masked.load", tys, 2, a, 4, "");
  }
  switch (e->dtype) {
  case HATTN_DTYPE_FP16:
    x = LLVMBuildBitCast(e->b, x, LLVMVectorType(e->tf16, (unsigned)e->vec), "");
    return LLVMBuildFPExt(e->b, x, e->tvf, name);
  case HATTN_DTYPE_BF16:
    x = LLVMBuildShl(e->b, LLVMBuildZExt(e->b, x, e->tvi, ""), splat_const(e, i32c(e, 16)), "");
    return LLVMBuildBitCast(e->b, x, e->tvf, name);
  default:
    LLVMSetValueName2(x, name, strlen(name));
    return x;
  }
}

/* Prefetch into L1 the row of head_dim elements of tensor BASE at element
** ROW + AHEAD * STRIDE: the same key of the next key block, which the
** lists mostly hold next.  A prefetch never faults, so the row may lie
** past the tensor (the address is computed without inbounds). */
static void prefetch_row(em *e, LLVMValueRef base, LLVMValueRef row, LLVMValueRef stride, int ahead) {
  int es = e->dtype == HATTN_DTYPE_FP32 ? 4 : 2, line, per = 64 / es;
  LLVMValueRef at = add(e, row, mul(e, stride, i64c(e, ahead), ""), "ahead"), a[4];
  LLVMTypeRef t = e->tptr;
  for (line = 0; line < (e->d * es + 63) / 64; line++) {
    LLVMValueRef idx = add(e, at, i64c(e, (int64_t)line * per), "");
    a[0] = LLVMBuildGEP2(e->b, e->telem, base, &idx, 1, "prefetch.at");
    a[1] = i32c(e, 0);
    a[2] = i32c(e, 3);
    a[3] = i32c(e, 1);
    intr(e, "llvm.prefetch", &t, 1, a, 4, "");
  }
}

/* The element offsets of key KEY's row in K (*KROW) and V (*VROW), the
** slot of its page when K and V are paged (cpu_abi.h). */
static void key_rows(em *e, LLVMValueRef key, LLVMValueRef *krow, LLVMValueRef *vrow) {
  LLVMValueRef page, slot, pk, pv, in[2];
  LLVMBasicBlockRef from[2], join;
  *krow = mul(e, key, e->ks2, "krow");
  *vrow = mul(e, key, e->vs2, "vrow");
  from[0] = LLVMGetInsertBlock(e->b);
  join = if_begin(e, LLVMBuildICmp(e->b, LLVMIntNE, e->bt, LLVMConstNull(e->tptr), ""), "paged");
  page = ld(e, e->ti32, gep(e, e->ti32, e->btrow, LLVMBuildAShr(e->b, key, e->pshift, ""), ""), 4, "page");
  page = LLVMBuildSExt(e->b, page, e->ti64, "");
  slot = LLVMBuildAnd(e->b, key, e->pmask, "slot");
  pk = add(e, mul(e, page, e->kps, ""), mul(e, slot, e->ks2, ""), "krow.paged");
  pv = add(e, mul(e, page, e->vps, ""), mul(e, slot, e->vs2, ""), "vrow.paged");
  from[1] = LLVMGetInsertBlock(e->b);
  if_end(e, join);
  in[0] = *krow, in[1] = pk;
  *krow = LLVMBuildPhi(e->b, e->ti64, "krow.at");
  LLVMAddIncoming(*krow, in, from, 2);
  in[0] = *vrow, in[1] = pv;
  *vrow = LLVMBuildPhi(e->b, e->ti64, "vrow.at");
  LLVMAddIncoming(*vrow, in, from, 2);
}

/* One key block KB (i64) of the FULL (PARTIAL = 0) or PARTIAL list for
** every row group of the split: scores row by row against K's rows as they
** lie (a dot product over head_dim per key), the modifiers and the
** predicate, the online softmax, then acc = acc alpha + P V. */
static void emit_decode_block(em *e, const dec *dc, LLVMValueRef kb, int partial, rowval *rv) {
  const char *pf = partial ? "partial" : "full";
  char nm[96];
  loop lj, lg;
  LLVMValueRef k0, nvalid, j, x, g, r0, ninf, krow, vrow;
  LLVMValueRef alpha[16], qpos[16], slope[16];
  int nvec = e->bn / e->vec, dpv = e->dp / e->vec, nc = acc_budget(e) / e->rows, r, c, c0;
  unsigned va = (unsigned)(e->vec * 4);
  if (nc < 1) nc = 1;
  ninf = f32c(e, -INFINITY);
  k0 = mul(e, kb, i64c(e, e->bn), "k0");
  nvalid = smin(e, LLVMBuildSub(e->b, e->lk, k0, ""), i64c(e, e->bn), "nvalid");

  snprintf(nm, sizeof nm, "%s.group", pf);
  g = loop_begin(e, &lg, nm, i64c(e, 0), dc->ngroups);
  r0 = mul(e, g, i64c(e, e->rows), "r0");
  for (r = 0; r < e->rows; r++) {
    /* Rows past the last (padding of the group) repeat it. */
    LLVMValueRef rr = add(e, r0, i64c(e, r), "");
    LLVMValueRef rc = smin(e, rr, LLVMBuildSub(e->b, dc->nrows, i64c(e, 1), ""), "row");
    LLVMValueRef hh = add(e, dc->h0, LLVMBuildSDiv(e->b, rc, e->lq, ""), "head");
    LLVMValueRef qrow = LLVMBuildSRem(e->b, rc, e->lq, "qrow");
    snprintf(nm, sizeof nm, "qpos%d", r);
    qpos[r] = LLVMBuildTrunc(e->b, add(e, qrow, e->qoff, ""), e->ti32, nm);
    slope[r] = NULL;
    if (e->pat->alibi == HATTN_ALIBI_FIXED) slope[r] = f32c(e, e->pat->alibi_slope);
    else if (e->pat->alibi == HATTN_ALIBI_STANDARD)
      slope[r] = ld(e, e->tf32, gep(e, e->tf32, dc->slopes, hh, ""), 4, "slope");
    if (partial) {
      e->bh = add(e, mul(e, e->bb, dc->heads, ""), hh, "bh");
      pred_row(e, e->pat->lowered, qpos[r], qrow, rv + r * e->nnodes);
    }
  }

  /* S[r][j] = q_r . k_j, K read row by row. */
  snprintf(nm, sizeof nm, "%s.qk", pf);
  j = loop_begin(e, &lj, nm, i64c(e, 0), nvalid);
  {
    LLVMValueRef sacc[16], kv;
    key_rows(e, add(e, k0, j, "key"), &krow, &vrow);
    prefetch_row(e, e->kbase, krow, e->ks2, e->bn);
    for (r = 0; r < e->rows; r++) sacc[r] = LLVMConstNull(e->tvf);
    for (c = 0; c < dpv; c++) {
      kv = load_row_vec(e, e->kbase, krow, c, "k");
      for (r = 0; r < e->rows; r++) {
        x = add(e, mul(e, add(e, r0, i64c(e, r), ""), i64c(e, e->dp), ""), i64c(e, (int64_t)c * e->vec), "");
        x = ld(e, e->tvf, fptr(e, dc->pq, x, ""), va, "q");
        sacc[r] = fma3(e, x, kv, sacc[r], "s.part");
      }
    }
    for (r = 0; r < e->rows; r++)
      st(e, hreduce(e, sacc[r], 0, "s"), fptr(e, e->ss, add(e, i64c(e, (int64_t)r * e->bn), j, ""), ""), 4);
  }
  loop_end(e, &lj);

  /* Modifiers, the predicate (PARTIAL), keys past lk: -inf. */
  for (c = 0; c < nvec; c++) {
    LLVMValueRef kpos0 = add(e, k0, i64c(e, (int64_t)c * e->vec), "krow0"), kv, kr, kin;
    LLVMValueRef lanes[MAXVEC];
    int i;
    for (i = 0; i < e->vec; i++) lanes[i] = i32c(e, i);
    kr = add(e, splat(e, LLVMBuildTrunc(e->b, kpos0, e->ti32, ""), ""), LLVMConstVector(lanes, (unsigned)e->vec),
             "krow");
    kv = add(e, kr, splat(e, e->koff32, ""), "kpos");
    kin = LLVMBuildICmp(e->b, LLVMIntSLT, kr, splat(e, e->lk32, ""), "kin");
    for (r = 0; r < e->rows; r++) {
      LLVMValueRef sp = fptr(e, e->ss, i64c(e, (int64_t)r * e->bn + (int64_t)c * e->vec), "");
      LLVMValueRef s = ld(e, e->tvf, sp, va, "s");
      if (e->pat->softcap > 0) {
        double cap = e->pat->softcap;
        s = emit_tanh(e, LLVMBuildFMul(e->b, s, fk(e, e->tvf, 1.0 / cap), ""));
        s = LLVMBuildFMul(e->b, s, fk(e, e->tvf, cap), "s.capped");
      }
      if (slope[r] != NULL) {
        LLVMValueRef dist = LLVMBuildSIToFP(e->b, LLVMBuildSub(e->b, kv, splat(e, qpos[r], ""), ""), e->tvf, "");
        s = fma3(e, splat(e, slope[r], ""), dist, s, "s.alibi");
      }
      if (e->has_mod) s = LLVMBuildFMul(e->b, s, fk(e, e->tvf, LOG2E), "s2");
      if (partial) {
        LLVMValueRef vis = pred_vec(e, e->pat->lowered, splat(e, qpos[r], ""), kv, kr, kpos0, kin,
                                    rv + r * e->nnodes);
        s = LLVMBuildSelect(e->b, vis, s, splat_const(e, ninf), "s.masked");
      }
      s = LLVMBuildSelect(e->b, kin, s, splat_const(e, ninf), "s.in");
      st(e, s, sp, va);
    }
  }

  /* Online softmax, base 2. */
  for (r = 0; r < e->rows; r++) {
    LLVMValueRef sv[64], mx = NULL, mold, mnew, muse, ms, psum = NULL, lp, lv, mp, rr;
    rr = add(e, r0, i64c(e, r), "");
    for (c = 0; c < nvec; c++) {
      sv[c] = ld(e, e->tvf, fptr(e, e->ss, i64c(e, (int64_t)r * e->bn + (int64_t)c * e->vec), ""), va, "s");
      mx = c == 0 ? sv[c] : intr2(e, "llvm.maxnum", mx, sv[c], "");
    }
    mx = hreduce(e, mx, 1, "rowmax");
    mp = fptr(e, dc->pm, rr, "");
    mold = ld(e, e->tf32, mp, 4, "m.old");
    mnew = intr2(e, "llvm.maxnum", mold, mx, "m.new");
    st(e, mnew, mp, 4);
    muse = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOEQ, mnew, ninf, ""), f32c(e, 0), mnew, "m.use");
    snprintf(nm, sizeof nm, "alpha%d", r);
    alpha[r] = emit_exp2(e, LLVMBuildFSub(e->b, mold, muse, ""), nm);
    ms = splat(e, muse, "");
    for (c = 0; c < nvec; c++) {
      LLVMValueRef p = emit_exp2(e, LLVMBuildFSub(e->b, sv[c], ms, ""), "p");
      st(e, p, fptr(e, e->ss, i64c(e, (int64_t)r * e->bn + (int64_t)c * e->vec), ""), va);
      psum = c == 0 ? p : LLVMBuildFAdd(e->b, psum, p, "");
    }
    lp = fptr(e, dc->pl, rr, "");
    lv = ld(e, e->tf32, lp, 4, "l");
    st(e, fma3(e, lv, alpha[r], hreduce(e, psum, 0, "psum"), "l.new"), lp, 4);
  }

  /* acc = acc alpha + P V, V read row by row, rows x nc vectors at a time. */
  for (c0 = 0; c0 < dpv; c0 += nc) {
    int ncc = dpv - c0 < nc ? dpv - c0 : nc;
    LLVMValueRef vv[MAXACC];
    for (r = 0; r < e->rows; r++) {
      LLVMValueRef al = splat(e, alpha[r], "");
      for (c = 0; c < ncc; c++) {
        x = add(e, mul(e, add(e, r0, i64c(e, r), ""), i64c(e, e->dp), ""), i64c(e, (int64_t)(c0 + c) * e->vec), "");
        x = LLVMBuildFMul(e->b, ld(e, e->tvf, fptr(e, dc->pacc, x, ""), va, "acc"), al, "");
        st(e, x, e->accs[r * ncc + c], va);
      }
    }
    snprintf(nm, sizeof nm, "%s.pv", pf);
    j = loop_begin(e, &lj, nm, i64c(e, 0), nvalid);
    key_rows(e, add(e, k0, j, "key"), &krow, &vrow);
    if (c0 == 0) prefetch_row(e, e->vbase, vrow, e->vs2, e->bn);
    for (c = 0; c < ncc; c++) vv[c] = load_row_vec(e, e->vbase, vrow, c0 + c, "v");
    for (r = 0; r < e->rows; r++) {
      LLVMValueRef ps = splat(e, ld(e, e->tf32, fptr(e, e->ss, add(e, i64c(e, (int64_t)r * e->bn), j, ""), ""), 4, "p"), "");
      for (c = 0; c < ncc; c++) {
        LLVMValueRef p = e->accs[r * ncc + c];
        st(e, fma3(e, ps, vv[c], ld(e, e->tvf, p, va, ""), "acc"), p, va);
      }
    }
    loop_end(e, &lj);
    for (r = 0; r < e->rows; r++)
      for (c = 0; c < ncc; c++) {
        x = add(e, mul(e, add(e, r0, i64c(e, r), ""), i64c(e, e->dp), ""), i64c(e, (int64_t)(c0 + c) * e->vec), "");
        st(e, ld(e, e->tvf, e->accs[r * ncc + c], va, "acc"), fptr(e, dc->pacc, x, ""), va);
      }
  }
  loop_end(e, &lg);
}

/* Walk entries [FROM, TO) of one list of the plan's table T, query block
** 0: OFF and IDX are the fields of the list; entry i is key block
** idx[t][off[t][0] + i - SKIP]. */
static void emit_decode_list(em *e, const dec *dc, size_t off_field, size_t idx_field, int partial, LLVMValueRef t,
                             LLVMValueRef from, LLVMValueRef to, LLVMValueRef skip, rowval *rv) {
  char nm[64];
  LLVMValueRef offs, idx, i0, i, kb;
  loop l;
  offs = field(e, off_field, e->tptr, "");
  offs = ld(e, e->tptr, gep(e, e->tptr, offs, t, ""), 8, "");
  idx = field(e, idx_field, e->tptr, "");
  idx = ld(e, e->tptr, gep(e, e->tptr, idx, t, ""), 8, "");
  snprintf(nm, sizeof nm, "%s.begin", partial ? "partial" : "full");
  i0 = LLVMBuildSub(e->b, ld(e, e->ti64, offs, 8, nm), skip, "");
  snprintf(nm, sizeof nm, "%s.loop", partial ? "partial" : "full");
  i = loop_begin(e, &l, nm, from, to);
  kb = LLVMBuildSExt(e->b, ld(e, e->ti32, gep(e, e->ti32, idx, add(e, i0, i, ""), ""), 4, ""), e->ti64, "kb");
  emit_decode_block(e, dc, kb, partial, rv);
  loop_end(e, &l);
}

/* The list length of table T, query block 0, of the list at OFF_FIELD. */
static LLVMValueRef list_len(em *e, size_t off_field, LLVMValueRef t, const char *name) {
  LLVMValueRef offs = field(e, off_field, e->tptr, "");
  offs = ld(e, e->tptr, gep(e, e->tptr, offs, t, ""), 8, "");
  return LLVMBuildSub(e->b, ld(e, e->ti64, gep(e, e->ti64, offs, i64c(e, 1), ""), 8, ""),
                      ld(e, e->ti64, offs, 8, ""), name);
}

/* Add FN_NAME "_decode" (cpu_abi.h) to E's module: the forward kernel's
** block loop turned around for few query rows (see the file comment). */
static void emit_decode(em *e, const char *fn_name, int prefer_512, rowval *rv) {
  char name[160];
  LLVMTypeRef params[3], fty;
  LLVMBasicBlockRef entry, start;
  LLVMValueRef sp, scratch, x, t, table, kh, group, qscale, scale, part, rp, rr, dd, nfull, begin, end;
  LLVMValueRef qs[4], ks[4], vs[4];
  dec dc;
  loop l1, l2;
  int i, nacc;

  snprintf(name, sizeof name, "%s_decode", fn_name);
  params[0] = params[1] = params[2] = e->tptr;
  fty = LLVMFunctionType(e->tvoid, params, 3, 0);
  e->fn = LLVMAddFunction(e->mod, name, fty);
  LLVMSetLinkage(e->fn, LLVMExternalLinkage);
  {
    unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
    unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(e->fn, 3, LLVMCreateEnumAttribute(e->c, noalias, 0));
    LLVMAddAttributeAtIndex(e->fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(e->c, nounwind, 0));
    if (prefer_512) {
      LLVMAddAttributeAtIndex(e->fn, LLVMAttributeFunctionIndex,
                              LLVMCreateStringAttribute(e->c, "prefer-vector-width", 19, "512", 3));
      LLVMAddAttributeAtIndex(e->fn, LLVMAttributeFunctionIndex,
                              LLVMCreateStringAttribute(e->c, "min-legal-vector-width", 22, "512", 3));
    }
  }
  e->args = LLVMGetParam(e->fn, 0);
  sp = LLVMGetParam(e->fn, 1);
  scratch = LLVMGetParam(e->fn, 2);
  LLVMSetValueName2(e->args, "args", 4);
  LLVMSetValueName2(sp, "split", 5);
  LLVMSetValueName2(scratch, "scratch", 7);
  entry = LLVMAppendBasicBlockInContext(e->c, e->fn, "entry");
  start = LLVMAppendBasicBlockInContext(e->c, e->fn, "start");
  LLVMPositionBuilderAtEnd(e->eb, entry);
  LLVMPositionBuilderAtEnd(e->b, start);
  nacc = acc_budget(e) / e->rows;
  if (nacc < 1) nacc = 1;
  nacc *= e->rows;
  for (i = 0; i < nacc && i < MAXACC; i++) {
    e->accs[i] = LLVMBuildAlloca(e->eb, e->tvf, "acc.r");
    LLVMSetAlignment(e->accs[i], (unsigned)(e->vec * 4));
  }
  e->ss = fptr(e, scratch, i64c(e, (int64_t)e->sm.s), "scratch.s");

#define SPLIT(f, ty, n) ld(e, ty, gep(e, e->ti8, sp, i64c(e, (int64_t)offsetof(hattn_cpu_split, f)), ""), 8, n)
  e->bb = SPLIT(b, e->ti64, "b");
  dc.h0 = SPLIT(h0, e->ti64, "h0");
  x = SPLIT(pack, e->ti64, "pack");
  table = SPLIT(table, e->ti64, "table");
  begin = SPLIT(begin, e->ti64, "split.begin");
  end = SPLIT(end, e->ti64, "split.end");
  part = SPLIT(part, e->tptr, "part");
#undef SPLIT
  dc.heads = field(e, offsetof(hattn_cpu_args, heads), e->ti64, "heads");
  e->lq = field(e, offsetof(hattn_cpu_args, lq), e->ti64, "lq");
  e->lk = field(e, offsetof(hattn_cpu_args, lk), e->ti64, "lk");
  e->lk32 = LLVMBuildTrunc(e->b, e->lk, e->ti32, "lk32");
  e->qoff = field(e, offsetof(hattn_cpu_args, q_pos0), e->ti64, "qoff");
  e->koff32 = LLVMBuildTrunc(e->b, field(e, offsetof(hattn_cpu_args, k_pos0), e->ti64, ""), e->ti32, "koff32");
  dc.nrows = mul(e, x, e->lq, "nrows");
  dc.ngroups = LLVMBuildSDiv(e->b, add(e, dc.nrows, i64c(e, e->rows - 1), ""), i64c(e, e->rows), "ngroups");
  rp = mul(e, dc.ngroups, i64c(e, e->rows), "rp");
  dc.pacc = part;
  dc.pq = fptr(e, part, mul(e, rp, i64c(e, e->dp), ""), "part.q");
  dc.pm = fptr(e, part, mul(e, rp, i64c(e, 2 * e->dp), ""), "part.m");
  dc.pl = fptr(e, dc.pm, rp, "part.l");
  dc.slopes = field(e, offsetof(hattn_cpu_args, alibi_slopes), e->tptr, "alibi_slopes");
  group = LLVMBuildSDiv(e->b, dc.heads, field(e, offsetof(hattn_cpu_args, kv_heads), e->ti64, "kv_heads"), "group");
  kh = LLVMBuildSDiv(e->b, dc.h0, group, "kvh");
  for (i = 0; i < 4; i++) {
    char nm[32];
    snprintf(nm, sizeof nm, "q.stride%d", i);
    qs[i] = field(e, offsetof(hattn_cpu_args, q_stride) + 8 * (size_t)i, e->ti64, nm);
    snprintf(nm, sizeof nm, "k.stride%d", i);
    ks[i] = field(e, offsetof(hattn_cpu_args, k_stride) + 8 * (size_t)i, e->ti64, nm);
    snprintf(nm, sizeof nm, "v.stride%d", i);
    vs[i] = field(e, offsetof(hattn_cpu_args, v_stride) + 8 * (size_t)i, e->ti64, nm);
  }
  x = field(e, offsetof(hattn_cpu_args, k), e->tptr, "k");
  e->kbase = gep(e, e->telem, x, add(e, mul(e, e->bb, ks[0], ""), mul(e, kh, ks[1], ""), ""), "k.head");
  x = field(e, offsetof(hattn_cpu_args, v), e->tptr, "v");
  e->vbase = gep(e, e->telem, x, add(e, mul(e, e->bb, vs[0], ""), mul(e, kh, vs[1], ""), ""), "v.head");
  e->ks2 = ks[2];
  e->vs2 = vs[2];
  e->bt = field(e, offsetof(hattn_cpu_args, block_table), e->tptr, "block_table");
  x = field(e, offsetof(hattn_cpu_args, block_table_stride), e->ti64, "block_table_stride");
  e->btrow = gep(e, e->ti32, e->bt, mul(e, e->bb, x, ""), "block_table.row");
  e->pshift = field(e, offsetof(hattn_cpu_args, page_shift), e->ti64, "page_shift");
  e->pmask = LLVMBuildSub(e->b, LLVMBuildShl(e->b, i64c(e, 1), e->pshift, ""), i64c(e, 1), "page_mask");
  e->kps = field(e, offsetof(hattn_cpu_args, k_page_stride), e->ti64, "k_page_stride");
  e->vps = field(e, offsetof(hattn_cpu_args, v_page_stride), e->ti64, "v_page_stride");

  /* The packed rows: q scaled (padding rows 0), acc 0, m -inf, l 0. */
  scale = field(e, offsetof(hattn_cpu_args, scale), LLVMDoubleTypeInContext(e->c), "scale");
  if (!e->has_mod) scale = LLVMBuildFMul(e->b, scale, LLVMConstReal(LLVMDoubleTypeInContext(e->c), LOG2E), "");
  qscale = LLVMBuildFPTrunc(e->b, scale, e->tf32, "qscale");
  x = field(e, offsetof(hattn_cpu_args, q), e->tptr, "q");
  LLVMBuildMemSet(e->b, part, LLVMConstInt(e->ti8, 0, 0), mul(e, rp, i64c(e, 2 * e->dp * 4), ""), 64);
  rr = loop_begin(e, &l1, "q.load", i64c(e, 0), dc.nrows);
  {
    LLVMValueRef hh = add(e, dc.h0, LLVMBuildSDiv(e->b, rr, e->lq, ""), "head");
    LLVMValueRef qrow = LLVMBuildSRem(e->b, rr, e->lq, "qrow");
    LLVMValueRef qrowp = add(e, add(e, mul(e, e->bb, qs[0], ""), mul(e, hh, qs[1], ""), ""),
                            mul(e, qrow, qs[2], ""), "q.row");
    dd = loop_begin(e, &l2, "q.load.d", i64c(e, 0), i64c(e, e->d));
    t = LLVMBuildFMul(e->b, load_elem(e, x, add(e, qrowp, dd, ""), "q"), qscale, "");
    st(e, t, fptr(e, dc.pq, add(e, mul(e, rr, i64c(e, e->dp), ""), dd, ""), ""), 4);
    loop_end(e, &l2);
  }
  loop_end(e, &l1);
  rr = loop_begin(e, &l1, "ml.init", i64c(e, 0), rp);
  st(e, f32c(e, -INFINITY), fptr(e, dc.pm, rr, ""), 4);
  st(e, f32c(e, 0), fptr(e, dc.pl, rr, ""), 4);
  loop_end(e, &l1);

  /* Entries [begin, end) of FULL then PARTIAL. */
  t = table;
  nfull = list_len(e, offsetof(hattn_cpu_args, full_off), t, "nfull");
  emit_decode_list(e, &dc, offsetof(hattn_cpu_args, full_off), offsetof(hattn_cpu_args, full_idx), 0, t, begin,
                   smin(e, end, nfull, "full.to"), i64c(e, 0), rv);
  x = LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSGT, begin, nfull, ""), begin, nfull, "partial.from");
  emit_decode_list(e, &dc, offsetof(hattn_cpu_args, partial_off), offsetof(hattn_cpu_args, partial_idx), 1, t, x,
                   end, nfull, rv);
  LLVMBuildRetVoid(e->b);
  LLVMBuildBr(e->eb, start);
}

int hattn__emit_llvm(LLVMContextRef ctx, const hattn__kernel_desc *desc,
                     const hattn__cpu_config *cfg, const char *fn_name, int prefer_512,
                     LLVMModuleRef *out, char *err, size_t errlen) {
  em E, *e = &E;
  LLVMTypeRef params[4], fty;
  LLVMBasicBlockRef entry, start;
  LLVMValueRef x, scale, qscale, qbase, obase, nrow, rr, dd, t, lsep;
  LLVMValueRef qs[4], ks[4], vs[4], os[4], ls[3];
  rowval *rv = NULL;
  loop l1, l2;
  int rc, i, nacc;

  *out = NULL;
  rc = hattn__cpu_config_check(cfg, desc->head_dim, err, errlen);
  if (rc != HATTN_OK) return rc;
  if (desc->dtype != HATTN_DTYPE_FP32 && desc->dtype != HATTN_DTYPE_FP16 &&
      desc->dtype != HATTN_DTYPE_BF16) {
    snprintf(err, errlen, "the CPU backend does not support dtype %d", (int)desc->dtype);
    return HATTN_ENOTSUP;
  }
  if (desc->pattern == NULL || desc->pattern->lowered == NULL) {
    snprintf(err, errlen, "the CPU backend does not support this mask expression");
    return HATTN_ENOTSUP;
  }

  memset(e, 0, sizeof *e);
  e->c = ctx;
  e->pat = desc->pattern;
  e->dtype = desc->dtype;
  e->d = desc->head_dim;
  e->vec = cfg->vec;
  e->dp = hattn__cpu_padded_dim(e->d, e->vec);
  e->rows = cfg->rows;
  e->bm = cfg->bm;
  e->bn = cfg->bn;
  e->has_mod = e->pat->softcap > 0 || e->pat->alibi != HATTN_ALIBI_NONE;
  e->nnodes = e->pat->lowered->nops;
  hattn__cpu_scratch_plan(cfg, e->d, &e->sm);
  rv = calloc((size_t)e->nnodes * (size_t)e->rows, sizeof *rv);
  e->regs = calloc((size_t)e->nnodes, sizeof *e->regs);
  if (rv == NULL || e->regs == NULL) {
    free(rv);
    free(e->regs);
    snprintf(err, errlen, "out of memory");
    return HATTN_ENOMEM;
  }

  e->mod = LLVMModuleCreateWithNameInContext(fn_name, ctx);
  e->b = LLVMCreateBuilderInContext(ctx);
  e->eb = LLVMCreateBuilderInContext(ctx);
  e->tvoid = LLVMVoidTypeInContext(ctx);
  e->ti1 = LLVMInt1TypeInContext(ctx);
  e->ti8 = LLVMInt8TypeInContext(ctx);
  e->ti16 = LLVMInt16TypeInContext(ctx);
  e->ti32 = LLVMInt32TypeInContext(ctx);
  e->ti64 = LLVMInt64TypeInContext(ctx);
  e->tf32 = LLVMFloatTypeInContext(ctx);
  e->tf16 = LLVMHalfTypeInContext(ctx);
  e->tptr = LLVMPointerTypeInContext(ctx, 0);
  e->telem = e->dtype == HATTN_DTYPE_FP32 ? e->tf32 : e->ti16;
  e->tvf = LLVMVectorType(e->tf32, (unsigned)e->vec);
  e->tvi = LLVMVectorType(e->ti32, (unsigned)e->vec);
  e->tvb = LLVMVectorType(e->ti1, (unsigned)e->vec);
  e->tvl = LLVMVectorType(e->ti64, (unsigned)e->vec);

  params[0] = e->tptr;
  params[1] = e->ti64;
  params[2] = e->ti64;
  params[3] = e->tptr;
  fty = LLVMFunctionType(e->tvoid, params, 4, 0);
  e->fn = LLVMAddFunction(e->mod, fn_name, fty);
  LLVMSetLinkage(e->fn, LLVMExternalLinkage);
  {
    unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
    unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(e->fn, 4, LLVMCreateEnumAttribute(ctx, noalias, 0));
    LLVMAddAttributeAtIndex(e->fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(ctx, nounwind, 0));
    if (prefer_512) {
      LLVMAddAttributeAtIndex(e->fn, LLVMAttributeFunctionIndex,
                              LLVMCreateStringAttribute(ctx, "prefer-vector-width", 19, "512", 3));
      LLVMAddAttributeAtIndex(e->fn, LLVMAttributeFunctionIndex,
                              LLVMCreateStringAttribute(ctx, "min-legal-vector-width", 22, "512", 3));
    }
  }
  e->args = LLVMGetParam(e->fn, 0);
  e->bh = LLVMGetParam(e->fn, 1);
  e->qb = LLVMGetParam(e->fn, 2);
  x = LLVMGetParam(e->fn, 3);
  LLVMSetValueName2(e->args, "args", 4);
  LLVMSetValueName2(e->bh, "bh", 2);
  LLVMSetValueName2(e->qb, "qb", 2);
  LLVMSetValueName2(x, "scratch", 7);

  entry = LLVMAppendBasicBlockInContext(ctx, e->fn, "entry");
  start = LLVMAppendBasicBlockInContext(ctx, e->fn, "start");
  LLVMPositionBuilderAtEnd(e->eb, entry);
  LLVMPositionBuilderAtEnd(e->b, start);
  nacc = acc_budget(e) / e->rows;
  if (nacc < 1) nacc = 1;
  nacc *= e->rows;
  for (i = 0; i < nacc && i < MAXACC; i++) e->accs[i] = LLVMBuildAlloca(e->eb, e->tvf, "acc.r");
  e->ssink = LLVMBuildAlloca(e->eb, e->tf32, "sink.slot");
  for (i = 0; i < nacc && i < MAXACC; i++) LLVMSetAlignment(e->accs[i], (unsigned)(e->vec * 4));

  e->sq = fptr(e, x, i64c(e, (int64_t)e->sm.q), "scratch.q");
  e->sacc = fptr(e, x, i64c(e, (int64_t)e->sm.acc), "scratch.acc");
  e->sm_ = fptr(e, x, i64c(e, (int64_t)e->sm.m), "scratch.m");
  e->sl = fptr(e, x, i64c(e, (int64_t)e->sm.l), "scratch.l");
  e->skt = fptr(e, x, i64c(e, (int64_t)e->sm.kt), "scratch.kt");
  e->svf = fptr(e, x, i64c(e, (int64_t)e->sm.vf), "scratch.vf");
  e->ss = fptr(e, x, i64c(e, (int64_t)e->sm.s), "scratch.s");

  /* Shapes and bases. */
  {
    LLVMValueRef heads, kvh, group, kh;
    heads = field(e, offsetof(hattn_cpu_args, heads), e->ti64, "heads");
    kvh = field(e, offsetof(hattn_cpu_args, kv_heads), e->ti64, "kv_heads");
    e->lq = field(e, offsetof(hattn_cpu_args, lq), e->ti64, "lq");
    e->lk = field(e, offsetof(hattn_cpu_args, lk), e->ti64, "lk");
    e->lk32 = LLVMBuildTrunc(e->b, e->lk, e->ti32, "lk32");
    e->qoff = field(e, offsetof(hattn_cpu_args, q_pos0), e->ti64, "qoff");
    e->koff32 = LLVMBuildTrunc(e->b, field(e, offsetof(hattn_cpu_args, k_pos0), e->ti64, ""), e->ti32, "koff32");
    e->bb = LLVMBuildSDiv(e->b, e->bh, heads, "b");
    e->h = LLVMBuildSRem(e->b, e->bh, heads, "h");
    group = LLVMBuildSDiv(e->b, heads, kvh, "group");
    kh = LLVMBuildSDiv(e->b, e->h, group, "kvh");
    for (i = 0; i < 4; i++) {
      char nm[32];
      snprintf(nm, sizeof nm, "q.stride%d", i);
      qs[i] = field(e, offsetof(hattn_cpu_args, q_stride) + 8 * (size_t)i, e->ti64, nm);
      snprintf(nm, sizeof nm, "k.stride%d", i);
      ks[i] = field(e, offsetof(hattn_cpu_args, k_stride) + 8 * (size_t)i, e->ti64, nm);
      snprintf(nm, sizeof nm, "v.stride%d", i);
      vs[i] = field(e, offsetof(hattn_cpu_args, v_stride) + 8 * (size_t)i, e->ti64, nm);
      snprintf(nm, sizeof nm, "o.stride%d", i);
      os[i] = field(e, offsetof(hattn_cpu_args, o_stride) + 8 * (size_t)i, e->ti64, nm);
      if (i < 3) {
        snprintf(nm, sizeof nm, "lse.stride%d", i);
        ls[i] = field(e, offsetof(hattn_cpu_args, lse_stride) + 8 * (size_t)i, e->ti64, nm);
      }
    }
    x = field(e, offsetof(hattn_cpu_args, q), e->tptr, "q");
    qbase = gep(e, e->telem, x, add(e, mul(e, e->bb, qs[0], ""), mul(e, e->h, qs[1], ""), ""), "q.head");
    x = field(e, offsetof(hattn_cpu_args, o), e->tptr, "o");
    obase = gep(e, e->telem, x, add(e, mul(e, e->bb, os[0], ""), mul(e, e->h, os[1], ""), ""), "o.head");
    x = field(e, offsetof(hattn_cpu_args, k), e->tptr, "k");
    e->kbase = gep(e, e->telem, x, add(e, mul(e, e->bb, ks[0], ""), mul(e, kh, ks[1], ""), ""), "k.head");
    x = field(e, offsetof(hattn_cpu_args, v), e->tptr, "v");
    e->vbase = gep(e, e->telem, x, add(e, mul(e, e->bb, vs[0], ""), mul(e, kh, vs[1], ""), ""), "v.head");
    e->ks2 = ks[2];
    e->vs2 = vs[2];
    e->bt = field(e, offsetof(hattn_cpu_args, block_table), e->tptr, "block_table");
    x = field(e, offsetof(hattn_cpu_args, block_table_stride), e->ti64, "block_table_stride");
    e->btrow = LLVMBuildGEP2(e->b, e->ti32, e->bt, (LLVMValueRef[]){mul(e, e->bb, x, "")}, 1, "block_table.row");
    e->pshift = field(e, offsetof(hattn_cpu_args, page_shift), e->ti64, "page_shift");
    e->pmask = LLVMBuildSub(e->b, LLVMBuildShl(e->b, i64c(e, 1), e->pshift, ""), i64c(e, 1), "page_mask");
    e->kps = field(e, offsetof(hattn_cpu_args, k_page_stride), e->ti64, "k_page_stride");
    e->vps = field(e, offsetof(hattn_cpu_args, v_page_stride), e->ti64, "v_page_stride");
  }
  e->q0 = mul(e, e->qb, i64c(e, e->bm), "q0");
  nrow = smin(e, LLVMBuildSub(e->b, e->lq, e->q0, ""), i64c(e, e->bm), "nrow");
  e->nrow = nrow;

  if (e->pat->alibi == HATTN_ALIBI_FIXED) {
    e->slope = f32c(e, e->pat->alibi_slope);
  } else if (e->pat->alibi == HATTN_ALIBI_STANDARD) {
    x = field(e, offsetof(hattn_cpu_args, alibi_slopes), e->tptr, "alibi_slopes");
    e->slope = ld(e, e->tf32, gep(e, e->tf32, x, e->h, ""), 4, "slope");
  }

  /* Q rows, scaled; accumulators cleared. */
  scale = field(e, offsetof(hattn_cpu_args, scale), LLVMDoubleTypeInContext(ctx), "scale");
  if (!e->has_mod)
    scale = LLVMBuildFMul(e->b, scale, LLVMConstReal(LLVMDoubleTypeInContext(ctx), LOG2E), "");
  qscale = LLVMBuildFPTrunc(e->b, scale, e->tf32, "qscale");
  LLVMBuildMemSet(e->b, e->sq, LLVMConstInt(e->ti8, 0, 0), i64c(e, (int64_t)(e->sm.m - e->sm.q) * 4), 64);
  LLVMBuildMemSet(e->b, e->sl, LLVMConstInt(e->ti8, 0, 0), i64c(e, (int64_t)e->bm * e->vec * 4), 64);
  rr = loop_begin(e, &l1, "q.load", i64c(e, 0), nrow);
  x = mul(e, add(e, e->q0, rr, ""), qs[2], "");
  dd = loop_begin(e, &l2, "q.load.d", i64c(e, 0), i64c(e, e->d));
  t = LLVMBuildFMul(e->b, load_elem(e, qbase, add(e, x, dd, ""), "q"), qscale, "");
  st(e, t, fptr(e, e->sq, add(e, mul(e, rr, i64c(e, e->dp), ""), dd, ""), ""), 4);
  loop_end(e, &l2);
  loop_end(e, &l1);
  rr = loop_begin(e, &l1, "m.init", i64c(e, 0), i64c(e, e->bm));
  st(e, f32c(e, -INFINITY), fptr(e, e->sm_, rr, ""), 4);
  loop_end(e, &l1);

  /* The key blocks of the plan. */
  x = field(e, offsetof(hattn_cpu_args, plan_per_head), e->ti64, "plan_per_head");
  t = LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntNE, x, i64c(e, 0), ""), e->bh, i64c(e, 0), "table");
  emit_list(e, offsetof(hattn_cpu_args, full_off), offsetof(hattn_cpu_args, full_idx), 0, t, rv);
  emit_list(e, offsetof(hattn_cpu_args, partial_off), offsetof(hattn_cpu_args, partial_idx), 1, t, rv);

  /* The head's sink logit in the base-2 domain of m, -inf without one. */
  {
    LLVMValueRef sp = field(e, offsetof(hattn_cpu_args, sink_logits), e->tptr, "sink_logits");
    LLVMBasicBlockRef join;
    st(e, f32c(e, -INFINITY), e->ssink, 4);
    join = if_begin(e, LLVMBuildICmp(e->b, LLVMIntNE, sp, LLVMConstNull(e->tptr), ""), "sink");
    x = ld(e, e->tf32, gep(e, e->tf32, sp, e->h, ""), 4, "sink.ln");
    st(e, LLVMBuildFMul(e->b, x, f32c(e, LOG2E), "sink.l2"), e->ssink, 4);
    if_end(e, join);
  }

  /* With the sink: mn = max(m, sink), l' = l 2^(m - mn) + 2^(sink - mn),
  ** O = acc 2^(m - mn) / l', LSE = ln 2 * (mn + log2 l'); without one this
  ** is O = acc / l and LSE = ln 2 * (m + log2 l).  Empty rows 0, -inf. */
  lsep = field(e, offsetof(hattn_cpu_args, lse), e->tptr, "lse");
  rr = loop_begin(e, &l1, "out", i64c(e, 0), nrow);
  {
    LLVMValueRef lsum, m, mn, f, sink, empty, inv, orow, lv;
    LLVMBasicBlockRef join;
    lsum = hreduce(e, ld(e, e->tvf, fptr(e, e->sl, mul(e, rr, i64c(e, e->vec), ""), ""),
                         (unsigned)(e->vec * 4), ""), 0, "l");
    m = ld(e, e->tf32, fptr(e, e->sm_, rr, ""), 4, "m");
    sink = ld(e, e->tf32, e->ssink, 4, "sink");
    mn = intr2(e, "llvm.maxnum", m, sink, "");
    mn = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOEQ, mn, f32c(e, -INFINITY), ""), f32c(e, 0), mn,
                         "m.new");
    f = emit_exp2(e, LLVMBuildFSub(e->b, m, mn, ""), "m.fix");
    lsum = fma3(e, lsum, f, emit_exp2(e, LLVMBuildFSub(e->b, sink, mn, ""), "sink.e"), "l.sink");
    m = mn;
    empty = LLVMBuildFCmp(e->b, LLVMRealOLE, lsum, f32c(e, 0), "empty");
    inv = LLVMBuildSelect(e->b, empty, f32c(e, 0), LLVMBuildFDiv(e->b, f, lsum, ""), "inv");
    orow = mul(e, add(e, e->q0, rr, ""), os[2], "");
    dd = loop_begin(e, &l2, "out.d", i64c(e, 0), i64c(e, e->d));
    x = ld(e, e->tf32, fptr(e, e->sacc, add(e, mul(e, rr, i64c(e, e->dp), ""), dd, ""), ""), 4, "acc");
    store_elem(e, obase, add(e, orow, dd, ""), LLVMBuildFMul(e->b, x, inv, "o"));
    loop_end(e, &l2);
    join = if_begin(e, LLVMBuildICmp(e->b, LLVMIntNE, lsep, LLVMConstNull(e->tptr), ""), "out.lse");
    {
      LLVMValueRef safe = LLVMBuildSelect(e->b, empty, f32c(e, 1), lsum, "");
      lv = LLVMBuildFMul(e->b, LLVMBuildFAdd(e->b, m, emit_log2(e, safe), ""), f32c(e, LN2), "");
      lv = LLVMBuildSelect(e->b, empty, f32c(e, -INFINITY), lv, "");
      /* A NaN sum (a NaN in Q or K that the row sees) gives a NaN LSE; log2
      ** would read it as a number. */
      lv = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealUNO, lsum, lsum, ""), lsum, lv, "lse.v");
      x = add(e, add(e, mul(e, e->bb, ls[0], ""), mul(e, e->h, ls[1], ""), ""),
              mul(e, add(e, e->q0, rr, ""), ls[2], ""), "");
      st(e, lv, gep(e, e->tf32, lsep, x, ""), 4);
    }
    if_end(e, join);
  }
  loop_end(e, &l1);
  LLVMBuildRetVoid(e->b);
  LLVMBuildBr(e->eb, start);
  emit_decode(e, fn_name, prefer_512, rv);

  LLVMDisposeBuilder(e->b);
  LLVMDisposeBuilder(e->eb);
  free(rv);
  free(e->regs);
  *out = e->mod;
  return HATTN_OK;
}

#endif /* HATTN_HAVE_LLVM */
