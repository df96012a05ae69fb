"""The Python binding's hardening (issue 12): objects used after their
context is closed, forwards from several threads on one context, and
arrays the module must refuse or convert (shapes, read-only and overlapping
outputs, byte order, object arrays, out-of-range integers).  Each refusal
asserts the exception type and its message.  Fresh random inputs (seed
printed; HATTN_TEST_SEED replays)."""
import gc
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hattn  # noqa: E402

seed = int(os.environ.get("HATTN_TEST_SEED", str(int(time.time()))))
print("seed: %d (set HATTN_TEST_SEED to replay)" % seed)
rng = np.random.default_rng(seed)

SPEC = """
pattern causal = causal
pattern docs   = causal & document
pattern routed = causal & topk(2)
pattern rnd    = causal | random(1, 5)
"""
B, H, HK, L, D = 1, 4, 2, 130, 32


def rand(shape):
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


def raises(exc, text, f, *a, **kw):
    """f(*a, **kw) must raise EXC with TEXT in its message."""
    try:
        f(*a, **kw)
    except exc as e:
        assert text in str(e), "%s: %r lacks %r" % (exc.__name__, str(e), text)
        return e
    raise AssertionError("no %s (%s) from %s" % (exc.__name__, text, getattr(f, "__name__", f)))


q, k, v = rand((B, H, L, D)), rand((B, HK, L, D)), rand((B, HK, L, D))

# ---- 1. objects outlive their context ------------------------------------------
ctx = hattn.Context("cpu", db="", threads=2)
spec = ctx.parse(SPEC)
kern = spec.kernel("causal", B, H, HK, L, L, D)
o_before, l_before = kern.forward(q, k, v)
ctx.close()
ctx.close()                                   # twice is harmless
o_after, l_after = kern.forward(q, k, v)      # the kernel keeps the context alive
assert np.array_equal(o_before, o_after) and np.array_equal(l_before, l_after)
e = raises(hattn.HattnError, "q: shape", kern.forward, q[:, :, 1:], k, v)
assert e.name == "HATTN_ESHAPE", e
e = raises(hattn.HattnError, "the context is closed", spec.kernel, "causal", B, H, HK, L, L, D)
assert e.name == "HATTN_ECLOSED", e
e = raises(hattn.HattnError, "the context is closed", ctx.parse, SPEC)
assert e.name == "HATTN_ECLOSED", e
assert spec.patterns == ["causal", "docs", "routed", "rnd"]
assert kern.config and kern.needs == 0
with hattn.Context("cpu", db="", threads=2) as c2:
    k2 = c2.parse(SPEC).kernel("causal", B, H, HK, L, L, D)
o2, _ = k2.forward(q, k, v)                   # after leaving the with block
assert np.array_equal(o2, o_before)
del ctx, c2, spec
gc.collect()
o3, _ = kern.forward(q, k, v)
assert np.array_equal(o3, o_before)
del kern, k2
gc.collect()
print("closed contexts: ok")

# ---- 2. forwards from several threads on one context --------------------------
ctx = hattn.Context("cpu", db="", threads=2)
spec = ctx.parse(SPEC)
kerns = [spec.kernel("causal", B, H, HK, L, L, D), spec.kernel("causal", B, H, HK, L, L, D)]
want, _ = kerns[0].forward(q, k, v)
errors = []


def worker(i):
    try:
        for _ in range(25):
            o, _ = kerns[i % 2].forward(q, k, v)
            if not np.array_equal(o, want):
                errors.append("thread %d: a different result" % i)
    except Exception as exc:   # noqa: BLE001 - reported below
        errors.append("thread %d: %r" % (i, exc))


threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
print("threads: ok")

# ---- 3. arrays refused or converted -------------------------------------------
kern = spec.kernel("causal", B, H, HK, L, L, D)
nb = (L + 63) // 64
# topk: the shape is checked, a short array is not read past its end.
kr = spec.kernel("routed", B, H, HK, L, L, D)
routed = np.tile(np.arange(nb, dtype=np.int32)[None, None, :, None], (B, H, 1, 2))
routed[..., 1] = -1
kr.forward(q, k, v, topk=routed)
raises(ValueError, "topk: expected shape (1, 4, 3, 2), got (1, 4, 2, 2)", kr.forward, q, k, v,
       topk=routed[:, :, :2])
raises(ValueError, "topk: expected shape (1, 4, 3, 2), got (2,)", kr.forward, q, k, v,
       topk=np.zeros(2, np.int32))
raises(TypeError, "topk: expected integers, got dtype float64", kr.forward, q, k, v,
       topk=routed.astype(np.float64))
