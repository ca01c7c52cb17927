"""The prepared accelerator check: one command that, on whatever accelerator it finds, trains,
times and sizes the ``gpu`` ladder's proxies, and writes one JSON of its figures.

Usage:
    python benchmarks/accelerator_check.py --out DIR            # on a GPU or TPU machine
    python benchmarks/accelerator_check.py --out DIR --reduced  # anywhere: tiny rungs, a few steps

What it does (each part is skipped, with the reason in the JSON, where a framework is missing):

1. parity: a ``gpu`` rung (``w512-l8``; reduced: ``cpu`` w16) trained for ``--steps`` steps in
   bf16 from the same weights and batches in torch and in JAX; the loss curves' largest
   relative difference (bf16 holds them to ~1e-2; ``tests/test_precision_devices.py``);
2. peak: a bf16 matmul's sustained FLOP/s (8192^3; reduced: 1024^3), the MFU denominator;
3. steps: for the three smallest ``gpu`` rungs (reduced: ``cpu`` w16 and w24), the memory plan
   (``proxy.backends.memory``: micro-batches, checkpointing), the median time of a full
   optimiser step at the preset batch in each framework, tokens/s and MFU
   (``proxy.flops.train_flops`` of the step's tokens / time / peak), and the peak memory the
   step allocated (torch) against the plan's estimate: the check that the preset batch does not
   run out of memory;
4. grouped: torch's step with the grouped-GEMM dispatch against the per-expert loop
   (``dispatch="loop"``), alternating steps; the ratio.

Targets, from the issue this check serves (a benchmark, not a test): at least 40% MFU in bf16
at w1024-l12 on an H100, and JAX's step within 1.2x of torch's. ``tests/test_accelerator_check``
runs the reduced mode on the CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from proxy.backends.memory import activation_bytes_per_token, plan_memory, static_bytes  # noqa: E402
from proxy.flops import param_counts, train_flops  # noqa: E402
from proxy.hparams import TrainHParams, lr_at  # noqa: E402
from proxy.init import init_params  # noqa: E402
from proxy.ladder import get_ladder  # noqa: E402


def _median_time(step: Callable[[], None], sync: Callable[[], None], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _batch(config: Any, batch_size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab_size, (batch_size, config.seq_len + 1))


# torch ------------------------------------------------------------------------------------------
def torch_parts() -> dict[str, Any] | None:
    try:
        import torch

        from proxy.backends.torch import trainer as TT
        from proxy.backends.torch.device import compute_dtype, numerics, resolve_device
        from proxy.backends.torch.model import TorchMoEModel
    except ImportError:
        return None
    return dict(torch=torch, TT=TT, compute_dtype=compute_dtype, numerics=numerics,
                resolve_device=resolve_device, Model=TorchMoEModel)


def torch_step(t: dict, config: Any, batch_size: int, precision: str, micro: int, ckpt: bool,
               dispatch: str = "fast") -> tuple[Callable[[], None], Callable[[], None], Any]:
    torch = t["torch"]
    dev = t["resolve_device"]("auto")
    hp = TrainHParams(lr=1e-4, batch_size=batch_size)
    model = t["Model"](config, dispatch=dispatch, params=init_params(config, 0),
                       compute_dtype=t["compute_dtype"](precision, torch.float32), checkpoint=ckpt).to(dev)
    opt = t["TT"].build_optimizer(model, hp)
    batch = torch.as_tensor(_batch(config, batch_size, 0)).to(dev)
    counter = iter(range(10 ** 9))

    def step() -> None:
        loss, counts = t["TT"].accumulate_gradients(model, batch, hp, micro)
        t["TT"].apply_update(model, opt, counts, next(counter), 10 ** 6, hp)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return step, sync, dev


# jax ---------------------------------------------------------------------------------------------
def jax_parts() -> dict[str, Any] | None:
    try:
        import jax

        from proxy.backends.jax import trainer as TJ
        from proxy.backends.jax.device import placed
    except ImportError:
        return None
    return dict(jax=jax, TJ=TJ, placed=placed)


def jax_step(j: dict, config: Any, batch_size: int, precision: str, micro: int, ckpt: bool
             ) -> tuple[Callable[[], None], Callable[[], None]]:
    TJ = j["TJ"]
    hp = TrainHParams(lr=1e-4, batch_size=batch_size)
    state = list(TJ.init_state(config, hp, 0, "float32", init_params(config, 0)))
    fn = TJ.compiled_step(config, "fast", precision, micro, ckpt)
    batch = j["jax"].device_put(np.asarray(_batch(config, batch_size, 0), np.int32))
    inputs = TJ.hp_inputs(hp, config, hp.lr)
    last: list[Any] = [None]

    def step() -> None:
        params, buffers, opt, loss, _ = fn(*state, batch, inputs)
        state[:] = [params, buffers, opt]
        last[0] = loss

    def sync() -> None:
        if last[0] is not None:
            last[0].block_until_ready()

    return step, sync


# the parts of the check -------------------------------------------------------------------------
def parity(t: dict | None, j: dict | None, config: Any, batch_size: int, steps: int) -> dict[str, Any]:
    if t is None or j is None:
        return {"skipped": "needs both torch and jax"}
    hp = TrainHParams(lr=3e-4, batch_size=batch_size, tokens=steps * batch_size * config.seq_len,
                      log_points=steps)
    batches = [_batch(config, batch_size, s) for s in range(steps)]
    weights = init_params(config, 1)
    out = {}
    for name, trainer in (("torch", t["TT"]), ("jax", j["TJ"])):
        r = trainer.train(config, hp, None, 0, init_params=weights, batches=batches, precision="bf16",
                          micro_batches="auto", checkpoint="auto")
        out[name] = [v for _, v in r.loss_curve]
    a, b = np.asarray(out["torch"]), np.asarray(out["jax"])
    return {"rung": config.name, "steps": steps, "torch_losses": out["torch"], "jax_losses": out["jax"],
            "max_rel_diff": float(np.max(np.abs(a - b)) / np.max(np.abs(a)))}


def matmul_peak(t: dict | None, j: dict | None, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n}
    if t is not None:
        torch = t["torch"]
        dev = t["resolve_device"]("auto")
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        s = _median_time(lambda: a @ b, sync, 2, 5)
        out["torch_bf16_flops"] = 2 * n ** 3 / s
        out["device"] = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    if j is not None:
        jnp = j["jax"].numpy
        a = jnp.ones((n, n), jnp.bfloat16)
        mm = j["jax"].jit(lambda x: x @ x)
        holder: list[Any] = [mm(a)]
        s = _median_time(lambda: holder.__setitem__(0, mm(a)), lambda: holder[0].block_until_ready(), 2, 5)
        out["jax_bf16_flops"] = 2 * n ** 3 / s
        out["jax_backend"] = j["jax"].default_backend()
    return out


def device_memory(t: dict | None) -> float | None:
    if t is None:
        return None
    dev = t["resolve_device"]("auto")
    return float(t["torch"].cuda.get_device_properties(dev).total_memory) if dev.type == "cuda" else None


def rung_steps(t: dict | None, j: dict | None, rung: Any, batch_size: int, peak: float | None,
               memory: float | None, repeats: int) -> dict[str, Any]:
    config = rung.config
    # The host has no memory plan (its memory is the machine's): one micro-batch there.
    plan = plan_memory(config, batch_size, memory, "bf16") if memory else None
    micro, ckpt = (plan.micro_batches, plan.checkpoint) if plan else (1, False)
    flops = train_flops(config, batch_size * config.seq_len)
    row: dict[str, Any] = {"rung": rung.name, "params_total": param_counts(config).total,
                           "batch_size": batch_size, "micro_batches": micro, "checkpoint": ckpt,
                           "plan": plan.summary() if plan else "host memory: no plan",
                           "estimated_bytes": static_bytes(config, "bf16")
                           + activation_bytes_per_token(config, "bf16", checkpoint=ckpt)
                           * config.seq_len * batch_size / micro}
    if t is not None:
        torch = t["torch"]
        step, sync, dev = torch_step(t, config, batch_size, "bf16", micro, ckpt)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        with t["numerics"](dev, "bf16"):
            s = _median_time(step, sync, 2, repeats)
        row["torch_step_s"] = s
        if dev.type == "cuda":
            row["torch_peak_bytes"] = float(torch.cuda.max_memory_allocated(dev))
    if j is not None:
        step, sync = jax_step(j, config, batch_size, "bf16", micro, ckpt)
        row["jax_step_s"] = _median_time(step, sync, 2, repeats)
    for fw in ("torch", "jax"):
        if f"{fw}_step_s" in row:
            row[f"{fw}_tokens_per_s"] = batch_size * config.seq_len / row[f"{fw}_step_s"]
            if peak:
                row[f"{fw}_mfu"] = flops / row[f"{fw}_step_s"] / peak
    if "torch_step_s" in row and "jax_step_s" in row:
        row["jax_over_torch"] = row["jax_step_s"] / row["torch_step_s"]
    return row


def grouped_vs_loop(t: dict | None, rung: Any, batch_size: int, rounds: int) -> dict[str, Any]:
    if t is None:
        return {"skipped": "needs torch"}
    fast, sync, dev = torch_step(t, rung.config, batch_size, "bf16", 1, False, "fast")
    loop, _, _ = torch_step(t, rung.config, batch_size, "bf16", 1, False, "loop")
    times: dict[str, list[float]] = {"fast": [], "loop": []}
    with t["numerics"](dev, "bf16"):
        for f in (fast, loop, fast, loop):
            f()
        sync()
        for i in range(rounds):   # alternating pairs: the machine's drift hits both alike
            for name in (("fast", "loop") if i % 2 == 0 else ("loop", "fast")):
                start = time.perf_counter()
                (fast if name == "fast" else loop)()
                sync()
                times[name].append(time.perf_counter() - start)
    ratios = [lo / fa for fa, lo in zip(times["fast"], times["loop"])]
    return {"rung": rung.name, "batch_size": batch_size, "fast_step_s": statistics.median(times["fast"]),
            "loop_step_s": statistics.median(times["loop"]), "loop_over_fast": statistics.median(ratios)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for accelerator_check.json")
    parser.add_argument("--reduced", action="store_true",
                        help="tiny rungs and a few steps (the CPU mode the test suite runs)")
    parser.add_argument("--steps", type=int, default=0, help="parity steps (default 30; reduced 4)")
    args = parser.parse_args(argv)
    t, j = torch_parts(), jax_parts()
    reduced = args.reduced
    steps = args.steps or (4 if reduced else 30)
    if reduced:
        cpu = get_ladder("cpu")
        rungs, parity_rung, batch = [cpu.rung(n) for n in ("w16", "w24")], cpu.rung("w16"), 4
    else:
        gpu = get_ladder("gpu")
        rungs, parity_rung, batch = list(gpu.rungs[:3]), gpu.rung("w512-l8"), None
    result: dict[str, Any] = {"reduced": reduced, "python": platform.python_version(),
                              "torch": None if t is None else t["torch"].__version__,
                              "jax": None if j is None else j["jax"].__version__}
    print("parity ...", file=sys.stderr)
    result["parity"] = parity(t, j, parity_rung.config, batch or 8, steps)
    print("matmul peak ...", file=sys.stderr)
    result["peak"] = matmul_peak(t, j, 1024 if reduced else 8192)
    peak = result["peak"].get("torch_bf16_flops") or result["peak"].get("jax_bf16_flops")
    memory = device_memory(t)
    result["device_memory_bytes"] = memory
    result["steps"] = []
    for rung in rungs:
        print(f"steps {rung.name} ...", file=sys.stderr)
        result["steps"].append(rung_steps(t, j, rung, batch or rung.batch_size, peak, memory, 2 if reduced else 10))
    print("grouped vs loop ...", file=sys.stderr)
    result["grouped_vs_loop"] = grouped_vs_loop(t, rungs[0], batch or 32, 2 if reduced else 20)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "accelerator_check.json").write_text(json.dumps(result, indent=2))
    for row in result["steps"]:
        mfu = ", ".join(f"{fw} {row[f'{fw}_mfu']:.1%}" for fw in ("torch", "jax") if f"{fw}_mfu" in row)
        print(f"{row['rung']}: {row['plan']}; MFU {mfu or 'n/a'}", file=sys.stderr)
    print(f"wrote {out / 'accelerator_check.json'}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
