#!/usr/bin/env python3
"""bench_pyhost.py: what Plan.run (and Kernel.forward) cost the host from
Python, back to back, against the C call alone, in one run:

  C call           hattn_run through ctypes on DLTensors described once
                   (the floor for anything done from Python)
  Plan.run         the module as it is (argument descriptions cached)
  Plan.run, nocache  the same module with hattn._NOCACHE (HATTN_PY_NOCACHE=1):
                   every argument described afresh, as before the caches
  Plan.run, old    with --old PATH: an older python/hattn/__init__.py
                   (e.g. `git show BASE:python/hattn/__init__.py`), loaded as
                   a second module on the same library
  Kernel.forward   likewise (plans on every call: the C side costs more)

Each row is the median over --rounds of the time per call of a block of
--calls calls (time.perf_counter_ns), the modes interleaved round by round;
"above C" subtracts the C call's median.

Backends: --backend cuda (default where PyTorch sees a GPU) times PyTorch
CUDA tensors on the current stream, calls queued and not waited for
(synchronised between blocks), the problem of tests/gpu/python_cuda.py (fp16,
B 1, H 4, Hkv 2, 512 x 512, D 64) unless --tiny.  --backend cpu times NumPy
arrays, then PyTorch CPU tensors (a stand-in, python/tests/faketorch.py,
where PyTorch is not installed: its attributes cost Python calls, not
PyTorch's), on a tiny problem (fp32, B 1, H 1, 1 x 16 keys, D 64) so that
the kernel costs little.

Run from a build tree, or with HATTN_LIBRARY and PYTHONPATH set:
  HATTN_LIBRARY=build/.libs/libhattn.so PYTHONPATH=python python3 tests/gpu/bench_pyhost.py
"""
import argparse
import ctypes
import importlib.util
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
top = os.path.dirname(os.path.dirname(here))
if importlib.util.find_spec("hattn") is None:     # PYTHONPATH first, else this tree's
    sys.path.insert(0, os.path.join(top, "python"))
sys.path.append(os.path.join(top, "python", "tests"))     # faketorch
if "HATTN_LIBRARY" not in os.environ:
    for cand in (os.path.join(top, "build", ".libs", "libhattn.so"), os.path.join(top, ".libs", "libhattn.so")):
        if os.path.exists(cand):
            os.environ["HATTN_LIBRARY"] = cand
            break

import numpy as np  # noqa: E402

import hattn  # noqa: E402

SPEC = "pattern p = causal\n"


