"""proxy.diagnostics.bench against a scripted backend and clock: alternation order, medians, paired ratios and
MFU by hand."""

from __future__ import annotations

import types

import pytest

from proxy.diagnostics import bench
from proxy.flops import train_flops_per_token
from proxy.ladder import get_ladder


class FakeClock:
    """A clock the scripted steps advance: perf_counter and process_time both read it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fake_backend(calls: list, clock: FakeClock, step_s: dict[str, list[float]],
                  compile_s: float | dict[str, float] | None = None, layer_s: dict[str, list[float]] | None = None):
    """A backend whose steps (and MoE layers) take scripted seconds of ``clock``'s time."""
    queues = {k: list(v) for k, v in step_s.items()}
    layer_queues = {k: list(v) for k, v in (layer_s or {}).items()}

    def step_runner(config, *, dispatch, batch_size, warmup=2, dtype="float32", seed=0):
        if dispatch not in queues:
            raise ValueError(f"dispatch must be one of {tuple(queues)}, got {dispatch!r}")
        calls.append(("setup", config.name, dispatch, batch_size, warmup))

        def step():
            calls.append(("step", config.name, dispatch))
            clock.now += queues[dispatch].pop(0)

        compiled = compile_s.get(dispatch) if isinstance(compile_s, dict) else compile_s
        return step, {"compile_s": compiled, "resolved_dispatch": dispatch}

    backend = types.SimpleNamespace(step_runner=step_runner)
    if layer_s is not None:
        def moe_layer_runner(config, *, dispatch, batch_size, warmup=2, dtype="float32", seed=0):
            def once():
                calls.append(("layer", config.name, dispatch))
                clock.now += layer_queues[dispatch].pop(0)
            return once
        backend.moe_layer_runner = moe_layer_runner
    return backend


def _install(monkeypatch, backends, clock, peaks=(100e9, 120e9)):
    peak_values = iter(peaks)  # before and after the rungs: the best is the peak
    monkeypatch.setattr(bench, "load_backend", backends.__getitem__)
    monkeypatch.setattr(bench, "set_threads", lambda name, n: 2)
    monkeypatch.setattr(bench, "matmul_peak", lambda name, **kw: next(peak_values))
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    monkeypatch.setattr(bench.time, "process_time", clock)


FAST = [0.2, 0.1, 0.3, 0.2, 0.4, 0.1]
LOOP = [0.5, 0.9, 0.4, 0.3, 0.8, 0.6]


@pytest.fixture
def scripted(monkeypatch):
    calls: list = []
    clock = FakeClock()
    _install(monkeypatch, {"torch": _fake_backend(calls, clock, {"fast": FAST, "loop": LOOP})}, clock)
    return calls


def test_alternating_single_steps_medians_paired_ratio_and_mfu(scripted):
    rung = get_ladder("cpu").rung("w64")
    report = bench.bench_rungs([rung], ("torch",), steps=3, repeats=2, warmup=1)
    # Each repetition sets up fresh runners, then alternates single steps, the order flipping
    # each round, so neither dispatch always goes first.
    one_rep = ([("setup", "cpu-w64", "fast", rung.batch_size, 1), ("setup", "cpu-w64", "loop", rung.batch_size, 1)]
               + [("step", "cpu-w64", d) for d in ("fast", "loop", "loop", "fast", "fast", "loop")])
    assert scripted == one_rep * 2
    row = report.rows[0]
    fast, loop = row.timing("fast"), row.timing("loop")
    tokens = rung.batch_size * rung.config.seq_len
    assert fast.samples == pytest.approx(tuple(FAST)) and loop.samples == pytest.approx(tuple(LOOP))
    assert fast.step_s == pytest.approx(0.2) and loop.step_s == pytest.approx(0.55)   # medians
    assert fast.tokens_per_s == pytest.approx(tokens / 0.2)
    # The median of the per-round ratios (2.5, 9, 1.33, 1.5, 2, 6), not the ratio of the
    # medians (2.75): a slow round slows both sides of its pair.
    assert row.fast_over_loop == pytest.approx(2.25)
    assert report.peak_flops == {"torch": 120e9}
    assert fast.mfu == pytest.approx(train_flops_per_token(rung.config) * tokens / 0.2 / 120e9)
    table = report.table()
    assert "w64" in table and "2.25x" in table and "120 GFLOP/s" in table and "3 rounds x 2" in table
    assert report.to_dict()["rows"][0]["fast_over_loop"] == pytest.approx(2.25)


def test_paired_ratio_needs_matching_samples():
    assert bench.paired_ratio([2.0, 9.0, 4.0], [1.0, 3.0, 1.0]) == 3.0
    with pytest.raises(ValueError, match="paired"):
        bench.paired_ratio([1.0], [1.0, 2.0])


def test_two_backends_are_compared(monkeypatch):
    calls: list = []
    clock = FakeClock()
    torch_like = _fake_backend(calls, clock, {"fast": [0.2, 0.4, 0.2, 0.4], "loop": [0.4, 0.8, 0.4, 0.8]})
    jax_like = _fake_backend(calls, clock, {"fast": [0.1, 0.1, 0.05, 0.1]}, compile_s=4.0)  # no loop
    _install(monkeypatch, {"torch": torch_like, "jax": jax_like}, clock, peaks=(100e9,) * 4)
    cpu = get_ladder("cpu")
    report = bench.bench_rungs([cpu.rung("w32"), cpu.rung("w48")], ("torch", "jax"), steps=2, repeats=1)
    steps = [c[2] for c in calls if c[0] == "step"]
    assert steps == ["fast", "loop", "fast", "fast", "loop", "fast"] * 2   # torch f, l, jax f; reversed
    assert report.jax_vs_torch() == {"w32": pytest.approx(3.0), "w48": pytest.approx(4.0)}  # medians of (2, 4), (4, 4)
    assert report.rows[1].timing("fast").compile_s == 4.0
    assert report.rows[1].fast_over_loop is None and report.rows[0].fast_over_loop == pytest.approx(2.0)
    table = report.table()
    assert "JAX fast step time: w32 3.00x" in table and "jax: no per-expert loop" in table


