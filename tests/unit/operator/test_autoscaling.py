"""The autoscaling policy, ticked with a fake clock (no cluster, no sleeps)."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from vigil_operator.core.autoscaling import (
    Decision,
    PolicyConfig,
    Sample,
    ScalingState,
    autoscale,
)

TICK = 2.0


def config(**overrides: object) -> PolicyConfig:
    base = PolicyConfig(metric="utilization", target=0.6, min_units=1, max_units=10)
    return replace(base, **overrides)  # type: ignore[arg-type]


class Loop:
    """Ticks the policy every TICK seconds; units become ready `delay` s after a decision."""

    def __init__(self, cfg: PolicyConfig, start: int, delay: float = 0.0) -> None:
        self.cfg, self.delay, self.now = cfg, delay, 0.0
        self.state = ScalingState(desired=start)
        self.ready, self.pending = start, []  # pending: (ready_at, count)
        self.decisions: list[Decision] = []

    def tick(self, load: float | None) -> Decision:
        self.now += TICK
        for at, n in list(self.pending):
            if at <= self.now:
                self.ready = n
                self.pending.remove((at, n))
        sample = None if load is None else Sample(self.now, load, self.ready)
        d, self.state = autoscale(self.cfg, self.state, sample, self.now, self.ready)
        if d.changed:
            self.decisions.append(d)
            if d.desired < self.ready:
                self.ready = d.desired
            else:
                self.pending.append((self.now + self.delay, d.desired))
        return d

    def run(self, load: float | None, seconds: float) -> list[int]:
        return [self.tick(load).desired for _ in range(int(seconds / TICK))]


def test_steady_load_at_target_never_moves() -> None:
    loop = Loop(config(), start=4)
    assert set(loop.run(2.4, 1800)) == {4}  # 4 units x 0.6 = 2.4
    assert loop.decisions == []


def test_noisy_steady_load_holds_within_tolerance() -> None:
    rng = random.Random(0)
    loop = Loop(config(), start=4)
    for _ in range(900):  # 30 minutes of +-15 % noise around the target
        loop.tick(2.4 * (1 + rng.gauss(0, 0.15)))
    assert loop.decisions == []


def test_rising_load_scales_up_without_overshoot() -> None:
    loop = Loop(config(), start=2)
    assert set(loop.run(1.2, 120)) == {2}  # 2 x 0.6: steady
    trace = loop.run(2.1, 120)  # needs ceil(2.1 / 0.6) = 4 units, not saturated (< 2.0? no)
    assert trace[-1] == 4 and max(trace) == 4
    assert all(b >= a for a, b in itertools.pairwise(trace))  # monotonic
    assert "utilization" in loop.decisions[0].reason and "-> " in loop.decisions[0].reason


def test_saturation_panics_to_the_needed_size_within_the_panic_window() -> None:
    loop = Loop(config(max_units=8), start=2)
    loop.run(1.0, 60)
    trace = loop.run(4.5, 6)  # demand 4.5 units of work on 2 units: saturated
    assert trace[-1] == 8 and set(trace) <= {2, 8}  # ceil(4.5 / 0.6) = 8 in one step
    (d,) = loop.decisions
    assert d.panic and "exceeds their capacity" in d.reason and "2 -> 8" in d.reason


def test_scale_down_waits_for_the_stabilization_window() -> None:
    loop = Loop(config(scale_down_stabilization_s=300), start=6)
    loop.run(3.6, 120)
    trace = loop.run(0.5, 400)
    first_drop = next(i for i, n in enumerate(trace) if n < 6) * TICK
    assert 298 <= first_drop <= 310
    assert trace[-1] == 1  # ceil(0.5 / 0.6)
    assert all(b <= a for a, b in itertools.pairwise(trace))


def test_scale_up_stabilization_delays_growth() -> None:
    loop = Loop(config(scale_up_stabilization_s=30), start=2)
    loop.run(1.2, 120)
    trace = loop.run(1.9, 60)  # wants 4 but not saturated (1.9 < 2 units at 100 %)
    first_up = next(i for i, n in enumerate(trace) if n > 2) * TICK
    assert first_up >= 28


def test_panic_blocks_scale_down_for_a_stable_window() -> None:
    loop = Loop(config(scale_down_stabilization_s=0), start=2)
    loop.run(1.2, 60)
    assert loop.run(3.0, 6)[-1] == 5
    held = loop.run(0.3, 54)  # load vanishes, but the panic window holds
    assert set(held) == {5}
    assert loop.run(0.3, 70)[-1] == 1


def test_bounds() -> None:
    loop = Loop(config(min_units=2, max_units=3), start=2)
    assert max(loop.run(50.0, 60)) == 3
    assert min(loop.run(0.0, 800)) == 2


def test_no_report_is_not_zero_load() -> None:
    loop = Loop(config(), start=3)
    loop.run(1.8, 120)
    assert set(loop.run(None, 900)) == {3}  # 15 minutes without a scrape: kept
    assert loop.decisions == []
    assert loop.tick(None).reason == "no unit reported load"


@pytest.mark.parametrize(
    ("metric", "target", "load", "want"), [("rps", 10.0, 45.0, 5), ("concurrency", 2.0, 7.0, 4)]
)
def test_rps_and_concurrency_targets(metric: str, target: float, load: float, want: int) -> None:
    loop = Loop(config(metric=metric, target=target), start=1)
    assert loop.run(load, 120)[-1] == want


def test_state_is_bounded() -> None:
    loop = Loop(config(), start=2)
    loop.run(1.2, 3600)
    assert len(loop.state.samples) <= 31 and len(loop.state.recommendations) <= 151


def test_load_on_a_unit_boundary_settles_once_and_holds() -> None:
    rng = random.Random(1)
    loop = Loop(config(), start=5)  # one unit too many for 2.4 (= 4 x 0.6)
    for _ in range(1800):  # an hour of +-15 % noise
        loop.tick(2.4 * (1 + rng.gauss(0, 0.15)))
    assert [(d.previous, d.desired) for d in loop.decisions] == [(5, 4)]


def test_policy_for_a_model_takes_its_scaling_and_the_shells_windows() -> None:
    from vigil_operator.core.autoscaling import policy_for
    from vigil_operator.core.spec import parse_spec

    spec = parse_spec(
        {
            "artifact": {"uri": "file:///m.vigil"},
            "minUnits": 2,
            "maxUnits": 6,
            "scaling": {"metric": "rps", "target": 40, "scaleDownStabilizationSeconds": 60},
        }
    )
    assert policy_for(spec, stable_window_s=30, panic_window_s=3) == PolicyConfig(
        metric="rps",
        target=40.0,
        min_units=2,
        max_units=6,
        scale_up_stabilization_s=0,
        scale_down_stabilization_s=60,
        stable_window_s=30,
        panic_window_s=3,
    )
    fixed = replace(spec, max_units=None)
    stopped = replace(spec, state="Stopped")
    assert policy_for(fixed, stable_window_s=30, panic_window_s=3) is None
    assert policy_for(stopped, stable_window_s=30, panic_window_s=3) is None
