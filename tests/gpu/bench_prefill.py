"""Prefill on the GPU machine, every contender timed the same way
(../shared/design/BENCHMARKING.md): hattn through its Python module (a plan
made once, Plan.run on PyTorch tensors), PyTorch's SDPA with its flash
(FlashAttention 2) and cuDNN backends, and torch.compile(flex_attention)
with its block mask built outside the timed region; one process, one
timing function, the same tensors.

For each contender, two times per call:
  kernel   ITERS calls captured in one CUDA graph, the graph replayed REPS
           times between two events, the median replay over ITERS (no
           host launch cost in it);
  api      ITERS calls queued back to back from Python on the current
           stream, one synchronisation at the end, wall time over ITERS
           (what a caller pays, host work included, where the host is
           slower than the GPU).
Inputs rotate over enough copies that L2 (50 MB) holds none of them between
calls.  TFLOP/s count 4 x head_dim per visible (query, key) pair, counted
exactly.  Each row's relative error is against a float64 reference of 256
random query rows of batch 0, heads 0 and H - 1, computed from the same
inputs with the mask written in PyTorch.

Run by tests/gpu/run-on-device.sh (phase prefill-bench) with PYTHONPATH at
the build's python/ and HATTN_LIBRARY at its libhattn.  Writes a Markdown
table to stdout and JSON to $OUT/bench_prefill.json.  HATTN_BENCH_CASES (a
comma-separated list of case-name prefixes) picks cases."""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import hattn

REPS = 5
REF_ROWS = 256
K = 1024
W, G, DOC, CHUNK = 1024, 64, 1024, 2048

# name, batch, heads, kv heads, seqlen, head dim, hattn pattern, mask kind
# (for SDPA's is_causal, FlexAttention's mask_mod and the reference)
CASES = [
    ("dense 4k", 4, 16, 16, 4 * K, 128, "full", "full"),
    ("causal 4k", 4, 16, 16, 4 * K, 128, "causal", "causal"),
    ("dense 16k", 1, 16, 16, 16 * K, 128, "full", "full"),
    ("causal 16k", 1, 16, 16, 16 * K, 128, "causal", "causal"),
    ("causal 64k", 1, 16, 16, 64 * K, 128, "causal", "causal"),
    ("causal 8k GQA 32/8", 2, 32, 8, 8 * K, 128, "causal", "causal"),
    ("dense 8k d64", 2, 16, 16, 8 * K, 64, "full", "full"),
    ("causal 8k d64", 2, 16, 16, 8 * K, 64, "causal", "causal"),
    ("dense 8k d256", 2, 16, 16, 8 * K, 256, "full", "full"),
    ("causal 8k d256", 2, 16, 16, 8 * K, 256, "causal", "causal"),
    ("window(1k) 16k", 1, 16, 16, 16 * K, 128, "causal & window(%d)" % W, "window"),
    ("window(1k) 64k", 1, 16, 16, 64 * K, 128, "causal & window(%d)" % W, "window"),
    ("window(1k)|sink(64) 64k", 1, 16, 16, 64 * K, 128, "causal & (window(%d) | sink(%d))" % (W, G), "window_sink"),
    ("document(1k docs) 16k", 1, 16, 16, 16 * K, 128, "causal & document", "document"),
    ("chunk(2k) 16k", 1, 16, 16, 16 * K, 128, "causal & chunk(%d)" % CHUNK, "chunk"),
]