# Read-only and overlapping outputs are refused before anything is written.
ro_o = np.zeros((B, H, L, D), np.float32)
ro_o.setflags(write=False)
raises(ValueError, "o: the array is read-only", kern.forward, q, k, v, out=(ro_o, None))
assert not ro_o.any()
bc = np.broadcast_to(np.zeros((1, 1, L, D), np.float32), (B, H, L, D))
raises(ValueError, "o: the array is read-only", kern.forward, q, k, v, out=(bc, None))
ov = np.lib.stride_tricks.as_strided(np.zeros((L, D), np.float32), (B, H, L, D),
                                     (0, 0, D * 4, 4), writeable=True)
raises(ValueError, "o: dimension 1 has stride 0", kern.forward, q, k, v, out=(ov, None))
lse_ro = np.zeros((B, H, L), np.float32)
lse_ro.setflags(write=False)
raises(ValueError, "lse: the array is read-only", kern.forward, q, k, v,
       out=(np.empty((B, H, L, D), np.float32), lse_ro))
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "o.npy")
    np.save(path, np.zeros((B, H, L, D), np.float32))
    mm = np.load(path, mmap_mode="r")
    raises(ValueError, "o: the array is read-only", kern.forward, q, k, v, out=(mm, None))
    assert not np.load(path).any()
    qm_path = os.path.join(d, "q.npy")
    np.save(qm_path, q)
    o_mm, _ = kern.forward(np.load(qm_path, mmap_mode="r"), k, v)   # read-only inputs are fine
    assert np.array_equal(o_mm, want)
# Big-endian inputs are read by value; big-endian outputs are refused.
o_be, l_be = kern.forward(q.astype(">f4"), k.astype(">f4"), v.astype(">f4"))
assert np.array_equal(o_be, want), "big-endian inputs"
raises(ValueError, "o: byte order is big-endian", kern.forward, q, k, v,
       out=(np.empty((B, H, L, D), ">f4"), None))
kb = spec.kernel("causal", B, H, HK, L, L, D, "bf16")
wq, wk, wv = hattn.to_bf16(q), hattn.to_bf16(k), hattn.to_bf16(v)
ob, _ = kb.forward(wq, wk, wv)
ob2, _ = kb.forward(wq.astype(">u2"), wk.astype(">u2"), wv.astype(">u2"))
assert np.array_equal(ob, ob2), "big-endian bf16 words"
# Object arrays and values of the wrong kind are type errors with a message.
raises(TypeError, "q: unsupported NumPy dtype object", kern.forward, q.astype(object), k, v)
kd = spec.kernel("docs", B, H, HK, L, L, D)
raises(TypeError, "docs: expected integers, got dtype object", kd.forward, q, k, v,
       docs=np.array(["0", "x", str(L)], dtype=object))
raises(TypeError, "docs: expected integers, got dtype float64", kd.forward, q, k, v,
       docs=np.array([0.0, 7.5, L]))
raises(ValueError, "docs: expected one dimension, got shape (1, 3)", kd.forward, q, k, v,
       docs=np.array([[0, 7, L]]))
cut = int(rng.integers(1, L))
od, _ = kd.forward(q, k, v, docs=np.array([0, cut, L], dtype=">i8"))
od2, _ = kd.forward(q, k, v, docs=[0, cut, L])
assert np.array_equal(od, od2)
raises(TypeError, "sink_logits: expected numbers, got dtype object", kern.forward, q, k, v,
       sink_logits=np.array([None] * H, dtype=object))
# seed: an integer in [0, 2**64).
kx = spec.kernel("rnd", B, H, HK, L, L, D)
s_ok = int(rng.integers(1, 2**63))
kx.forward(q, k, v, seed=s_ok)
kx.forward(q, k, v, seed=2**64 - 1)
raises(ValueError, "seed must be an integer in [0, 2**64), got 18446744073709551616", kx.forward, q, k, v, seed=2**64)
raises(ValueError, "seed must be an integer in [0, 2**64), got -1", kx.forward, q, k, v, seed=-1)
raises(TypeError, "seed must be an integer, got float", kx.forward, q, k, v, seed=1.5)
# Problem sizes beyond int64 are refused, not wrapped; the C limits name themselves.
raises(ValueError, "batch must be an integer in [-2**63, 2**63), got 18446744073709551617",
       spec.kernel, "causal", 2**64 + 1, H, HK, L, L, D)
raises(TypeError, "lq must be an integer, got float", spec.kernel, "causal", B, H, HK, 1.5, L, D)
e = raises(hattn.HattnError, "HATTN_MAX_SEQLEN", spec.kernel, "causal", B, H, HK, 2**62, 2**62, D)
assert e.name == "HATTN_ESHAPE"
# Layout bits must be two-dimensional.
ctx.close()
print("ok")