@pytest.mark.parametrize("kwargs, field", [({"steps": 0}, "steps"), ({"repeats": 0}, "repeats"),
                                          ({"batch_size": -1}, "batch_size")])
def test_bad_arguments_are_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        bench.bench_rungs(get_ladder("cpu").rungs[:1], ("torch",), **kwargs)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="'simulated'"):
        bench.set_threads("simulated", 1)


def test_cpu_clock_times_steps_in_process_time(monkeypatch):
    # Wall time runs ten times faster than CPU time here (other tenants): the cpu clock must
    # report the CPU seconds the scripted steps spent.
    calls: list = []
    cpu_clock = FakeClock()
    backend = _fake_backend(calls, cpu_clock, {"fast": [0.25] * 4, "loop": [0.5] * 4})
    _install(monkeypatch, {"torch": backend}, cpu_clock, peaks=(50e9, 50e9))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: 10 * cpu_clock.now)
    rung = get_ladder("cpu").rung("w32")
    report = bench.bench_rungs([rung], ("torch",), steps=2, repeats=2, clock="cpu", threads=1)
    fast, loop = report.rows[0].timing("fast"), report.rows[0].timing("loop")
    assert fast.step_s == pytest.approx(0.25) and loop.step_s == pytest.approx(0.5)
    assert fast.tokens_per_s == pytest.approx(rung.batch_size * rung.config.seq_len / 0.25)
    assert report.rows[0].fast_over_loop == pytest.approx(2.0)
    assert "cpu clock" in report.table()
    with pytest.raises(ValueError, match="clock"):
        bench.bench_rungs([rung], ("torch",), clock="gpu")


def test_moe_layer_times_bound_and_share(monkeypatch):
    # A backend that also times one MoE layer: its medians, the layer's paired loop/fast ratio
    # and the MoE share of the fast step follow by hand from the scripted seconds.
    calls: list = []
    clock = FakeClock()
    backend = _fake_backend(calls, clock, {"fast": [0.2, 0.1, 0.3], "loop": [0.5, 0.9, 0.4]},
                            layer_s={"fast": [0.02, 0.03, 0.01], "loop": [0.05, 0.04, 0.06]})
    _install(monkeypatch, {"torch": backend}, clock)
    rung = get_ladder("cpu").rung("w64")
    report = bench.bench_rungs([rung], ("torch",), steps=3, repeats=1)
    # Each round times the steps, then the layers, in the round's order.
    timed = [(c[0], c[2]) for c in calls if c[0] != "setup"]
    assert timed == [("step", "fast"), ("step", "loop"), ("layer", "fast"), ("layer", "loop"),
                     ("step", "loop"), ("step", "fast"), ("layer", "loop"), ("layer", "fast"),
                     ("step", "fast"), ("step", "loop"), ("layer", "fast"), ("layer", "loop")]
    row = report.rows[0]
    assert row.n_moe_layers == rung.config.n_layers == 4          # every CPU-rung block is MoE
    assert row.timing("fast").moe_layer_s == pytest.approx(0.02)
    assert row.timing("loop").moe_layer_s == pytest.approx(0.05)
    assert row.moe_fast_over_loop == pytest.approx(2.5)            # median of 2.5, 1.33, 6
    assert row.moe_share("fast") == pytest.approx(4 * 0.02 / 0.2)
    assert "2.50x" in report.table() and "40%" in report.table() and "diluted" in report.table()
    assert report.to_dict()["rows"][0]["moe_share_fast"] == pytest.approx(0.4)


def test_backend_without_a_layer_timer_leaves_the_columns_empty(scripted):
    report = bench.bench_rungs([get_ladder("cpu").rung("w32")], ("torch",), steps=3, repeats=2)
    row = report.rows[0]
    assert row.moe_fast_over_loop is None and row.moe_share("fast") is None
    assert "diluted" not in report.table()


def test_compiled_step_alternates_with_eager_and_is_charged_its_compile_over_a_trial(monkeypatch):
    calls: list = []
    clock = FakeClock()
    backend = _fake_backend(calls, clock, {"fast": [0.2, 0.1], "loop": [0.5, 0.4], "compiled": [0.1, 0.1]},
                            compile_s={"compiled": 20.0},
                            layer_s={"fast": [0.05, 0.05], "loop": [0.1, 0.1]})
    _install(monkeypatch, {"torch": backend}, clock)
    rung = get_ladder("cpu").rung("w32")
    report = bench.bench_rungs([rung], ("torch",), steps=2, repeats=1, warmup=1, compile=True)
    steps = [c[2] for c in calls if c[0] == "step"]
    assert steps == ["fast", "loop", "compiled", "compiled", "loop", "fast"]
    assert ("layer", "cpu-w32", "compiled") not in calls      # the MoE layer is timed eager only
    row = report.rows[0]
    assert row.trial_steps == rung.steps == 1024
    per_step, per_trial = row.eager_over_compiled
    assert per_step == pytest.approx((0.2 / 0.1 + 0.1 / 0.1) / 2)           # median of the pairs
    assert per_trial == pytest.approx(1024 * 0.15 / (20.0 + 1024 * 0.1))    # the compile paid once
    assert "1.50x a step, 1.25x over a trial of 1024 steps with its 20 s compile" in report.table()
    assert report.to_dict()["rows"][0]["eager_over_compiled"] == pytest.approx([per_step, per_trial])
