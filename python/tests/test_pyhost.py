"""The argument caches of Plan.run and Kernel.forward (hattn._Args): after a
call whose descriptions were kept, calls with other shapes, strides, dtypes,
storage offsets, byte orders and fresh arrays give the reference's results,
and wrong arguments still raise the library's errors; the caches hold no
reference to the arrays; two threads on one plan; the same with PyTorch
CPU tensors (python/tests/faketorch.py where PyTorch is not installed).
Plain asserts; fresh random inputs (seed printed; HATTN_TEST_SEED replays)."""
import gc
import math
import os
import sys
import threading
import time
import weakref

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, ".."))
sys.path.insert(0, here)
import hattn  # noqa: E402

seed = int(os.environ.get("HATTN_TEST_SEED", str(int(time.time()))))
print("seed: %d (set HATTN_TEST_SEED to replay)" % seed)
rng = np.random.default_rng(seed)
assert not hattn._NOCACHE, "run without HATTN_PY_NOCACHE"

B, H, HK, LQ, LK, D = 2, 4, 2, 24, 40, 16


def reference(q, k, v):
    """Causal attention (query row i at position i + LK - LQ) in float64."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    s = np.where(np.arange(LQ)[:, None] + LK - LQ >= np.arange(LK)[None, :], s, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    z = p.sum(-1, keepdims=True)
    return p @ v / z, (np.log(z) + m)[..., 0]


def rel(x, r):
    x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
    return np.linalg.norm(x - r) / np.linalg.norm(r)


def rand(shape, layout="bhsd", dtype=np.float32):
    """Random values of logical shape [B, H, S, D]: "bhsd" contiguous,
    "bshd" a strided view of [B, S, H, D] memory, "offset" a view starting
    past the first row of a bigger array, ">f4" big-endian."""
    x = rng.uniform(-1, 1, size=shape).astype(np.float32)
    if layout == "bshd":
        x = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    elif layout == "offset":
        big = np.zeros(shape[:2] + (shape[2] + 3,) + shape[3:], np.float32)
        big[:, :, 3:] = x
        x = big[:, :, 3:]
    return x.astype(dtype, copy=False)


def poisoned(shape):
    return np.full(shape, np.nan, np.float32)


def raises(exc, text, f, *a, **kw):
    try:
        f(*a, **kw)
    except exc as e:
        assert text in str(e), (text, str(e))
        return e
    raise AssertionError("no %s (%s)" % (exc.__name__, text))


ctx = hattn.Context("cpu", db="", threads=2)
kern = ctx.parse("pattern p = causal\n").kernel("p", B, H, HK, LQ, LK, D, "fp32")
plan = kern.plan()

# One plan and one kernel, runs one after another with what changes between
# them: each result against the reference, into poisoned outputs.
steps = [("bhsd", "bhsd"), ("bhsd", "bhsd"), ("bshd", "bhsd"), ("bshd", "bshd"), ("offset", "bhsd"),
         ("bhsd", "offset"), (">f4", "bhsd"), ("bhsd", ">f4"), ("bhsd", "bhsd")]
for how in ("plan", "forward"):
    for i, (ql, kl) in enumerate(steps):
        q = rand((B, H, LQ, D), ql if ql != ">f4" else "bhsd", ">f4" if ql == ">f4" else np.float32)
        k = rand((B, HK, LK, D), kl if kl != ">f4" else "bhsd", ">f4" if kl == ">f4" else np.float32)
        v = rand((B, HK, LK, D), kl if kl != ">f4" else "bhsd", ">f4" if kl == ">f4" else np.float32)
        olay = "bshd" if i % 3 == 2 else "bhsd"
        o = poisoned((B, LQ, H, D)).transpose(0, 2, 1, 3) if olay == "bshd" else poisoned((B, H, LQ, D))
        lse = poisoned((B, H, LQ)) if i != 4 else None
        if how == "plan":
            ro, rl = plan.run(q, k, v, out=(o, lse))
        else:
            ro, rl = kern.forward(q, k, v, out=(o, lse))
        assert ro is o and rl is lse
        wo, wl = reference(q, k, v)
        eo = rel(o, wo)
        el = rel(lse, wl) if lse is not None else 0.0
        print("%s step %d: q %s, k/v %s, o %s, lse %s: O %.1e LSE %.1e"
              % (how, i, ql, kl, olay, "-" if lse is None else "yes", eo, el))
        assert eo < 1e-5 and el < 1e-5, (how, i, eo, el)

# Wrong arguments after cached calls still reach the library's checks (or
# the module's), and a right call afterwards still works.
q, k, v = rand((B, H, LQ, D)), rand((B, HK, LK, D)), rand((B, HK, LK, D))
wo, wl = reference(q, k, v)
for run in (lambda *a, **kw: plan.run(*a, **kw), lambda *a, **kw: kern.forward(*a, **kw)):
    o, lse = poisoned((B, H, LQ, D)), poisoned((B, H, LQ))
    run(q, k, v, out=(o, lse))
    e = raises(hattn.HattnError, "q: shape [2, 4, 23, 16], expected [2, 4, 24, 16]", run, q[:, :, 1:], k, v,
               out=(o, lse))
    assert e.name == "HATTN_ESHAPE"
    raises(hattn.HattnError, "q: dtype float16, expected float32", run, q.astype(np.float16), k, v, out=(o, lse))
    raises(hattn.HattnError, "k: the last dimension must be contiguous (stride 1), got stride 2", run, q,
           np.repeat(k, 2, axis=3)[..., ::2], v, out=(o, lse))
    raises(hattn.HattnError, "o: dtype float16, expected float32", run, q, k, v,
           out=(np.zeros((B, H, LQ, D), np.float16), lse))
    raises(TypeError, "o: unsupported NumPy dtype <f8", run, q, k, v, out=(np.zeros((B, H, LQ, D)), lse))
    ro = o.copy()
    ro.flags.writeable = False
    raises(ValueError, "o: the array is read-only", run, q, k, v, out=(ro, lse))
    z = np.zeros((B, 1, LQ, D), np.float32)
    raises(ValueError, "o: dimension 1 has stride 0", run, q, k, v,
           out=(np.lib.stride_tricks.as_strided(z, (B, H, LQ, D), (z.strides[0], 0) + z.strides[2:]), lse))
    raises(ValueError, "o: byte order is big-endian", run, q, k, v, out=(o.astype(">f4"), lse))
    raises(TypeError, "v: expected a NumPy array or an object with __dlpack__, got list", run, q, k, [1],
           out=(o, lse))
    o, lse = poisoned((B, H, LQ, D)), poisoned((B, H, LQ))
    run(q, k, v, out=(o, lse))
    assert rel(o, wo) < 1e-5 and rel(lse, wl) < 1e-5, "a right call after the wrong ones"

# The same through HATTN_PY_NOCACHE's path: bit for bit the cached results.
o1, l1 = plan.run(q, k, v)
hattn._NOCACHE = True
try:
    o2, l2 = plan.run(q, k, v)
finally:
    hattn._NOCACHE = False
assert np.array_equal(o1, o2) and np.array_equal(l1, l2), "cached and uncached runs differ"

# The caches keep no argument alive (these layouts are new to both caches:
# their descriptions are made and kept).
q2, o2 = rand((B, H, LQ, D), "offset"), poisoned((B, LQ, H, D)).transpose(0, 2, 1, 3)
plan.run(q2, k, v, out=(o2, None))
kern.forward(q2, k, v, out=(o2, None))
refs = [weakref.ref(q2), weakref.ref(o2)]
del q2, o2
gc.collect()
assert all(r() is None for r in refs), "an argument outlived its call"

# A paged plan: block tables of the other dtype and the other width after a
# cached run.
P = 8
need = LK // P
npages = B * need + 2
pl = kern.plan(page_size=P)
for i, cols in enumerate((need, need + 2, need)):
    perm = rng.permutation(npages).astype(np.int32)
    table = np.full((B, cols), -1, np.int32)
    table[:, :need] = perm[:B * need].reshape(B, need)
    kp, vp = poisoned((npages, P, HK, D)), poisoned((npages, P, HK, D))
    for b in range(B):
        for t in range(LK):
            kp[table[b, t // P], t % P] = k[b, :, t]
            vp[table[b, t // P], t % P] = v[b, :, t]
    o, lse = pl.run(q, kp, vp, out=(poisoned((B, H, LQ, D)), poisoned((B, H, LQ))), block_table=table)
    assert rel(o, wo) < 1e-5 and rel(lse, wl) < 1e-5, ("paged", i)
    raises(hattn.HattnError, "block_table: dtype int64, expected int32", pl.run, q, kp, vp,
           block_table=table.astype(np.int64))
print("paged: tables of %d, %d, %d columns; an int64 table refused" % (need, need + 2, need))

# Two threads on one plan, each with its own layouts (so the cached
# descriptions change on every switch between them).
errs = []


def worker(layout):
    for _ in range(30):
        q = rand((B, H, LQ, D), layout)
        o, lse = plan.run(q, k, v)
        wo, wl = reference(q, k, v)
        errs.append(max(rel(o, wo), rel(lse, wl)))


ts = [threading.Thread(target=worker, args=(lay,)) for lay in ("bhsd", "bshd")]
for t in ts:
    t.start()
for t in ts:
    t.join()
assert len(errs) == 60 and max(errs) < 1e-5, (len(errs), max(errs) if errs else None)
print("two threads x 30 runs on one plan: max rel %.1e" % max(errs))

# PyTorch CPU tensors, described from their attributes (_Tensor._from_torch).
import faketorch  # noqa: E402

torch, fake = faketorch.install()
print("torch tensors: %s" % ("faketorch (no PyTorch here)" if fake else "PyTorch " + torch.__version__))
for i, layout in enumerate(("bhsd", "bhsd", "bshd", "offset", "bhsd")):
    qn, kn, vn = rand((B, H, LQ, D), layout), rand((B, HK, LK, D), layout), rand((B, HK, LK, D))
    tq = torch.from_numpy(qn) if layout == "bhsd" else torch.from_numpy(np.asarray(qn.base)).transpose(1, 2) \
        if layout == "bshd" else torch.from_numpy(np.asarray(qn.base))[:, :, 3:]
    tk = torch.from_numpy(kn) if layout == "bhsd" else torch.from_numpy(np.asarray(kn.base)).transpose(1, 2) \
        if layout == "bshd" else torch.from_numpy(np.asarray(kn.base))[:, :, 3:]
    assert tuple(tq.shape) == qn.shape and tq.data_ptr() == qn.__array_interface__["data"][0], layout
    on = poisoned((B, H, LQ, D))
    ln = poisoned((B, H, LQ))
    for how in ("plan", "forward"):
        on[...] = np.nan
        ln[...] = np.nan
        if how == "plan":
            plan.run(tq, tk, torch.from_numpy(vn), out=(torch.from_numpy(on), torch.from_numpy(ln)))
        else:
            kern.forward(tq, tk, torch.from_numpy(vn), out=(torch.from_numpy(on), torch.from_numpy(ln)))
        wo, wl = reference(qn, kn, vn)
        assert rel(on, wo) < 1e-5 and rel(ln, wl) < 1e-5, ("torch", how, i, layout)
    print("torch step %d (%s): ok" % (i, layout))
tq, tk, tv = torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v)
raises(hattn.HattnError, "q: shape [2, 4, 23, 16], expected [2, 4, 24, 16]", plan.run, tq[:, :, 1:], tk, tv,
       out=(torch.from_numpy(poisoned((B, H, LQ, D))), None))
raises(hattn.HattnError, "q: dtype float64, expected float32", plan.run, torch.from_numpy(q.astype(np.float64)),
       tk, tv, out=(torch.from_numpy(poisoned((B, H, LQ, D))), None))
o, _ = plan.run(tq, tk, tv, out=(torch.from_numpy(poisoned((B, H, LQ, D))), None))
assert rel(np.asarray(o.numpy()), reference(q, k, v)[0]) < 1e-5, "torch after errors"

# The stream Plan.run takes for a CUDA tensor (hattn._current_stream), with
# a stand-in for torch's: the current raw stream of the tensor's device.
if fake:
    import types  # noqa: E402
    torch._C = types.SimpleNamespace(_cuda_getCurrentRawStream=lambda i: 0x1000 + i)
    torch.cuda = types.SimpleNamespace(current_device=lambda: 3)
    cuda = types.SimpleNamespace(device=torch.device("cuda", 1))
    assert hattn._current_stream(cuda) == 0x1001
    cuda.device = torch.device("cuda")
    assert hattn._current_stream(cuda) == 0x1003
    assert hattn._current_stream(tq) is None and hattn._current_stream(q) is None
    print("current stream of a cuda tensor: ok")
print("all ok")
