"""Variable-length batches through Plan.run's lengths (hattn_run_varlen) and
Plan.check (hattn_run_check), CPU backend, NumPy: the padded form (q_lens,
k_lens), the packed form (cu_seqlens_q, cu_seqlens_k: Q, K, V packed), packed
Q with padded K and padded Q with packed K; patterns causal and causal &
window(16); fp32 and bf16; decode-like batches (lq 1 and 4, q_len up to 4,
some above their k_len) and prefill (q_len = k_len); lengths 0, 1, the
maximum and odd ones; paged K and V with k_lens.  Every run against a
float64 NumPy reference of each sequence alone, into outputs poisoned with
NaN; padded rows past q_len must be O 0 and LSE -inf, and so must rows that
see no key.  Then the refusals, with the library's status and message.
Plain asserts; fresh random inputs (seed printed; HATTN_TEST_SEED replays)."""
import math
import os
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, ".."))
sys.path.insert(0, here)
import hattn  # noqa: E402

seed = int(os.environ.get("HATTN_TEST_SEED", str(int(time.time()))))
print("seed: %d (set HATTN_TEST_SEED to replay)" % seed)
rng = np.random.default_rng(seed)

W = 16
SPEC = """
pattern causal = causal
pattern local  = causal & window(%d)
""" % W
masks = {
    "causal": lambda qp, kp: qp >= kp,
    "local": lambda qp, kp: (qp - kp >= 0) & (qp - kp <= W - 1),
}
H, HK, D = 4, 2, 32
TOL = {"fp32": 1e-5, "bf16": 1e-2}
NAN_WORD = {"fp32": np.nan, "bf16": 0x7FC0}     # NaN as the dtype stores it
NP_DTYPE = {"fp32": np.float32, "bf16": np.uint16}


def raises(exc, text, f, *a, **kw):
    try:
        f(*a, **kw)
    except exc as e:
        assert text in str(e), (text, str(e))
        return e
    raise AssertionError("no %s (%s)" % (exc.__name__, text))


