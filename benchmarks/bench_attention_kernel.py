"""torch's scaled-dot-product attention kernels on the cpu ladder's training step: the default
(flash attention for the CPU) against the plain math kernel, alternating single steps.

Usage: python benchmarks/bench_attention_kernel.py --rungs w16 w32 w128 [--rounds 40]
One thread; prints each kernel's median step time and the median of the per-round ratios
(default / math: < 1 means the default kernel is faster). Measured on two cores (one thread):
w16 21.0 / 24.7 ms (0.84x), w32 32.6 / 40.0 ms (0.82x), w128 118.3 / 145.8 ms (0.79x): at head
size 16 the flash kernel's per-call cost is still below the math path's extra ops, so the model
keeps the default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rungs", nargs="+", default=["w16", "w32", "w128"], help="rungs of the cpu ladder")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # before torch is imported

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from proxy.backends.torch.bench import step_runner
    from proxy.ladder import get_ladder

    torch.set_num_threads(1)
    for name in args.rungs:
        rung = get_ladder("cpu").rung(name)
        default, _ = step_runner(rung.config, dispatch="fast", batch_size=rung.batch_size)
        math_step, _ = step_runner(rung.config, dispatch="fast", batch_size=rung.batch_size)
        times: dict[str, list[float]] = {"default": [], "math": []}
        for i in range(args.rounds):
            for kind in (("default", "math") if i % 2 == 0 else ("math", "default")):
                t0 = time.perf_counter()
                if kind == "default":
                    default()
                else:
                    with sdpa_kernel([SDPBackend.MATH]):
                        math_step()
                times[kind].append(time.perf_counter() - t0)
        ratio = statistics.median(d / m for d, m in zip(times["default"], times["math"]))
        print(f"{name}: default {1e3 * statistics.median(times['default']):.1f} ms, "
              f"math {1e3 * statistics.median(times['math']):.1f} ms, default/math {ratio:.2f}x", flush=True)


if __name__ == "__main__":
    main()
