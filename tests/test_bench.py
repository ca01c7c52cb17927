"""proxy.bench against a scripted backend: interleaving order, medians, ratios and MFU by hand."""

from __future__ import annotations

import types

import pytest

from proxy import bench
from proxy.flops import train_flops_per_token
from proxy.ladder import get_ladder


def _fake_backend(calls: list, step_s: dict[str, list[float]], compile_s: float | None = None):
    queues = {k: list(v) for k, v in step_s.items()}

    def benchmark_steps(config, *, dispatch, batch_size, n_steps, warmup=2, dtype="float32", seed=0):
        if dispatch not in queues:
            raise ValueError(f"dispatch must be one of {tuple(queues)}, got {dispatch!r}")
        calls.append((config.name, dispatch, batch_size, n_steps))
        s = queues[dispatch].pop(0)
        return {"step_s": s, "tokens_per_s": batch_size * config.seq_len / s, "compile_s": compile_s}

    return types.SimpleNamespace(benchmark_steps=benchmark_steps)


@pytest.fixture
def scripted(monkeypatch):
    calls: list = []
    peaks = iter([100e9, 120e9])  # before and after the rungs: the best (120e9) is the peak
    backend = _fake_backend(calls, {"fast": [0.2, 0.1, 0.3], "loop": [0.5, 0.9, 0.4]})
    monkeypatch.setattr(bench, "load_backend", lambda name: backend)
    monkeypatch.setattr(bench, "set_threads", lambda name, n: 2)
    monkeypatch.setattr(bench, "matmul_peak", lambda name, **kw: next(peaks))
    return calls


def test_interleaved_medians_ratio_and_mfu(scripted):
    rung = get_ladder("cpu").rung("w64")
    report = bench.bench_rungs([rung], ("torch",), steps=4, repeats=3)
    # fast, loop, fast, loop, fast, loop: interleaved, never all of one then the other.
    assert [c[1] for c in scripted] == ["fast", "loop"] * 3
    assert all(c[2] == rung.batch_size and c[3] == 4 for c in scripted)
    row = report.rows[0]
    fast, loop = row.timing("fast"), row.timing("loop")
    tokens = rung.batch_size * rung.config.seq_len
    assert fast.step_s == 0.2 and loop.step_s == 0.5                  # medians
    assert fast.samples == (0.2, 0.1, 0.3)
    assert fast.tokens_per_s == pytest.approx(tokens / 0.2)           # median of tokens/s
    assert row.fast_over_loop == pytest.approx((tokens / 0.2) / (tokens / 0.5))  # 2.5
    assert report.peak_flops == {"torch": 120e9}
    assert fast.mfu == pytest.approx(train_flops_per_token(rung.config) * tokens / 0.2 / 120e9)
    table = report.table()
    assert "w64" in table and "2.50x" in table and "120 GFLOP/s" in table
    data = report.to_dict()
    assert data["rows"][0]["fast_over_loop"] == pytest.approx(2.5)


def test_two_backends_are_compared(monkeypatch):
    calls: list = []
    torch_like = _fake_backend(calls, {"fast": [0.2, 0.4], "loop": [0.4, 0.8]})
    jax_like = _fake_backend(calls, {"fast": [0.1, 0.1]}, compile_s=4.0)  # no loop dispatch
    monkeypatch.setattr(bench, "load_backend", {"torch": torch_like, "jax": jax_like}.__getitem__)
    monkeypatch.setattr(bench, "set_threads", lambda name, n: 2)
    monkeypatch.setattr(bench, "matmul_peak", lambda name, **kw: 100e9)
    cpu = get_ladder("cpu")
    report = bench.bench_rungs([cpu.rung("w32"), cpu.rung("w48")], ("torch", "jax"), repeats=1)
    assert [c[1] for c in calls] == ["fast", "loop", "fast", "fast", "loop", "fast"]
    assert report.jax_vs_torch() == {"w32": pytest.approx(2.0), "w48": pytest.approx(4.0)}
    assert report.rows[1].timing("fast").compile_s == 4.0
    assert report.rows[1].fast_over_loop is None and report.rows[0].fast_over_loop == pytest.approx(2.0)
    table = report.table()
    assert "JAX fast step time: w32 2.00x" in table and "jax: no per-expert loop" in table


@pytest.mark.parametrize("kwargs, field", [({"steps": 0}, "steps"), ({"repeats": 0}, "repeats"),
                                          ({"batch_size": -1}, "batch_size")])
