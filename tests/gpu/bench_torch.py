#!/usr/bin/env python3
"""bench_torch.py: the cases of `hattn bench --backend cuda` with PyTorch on
the same machine, for comparison in the same run.

GPU (default): bf16, head dim 128, lq = lk = S, [B, H, S, D] inputs, the same
batch x heads as hattn bench (256k / S unless --batch-heads), for
  dense, causal                       SDPA flash backend, SDPA cuDNN backend,
                                      FlexAttention
  causal & window(W)                  FlexAttention
  causal & (window(W) | sink(G))      FlexAttention
  document (docs of DOC) & causal     FlexAttention
FlexAttention runs torch.compile(flex_attention) with a block mask built by
create_block_mask outside the timed region.  Times are CUDA events around one
call, the median of --reps runs after warm-up; inputs under 100 MB are
rotated among copies so that the 50 MB L2 holds none of them.  TFLOP/s count
4 * D per visible (query, key) pair, counted exactly in closed form.

CPU (--cpu): fp32 SDPA (dense, causal) and FlexAttention on the CPU (causal &
window(W)) at S = 4k, D = 128, batch 1, 16 heads; GFLOP/s.

Any case that fails prints "error: ..." in its row and the script goes on.
"""
import argparse
import math
import statistics
import sys
import time
import traceback


def parse_len(s):
    s = s.strip().lower()
    mult = 1
    if s.endswith("k"):
        mult, s = 1024, s[:-1]
    elif s.endswith("m"):
        mult, s = 1024 * 1024, s[:-1]
    return int(s) * mult


# ---- visible pairs, exactly (lq = lk = S; qpos = q, kpos = k) ----------------

def pairs_dense(S):
    return S * S


def pairs_causal(S):
    return S * (S + 1) // 2


def pairs_window(S, W):
    # keys k <= q with q - k < W: min(q + 1, W) per row
    if S <= W:
        return S * (S + 1) // 2
    return W * (W + 1) // 2 + (S - W) * W


def pairs_window_sink(S, W, G):
    # the window's keys, plus sink keys k < G that lie before the window
    # (k <= q - W): max(0, min(G, q - W + 1)) per row
    extra = 0
    # rows q in [W, W + G - 1] add q - W + 1; rows q >= W + G - 1 add G
    hi = min(S - 1, W + G - 2)
    if hi >= W:
        m = hi - W + 1
        extra += m * (m + 1) // 2
    rows_full = S - max(W + G - 1, W)
    if rows_full > 0:
        extra += rows_full * G
    return pairs_window(S, W) + extra


def pairs_document(S, doc):
    total, pos = 0, 0
    while pos < S:
        n = min(doc, S - pos)
        total += n * (n + 1) // 2
        pos += n
    return total


