"""How fast could any expert dispatch make a training step? Fast, loop and no experts, side by side.

Three torch training steps of one cpu-ladder rung alternate, one step each per round (as
``ladder bench`` does): the fast dispatch, the per-expert loop, and a diagnostic step whose
experts are skipped (routing, its losses and everything else run; each MoE layer's expert
output is zero). The last is what a step would cost if the experts were free, so

    ceiling = loop step / expert-free step

bounds the fast/loop ratio that any expert schedule could reach, and

    experts(d) = step(d) - expert-free step

is what the experts of dispatch d cost per step (its gather, products, GELU and combine,
forward and backward). Ratios are medians of the per-round ratios.

    python benchmarks/bench_dispatch_ceiling.py --rung w96 --rounds 30 --profile
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
    ap.add_argument("--profile", action="store_true",
                    help="also profile fast steps for the time spent in the grouped expert GEMMs")
    args = ap.parse_args(argv)

    import torch

    from proxy import model_torch
    from proxy.ladder import get_ladder
    from proxy.train_torch import step_runner

    if args.threads:
        torch.set_num_threads(args.threads)
    rung = get_ladder("cpu").rung(args.rung)

    def skip_experts(h, *args, **kwargs):
        return h * 0.0  # keeps the graph (and the router's gradient through the aux losses)

    def expert_free(step):
        def run():
            with mock.patch.object(model_torch, "dispatch_sorted", skip_experts):
                step()
        return run

    runners = {"fast": step_runner(rung.config, dispatch="fast", batch_size=rung.batch_size)[0],
               "loop": step_runner(rung.config, dispatch="loop", batch_size=rung.batch_size)[0]}
    with mock.patch.object(model_torch, "dispatch_sorted", skip_experts):  # its warm-up steps too
        step, _ = step_runner(rung.config, dispatch="sorted", batch_size=rung.batch_size)
    runners["no experts"] = expert_free(step)
    times = {k: [] for k in runners}
    keys = list(runners)
    for i in range(args.rounds):
        for key in (keys if i % 2 == 0 else keys[::-1]):
            t0 = time.perf_counter()
            runners[key]()
            times[key].append(time.perf_counter() - t0)

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{rung.name}, {torch.get_num_threads()} threads, {args.rounds} rounds (medians, ms per step):")
    for k in keys:
        extra = "" if k == "no experts" else f"   experts {med[k] - med['no experts']:6.1f} ms"
        print(f"  {k:10s} {med[k]:6.1f} ms{extra}")
    print(f"  fast/loop {ratio('loop', 'fast'):.2f}x;  ceiling loop/(no experts) "
          f"{ratio('loop', 'no experts'):.2f}x;  fast/(no experts) {ratio('fast', 'no experts'):.2f}x")
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