def seq_reference(q, k, v, visible):
    """One sequence alone: q [H, lq, D], k, v [HK, lk, D] float64; query row
    i at position i + lk - lq, key row j at j.  Returns O [H, lq, D] and LSE
    [H, lq]; rows that see no key get O 0 and LSE -inf."""
    h, lq, d = q.shape
    lk = k.shape[1]
    g = h // k.shape[0]
    o = np.zeros((h, lq, d))
    lse = np.full((h, lq), -np.inf)
    if lq == 0 or lk == 0:
        return o, lse
    mask = visible(np.arange(lq)[:, None] + lk - lq, np.arange(lk)[None, :])
    for i in range(h):
        s = np.where(mask, q[i] @ k[i // g].T / math.sqrt(d), -np.inf)
        m = s.max(axis=1, keepdims=True)
        ok = np.isfinite(m[:, 0])
        m = np.where(ok[:, None], m, 0)
        p = np.exp(s - m)
        z = p.sum(axis=1, keepdims=True)
        o[i][ok] = (p @ v[i // g])[ok] / z[ok]
        lse[i][ok] = (np.log(z) + m)[ok, 0]
    return o, lse


def values(x, dt):
    """The float64 values of hattn's array X of dtype DT."""
    return hattn.from_bf16(x).astype(np.float64) if dt == "bf16" else np.asarray(x, np.float64)


def rand(shape, dt):
    """Random values of SHAPE as hattn takes them (bf16: uint16 words)."""
    x = rng.uniform(-1, 1, size=shape).astype(np.float32)
    return hattn.to_bf16(x) if dt == "bf16" else x


def lengths(n, top):
    """N lengths in [0, TOP]: 0, 1, TOP and an odd one, shuffled."""
    pick = [0, 1, top, min(top, 2 * int(rng.integers(1, max(2, (top - 1) // 2 + 1))) + 1)]
    return rng.permutation(np.array(pick[:n], np.int32))


def compare(what, dt, o, lse, ro, rl):
    """O, LSE (hattn's, float64 values) against the reference RO, RL: the
    rows the reference gives -inf must be exactly O 0 and LSE -inf, the
    others within the dtype's relative (Frobenius) error."""
    dead = np.isneginf(rl)
    assert np.all(np.isneginf(lse[dead])), "%s: LSE of rows without keys is not -inf" % what
    assert np.all(o[dead] == 0), "%s: O of rows without keys is not 0" % what
    live = ~dead
    if live.any():
        n = np.linalg.norm(ro[live])
        eo = np.linalg.norm(o[live] - ro[live]) / (n if n else 1.0)
        el = np.linalg.norm(lse[live] - rl[live]) / np.linalg.norm(rl[live])
    else:
        eo = el = 0.0
    assert np.isfinite(eo) and np.isfinite(el) and eo <= TOL[dt] and el <= TOL[dt], \
        "%s: relative error O %.2e, LSE %.2e above %g (seed %d)" % (what, eo, el, TOL[dt], seed)
    return eo, el


def cu(lens):
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)


ctx = hattn.Context("cpu", db="", threads=2)
spec = ctx.parse(SPEC, "varlen.hattn")

# ---- the forms, against the reference ---------------------------------------------
FORMS = ("padded", "packed", "packed q, padded k", "padded q, packed k")
runs = 0
for pat in ("causal", "local"):
    for dt in ("fp32", "bf16"):
        for mode in ("decode 1", "decode 4", "prefill"):
            B = int(rng.integers(3, 5))
            LK = int(rng.integers(30, 90))
            LQ = LK if mode == "prefill" else int(mode.split()[1])
            kern = spec.kernel(pat, B, H, HK, LQ, LK, D, dt)
            plan = kern.plan()
            for form in FORMS:
                kl = lengths(B, LK)
                if mode == "prefill":
                    ql = kl.copy()
                else:   # some entries with more queries than keys: rows that see no key
                    ql = rng.integers(0, LQ + 1, size=B).astype(np.int32)
                    full = int(np.argmax(kl))
                    ql[full] = LQ               # the longest entry, all its queries
                    ql[(full + int(rng.integers(1, B))) % B] = 0
                # Padded tensors, the rows past each length NaN (never read).
                qp = np.full((B, H, LQ, D), NAN_WORD[dt], NP_DTYPE[dt])
                kp = np.full((B, HK, LK, D), NAN_WORD[dt], NP_DTYPE[dt])
                vp = np.full((B, HK, LK, D), NAN_WORD[dt], NP_DTYPE[dt])
                for b in range(B):
                    qp[b, :, :ql[b]] = rand((H, ql[b], D), dt)
                    kp[b, :, :kl[b]] = rand((HK, kl[b], D), dt)
                    vp[b, :, :kl[b]] = rand((HK, kl[b], D), dt)
                cq, ck = cu(ql), cu(kl)
                # Packed: entry b's rows at cq[b] .. cq[b + 1] of [total, heads, D].
                qk = np.concatenate([qp[b, :, :ql[b]].transpose(1, 0, 2) for b in range(B)])
                kk = np.concatenate([kp[b, :, :kl[b]].transpose(1, 0, 2) for b in range(B)])
                vk = np.concatenate([vp[b, :, :kl[b]].transpose(1, 0, 2) for b in range(B)])
                pq, pk = form in ("packed", "packed q, padded k"), form in ("packed", "padded q, packed k")
                args = dict(q_lens=None if pq else ql, cu_seqlens_q=cq if pq else None,
                            k_lens=None if pk else kl, cu_seqlens_k=ck if pk else None)
                q = qk if pq else qp
                k, v = (kk, vk) if pk else (kp, vp)
                if pq:
                    o = np.full((cq[-1], H, D), NAN_WORD[dt], NP_DTYPE[dt])
                    lse = np.full((H, cq[-1]), np.nan, np.float32)
                else:
                    o = np.full((B, H, LQ, D), NAN_WORD[dt], NP_DTYPE[dt])
                    lse = np.full((B, H, LQ), np.nan, np.float32)
                plan.check(q, k, v, out=(o, lse), **args)
                assert np.all(np.isnan(values(o, dt))) and np.all(np.isnan(lse)), "Plan.check wrote"
                ro, rl = plan.run(q, k, v, out=(o, lse), **args)
                assert ro is o and rl is lse
                # Allocated outputs have the form's shapes and the same values.
                ao, al = plan.run(q, k, v, **args)
                assert ao.shape == o.shape and ao.dtype == o.dtype and al.shape == lse.shape, \
                    (form, ao.shape, al.shape)
                assert np.array_equal(ao, o) and np.array_equal(al, lse, equal_nan=False), \
                    "%s: allocated outputs differ" % form
                ov, lv = values(o, dt), lse.astype(np.float64)
                worst = [0.0, 0.0]
                for b in range(B):
                    wo, wl = seq_reference(values(qp[b, :, :ql[b]], dt), values(kp[b, :, :kl[b]], dt),
                                           values(vp[b, :, :kl[b]], dt), masks[pat])
                    if pq:
                        go = ov[cq[b]:cq[b + 1]].transpose(1, 0, 2)
                        gl = lv[:, cq[b]:cq[b + 1]]
                    else:
                        go, gl = ov[b, :, :ql[b]], lv[b, :, :ql[b]]
                        # Rows past q_len: O 0, LSE -inf.
                        assert np.all(ov[b, :, ql[b]:] == 0) and np.all(np.isneginf(lv[b, :, ql[b]:])), \
                            "%s %s %s %s: entry %d, rows past q_len %d" % (pat, dt, mode, form, b, ql[b])
                    what = "%s %s %s %s: entry %d (q_len %d, k_len %d)" % (pat, dt, mode, form, b, ql[b], kl[b])
                    e = compare(what, dt, go, gl, wo, wl)
                    worst = [max(worst[0], e[0]), max(worst[1], e[1])]
                runs += 1
                print("%-6s %s %-8s B=%d Lq=%d Lk=%d %-19s q_lens %s k_lens %s: O %.1e LSE %.1e"
                      % (pat, dt, mode, B, LQ, LK, form, list(ql), list(kl), worst[0], worst[1]))
            # The plan's plain run still works after runs with lengths.
            q, k, v = rand((B, H, LQ, D), dt), rand((B, HK, LK, D), dt), rand((B, HK, LK, D), dt)
            o, lse = plan.run(q, k, v)
            for b in range(B):
                wo, wl = seq_reference(values(q[b], dt), values(k[b], dt), values(v[b], dt), masks[pat])
                compare("%s %s %s plain run" % (pat, dt, mode), dt, values(o[b], dt), lse[b].astype(np.float64),
                        wo, wl)
print("%d runs with lengths: ok" % runs)

# ---- lengths as int32 tensors of other kinds ----------------------------------------
# A DLPack object (NumPy seen only through __dlpack__) and a PyTorch CPU
# tensor (python/tests/faketorch.py where PyTorch is not installed).


class OnlyDLPack:
    def __init__(self, a):
        self.a = a

    def __dlpack__(self, stream=None):
        return self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


import faketorch  # noqa: E402

torch, fake = faketorch.install()
B, LQ, LK = 3, 4, 40
kern = spec.kernel("causal", B, H, HK, LQ, LK, D, "fp32")
plan = kern.plan()
q, k, v = rand((B, H, LQ, D), "fp32"), rand((B, HK, LK, D), "fp32"), rand((B, HK, LK, D), "fp32")
ql, kl = np.array([2, 0, 4], np.int32), np.array([40, 7, 1], np.int32)
want, _ = plan.run(q, k, v, q_lens=ql, k_lens=kl)
for how, wrap in (("list", lambda a: [int(x) for x in a]), ("tuple", lambda a: tuple(int(x) for x in a)),
                  ("dlpack", OnlyDLPack), ("torch", torch.from_numpy)):
    o = np.full((B, H, LQ, D), np.nan, np.float32)
    plan.run(q, k, v, out=(o, None), q_lens=wrap(ql), k_lens=wrap(kl))
    assert np.array_equal(o, want), how
    plan.check(q, k, v, q_lens=wrap(ql), k_lens=wrap(kl))
print("lengths as lists, tuples, DLPack objects, %s tensors: ok" % ("faketorch" if fake else "PyTorch"))

# ---- paged K and V with k_lens ------------------------------------------------------
P = 8
for dt, LQ in (("fp32", 4), ("bf16", 50)):
    B, LK = 4, 50
    need = (LK + P - 1) // P
    kern = spec.kernel("local", B, H, HK, LQ, LK, D, dt)
    plan = kern.plan(page_size=P)
    for run in range(2):
        kl = lengths(B, LK)
        ql = kl.copy() if LQ == LK else np.minimum(rng.integers(0, LQ + 1, size=B), LQ).astype(np.int32)
        npages = B * need + 2
        perm = rng.permutation(npages).astype(np.int32)
        table = np.full((B, need), -1, np.int32)     # entries past ceil(k_len / P) are never read
        used = 0
        for b in range(B):
            n = (kl[b] + P - 1) // P
            table[b, :n] = perm[used:used + n]
            used += n
        kpool = np.full((npages, P, HK, D), NAN_WORD[dt], NP_DTYPE[dt])
        vpool = np.full((npages, P, HK, D), NAN_WORD[dt], NP_DTYPE[dt])
        seqs = []
        for b in range(B):
            kb, vb = rand((HK, kl[b], D), dt), rand((HK, kl[b], D), dt)
            for t in range(kl[b]):
                kpool[table[b, t // P], t % P] = kb[:, t]
                vpool[table[b, t // P], t % P] = vb[:, t]
            seqs.append((rand((H, ql[b], D), dt), kb, vb))
        for packed in (False, True):
            if packed:
                cq = cu(ql)
                q = np.concatenate([s[0].transpose(1, 0, 2) for s in seqs])
                o = np.full((cq[-1], H, D), NAN_WORD[dt], NP_DTYPE[dt])
                lse = np.full((H, cq[-1]), np.nan, np.float32)
                lens = dict(cu_seqlens_q=cq, k_lens=kl)
            else:
                q = np.full((B, H, LQ, D), NAN_WORD[dt], NP_DTYPE[dt])
                for b in range(B):
                    q[b, :, :ql[b]] = seqs[b][0]
                o = np.full((B, H, LQ, D), NAN_WORD[dt], NP_DTYPE[dt])
                lse = np.full((B, H, LQ), np.nan, np.float32)
                lens = dict(q_lens=ql, k_lens=kl)
            plan.check(q, kpool, vpool, out=(o, lse), block_table=table, **lens)
            plan.run(q, kpool, vpool, out=(o, lse), block_table=table, **lens)
            ov, lv = values(o, dt), lse.astype(np.float64)
            for b in range(B):
                wo, wl = seq_reference(*(values(x, dt) for x in seqs[b]), masks["local"])
                if packed:
                    go, gl = ov[cq[b]:cq[b + 1]].transpose(1, 0, 2), lv[:, cq[b]:cq[b + 1]]
                else:
                    go, gl = ov[b, :, :ql[b]], lv[b, :, :ql[b]]
                    assert np.all(ov[b, :, ql[b]:] == 0) and np.all(np.isneginf(lv[b, :, ql[b]:]))
                compare("paged %s %s run %d entry %d" % (dt, "packed q" if packed else "padded", run, b), dt, go, gl,
                        wo, wl)
            print("paged P=%d %s Lq=%d %s q_lens %s k_lens %s: ok"
                  % (P, dt, LQ, "packed q" if packed else "padded", list(ql), list(kl)))
    # A paged plan takes k_lens, not cu_seqlens_k; a table entry the lengths
    # reach outside the pool is refused by run and check.
    e = raises(hattn.HattnError, "paged K and V take their lengths as lens.k_lens, not cu_seqlens_k", plan.run,
               q, kpool, vpool, block_table=table, q_lens=ql, cu_seqlens_k=cu(kl))
    assert e.name == "HATTN_EINPUT", e
    bad = table.copy()
    b = int(np.argmax(kl))
    bad[b, 0] = npages
    for f in (plan.run, plan.check):
        e = raises(hattn.HattnError, "outside the pool's pages", f, q[:, :, :LQ] if not packed else q, kpool, vpool,
                   block_table=bad, cu_seqlens_q=cq, k_lens=kl)
        assert e.name == "HATTN_EINPUT", e

# ---- refusals ----------------------------------------------------------------------
B, LQ, LK = 3, 8, 64
kern = spec.kernel("causal", B, H, HK, LQ, LK, D, "fp32")
plan = kern.plan()
q, k, v = rand((B, H, LQ, D), "fp32"), rand((B, HK, LK, D), "fp32"), rand((B, HK, LK, D), "fp32")
o, lse = np.full((B, H, LQ, D), np.nan, np.float32), np.full((B, H, LQ), np.nan, np.float32)
ql, kl = np.array([8, 2, 0], np.int32), np.array([64, 9, 10], np.int32)
plan.check(q, k, v, out=(o, lse), q_lens=ql, k_lens=kl)
plan.check(q, k, v, o, lse, q_lens=ql, k_lens=kl)     # O and LSE apart
plan.check(q, k, v)                                   # a plain run's arguments

e = raises(hattn.HattnError, "hattn_run_varlen: lens gives both q_lens and cu_seqlens_q; one form per side", plan.run,
           q, k, v, out=(o, lse), q_lens=ql, cu_seqlens_q=np.array([0, 8, 10, 10], np.int32))
assert e.name == "HATTN_EINPUT" and e.status == -7, e
e = raises(hattn.HattnError, "hattn_run_check: lens gives both k_lens and cu_seqlens_k; one form per side",
           plan.check, q, k, v, k_lens=kl, cu_seqlens_k=np.array([0, 64, 73, 83], np.int32))
assert e.name == "HATTN_EINPUT", e

qk = rand((10, H, D), "fp32")
ok_, lk_ = np.full((10, H, D), np.nan, np.float32), np.full((H, 10), np.nan, np.float32)
for f in (plan.run, plan.check):
    e = raises(hattn.HattnError, "cu_seqlens_q[2] is 7, below cu_seqlens_q[1] = 8: offsets must not decrease", f,
               qk, k, v, out=(ok_, lk_), cu_seqlens_q=np.array([0, 8, 7, 10], np.int32), k_lens=kl)
    assert e.name == "HATTN_EINPUT", e
    e = raises(hattn.HattnError, "sequence 2 has 100 keys, above the plan's lk 64", f, q, k, v, out=(o, lse),
               q_lens=ql, k_lens=[64, 9, 100])
    assert e.name == "HATTN_EINPUT", e
    e = raises(hattn.HattnError, "sequence 0 has 9 queries, above the plan's lq 8", f, q, k, v, out=(o, lse),
               q_lens=[9, 2, 0])
    assert e.name == "HATTN_EINPUT", e
    e = raises(hattn.HattnError, "k_lens[1] is -1, below 0", f, q, k, v, out=(o, lse), k_lens=[3, -1, 0])
    assert e.name == "HATTN_EINPUT", e
    e = raises(hattn.HattnError, "cu_seqlens_q[3] is 11, past the 10 rows of q", f, qk, k, v, out=(ok_, lk_),
               cu_seqlens_q=[0, 8, 10, 11])
    assert e.name == "HATTN_EINPUT", e
    e = raises(hattn.HattnError, "lens.q_lens: dtype int64, expected int32", f, q, k, v, out=(o, lse),
               q_lens=ql.astype(np.int64))
    assert e.name == "HATTN_ESHAPE", e
    e = raises(hattn.HattnError, "lens.k_lens: shape [2], expected [3]", f, q, k, v, out=(o, lse), k_lens=[1, 2])
    assert e.name == "HATTN_ESHAPE", e
    e = raises(hattn.HattnError, "q: 4 dimensions, expected 3", f, q, k, v, out=(o, lse),
               cu_seqlens_q=[0, 8, 10, 10])
    assert e.name == "HATTN_ESHAPE", e
    e = raises(hattn.HattnError, "block_table given, but the plan was made for contiguous K and V", f, q, k, v,
               out=(o, lse), k_lens=kl, block_table=np.zeros((B, 8), np.int32))
    assert e.name == "HATTN_EINPUT", e
raises(ValueError, "lse given twice", plan.check, q, k, v, out=(o, lse), lse=lse, k_lens=kl)
raises(TypeError, "q_lens: expected integers, got dtype float64", plan.run, q, k, v, q_lens=[1.5, 2, 0])
raises(ValueError, "k_lens: values must be in", plan.run, q, k, v, k_lens=[2**31, 0, 0])
# Lists are host memory: a CUDA plan refuses them (this plan's context
# posing as one; refused before the library is called).
plan.ctx.backend = "cuda"
try:
    raises(TypeError, "k_lens: a Python list is host memory; a cuda plan takes an int32 tensor on its device",
           plan.run, q, k, v, out=(o, lse), k_lens=[1, 2, 3])
finally:
    plan.ctx.backend = "cpu"
# Nothing was written by the refused runs and checks.
assert np.all(np.isnan(o)) and np.all(np.isnan(lse)) and np.all(np.isnan(ok_)) and np.all(np.isnan(lk_))
# A plan made with lengths takes none per run.
lplan = kern.plan(q_lens=ql, k_lens=kl)
e = raises(hattn.HattnError, "hattn_run_varlen: the plan was made with inputs.q_lens/k_lens; lengths per run need "
           "a plan made without them", lplan.run, q, k, v, k_lens=kl)
assert e.name == "HATTN_EINPUT", e
# A plain run after the refusals, and a good check.
plan.check(q, k, v, q_lens=ql, k_lens=kl)
o, lse = plan.run(q, k, v, out=(o, lse), q_lens=ql, k_lens=kl)
for b in range(B):
    wo, wl = seq_reference(q[b, :, :ql[b]].astype(np.float64), k[b, :, :kl[b]].astype(np.float64),
                           v[b, :, :kl[b]].astype(np.float64), masks["causal"])
    compare("after the refusals, entry %d" % b, "fp32", o[b, :, :ql[b]].astype(np.float64),
            lse[b, :, :ql[b]].astype(np.float64), wo, wl)
print("refusals: ok")
print("all ok")
