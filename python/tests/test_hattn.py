"""The Python binding against a NumPy float64 reference: causal and window
patterns, GQA, fp32/fp16/bf16, [B, H, S, D] and [B, S, H, D] (strided view)
memory, document offsets, paged K and V, errors.  Plain asserts; fresh random
inputs (seed printed; HATTN_TEST_SEED replays)."""
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hattn  # noqa: E402

seed = int(os.environ.get("HATTN_TEST_SEED", str(int(time.time()))))
print("seed: %d (set HATTN_TEST_SEED to replay)" % seed)
rng = np.random.default_rng(seed)


def reference(q, k, v, visible):
    """q [B,H,Lq,D], k/v [B,Hk,Lk,D] float64; visible(qi, ki) -> bool matrix."""
    B, H, LQ, D = q.shape
    HK, LK = k.shape[1], k.shape[2]
    g = H // HK
    qpos = np.arange(LQ)[:, None] + (LK - LQ)
    kpos = np.arange(LK)[None, :]
    mask = visible(qpos, kpos)
    o = np.zeros_like(q)
    lse = np.full((B, H, LQ), -np.inf)
    for b in range(B):
        for h in range(H):
            s = q[b, h] @ k[b, h // g].T / math.sqrt(D)
            s = np.where(mask, s, -np.inf)
            m = s.max(axis=1, keepdims=True)
            ok = np.isfinite(m[:, 0])
            m = np.where(np.isfinite(m), m, 0)
            p = np.exp(s - m)
            z = p.sum(axis=1, keepdims=True)
            o[b, h][ok] = (p @ v[b, h // g])[ok] / z[ok]
            lse[b, h][ok] = (np.log(z) + m)[ok, 0]
    return o, lse


def rel(x, r):
    x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
    n = np.linalg.norm(r)
    return np.linalg.norm(x - r) / n if n else np.linalg.norm(x)


def make(shape, dtype, bshd):
    """Random data of logical shape [B, H, S, D], in [B, S, H, D] memory when
    bshd; returns (array for hattn, float64 values hattn sees)."""
    x = rng.uniform(-1, 1, size=shape).astype(np.float32)
    if bshd:
        x = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
        assert not x.flags["C_CONTIGUOUS"] or shape[1] == 1
    if dtype == "bf16":
        w = hattn.to_bf16(x)
        if bshd:
            w = np.ascontiguousarray(w.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
        return w, hattn.from_bf16(w).astype(np.float64)
    if dtype == "fp16":
        h = x.astype(np.float16)
        return h, h.astype(np.float64)
    return x, x.astype(np.float64)


def out_values(o, dtype):
    return hattn.from_bf16(o).astype(np.float64) if dtype == "bf16" else o.astype(np.float64)


SPEC = """
pattern causal = causal
pattern local  = causal & window(16)
pattern docs   = causal & document
"""

masks = {
    "causal": lambda qp, kp: qp >= kp,
    "local": lambda qp, kp: (qp - kp >= 0) & (qp - kp <= 15),
}

ctx = hattn.Context("cpu", db="", threads=2)
spec = ctx.parse(SPEC, "test.hattn")
assert spec.patterns == ["causal", "local", "docs"], spec.patterns

cases = [
    ("causal", "fp32", 2, 4, 4, 70, 70, 32, False),
    ("causal", "fp32", 1, 4, 2, 40, 90, 32, True),
    ("local", "fp32", 1, 6, 2, 80, 80, 64, False),
    ("local", "fp32", 2, 4, 1, 65, 65, 16, True),
    ("local", "bf16", 1, 4, 2, 50, 50, 32, True),
    ("causal", "bf16", 1, 2, 2, 33, 33, 64, False),
    ("causal", "fp16", 1, 4, 2, 45, 45, 32, True),
]
for pat, dt, B, H, HK, LQ, LK, D, bshd in cases:
    kern = spec.kernel(pat, B, H, HK, LQ, LK, D, dt)
    q, rq = make((B, H, LQ, D), dt, bshd)
    k, rk = make((B, HK, LK, D), dt, bshd)
    v, rv = make((B, HK, LK, D), dt, bshd)
    o, lse = kern.forward(q, k, v)
    ro, rl = reference(rq, rk, rv, masks[pat])
    tol = 1e-5 if dt == "fp32" else 1e-2
    eo, el = rel(out_values(o, dt), ro), rel(lse, rl)
    print("%-6s %s B=%d H=%d Hk=%d Lq=%d Lk=%d D=%d %s: O %.2e LSE %.2e"
          % (pat, dt, B, H, HK, LQ, LK, D, "bshd" if bshd else "bhsd", eo, el))
    assert eo < tol and el < tol, (pat, dt, eo, el)

# Outputs given by the caller, poisoned, in [B, S, H, D] memory.
B, H, HK, L, D = 1, 4, 2, 60, 32
kern = spec.kernel("local", B, H, HK, L, L, D, "fp32")
q, rq = make((B, H, L, D), "fp32", False)
k, rk = make((B, HK, L, D), "fp32", False)
v, rv = make((B, HK, L, D), "fp32", False)
obuf = np.full((B, L, H, D), np.nan, dtype=np.float32)
lbuf = np.full((B, H, L), np.nan, dtype=np.float32)
o, lse = kern.forward(q, k, v, out=(obuf.transpose(0, 2, 1, 3), lbuf))
ro, rl = reference(rq, rk, rv, masks["local"])
assert rel(obuf.transpose(0, 2, 1, 3), ro) < 1e-5 and rel(lbuf, rl) < 1e-5

# Document offsets.
offs = np.array([0, 7, 7, 30, L], dtype=np.int64)
doc = np.searchsorted(offs, np.arange(L), side="right") - 1
kern = spec.kernel("docs", B, H, HK, L, L, D, "fp32")
assert kern.needs & 1
o, lse = kern.forward(q, k, v, docs=offs)
ro, rl = reference(rq, rk, rv, lambda qp, kp: (qp >= kp) & (doc[qp] == doc[kp]))
assert rel(o, ro) < 1e-5 and rel(lse, rl) < 1e-5, (rel(o, ro), rel(lse, rl))

# Learned sink logits: one more softmax term per row, with no value.
ksink = spec.kernel("local", B, H, HK, L, L, D, "fp32")
sinks = np.array([0.5, -np.inf, 2.0, -1.0], dtype=np.float32)
o, lse = ksink.forward(q, k, v, sink_logits=sinks)
qpos = np.arange(L)[:, None]
kpos = np.arange(L)[None, :]
vis = masks["local"](qpos, kpos)
rq64, rk64, rv64 = (x.astype(np.float64) for x in (rq, rk, rv))
for h in range(H):
    s = np.einsum("qd,kd->qk", rq64[0, h], rk64[0, h // (H // HK)]) / math.sqrt(D)
    s = np.where(vis, s, -np.inf)
    mx = np.maximum(s.max(axis=1), sinks[h])
    p = np.exp(s - mx[:, None])
    tot = p.sum(axis=1) + np.exp(sinks[h] - mx)
    ro_h = p @ rv64[0, h // (H // HK)] / tot[:, None]
    assert rel(o[0, h], ro_h) < 1e-5 and rel(lse[0, h], mx + np.log(tot)) < 1e-5, ("sink", h)
try:
    ksink.forward(q, k, v, sink_logits=sinks[:2])
    assert False, "short sink_logits accepted"
except ValueError:
    pass

# Errors.
try:
    kern.forward(q, k, v)
    assert False, "missing docs accepted"
except hattn.HattnError as e:
    assert e.name == "HATTN_EINPUT", e
try:
    ctx.parse("pattern p = causal & window(0)\n", "bad.hattn")
    assert False, "bad spec accepted"
except hattn.HattnError as e:
    assert e.name == "HATTN_ESPEC" and "error:" in e.message, e
try:
    spec.kernel("nosuch", 1, 1, 1, 8, 8, 16)
    assert False
except hattn.HattnError as e:
    assert e.name == "HATTN_ENOENT", e
kern = spec.kernel("causal", B, H, HK, L, L, D, "fp32")
try:
    kern.forward(q.astype(np.float16), k, v)
    assert False, "wrong dtype accepted"
except hattn.HattnError as e:
    assert e.name == "HATTN_ESHAPE" and "q: dtype" in e.message, e
try:
    kern.forward(q[:, :, :-1], k, v)
    assert False, "wrong shape accepted"
except hattn.HattnError as e:
    assert e.name == "HATTN_ESHAPE" and "q: shape" in e.message, e
assert hattn.strerror(-3) == "the spec has errors"

# Any DLPack-capable array (PyTorch, CuPy, JAX): here NumPy arrays seen only
# through __dlpack__, strided views included, so the capsule path runs.
class OnlyDLPack:
    def __init__(self, a):
        self.a = a

    def __dlpack__(self, stream=None):
        return self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


kern = spec.kernel("local", B, H, HK, L, L, D, "fp32")
obuf = np.full((B, L, H, D), np.nan, dtype=np.float32)
lbuf = np.full((B, H, L), np.nan, dtype=np.float32)
qs = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)   # [B, S, H, D] memory
o, lse = kern.forward(OnlyDLPack(qs), OnlyDLPack(k), OnlyDLPack(v),
                      out=(OnlyDLPack(obuf.transpose(0, 2, 1, 3)), OnlyDLPack(lbuf)))
ro, rl = reference(rq, rk, rv, masks["local"])
assert rel(obuf.transpose(0, 2, 1, 3), ro) < 1e-5 and rel(lbuf, rl) < 1e-5, "dlpack"
try:
    kern.forward(OnlyDLPack(q[:, :, :-1].copy()), OnlyDLPack(k), OnlyDLPack(v),
                 out=(OnlyDLPack(obuf.transpose(0, 2, 1, 3)), None))
    assert False, "wrong dlpack shape accepted"
except hattn.HattnError as e:
    assert e.name == "HATTN_ESHAPE" and "q: shape" in e.message, e

# Plan once, run many: one plan (document offsets in its tables) serves
# several runs on fresh inputs into poisoned outputs, each against the
# reference; the offsets given to plan() are overwritten afterwards (the plan
# copied them); the plan outlives its Kernel and a closed Context.
pctx = hattn.Context("cpu", db="", threads=2)
pkern = pctx.parse(SPEC).kernel("docs", B, H, HK, L, L, D, "fp32")
poffs = np.array([0, 11, 11, 40, L], dtype=np.int64)
pdoc = np.searchsorted(poffs, np.arange(L), side="right") - 1
plan = pkern.plan(docs=poffs)
poffs[1:4] = 20
for i in range(4):
    q3, r3q = make((B, H, L, D), "fp32", i % 2 == 1)
    k3, r3k = make((B, HK, L, D), "fp32", False)
    v3, r3v = make((B, HK, L, D), "fp32", False)
    obuf = np.full((B, H, L, D), np.nan, dtype=np.float32)
    lbuf = np.full((B, H, L), np.nan, dtype=np.float32)
    o3, l3 = plan.run(q3, k3, v3, out=(obuf, lbuf))
    assert o3 is obuf and l3 is lbuf
    ro3, rl3 = reference(r3q, r3k, r3v, lambda qp, kp: (qp >= kp) & (pdoc[qp] == pdoc[kp]))
    assert rel(obuf, ro3) < 1e-5 and rel(lbuf, rl3) < 1e-5, ("plan run", i, rel(obuf, ro3), rel(lbuf, rl3))
o4, l4 = plan.run(q3, k3, v3)          # outputs allocated like q
assert np.array_equal(o4, obuf) and np.array_equal(l4, lbuf)
try:
    plan.run(q3[:, :, :-1].copy(), k3, v3)
    assert False, "wrong shape accepted by Plan.run"
except hattn.HattnError as e:
    assert e.name == "HATTN_ESHAPE" and "q: shape" in e.message, e
try:
    pkern.plan()
    assert False, "a document pattern planned without docs"
except hattn.HattnError as e:
    assert e.name == "HATTN_EINPUT" and "doc_offsets are required" in e.message, e
del pkern
pctx.close()
o5, l5 = plan.run(q3, k3, v3)
assert np.array_equal(o5, obuf) and np.array_equal(l5, lbuf), "plan after close"
plan.destroy()
try:
    plan.run(q3, k3, v3)
    assert False, "a destroyed plan ran"
except hattn.HattnError as e:
    assert e.name == "HATTN_EINVAL", e
del plan

# hattn.merge: partial results (o_i, lse_i) merged by their LSE, against a
# float64 merge in NumPy; -inf rows (O there NaN: it must add nothing) and
# rows no part saw (O 0, LSE -inf); one part in [B, S, H, D] memory; each
# dtype; outputs poisoned.
def merge_ref(parts):
    lses = np.stack([l.astype(np.float64) for _, l in parts])
    m = lses.max(axis=0)
    none = m == -np.inf
    w = np.where(lses == -np.inf, 0.0, np.exp(lses - np.where(none, 0, m)))
    z = w.sum(axis=0)
    acc = sum(wi[..., None] * np.nan_to_num(oi) for wi, (oi, _) in zip(w, [(r, l) for r, l in parts]))
    o = np.where(none[..., None], 0.0, acc / np.where(none, 1, z)[..., None])
    return o, np.where(none, -np.inf, m + np.log(np.where(none, 1, z)))


mshape = (2, 3, 17, 24)
for dtype, tol in (("fp32", 1e-5), ("fp16", 2e-3), ("bf16", 1.5e-2)):
    for nparts in (1, 2, 3):
        parts, rparts = [], []
        for i in range(nparts):
            po, rpo = make(mshape, dtype, i == 1)
            pl = rng.uniform(-6, 6, size=mshape[:3]).astype(np.float32)
            pl[rng.uniform(size=pl.shape) < 0.2] = -np.inf
            pl[0, 0, ::3] = -np.inf
            rpo = np.where((pl == -np.inf)[..., None], np.nan, rpo)
            parts.append((po, pl))
            rparts.append((rpo, pl))
        for po, pl in parts:    # O is NaN where its part saw no key
            bad = np.broadcast_to((pl == -np.inf)[..., None], po.shape)
            po[bad] = 0xffff if dtype == "bf16" else np.nan
        obuf = np.full(mshape, 0xffff if dtype == "bf16" else np.nan,
                       dtype=np.uint16 if dtype == "bf16" else parts[0][0].dtype)
        lbuf = np.full(mshape[:3], np.nan, dtype=np.float32)
        mo, ml = hattn.merge(ctx, parts, out=(obuf, lbuf))
        assert mo is obuf and ml is lbuf
        ro, rl = merge_ref(rparts)
        got = out_values(obuf, dtype)
        none = rl == -np.inf
        assert (lbuf[none] == -np.inf).all() and (got[none] == 0).all(), "merge: rows no part saw"
        assert rel(got, ro) < tol and rel(lbuf[~none], rl[~none]) < 1e-5, \
            ("merge", dtype, nparts, rel(got, ro), rel(lbuf[~none], rl[~none]))
        o2, l2 = ctx.merge(parts)     # outputs allocated like the first part
        assert o2.dtype == obuf.dtype and np.array_equal(o2, obuf, equal_nan=True) and \
            np.array_equal(l2, lbuf), "merge allocating"

# End to end: attention over K = [K1; K2] with the full pattern is the merge
# of attention over K1 and over K2.
fspec = ctx.parse("pattern full = full\n")
fq, frq = make((B, H, 24, D), "fp32", False)
fk, frk = make((B, HK, 70, D), "fp32", False)
fv, frv = make((B, HK, 70, D), "fp32", False)
halves = []
for lo, hi in ((0, 25), (25, 70)):
    halves.append(fspec.kernel("full", B, H, HK, 24, hi - lo, D, "fp32").forward(fq, fk[:, :, lo:hi], fv[:, :, lo:hi]))
fo, fl = hattn.merge(ctx, halves)
ro, rl = reference(frq, frk, frv, lambda qp, kp: np.ones(np.broadcast(qp, kp).shape, bool))
assert rel(fo, ro) < 1e-5 and rel(fl, rl) < 1e-5, ("merge end to end", rel(fo, ro), rel(fl, rl))

# Offsets: the keys of a causal problem split in two, each slice at its key
# offset (queries at their own positions), merged, are the whole problem; a
# chunk of queries at its query offset is those rows of the whole.
cspec = ctx.parse("pattern c = causal\n")
L = 90
cq, crq = make((B, H, L, D), "fp32", False)
ck, crk = make((B, HK, L, D), "fp32", False)
cv, crv = make((B, HK, L, D), "fp32", False)
ro, rl = reference(crq, crk, crv, masks["causal"])
parts = []
for lo, hi in ((0, 37), (37, L)):
    kern = cspec.kernel("c", B, H, HK, L, hi - lo, D, "fp32")
    parts.append(kern.forward(cq, ck[:, :, lo:hi], cv[:, :, lo:hi], q_offset=0, k_offset=lo))
so, sl = hattn.merge(ctx, parts)
assert rel(so, ro) < 1e-5 and rel(sl, rl) < 1e-5, ("offsets: split keys", rel(so, ro), rel(sl, rl))
kern = cspec.kernel("c", B, H, HK, 30, 70, D, "fp32")
plan = kern.plan(q_offset=40)
co, cl = plan.run(cq[:, :, 40:70], ck[:, :, :70], cv[:, :, :70])
assert rel(co, ro[:, :, 40:70]) < 1e-5 and rel(cl, rl[:, :, 40:70]) < 1e-5, "offsets: a chunk of queries"
for kw, msg in (({"k_offset": -1}, "k_offset is -1; key positions are never negative"),
                ({"q_offset": 2**30}, "q_offset is 1073741824; it must lie in")):
    try:
        kern.forward(cq[:, :, 40:70], ck[:, :, :70], cv[:, :, :70], **kw)
        assert False, "bad offsets accepted"
    except hattn.HattnError as e:
        assert e.name == "HATTN_EINPUT" and msg in e.message, e

# Variable-length batch (q_lens, k_lens): each entry as its sequence alone
# (the NumPy reference of Q[:q_len], K[:k_len]); rows past q_len O 0 and
# LSE -inf; padding (NaN) never read; a plan keeps its lengths.
vspec = ctx.parse("pattern w = causal & window(37)\n")
VB, VLQ, VLK = 4, 4, 150
ql = np.array([4, 1, 0, 3], dtype=np.int32)
kl = np.array([150, 0, 1, 77], dtype=np.int32)
vkern = vspec.kernel("w", VB, H, HK, VLQ, VLK, D, "fp32")
for use_plan in (False, True):
    vq, vrq = make((VB, H, VLQ, D), "fp32", False)
    vk, vrk = make((VB, HK, VLK, D), "fp32", False)
    vv, vrv = make((VB, HK, VLK, D), "fp32", False)
    for b in range(VB):
        vq[b, :, ql[b]:] = np.nan
        vk[b, :, kl[b]:] = np.nan
        vv[b, :, kl[b]:] = np.nan
    if use_plan:
        vplan = vkern.plan(q_lens=ql, k_lens=list(kl))
        vo, vl = vplan.run(vq, vk, vv)
    else:
        vo, vl = vkern.forward(vq, vk, vv, q_lens=ql, k_lens=kl)
    for b in range(VB):
        n, m = ql[b], kl[b]
        if m == 0:      # no key: O 0, LSE -inf
            ro, rl = np.zeros((1, H, n, D)), np.full((1, H, n), -np.inf)
        else:
            ro, rl = reference(vrq[b:b + 1, :, :n], vrk[b:b + 1, :, :m], vrv[b:b + 1, :, :m],
                               lambda qp, kp: (qp - kp >= 0) & (qp - kp < 37))
        assert rel(vo[b:b + 1, :, :n], ro) < 1e-5, ("varlen O", b, use_plan)
        assert (np.isneginf(rl) == np.isneginf(vl[b:b + 1, :, :n])).all(), ("varlen LSE -inf", b, use_plan)
        fin = np.isfinite(rl)
        assert rel(vl[b:b + 1, :, :n][fin], rl[fin]) < 1e-5, ("varlen LSE", b, use_plan)
        assert (vo[b, :, n:] == 0).all() and (vl[b, :, n:] == -np.inf).all(), ("varlen padding rows", b)
for kw, name, msg in (({"k_lens": np.array([150, 151, 0, 0])}, "HATTN_EINPUT", "k_lens[1] is 151, above lk 150"),
                      ({"q_lens": np.array([4, 1, -1, 0])}, "HATTN_EINPUT", "q_lens[2] is -1, below 0"),
                      ({"k_lens": kl, "q_offset": 0}, "HATTN_ENOTSUP", "not with offsets_set")):
    try:
        vkern.forward(vq, vk, vv, **kw)
        assert False, "bad lengths accepted"
    except hattn.HattnError as e:
        assert e.name == name and msg in e.message, e
try:
    vkern.plan(k_lens=np.array([1, 2], dtype=np.int32))
    assert False, "two lengths for a batch of four"
except ValueError as e:
    assert "k_lens: expected shape (4,), one length per batch entry" in str(e), e

# What merge refuses.
try:
    hattn.merge(ctx, halves * 9)
    assert False, "18 parts merged"
except hattn.HattnError as e:
    assert e.name == "HATTN_EINVAL" and "18 parts; between 1 and 16" in e.message, e
try:
    hattn.merge(ctx, [halves[0], (halves[1][0].astype(np.float16), halves[1][1])])
    assert False, "mixed dtypes merged"
except hattn.HattnError as e:
    assert e.name == "HATTN_ESHAPE" and "o_parts[1]: dtype float16, expected float32" in e.message, e
try:
    hattn.merge(ctx, [halves[0], (halves[1][0], halves[1][1][:, :, :-1])])
    assert False, "a short lse merged"
except hattn.HattnError as e:
    assert e.name == "HATTN_ESHAPE" and "lse_parts[1]: dimension 2 is 23, expected 24" in e.message, e

# Paged K and V: the logical K and V scattered into a shuffled pool of pages
# (unused pages NaN) in either layout, read through a block table; forward,
# and a plan run twice with two different tables, against the reference on
# the logical tensors, outputs poisoned before each run.
def paged_pool(x, table, npages, P, layout):
    """Pool of the logical [B, Hk, Lk, D] X under TABLE (NaN elsewhere)."""
    B, HK, LK, D = x.shape
    shape = (npages, P, HK, D) if layout == "nhd" else (npages, HK, P, D)
    pool = np.full(shape, 0x7fc0 if x.dtype == np.uint16 else np.nan, dtype=x.dtype)  # NaN (bf16's word)
    for b in range(B):
        for t in range(LK):
            page, slot = table[b, t // P], t % P
            if layout == "nhd":
                pool[page, slot] = x[b, :, t]
            else:
                pool[page, :, slot] = x[b, :, t]
    return pool


def paged_table(B, need, npages):
    perm = rng.permutation(npages).astype(np.int32)
    table = np.full((B, need + 1), -1, dtype=np.int32)
    table[:, :need] = perm[:B * need].reshape(B, need)
    return table


for P, layout, dt, LQ in ((1, "nhd", "fp32", 50), (16, "hnd", "bf16", 1), (64, "nhd", "fp16", 50),
                          (128, "hnd", "fp32", 1)):
    B, H, HK, LK, D = 2, 8, 2, 150, 32
    need = -(-LK // P)
    npages = B * need + 3
    kern = spec.kernel("causal", B, H, HK, LQ, LK, D, dt)
    pl = kern.plan(page_size=P, page_layout=layout)
    tol = 1e-5 if dt == "fp32" else 1e-2
    for run in range(3):
        q, rq = make((B, H, LQ, D), dt, False)
        k, rk = make((B, HK, LK, D), dt, False)
        v, rv = make((B, HK, LK, D), dt, False)
        table = paged_table(B, need, npages)
        kp, vp = paged_pool(k, table, npages, P, layout), paged_pool(v, table, npages, P, layout)
        odt = np.uint16 if dt == "bf16" else (np.float16 if dt == "fp16" else np.float32)
        obuf = np.full((B, H, LQ, D), 0xffff if dt == "bf16" else np.nan, dtype=odt)
        lbuf = np.full((B, H, LQ), np.nan, dtype=np.float32)
        if run == 0:
            o, lse = kern.forward(q, kp, vp, out=(obuf, lbuf), block_table=table, page_layout=layout)
        else:
            o, lse = pl.run(q, kp, vp, out=(obuf, lbuf), block_table=table)
        ro, rl = reference(rq, rk, rv, masks["causal"])
        eo, el = rel(out_values(o, dt), ro), rel(lse, rl)
        print("paged P=%d %s %s Lq=%d run %d: O %.2e LSE %.2e" % (P, layout, dt, LQ, run, eo, el))
        assert eo < tol and el < tol, (P, layout, dt, run, eo, el)

# What paged K and V refuse.
kern = spec.kernel("causal", 1, 2, 1, 20, 20, 16, "fp32")
q, _ = make((1, 2, 20, 16), "fp32", False)
kp = np.zeros((4, 8, 1, 16), dtype=np.float32)
try:
    kern.forward(q, kp, kp, block_table=np.array([[0, 1, 4]], dtype=np.int32))
    assert False, "a block-table entry past the pool ran"
except hattn.HattnError as e:
    assert e.name == "HATTN_EINPUT" and "block_table[0][2] is 4, outside the pool's pages [0, 4)" in e.message, e
try:
    kern.forward(q, kp, kp, block_table=np.array([[0, 1]], dtype=np.int32))
    assert False, "a short block table ran"
except hattn.HattnError as e:
    assert e.name == "HATTN_ESHAPE" and "block_table: 2 columns, fewer than" in e.message, e
try:
    kern.plan(page_size=24)
    assert False, "page size 24 planned"
except hattn.HattnError as e:
    assert e.name == "HATTN_EINPUT" and "page_size 24 is not a power of two in 1..256" in e.message, e
try:
    kern.plan(page_size=8).run(q, kp, kp)
    assert False, "a paged plan ran without a block table"
except hattn.HattnError as e:
    assert e.name == "HATTN_EINPUT" and "block_table: missing (NULL)" in e.message, e
try:
    kern.forward(q, kp, kp, block_table=np.array([[0, 1, 2]], dtype=np.int32), page_layout="bshd")
    assert False, "layout bshd accepted"
except ValueError as e:
    assert "page_layout: expected 'nhd' or 'hnd'" in str(e), e

# A kernel database in a temporary directory: a second context finds it.
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "k.db")
    for _ in range(2):
        c = hattn.Context("cpu", db=path)
        kk = c.parse(SPEC).kernel("local", 1, 2, 2, 40, 40, 32, "fp32")
        q2, r2 = make((1, 2, 40, 32), "fp32", False)
        o2, l2 = kk.forward(q2, q2, q2)
        ro2, rl2 = reference(r2, r2, r2, masks["local"])
        assert rel(o2, ro2) < 1e-5
        del kk
        c.close()
print("ok")
