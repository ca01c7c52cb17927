"""Box maths of the ladder-aware search: re-centring, widening, extrapolating the next rung."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transfer.box import Box, extrapolate_next, hull_factor, outer_limits, recentre, widen

HUMAN = Box(1e-4, 1e-1, log=True)


def test_recentre_centres_on_the_prediction_and_sizes_by_the_interval():
    c = recentre(HUMAN, 3e-3, (2e-3, 4.5e-3), allow_widening=False, max_widen_factor=4.0, margin=1.5,
                 min_fraction=0.05)
    half = 1.5 * max(math.log(3e-3 / 2e-3), math.log(4.5e-3 / 3e-3))
    assert math.log(c.box.low) == pytest.approx(math.log(3e-3) - half)
    assert math.log(c.box.high) == pytest.approx(math.log(3e-3) + half)
    assert not c.clipped and c.factor == pytest.approx(1.0)


def test_recentre_never_narrower_than_the_floor():
    c = recentre(HUMAN, 3e-3, (2.99e-3, 3.01e-3), allow_widening=False, max_widen_factor=4.0, min_fraction=0.25)
    assert math.log(c.box.high / c.box.low) == pytest.approx(0.25 * math.log(1e-1 / 1e-4))


@pytest.mark.parametrize("allow", [False, True])
def test_recentred_box_is_never_wider_than_the_human_box(allow):
    # A prediction interval far wider than the human's box (few rungs, scattered optima) says the
    # trend knows no more than the human: the rung searches a box of the human's width, centred on
    # the extrapolation (shifted, never grown, when widening is allowed).
    c = recentre(HUMAN, 2e-3, (1e-6, 4.0), allow_widening=allow, max_widen_factor=4.0)
    assert math.log(c.box.high / c.box.low) == pytest.approx(math.log(HUMAN.high / HUMAN.low))
    if allow:
        assert math.sqrt(c.box.low * c.box.high) == pytest.approx(2e-3)
    else:
        assert (c.box.low, c.box.high) == pytest.approx((HUMAN.low, HUMAN.high))


@pytest.mark.parametrize("seed", range(5))
def test_recentred_box_never_leaves_the_human_box_when_widening_is_forbidden(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        lo, hi = sorted(np.exp(rng.uniform(-14, 3, 2)))
        if hi / lo < 1.01:
            continue
        human = Box(float(lo), float(hi), log=True)
        centre = float(np.exp(rng.uniform(-16, 5)))
        spread = float(np.exp(rng.uniform(0.0, 3.0)))
        c = recentre(human, centre, (centre / spread, centre * spread), allow_widening=False, max_widen_factor=8.0)
        assert human.low * (1 - 1e-12) <= c.box.low < c.box.high <= human.high * (1 + 1e-12)
        assert c.factor == pytest.approx(1.0)
        w = widen(c.box, human, "low" if rng.uniform() < 0.5 else "high", allow_widening=False, max_widen_factor=8.0)
        if w is not None:
            assert human.low * (1 - 1e-12) <= w.box.low < w.box.high <= human.high * (1 + 1e-12)


def test_widening_is_bounded_by_the_factor_and_reported():
    box = HUMAN
    seen = []
    for _ in range(20):
        w = widen(box, HUMAN, "high", allow_widening=True, max_widen_factor=3.0)
        if w is None:
            break
        seen.append(w)
        box = w.box
    assert seen, "the first widening must move the edge"
    assert seen[-1].clipped and "limit" in seen[-1].reason
    # The outer limits grow the human box by (3 - 1) / 2 of its width on each side, so one side
    # alone reaches a hull of 2x; the low edge never moved.
    assert hull_factor(box, HUMAN) == pytest.approx(2.0)
    both = widen(box, HUMAN, "low", allow_widening=True, max_widen_factor=3.0)
    while both is not None:
        box = both.box
        both = widen(box, HUMAN, "low", allow_widening=True, max_widen_factor=3.0)
    assert hull_factor(box, HUMAN) == pytest.approx(3.0)
    assert widen(box, HUMAN, "high", allow_widening=True, max_widen_factor=3.0) is None
    # First step: half the current width.
    first = widen(HUMAN, HUMAN, "low", allow_widening=True, max_widen_factor=3.0)
    assert math.log(HUMAN.low / first.box.low) == pytest.approx(0.5 * math.log(1e3))
    assert first.factor == pytest.approx(1.5)


def test_widening_forbidden_stops_at_the_human_edge():
    inner = Box(1e-3, 1e-2, log=True)
    w = widen(inner, HUMAN, "low", allow_widening=False, max_widen_factor=4.0)
    assert w is not None and w.box.low == pytest.approx(1e-3 / math.sqrt(10))
    edge = Box(1e-4, 1e-2, log=True)
    assert widen(edge, HUMAN, "low", allow_widening=False, max_widen_factor=4.0) is None


def test_recentre_outside_the_box_is_shifted_inside_and_flagged():
    c = recentre(HUMAN, 1e-6, (5e-7, 2e-6), allow_widening=False, max_widen_factor=4.0)
    assert c.clipped and c.box.low == pytest.approx(HUMAN.low) and c.centre == pytest.approx(HUMAN.low)
    d = recentre(HUMAN, 1e-6, (5e-7, 2e-6), allow_widening=True, max_widen_factor=2.0)
    assert d.clipped and d.box.low == pytest.approx(outer_limits(HUMAN, allow_widening=True, max_widen_factor=2.0).low)
    assert d.factor <= 2.0 + 1e-9


def test_linear_and_integer_boxes():
    lin = Box(0.0, 0.2)
    assert outer_limits(lin, allow_widening=True, max_widen_factor=3.0).low == 0.0   # never below zero
    ints = Box(8, 64, log=True, integer=True)
    c = recentre(ints, 20, (18, 22), allow_widening=False, max_widen_factor=2.0)
    assert c.box.low == int(c.box.low) and c.box.high == int(c.box.high)
    assert 8 <= c.box.low < c.box.high <= 64


def test_extrapolate_next_recovers_a_power_law():
    sizes = [1e5, 3e5, 1e6, 3e6]
    values = [0.01 * (s / 1e5) ** -0.35 for s in sizes]
    ext = extrapolate_next(sizes, values, [0.02] * 4, 1e7)
    assert ext.method == "trend"
    assert ext.centre == pytest.approx(0.01 * 100 ** -0.35, rel=1e-6)
    assert ext.interval[0] < ext.centre < ext.interval[1]
    two = extrapolate_next(sizes[:2], values[:2], [0.02, 0.02], 1e6)
    assert two.method == "two_point" and two.centre == pytest.approx(values[2], rel=1e-9)
    # Delta method: the line's variance at t = log(10)/log(3) from the two endpoints.
    t = math.log(10) / math.log(3)
    sd = math.sqrt((1 - t) ** 2 + t ** 2) * 0.02
    assert math.log(two.interval[1] / two.centre) == pytest.approx(1.959963985 * sd, rel=1e-6)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="Box.low"):
        Box(1.0, 0.5)
    with pytest.raises(ValueError, match="max_widen_factor"):
        outer_limits(HUMAN, allow_widening=True, max_widen_factor=0.5)
    with pytest.raises(ValueError, match="side"):
        widen(HUMAN, HUMAN, "middle", allow_widening=True, max_widen_factor=2.0)
    with pytest.raises(ValueError, match="interval"):
        recentre(HUMAN, 1e-3, (2e-3, 3e-3), allow_widening=False, max_widen_factor=2.0)