def check_pairs():
    """Brute-force check of the closed forms on small sizes."""
    for S in (1, 5, 17, 40):
        for W in (1, 3, 8, 50):
            for G in (1, 2, 7):
                n = sum(1 for q in range(S) for k in range(q + 1) if q - k < W or k < G)
                assert n == pairs_window_sink(S, W, G), (S, W, G)
            n = sum(1 for q in range(S) for k in range(q + 1) if q - k < W)
            assert n == pairs_window(S, W)
        for d in (1, 4, 16):
            n = sum(1 for q in range(S) for k in range(q + 1) if q // d == k // d)
            assert n == pairs_document(S, d)


# ---- timing ------------------------------------------------------------------

def time_cuda(torch, fn, sets, warmup, reps):
    """Median milliseconds of fn(*set), one call per timed run, rotating sets."""
    for i in range(warmup):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    times = []
    for r in range(reps):
        args = sets[r % len(sets)]
        start.record()
        fn(*args)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def time_cpu(fn, args, warmup, reps):
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def short_error(e):
    msg = "%s: %s" % (type(e).__name__, e)
    msg = " ".join(msg.split())
    return msg[:300]


# ---- the GPU section ---------------------------------------------------------

def gpu_section(args, torch):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention)
    except Exception as e:  # FlexAttention missing
        flex, create_block_mask = None, None
        flex_error = short_error(e)

    dev = torch.device("cuda")
    D, W, G, DOC = args.head_dim, args.window, args.sink, args.doc
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    print("bench_torch: PyTorch %s, %s, %s, head_dim %d, lq = lk, median of %d runs after %d warm-up runs\n"
          % (torch.__version__, torch.cuda.get_device_name(0), args.dtype, D, args.reps, args.warmup))
    print("| pattern | S | B x H | implementation | ms | TFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    sys.stdout.flush()

    seqlens = [parse_len(s) for s in args.seqlen.split(",")]
    bhs = [parse_len(s) for s in args.batch_heads.split(",")] if args.batch_heads else []
    for si, S in enumerate(seqlens):
        BH = bhs[si] if si < len(bhs) else max(1, 262144 // S)
        H = 16 if BH % 16 == 0 else BH
        B = BH // H
        set_bytes = 4 * B * H * S * D * 2
        nsets = 1 if set_bytes >= (100 << 20) else min(64, -(-(100 << 20) // set_bytes))
        sets = []
        try:
            g = torch.Generator(device=dev)
            g.manual_seed(12345)
            for _ in range(nsets):
                q, k, v = (torch.rand(B, H, S, D, device=dev, dtype=torch.float32, generator=g) * 2 - 1
                           for _ in range(3))
                sets.append((q.to(dtype), k.to(dtype), v.to(dtype)))
                del q, k, v
        except Exception as e:
            print("| (inputs) | %d | %dx%d | - | error: %s | |" % (S, B, H, short_error(e)))
            continue
        doc_id = (torch.arange(S, device=dev) // DOC).to(torch.int32)

        def causal(b, h, q_idx, kv_idx):
            return q_idx >= kv_idx

        def window(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (q_idx - kv_idx < W)

        def window_sink(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & ((q_idx - kv_idx < W) | (kv_idx < G))

        def document(b, h, q_idx, kv_idx):
            return (doc_id[q_idx] == doc_id[kv_idx]) & (q_idx >= kv_idx)

        cases = [
            ("dense", pairs_dense(S), None, False),
            ("causal", pairs_causal(S), causal, True),
            ("causal & window(%d)" % W, pairs_window(S, W), window, None),
            ("causal & (window(%d) | sink(%d))" % (W, G), pairs_window_sink(S, W, G), window_sink, None),
            ("document & causal, docs of %d" % DOC, pairs_document(S, DOC), document, None),
        ]
        for name, pairs, mask_mod, is_causal in cases:
            flops = 4.0 * D * pairs * BH
            impls = []
            if is_causal is not None:
                for label, backend in (("SDPA flash", SDPBackend.FLASH_ATTENTION),
                                       ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)):
                    def run(q, k, v, backend=backend, is_causal=is_causal):
                        with sdpa_kernel(backend):
                            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
                    impls.append((label, run, None))
            impls.append(("FlexAttention", None, mask_mod))
            for label, run, mm in impls:
                try:
                    if label == "FlexAttention":
                        if flex is None:
                            raise RuntimeError(flex_error)
                        bm = None
                        if mm is not None:
                            bm = create_block_mask(mm, B=None, H=None, Q_LEN=S, KV_LEN=S, device=dev)

                        def run(q, k, v, bm=bm):
                            return flex(q, k, v, block_mask=bm)
                    ms = time_cuda(torch, run, sets, args.warmup, args.reps)
                    print("| %s | %d | %dx%d | %s | %.3f | %.1f |" % (name, S, B, H, label, ms, flops / (ms * 1e-3) / 1e12))
                except Exception as e:
                    if args.verbose:
                        traceback.print_exc()
                    print("| %s | %d | %dx%d | %s | error: %s | |" % (name, S, B, H, label, short_error(e)))
                    try:
                        torch.cuda.synchronize()
                    except Exception:
                        pass
                sys.stdout.flush()
        del sets
        torch.cuda.empty_cache()
    print("\nTFLOP/s count 4 * head_dim per visible (query, key) pair, counted in closed form.  SDPA's\n"
          "is_causal is top-left aligned, the same as hattn's causal at lq == lk.")


# ---- the CPU section ---------------------------------------------------------

def cpu_section(args, torch):
    import torch.nn.functional as F
    S, D, B, H, W = 4096, 128, 1, 16, args.window
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    print("bench_torch --cpu: PyTorch %s on the CPU, %d threads, fp32, S %d, head_dim %d, batch %d, %d heads, "
          "median of %d runs after 1 warm-up run\n" % (torch.__version__, torch.get_num_threads(), S, D, B, H,
                                                       args.cpu_reps))
    print("| pattern | S | implementation | ms | GFLOP/s |")
    print("| --- | --- | --- | --- | --- |")
    sys.stdout.flush()
    g = torch.Generator()
    g.manual_seed(12345)
    q, k, v = (torch.rand(B, H, S, D, generator=g) * 2 - 1 for _ in range(3))

    def sdpa(is_causal):
        return lambda q_, k_, v_: F.scaled_dot_product_attention(q_, k_, v_, is_causal=is_causal)

    def flex_window():
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention)

        def window(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (q_idx - kv_idx < W)
        bm = create_block_mask(window, B=None, H=None, Q_LEN=S, KV_LEN=S, device="cpu")
        return lambda q_, k_, v_: flex(q_, k_, v_, block_mask=bm)

    cases = [("dense", pairs_dense(S), "SDPA", lambda: sdpa(False)),
             ("causal", pairs_causal(S), "SDPA", lambda: sdpa(True)),
             ("causal & window(%d)" % W, pairs_window(S, W), "FlexAttention", flex_window)]
    for name, pairs, label, make in cases:
        flops = 4.0 * D * pairs * B * H
        try:
            fn = make()
            ms = time_cpu(fn, (q, k, v), 1, args.cpu_reps)
            print("| %s | %d | %s | %.1f | %.1f |" % (name, S, label, ms, flops / (ms * 1e-3) / 1e9))
        except Exception as e:
            if args.verbose:
                traceback.print_exc()
            print("| %s | %d | %s | error: %s | |" % (name, S, label, short_error(e)))
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqlen", default="4k,16k", help="sequence lengths (default 4k,16k)")
    ap.add_argument("--batch-heads", default=None, help="batch x heads per length (default 256k / S)")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--window", type=lambda s: parse_len(s), default=1024)
    ap.add_argument("--sink", type=lambda s: parse_len(s), default=64)
    ap.add_argument("--doc", type=lambda s: parse_len(s), default=1024)
    ap.add_argument("--cpu", action="store_true", help="run the CPU section instead of the GPU one")
    ap.add_argument("--cpu-threads", type=int, default=0)
    ap.add_argument("--cpu-reps", type=int, default=5)
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failed cases")
    args = ap.parse_args()
    check_pairs()
    try:
        import torch
    except Exception as e:
        print("error: cannot import torch: %s" % short_error(e))
        return 1
    # Every (pattern, shape) compiles FlexAttention anew: allow more than
    # dynamo's default of 8 recompilations, or later cases fall back to
    # the unfused implementation.
    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 1024)
    if args.cpu:
        cpu_section(args, torch)
        return 0
    if not torch.cuda.is_available():
        print("error: torch sees no CUDA device (use --cpu for the CPU section)")
        return 1
    gpu_section(args, torch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