def test_bad_arguments_are_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        bench.bench_rungs(get_ladder("cpu").rungs[:1], ("torch",), **kwargs)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="'simulated'"):
        bench.set_threads("simulated", 1)


def test_cpu_clock_differences_two_run_lengths(monkeypatch):
    # A scripted CPU clock: each benchmark_steps call costs 3 s of set-up plus 0.25 s per step
    # (0.5 s for the loop); differencing runs of n and 2n steps must recover the step alone.
    now = [0.0]
    per_step = {"fast": 0.25, "loop": 0.5}

    def benchmark_steps(config, *, dispatch, batch_size, n_steps, warmup=2, dtype="float32", seed=0):
        now[0] += 3.0 + per_step[dispatch] * (n_steps + warmup)
        return {"step_s": 99.0, "tokens_per_s": 1.0, "compile_s": None}

    monkeypatch.setattr(bench, "load_backend", lambda name: types.SimpleNamespace(benchmark_steps=benchmark_steps))
    monkeypatch.setattr(bench, "set_threads", lambda name, n: 1)
    monkeypatch.setattr(bench, "matmul_peak", lambda name, **kw: 50e9)
    monkeypatch.setattr(bench.time, "process_time", lambda: now[0])
    rung = get_ladder("cpu").rung("w32")
    report = bench.bench_rungs([rung], ("torch",), steps=4, repeats=2, clock="cpu", threads=1)
    fast, loop = report.rows[0].timing("fast"), report.rows[0].timing("loop")
    assert fast.step_s == pytest.approx(0.25) and loop.step_s == pytest.approx(0.5)
    assert fast.tokens_per_s == pytest.approx(rung.batch_size * rung.config.seq_len / 0.25)
    assert report.rows[0].fast_over_loop == pytest.approx(2.0)
    assert "cpu clock" in report.table()
    with pytest.raises(ValueError, match="clock"):
        bench.bench_rungs([rung], ("torch",), clock="gpu")


def test_moe_layer_times_bound_and_share(monkeypatch):
    # A backend that also times one MoE layer: its medians, the layer's loop/fast ratio and the
    # MoE share of the fast step follow by hand from the scripted seconds.
    calls: list = []
    backend = _fake_backend(calls, {"fast": [0.2, 0.1, 0.3], "loop": [0.5, 0.9, 0.4]})
    layer_s = {"fast": [0.02, 0.03, 0.01], "loop": [0.05, 0.04, 0.06]}

    def benchmark_moe_layer(config, *, dispatch, batch_size, n_repeats, warmup=2, dtype="float32",
                            seed=0, clock="wall"):
        calls.append((config.name, f"layer-{dispatch}", batch_size, n_repeats))
        return layer_s[dispatch].pop(0)

    backend.benchmark_moe_layer = benchmark_moe_layer
    monkeypatch.setattr(bench, "load_backend", lambda name: backend)
    monkeypatch.setattr(bench, "set_threads", lambda name, n: 2)
    monkeypatch.setattr(bench, "matmul_peak", lambda name, **kw: 100e9)
    rung = get_ladder("cpu").rung("w64")
    report = bench.bench_rungs([rung], ("torch",), steps=4, repeats=3)
    # The layer is timed next to each step measurement, so it is interleaved too.
    assert [c[1] for c in calls] == ["layer-fast", "fast", "layer-loop", "loop"] * 3
    row = report.rows[0]
    assert row.n_moe_layers == rung.config.n_layers == 4          # every CPU-rung block is MoE
    assert row.timing("fast").moe_layer_s == 0.02 and row.timing("loop").moe_layer_s == 0.05
    assert row.moe_fast_over_loop == pytest.approx(2.5)
    assert row.moe_share("fast") == pytest.approx(4 * 0.02 / 0.2)
    assert "2.50x" in report.table() and "40%" in report.table() and "diluted" in report.table()
    assert report.to_dict()["rows"][0]["moe_share_fast"] == pytest.approx(0.4)


def test_backend_without_a_layer_timer_leaves_the_columns_empty(scripted):
    report = bench.bench_rungs([get_ladder("cpu").rung("w32")], ("torch",), repeats=3)
    row = report.rows[0]
    assert row.moe_fast_over_loop is None and row.moe_share("fast") is None
    assert "diluted" not in report.table()