def mask_fn(kind, doc_id):
    """The mask as FlexAttention's mask_mod (also used, broadcast, for the
    reference); None for full."""
    if kind == "full":
        return None
    if kind == "causal":
        return lambda b, h, q, k: q >= k
    if kind == "window":
        return lambda b, h, q, k: (q >= k) & (q - k < W)
    if kind == "window_sink":
        return lambda b, h, q, k: (q >= k) & ((q - k < W) | (k < G))
    if kind == "document":
        return lambda b, h, q, k: (q >= k) & (doc_id[q] == doc_id[k])
    if kind == "chunk":
        return lambda b, h, q, k: (q >= k) & (q // CHUNK == k // CHUNK)
    raise ValueError(kind)


def visible_pairs(kind, S):
    """Visible (query, key) pairs of one head, exactly."""
    q = torch.arange(S, dtype=torch.int64)
    if kind == "full":
        return S * S
    if kind == "causal":
        return S * (S + 1) // 2
    if kind == "window":
        return int(torch.clamp(q + 1, max=W).sum())
    if kind == "window_sink":
        win = torch.clamp(q + 1, max=W)
        sink = torch.clamp(torch.clamp(q - W + 1, min=0), max=G)
        return int((win + sink).sum())
    if kind == "document":
        return int((q % DOC + 1).sum())
    if kind == "chunk":
        return int((q % CHUNK + 1).sum())
    raise ValueError(kind)


def time_kernel(call, iters):
    """Kernel time per call in microseconds: replays of a graph of ITERS calls."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(2):
            call(i)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(iters):
            call(i)
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(REPS):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / iters)
    del g
    times.sort()
    return times[len(times) // 2]


def time_api(call, iters):
    """Wall time per call in microseconds, ITERS calls back to back and one
    synchronisation, the median of REPS such runs."""
    for i in range(2):
        call(i)
    torch.cuda.synchronize()
    times = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        for i in range(iters):
            call(i)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e6 / iters)
    times.sort()
    return times[len(times) // 2]


def reference(q, k, v, kind, doc_id, rows, heads):
    """float64 O of the given query rows of batch 0, for each head in HEADS."""
    H, HK, S, D = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    mm = mask_fn(kind, doc_id)
    ki = torch.arange(S, device=q.device)
    out = []
    for h in heads:
        hk = h // (H // HK)
        qq = q[0, h, rows].double()
        s = (qq @ k[0, hk].double().T) / math.sqrt(D)
        if mm is not None:
            s = s.masked_fill(~mm(0, h, rows[:, None], ki[None, :]), float("-inf"))
        out.append(torch.softmax(s, dim=-1) @ v[0, hk].double())
    return torch.stack(out)


def relerr(o, ref, rows, heads):
    x = torch.stack([o[0, h, rows].double() for h in heads])
    return float((x - ref).norm() / ref.norm())


def main():
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 1024)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex = torch.compile(flex_attention)
    pick = [p.strip() for p in os.environ.get("HATTN_BENCH_CASES", "").split(",") if p.strip()]
    dev = torch.device("cuda")
    rows_out = []
    print("bench_prefill: PyTorch %s, %s, bf16; us per call (kernel: graph replay; api: back to back, one sync)\n"
          % (torch.__version__, torch.cuda.get_device_name()))
    print("| case | B x H/HK | contender | kernel us | TFLOP/s | api us | api TFLOP/s | rel. error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    sys.stdout.flush()
    for name, B, H, HK, S, D, pattern, kind in CASES:
        if pick and not any(name.startswith(p) for p in pick):
            continue
        flops = 4.0 * D * visible_pairs(kind, S) * B * H
        set_bytes = (2 * B * H + 2 * B * HK) * S * D * 2
        nset = max(2, min(8, -(-(200 << 20) // set_bytes)))
        qs = [torch.randn(B, H, S, D, device=dev, dtype=torch.bfloat16) for _ in range(nset)]
        ks = [torch.randn(B, HK, S, D, device=dev, dtype=torch.bfloat16) for _ in range(nset)]
        vs = [torch.randn(B, HK, S, D, device=dev, dtype=torch.bfloat16) for _ in range(nset)]
        o = torch.empty(B, H, S, D, device=dev, dtype=torch.bfloat16)
        doc_id = (torch.arange(S, device=dev) // DOC).to(torch.int32)
        rows = torch.randperm(S, device=dev)[:REF_ROWS]
        heads = (0, H - 1)
        ref = reference(qs[0], ks[0], vs[0], kind, doc_id, rows, heads)
        contenders = []

        # hattn: a plan made once (kernel compiled, tables uploaded); each
        # call is Plan.run on the current stream.
        try:
            ctx = hattn.Context("cuda", db="")
            kern = ctx.parse("pattern p = %s\n" % pattern).kernel("p", B, H, HK, S, S, D, dtype="bf16")
            docs = list(range(0, S, DOC)) + [S] if kind == "document" else None
            plan = kern.plan(docs=docs)
            contenders.append(("hattn", lambda i: plan.run(qs[i % nset], ks[i % nset], vs[i % nset], out=(o, None))))
        except Exception as e:
            contenders.append(("hattn", str(e).splitlines()[0][:80]))

        gqa = H != HK
        if kind in ("full", "causal"):
            for label, backend in (("SDPA flash", SDPBackend.FLASH_ATTENTION), ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)):
                def sdpa(i, backend=backend):
                    with sdpa_kernel(backend):
                        return F.scaled_dot_product_attention(qs[i % nset], ks[i % nset], vs[i % nset],
                                                              is_causal=kind == "causal", enable_gqa=gqa)
                contenders.append((label, sdpa))
        try:
            mm = mask_fn(kind, doc_id)
            bm = create_block_mask(mm, None, None, S, S, device="cuda") if mm is not None else None
            contenders.append(("FlexAttention", lambda i: flex(qs[i % nset], ks[i % nset], vs[i % nset],
                                                                 block_mask=bm, enable_gqa=gqa)))
        except Exception as e:
            contenders.append(("FlexAttention", str(e).splitlines()[0][:80]))

        for label, call in contenders:
            row = {"case": name, "contender": label, "batch": B, "heads": H, "kv_heads": HK, "seqlen": S,
                   "head_dim": D, "pattern": pattern, "flop": flops}
            if isinstance(call, str):
                row["error"] = call
            else:
                try:
                    o.fill_(float("nan"))
                    r = call(0)
                    out = o if label == "hattn" else r
                    torch.cuda.synchronize()
                    err = relerr(out, ref, rows, heads)
                    # One call's time picks ITERS: about 40 ms of work a graph.
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    call(1)
                    b.record()
                    b.synchronize()
                    iters = max(3, min(50, int(40.0 / max(a.elapsed_time(b), 1e-3))))
                    kus = time_kernel(call, iters)
                    aus = time_api(call, iters)
                    row.update(kernel_us=kus, api_us=aus, tflops=flops / kus / 1e6, api_tflops=flops / aus / 1e6,
                               relerr=err, iters=iters)
                except Exception as e:
                    row["error"] = str(e).splitlines()[0][:80]
                    torch.cuda.synchronize()
            rows_out.append(row)
            if "error" in row:
                print("| %s | %dx%d/%d | %s | - | - | - | - | %s |" % (name, B, H, HK, label, row["error"]))
            else:
                print("| %s | %dx%d/%d | %s | %.1f | %.0f | %.1f | %.0f | %.1e |"
                      % (name, B, H, HK, label, row["kernel_us"], row["tflops"], row["api_us"], row["api_tflops"],
                         row["relerr"]))
            sys.stdout.flush()
        contenders = qs = ks = vs = o = plan = kern = ctx = None
        torch.cuda.empty_cache()
    path = os.path.join(os.environ.get("OUT", "."), "bench_prefill.json")
    with open(path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows_out}, f, indent=1)


if __name__ == "__main__":
    main()
