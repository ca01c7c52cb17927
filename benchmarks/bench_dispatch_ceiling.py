"""How fast could any expert dispatch make a training step? Fast, loop and no experts, side by side.

Three torch training steps of one cpu-ladder rung alternate, one step each per round (as
``ladder bench`` does): the fast dispatch, the per-expert loop, and a diagnostic step whose
experts are skipped (routing, its losses and everything else run; each MoE layer's expert
output is zero). The last is what a step would cost if the experts were free, so

    ceiling = loop step / expert-free step

bounds the fast/loop ratio that any expert schedule could reach, and

    experts(d) = step(d) - expert-free step

is what the experts of dispatch d cost per step (its gather, products, GELU and combine,
forward and backward). Ratios are medians of the per-round ratios. For fast/loop = 1.5 the fast
path's experts may cost at most loop / 1.5 - (expert-free step); ``--floor`` times the part of
them no schedule can skip (the expert GEMMs and GELU, warm, alone) against that budget, and
``--profile`` the grouped GEMMs inside real steps.

    python benchmarks/bench_dispatch_ceiling.py --rung w96 --rounds 40 --floor --profile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rung", default="w96", help="cpu-ladder rung (default: w96)")
    ap.add_argument("--rounds", type=int, default=30, help="alternating rounds (default: 30)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps the default")
    ap.add_argument("--floor", action="store_true",
                    help="also time the fast path's expert GEMMs and GELU alone (a lower bound)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile fast steps for the time spent in the grouped expert GEMMs")
    args = ap.parse_args(argv)

    import torch

    from proxy.backends.torch import model as model_torch
    from proxy.diagnostics.bench import paired_ratio
    from proxy.ladder import get_ladder
    from proxy.backends.torch.bench import step_runner

    if args.threads:
        torch.set_num_threads(args.threads)
    rung = get_ladder("cpu").rung(args.rung)

    def skip_experts(h, *args, **kwargs):
        return h * 0.0  # keeps the graph (and the router's gradient through the aux losses)

    def expert_free(step):
        def run():
            with mock.patch.object(model_torch, "dispatch_fast", skip_experts):
                step()
        return run

    runners = {"fast": step_runner(rung.config, dispatch="fast", batch_size=rung.batch_size)[0],
               "loop": step_runner(rung.config, dispatch="loop", batch_size=rung.batch_size)[0]}
    with mock.patch.object(model_torch, "dispatch_fast", skip_experts):  # its warm-up steps too
        step, _ = step_runner(rung.config, dispatch="fast", batch_size=rung.batch_size)
    runners["no experts"] = expert_free(step)
    times = {k: [] for k in runners}
    keys = list(runners)
    for i in range(args.rounds):
        for key in (keys if i % 2 == 0 else keys[::-1]):
            t0 = time.perf_counter()
            runners[key]()
            times[key].append(time.perf_counter() - t0)

    def ratio(a, b):
        return paired_ratio(times[a], times[b])

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{rung.name}, {torch.get_num_threads()} threads, {args.rounds} rounds (medians, ms per step):")
    for k in keys:
        extra = "" if k == "no experts" else f"   experts {med[k] - med['no experts']:6.1f} ms"
        print(f"  {k:10s} {med[k]:6.1f} ms{extra}")
    print(f"  fast/loop {ratio('loop', 'fast'):.2f}x;  ceiling loop/(no experts) "
          f"{ratio('loop', 'no experts'):.2f}x;  fast/(no experts) {ratio('fast', 'no experts'):.2f}x")
    if args.floor:
        # A floor under the fast path's experts: only their grouped GEMMs and GELU, forward and
        # backward, on balanced expert blocks, the same tensors again and again (warm caches,
        # nothing else in between), for every MoE layer of the step. A real step also sorts,
        # gathers, gates and combines, and finds its caches cold.
        import torch.nn.functional as F
        cfg = rung.config
        rows = rung.batch_size * cfg.seq_len * cfg.top_k
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(rows, cfg.d_model, generator=gen, requires_grad=True)
        w_in = torch.randn(cfg.n_experts, cfg.d_model, cfg.d_expert, generator=gen, requires_grad=True)
        w_out = torch.randn(cfg.n_experts, cfg.d_expert, cfg.d_model, generator=gen, requires_grad=True)
        offs = torch.linspace(rows / cfg.n_experts, rows, cfg.n_experts).round().to(torch.int32)
        upstream = torch.randn(rows, cfg.d_model, generator=gen)

        def products_and_gelu():
            y = F.grouped_mm(model_torch.gelu_tanh(F.grouped_mm(x, w_in, offs=offs)), w_out, offs=offs)
            y.backward(upstream)

        floor = []
        for _ in range(max(args.rounds, 10)):
            t0 = time.perf_counter()
            for _ in cfg.moe_layers:
                products_and_gelu()
            floor.append(time.perf_counter() - t0)
        budget = med["loop"] / 1.5 - med["no experts"]
        print(f"  fast path: grouped GEMMs and GELU alone, warm, {statistics.median(floor) * 1e3:.1f} ms per "
              f"step; all its experts may cost {budget:.1f} ms for fast/loop 1.5x")
    if args.profile:
        # The fast path's expert products alone: torch's grouped GEMM (forward and backward),
        # which on the CPU runs one GEMM per expert. The profiler adds a little to each op.
        from torch.profiler import ProfilerActivity, profile
        n = 10
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                runners["fast"]()
        gemm = sum(e.cpu_time_total for e in prof.key_averages() if e.key == "aten::_grouped_mm")
        print(f"  fast path: grouped GEMMs {gemm / n / 1e3:.1f} ms per step (torch.profiler, {n} steps)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
