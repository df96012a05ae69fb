"""The Python module on the CUDA backend, on the GPU machine: a causal
forward against a float64 NumPy reference, a kernel used after its context
is closed, new work on a closed context refused, and two threads forwarding
on one context.  Inputs are PyTorch CUDA tensors (DLPack).  Prints one line per check and exits 1 on the first that
fails.  Run by tests/gpu/run-on-device.sh (phase cuda-tools) with
PYTHONPATH at the build's python/ and HATTN_LIBRARY at its libhattn."""
import sys
import threading

import numpy as np
import torch

import hattn

B, H, HK, L, D = 1, 4, 2, 512, 64
SPEC = "pattern p = causal\n"


def reference(q, k, v):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    k = np.repeat(k, H // HK, axis=1)
    v = np.repeat(v, H // HK, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
    s = np.where(np.tril(np.ones((L, L), bool)), s, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    return (p / p.sum(-1, keepdims=True)) @ v


def check(name, ok, detail=""):
    print("%-44s %s %s" % (name, "ok" if ok else "FAILED", detail))
    if not ok:
        sys.exit(1)


def main():
    rng = np.random.default_rng()
    q = rng.standard_normal((B, H, L, D)).astype(np.float16)
    k = rng.standard_normal((B, HK, L, D)).astype(np.float16)
    v = rng.standard_normal((B, HK, L, D)).astype(np.float16)
    want = reference(q, k, v)
    q, k, v = (torch.from_numpy(x).cuda() for x in (q, k, v))   # reach hattn through __dlpack__

    ctx = hattn.Context("cuda")
    kern = ctx.parse(SPEC).kernel("p", B, H, HK, L, L, D, dtype="fp16")
    o, _ = kern.forward(q, k, v)
    err = float(np.abs(o.double().cpu().numpy() - want).max())
    check("cuda fp16 causal vs float64 reference", err < 1e-2, "max abs %.2e" % err)

    ctx.close()
    o2, _ = kern.forward(q, k, v)
    err = float(np.abs(o2.double().cpu().numpy() - want).max())
    check("kernel forward after ctx.close()", err < 1e-2, "max abs %.2e" % err)
    try:
        ctx.parse(SPEC)
        check("parse after close refused", False)
    except hattn.HattnError as e:
        check("parse after close refused", "closed" in str(e).lower(), str(e)[:60])
    del kern

    with hattn.Context("cuda") as ctx3:
        kern = ctx3.parse(SPEC).kernel("p", B, H, HK, L, L, D, dtype="fp16")
        plan = kern.plan()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())   # q, k, v were made on the default stream
        outs = []
        with torch.cuda.stream(side):            # Plan.run takes the current stream
            for _ in range(8):
                o = torch.full_like(q, float("nan"))
                plan.run(q, k, v, out=(o, None))
                outs.append(o)
        side.synchronize()
        err = max(float(np.abs(o.double().cpu().numpy() - want).max()) for o in outs)
        check("Plan.run x 8 on a side stream, one sync", err < 1e-2, "max abs %.2e" % err)
        # Host cost per call from Python, back to back (a measurement, printed).
        import time
        o = torch.empty_like(q)
        for what, call in (("Kernel.forward", lambda: kern.forward(q, k, v, out=(o, None))),
                           ("Plan.run", lambda: plan.run(q, k, v, out=(o, None)))):
            for _ in range(20):
                call()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(1000):
                call()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            print("%-44s %.1f us a call (queueing), %.1f us with the final sync"
                  % ("host cost, " + what + " from Python", (t1 - t0) * 1e3, (time.perf_counter() - t0) * 1e3))
        del plan, kern

    # PyTorch tensors described from their attributes (not __dlpack__):
    # [B, S, H, D] memory as strided [B, H, S, D] views, a storage offset,
    # and a dtype the kernel refuses.
    with hattn.Context("cuda") as ctx4:
        kern = ctx4.parse(SPEC).kernel("p", B, H, HK, L, L, D, dtype="fp16")
        qb = torch.zeros(B, L + 1, H, D, device="cuda", dtype=torch.float16)
        qb[:, 1:] = q.transpose(1, 2)
        kb, vb = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        ob = torch.full((B, L, H, D), float("nan"), device="cuda", dtype=torch.float16)
        kern.forward(qb[:, 1:].transpose(1, 2), kb.transpose(1, 2), vb.transpose(1, 2),
                     out=(ob.transpose(1, 2), None))
        torch.cuda.synchronize()
        err = float(np.abs(ob.transpose(1, 2).double().cpu().numpy() - want).max())
        check("torch strided views and a storage offset", err < 1e-2, "max abs %.2e" % err)
        try:
            kern.forward(q.float(), k, v)
            check("a float32 q refused by an fp16 kernel", False)
        except hattn.HattnError as e:
            check("a float32 q refused by an fp16 kernel", "dtype" in str(e).lower() or "q" in str(e).lower(),
                  str(e)[:60])
        del kern

    with hattn.Context("cuda") as ctx2:
        kern = ctx2.parse(SPEC).kernel("p", B, H, HK, L, L, D, dtype="fp16")
        errs = []

        def work():
            for _ in range(20):
                o, _ = kern.forward(q, k, v)
                errs.append(float(np.abs(o.double().cpu().numpy() - want).max()))

        ts = [threading.Thread(target=work) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        check("two threads x 20 forwards on one context", len(errs) == 40 and max(errs) < 1e-2,
              "max abs %.2e over %d" % (max(errs) if errs else -1, len(errs)))


if __name__ == "__main__":
    main()
