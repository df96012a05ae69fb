#!/usr/bin/env python3
"""bench_torch.py --cpu: PyTorch on the CPU beside `hattn bench --backend cpu`,
for comparison in the same run.

fp32 SDPA (dense, causal) and FlexAttention (causal & window(W)) on the CPU
at S = 4k, D = 128, batch 1, 16 heads; wall time of one call (the CPU runs
synchronously), median of --cpu-reps runs after one warm-up; GFLOP/s at
4 * D per visible (query, key) pair, counted in closed form.

The GPU comparison is tests/gpu/bench_prefill.py: this script's former GPU
section timed one call per synchronisation, which charged FlexAttention's
host launch cost to its kernel, and was removed.

Any case that fails prints "error: ..." in its row and the script goes on.
"""
import argparse
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
    ap.add_argument("--window", type=lambda s: parse_len(s), default=1024)
    ap.add_argument("--cpu", action="store_true", help="the CPU section (required: the GPU one is bench_prefill.py)")
    ap.add_argument("--cpu-threads", type=int, default=0)
    ap.add_argument("--cpu-reps", type=int, default=5)
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failed cases")
    args = ap.parse_args()
    if not args.cpu:
        print("error: bench_torch.py has only the CPU section (--cpu); the GPU comparison is tests/gpu/bench_prefill.py")
        return 1
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
    cpu_section(args, torch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