def load_old(path):
    spec = importlib.util.spec_from_file_location("hattn_old", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def timed(calls, sync):
    """Per-call nanoseconds of CALLS calls of f, after SYNC."""
    def run(f):
        sync()
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            f()
        t1 = time.perf_counter_ns()
        sync()
        return (t1 - t0) / calls
    return run


def bench(modes, calls, rounds, sync):
    """{name: median us per call}, MODES [(name, f)] interleaved."""
    run = timed(calls, sync)
    for _, f in modes:          # warm up: caches filled, code paths hot
        for _ in range(50):
            f()
    got = {name: [] for name, _ in modes}
    for r in range(rounds):
        for name, f in modes[r % len(modes):] + modes[:r % len(modes)]:
            got[name].append(run(f))
    return {name: statistics.median(v) / 1e3 for name, v in got.items()}


def case(label, mod_new, mod_old, backend, dims, dtype, make, stream, calls, rounds, sync):
    """Rows for one kind of tensor: MAKE(shape) gives an input."""
    B, H, HK, LQ, LK, D = dims
    rows = []
    modes = []
    setups = [("", mod_new)] + ([(", old", mod_old)] if mod_old is not None else [])
    keep = []
    q, k, v = make((B, H, LQ, D)), make((B, HK, LK, D)), make((B, HK, LK, D))
    o = make((B, H, LQ, D))
    lse = make((B, H, LQ), lse=True)
    for suffix, m in setups:
        ctx = m.Context(backend, db="", threads=1)
        kern = ctx.parse(SPEC).kernel("p", B, H, HK, LQ, LK, D, dtype=dtype)
        plan = kern.plan()
        keep += [ctx, kern, plan]
        if m is mod_new:
            # The floor: the C call on DLTensors described once.
            ts = [m._Tensor(n, x, kern.dtype if n != "lse" else m.FP32, output=n in ("o", "lse"))
                  for n, x in (("q", q), ("k", k), ("v", v), ("o", o), ("lse", lse))]
            keep.append(ts)
            lib, h, refs = m._L(), plan._h, [t.ref() for t in ts]
            st = stream if stream is not None else m._current_stream(q)
            modes.append(("C call (ctypes, prepared structs)",
                          lambda lib=lib, h=h, r=refs, st=st: lib.hattn_run(h, r[0], r[1], r[2], r[3], r[4], st)))

            def nocache(f, m=m):
                def g():
                    m._NOCACHE = True
                    try:
                        f()
                    finally:
                        m._NOCACHE = False
                return g
            modes.append(("Plan.run", lambda p=plan: p.run(q, k, v, out=(o, lse))))
            modes.append(("Plan.run, nocache", nocache(lambda p=plan: p.run(q, k, v, out=(o, lse)))))
            modes.append(("Kernel.forward", lambda kn=kern: kn.forward(q, k, v, out=(o, lse), stream=stream)))
            modes.append(("Kernel.forward, nocache",
                          nocache(lambda kn=kern: kn.forward(q, k, v, out=(o, lse), stream=stream))))
        else:
            modes.append(("Plan.run" + suffix, lambda p=plan: p.run(q, k, v, out=(o, lse))))
            modes.append(("Kernel.forward" + suffix,
                          lambda kn=kern: kn.forward(q, k, v, out=(o, lse), stream=stream)))
    res = bench(modes, calls, rounds, sync)
    floor = res["C call (ctypes, prepared structs)"]
    for name, _ in modes:
        rows.append("| %s | %s | %.2f | %s |" % (label, name, res[name],
                                                "" if name.startswith("C call") else "%.2f" % (res[name] - floor)))
    del keep
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("cpu", "cuda"))
    ap.add_argument("--calls", type=int, default=200, help="calls per timed block (default 200)")
    ap.add_argument("--rounds", type=int, default=41, help="timed blocks per mode (default 41)")
    ap.add_argument("--old", help="an older hattn/__init__.py to time side by side")
    ap.add_argument("--tiny", action="store_true", help="CUDA: the tiny problem of the CPU runs")
    a = ap.parse_args()

    torch = None
    try:
        import torch
    except ImportError:
        pass
    backend = a.backend or ("cuda" if torch is not None and torch.cuda.is_available() else "cpu")
    mod_old = load_old(a.old) if a.old else None

    print("# bench_pyhost: %s backend, Python %s, NumPy %s%s; %d calls a block, median of %d blocks"
          % (backend, sys.version.split()[0], np.__version__,
             ", PyTorch " + torch.__version__ if torch is not None else "", a.calls, a.rounds))
    print()
    print("| tensors | call | us per call | above C |")
    print("| --- | --- | --- | --- |")
    rows = []
    if backend == "cuda":
        if torch is None:
            sys.exit("bench_pyhost: --backend cuda needs PyTorch")
        dims = (1, 1, 1, 1, 16, 64) if a.tiny else (1, 4, 2, 512, 512, 64)
        td = torch.float16

        def make(shape, lse=False):
            return torch.randn(shape, device="cuda", dtype=torch.float32 if lse else td)
        rows += case("PyTorch CUDA fp16 B%d H%d/%d %dx%d D%d" % dims, hattn, mod_old, "cuda", dims, "fp16",
                     make, None, a.calls, a.rounds, torch.cuda.synchronize)
    else:
        dims = (1, 1, 1, 1, 16, 64)
        rng = np.random.default_rng(0)

        def make_np(shape, lse=False):
            return rng.standard_normal(shape).astype(np.float32)
        rows += case("NumPy fp32 B1 H1 1x16 D64", hattn, mod_old, "cpu", dims, "fp32", make_np, None,
                     a.calls, a.rounds, lambda: None)
        import faketorch
        tmod, fake = faketorch.install()

        def make_t(shape, lse=False):
            return tmod.from_numpy(make_np(shape))
        rows += case("%s CPU fp32 B1 H1 1x16 D64" % ("faketorch" if fake else "PyTorch"), hattn, mod_old,
                     "cpu", dims, "fp32", make_t, None, a.calls, a.rounds, lambda: None)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
