"""Decode on the GPU machine: hattn's decode kernels beside its forward
kernel (HATTN_CUDA_DECODE=0, the baseline in the same run) and PyTorch's
SDPA (cuDNN, flash) and FlexAttention, one process, back to back.

Every contender is timed by the same function: its call captured ITERS
times into one CUDA graph, the graph replayed REPS times between two
events (kernel time, no host launch cost), median of the replays per call.
hattn also runs on paged K and V (pages of 16 keys, shuffled).  Inputs rotate over enough copies that K and V never sit in L2 between
calls.  Bandwidth counts the bytes of K and V a contender must read (the
visible keys' rows for a window).  The relative error of each contender's
O against hattn's decode output is in its row.  Run by
tests/gpu/run-on-device.sh (phase decode-bench) with PYTHONPATH at the
build's python/ and HATTN_LIBRARY at its libhattn; writes a Markdown table
to stdout and JSON to $OUT/bench_decode.json."""
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import hattn

ITERS, REPS = 20, 7
H, HK, D = 32, 8, 128
CASES = [
    # name, batch, queries, keys, pattern, flex mask ("full", "causal", ("window", W))
    ("B8 KV8k", 8, 1, 8192, "full", "full"),
    ("B8 KV64k", 8, 1, 65536, "full", "full"),
    ("B1 KV128k", 1, 1, 131072, "full", "full"),
    ("B64 KV4k q4 causal", 64, 4, 4096, "causal", "causal"),
    ("B8 KV64k causal&window(4k)", 8, 1, 65536, "causal & window(4096)", ("window", 4096)),
]


def time_graph(call):
    """Kernel time per call in microseconds: graph replays of ITERS calls."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(3):
            call(i)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(ITERS):
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
        times.append(a.elapsed_time(b) * 1e3 / ITERS)
    times.sort()
    return times[len(times) // 2]


def relerr(x, ref):
    x, ref = x.float(), ref.float()
    return float((x - ref).norm() / ref.norm())


def main():
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    dev = torch.device("cuda")
    rows = []
    out = []
    print("| case | contender | us | K+V GB/s read | rel. error vs hattn |")
    print("| --- | --- | --- | --- | --- |")
    for name, B, LQ, LK, pattern, flexmask in CASES:
        kv_bytes = 2 * B * HK * LK * D * 2
        nset = max(2, min(6, (200 << 20) // kv_bytes + 1))      # rotate past L2
        qs = [torch.randn(B, H, LQ, D, device=dev, dtype=torch.bfloat16) for _ in range(nset)]
        ks = [torch.randn(B, HK, LK, D, device=dev, dtype=torch.bfloat16) for _ in range(nset)]
        vs = [torch.randn(B, HK, LK, D, device=dev, dtype=torch.bfloat16) for _ in range(nset)]
        o = torch.empty(B, H, LQ, D, device=dev, dtype=torch.bfloat16)
        read = kv_bytes
        if isinstance(flexmask, tuple):
            read = 2 * B * HK * min(LK, flexmask[1] + LQ) * D * 2
        results = {}

        ctx = hattn.Context("cuda", db="")
        kern = ctx.parse("pattern p = %s\n" % pattern).kernel("p", B, H, HK, LQ, LK, D, dtype="bf16")
        for label, env in (("hattn decode", None), ("hattn forward kernel", "0")):
            if env is None:
                os.environ.pop("HATTN_CUDA_DECODE", None)
            else:
                os.environ["HATTN_CUDA_DECODE"] = env
            plan = kern.plan()
            ref = torch.empty_like(o)
            plan.run(qs[0], ks[0], vs[0], out=(ref, None))
            torch.cuda.synchronize()
            results[label] = (time_graph(lambda i: plan.run(qs[i % nset], ks[i % nset], vs[i % nset], out=(o, None))), ref)
        os.environ.pop("HATTN_CUDA_DECODE", None)
        base = results["hattn decode"][1]

        # Paged K and V, pages of 16 keys ([pages, 16, kv_heads, D]) in a
        # shuffled pool, the block table read by each run.
        P = 16
        if LK % P == 0:
            npp = LK // P
            perm = torch.randperm(B * npp, device=dev)
            inv = torch.empty_like(perm)
            inv[perm] = torch.arange(B * npp, device=dev)
            bt = inv.view(B, npp).to(torch.int32)

            def pool(x):
                return x.view(B, HK, npp, P, D).permute(0, 2, 3, 1, 4).reshape(B * npp, P, HK, D)[perm].contiguous()
            kps, vps = [pool(x) for x in ks], [pool(x) for x in vs]
            plan = kern.plan(page_size=P)
            ref = torch.empty_like(o)
            plan.run(qs[0], kps[0], vps[0], out=(ref, None), block_table=bt)
            torch.cuda.synchronize()
            results["hattn decode, paged (16)"] = (
                time_graph(lambda i: plan.run(qs[i % nset], kps[i % nset], vps[i % nset], out=(o, None),
                                              block_table=bt)), ref)
            del kps, vps

        def sdpa(backend, i, out):
            with sdpa_kernel(backend):
                r = F.scaled_dot_product_attention(qs[i], ks[i], vs[i], is_causal=False, enable_gqa=True) \
                    if pattern == "full" else None
            if out is not None and r is not None:
                out.copy_(r)
            return r

        if pattern == "full":
            for label, backend in (("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION), ("SDPA flash", SDPBackend.FLASH_ATTENTION)):
                try:
                    r = sdpa(backend, 0, None)
                    torch.cuda.synchronize()
                    results[label] = (time_graph(lambda i, b=backend: sdpa(b, i % nset, None)), r)
                except Exception as e:            # a backend that refuses the shape
                    results[label] = (None, str(e).splitlines()[0][:60])
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            off = LK - LQ
            if flexmask == "full":
                mod = lambda b, h, q, k: k >= 0
            elif flexmask == "causal":
                mod = lambda b, h, q, k: q + off >= k
            else:
                W = flexmask[1]
                mod = lambda b, h, q, k: (q + off >= k) & (q + off - k < W)
            bm = create_block_mask(mod, None, None, LQ, LK, device="cuda")
            flex = torch.compile(flex_attention)
            r = flex(qs[0], ks[0], vs[0], block_mask=bm, enable_gqa=True)
            torch.cuda.synchronize()
            results["FlexAttention"] = (time_graph(lambda i: flex(qs[i % nset], ks[i % nset], vs[i % nset],
                                                                  block_mask=bm, enable_gqa=True)), r)
        except Exception as e:
            results["FlexAttention"] = (None, str(e).splitlines()[0][:60])

        for label, (us, r) in results.items():
            if us is None:
                print("| %s | %s | - | - | %s |" % (name, label, r))
                out.append({"case": name, "contender": label, "error": r})
                continue
            gbs = read / (us * 1e-6) / 1e9
            err = relerr(r, base)
            print("| %s | %s | %.1f | %.0f | %.1e |" % (name, label, us, gbs, err))
            out.append({"case": name, "contender": label, "us": us, "gbs": gbs, "relerr": err,
                        "batch": B, "lq": LQ, "lk": LK, "heads": H, "kv_heads": HK, "head_dim": D})
        sys.stdout.flush()
        del plan, kern, ctx, qs, ks, vs
        torch.cuda.empty_cache()
    path = os.path.join(os.environ.get("OUT", "."), "bench_decode.json")
    with open(path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
