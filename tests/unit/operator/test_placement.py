"""Spreading units over zones, and the surge-first plan that gets there."""

from __future__ import annotations

import itertools
import random

import pytest

from vigil_operator.core.placement import converged, plan_replicas, spread

ABC = ["us-east-1a", "us-east-1b", "us-east-1c"]


def test_even_spread_with_the_remainder_in_stable_order() -> None:
    assert spread(3, ABC, set(ABC)) == dict(zip(ABC, [1, 1, 1], strict=True))
    assert spread(5, ABC, set(ABC)) == dict(zip(ABC, [2, 2, 1], strict=True))
    assert spread(2, ABC, set(ABC)) == dict(zip(ABC, [1, 1, 0], strict=True))
    assert spread(0, ABC, set(ABC)) == dict.fromkeys(ABC, 0)


def test_unhealthy_zones_get_nothing_and_their_share_moves() -> None:
    assert spread(3, ABC, {"us-east-1b", "us-east-1c"}) == {
        "us-east-1a": 0,
        "us-east-1b": 2,
        "us-east-1c": 1,
    }
    assert spread(3, ABC, {"us-east-1c"}) == {"us-east-1a": 0, "us-east-1b": 0, "us-east-1c": 3}


def test_no_healthy_zone_spreads_over_all() -> None:
    assert spread(4, ABC, set()) == dict(zip(ABC, [2, 1, 1], strict=True))
    assert spread(4, [], set()) == {}


def test_negative_total_is_a_bug() -> None:
    with pytest.raises(ValueError):
        spread(-1, ABC, set(ABC))


def test_spread_properties_over_many_cases() -> None:
    zones_all = [f"z{i}" for i in range(6)]
    for n in range(1, 7):
        zones = zones_all[:n]
        for mask in range(1 << n):
            healthy = {z for i, z in enumerate(zones) if mask >> i & 1}
            for total in range(0, 41):
                out = spread(total, zones, healthy)
                assert out == spread(total, zones, healthy)  # deterministic
                assert list(out) == zones and sum(out.values()) == total
                usable = [z for z in zones if z in healthy] or zones
                counts = [out[z] for z in usable]
                assert max(counts) - min(counts) <= 1
                assert counts == sorted(counts, reverse=True)  # remainder goes first
                if healthy:
                    assert all(out[z] == 0 for z in zones if z not in healthy)
                if total >= 2 and len(usable) >= 2:
                    assert sum(1 for c in counts if c) >= 2


def test_growth_is_immediate_and_shrinking_waits_for_ready_replacements() -> None:
    # us-east-1a came back: its unit is added at once, 1b gives one up only after that.
    target = {"a": 1, "b": 1, "c": 1}
    current = {"a": 0, "b": 2, "c": 1}
    ready = {"a": 0, "b": 2, "c": 1}
    step1 = plan_replicas(target, current, ready, floor=3)
    assert step1 == {"a": 1, "b": 2, "c": 1}
    step2 = plan_replicas(target, step1, {"a": 0, "b": 2, "c": 1}, floor=3)
    assert step2 == step1  # a's unit is not Ready yet
    step3 = plan_replicas(target, step2, {"a": 1, "b": 2, "c": 1}, floor=3)
    assert step3 == target


def test_units_that_do_not_serve_go_at_once() -> None:
    # Zone a failed: its units are not Ready, so they cost nothing to remove.
    target = {"a": 0, "b": 2, "c": 1}
    assert plan_replicas(target, {"a": 1, "b": 1, "c": 1}, {"a": 0, "b": 1, "c": 1}, 3) == target


def test_ready_units_in_a_failed_zone_stay_until_replaced() -> None:
    # Zone a is unhealthy (its units stuck elsewhere) but its unit still reports Ready.
    target = {"a": 0, "b": 2, "c": 1}
    plan = plan_replicas(target, {"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}, 3)
    assert plan == {"a": 1, "b": 2, "c": 1}


def test_scale_down_and_stop_are_immediate() -> None:
    assert plan_replicas({"a": 1, "b": 1}, {"a": 3, "b": 2}, {"a": 3, "b": 2}, 2) == {
        "a": 1,
        "b": 1,
    }
    assert plan_replicas({"a": 0, "b": 0}, {"a": 3, "b": 2}, {"a": 3, "b": 2}, 0) == {
        "a": 0,
        "b": 0,
    }


def test_zones_no_longer_wanted_drain_surge_first() -> None:
    # spec.zones moved from [a, b] to [b, c]: a keeps its Ready unit until c's is Ready.
    plan = plan_replicas({"b": 1, "c": 1}, {"a": 1, "b": 1}, {"a": 1, "b": 1}, 2)
    assert plan == {"a": 1, "b": 1, "c": 1}
    assert plan_replicas({"b": 1, "c": 1}, plan, {"a": 1, "b": 1, "c": 1}, 2) == {
        "a": 0,
        "b": 1,
        "c": 1,
    }


def test_shrinking_prefers_sorted_order_when_the_budget_is_short() -> None:
    # 4 Ready, 3 needed: one Ready unit may go, and it is a's.
    target = {"a": 0, "b": 0, "c": 3}
    plan = plan_replicas(target, {"a": 1, "b": 1, "c": 3}, {"a": 1, "b": 1, "c": 2}, 3)
    assert plan == {"a": 0, "b": 1, "c": 3}


def _kept_ready(plan: dict[str, int], current: dict[str, int], ready: dict[str, int]) -> int:
    """Ready units left after applying `plan` (Deployments drop not-Ready Pods first)."""
    kept = 0
    for zone in set(plan) | set(current):
        have, r = current.get(zone, 0), min(ready.get(zone, 0), current.get(zone, 0))
        removed = max(0, have - plan.get(zone, 0))
        kept += r - max(0, removed - (have - r))
    return kept


def test_plans_never_go_below_the_floor_and_converge() -> None:
    rng = random.Random(7)
    zones = ["a", "b", "c", "d"]
    for _ in range(3000):
        n = rng.randint(1, 4)
        names = zones[:n]
        total = rng.randint(0, 12)
        healthy = {z for z in names if rng.random() < 0.7}
        target = spread(total, names, healthy)
        current = {z: rng.randint(0, 5) for z in rng.sample(zones, rng.randint(0, 4))}
        ready = {z: rng.randint(0, c) for z, c in current.items()}
        floor = total
        distance = sum(abs(target.get(z, 0) - current.get(z, 0)) for z in zones)
        for _step in range(4):
            plan = plan_replicas(target, current, ready, floor)
            before = sum(min(ready.get(z, 0), current.get(z, 0)) for z in zones)
            assert _kept_ready(plan, current, ready) >= min(floor, before)
            assert all(plan[z] >= target.get(z, 0) for z in plan)  # never below target
            new_distance = sum(abs(target.get(z, 0) - plan.get(z, 0)) for z in zones)
            assert new_distance <= distance  # monotonic
            distance = new_distance
            current, ready = plan, dict(plan)  # every unit asked for becomes Ready
        assert converged(target, current), (target, current)


def test_converges_in_two_steps_when_units_become_ready() -> None:
    for total, n in itertools.product(range(0, 10), range(1, 5)):
        names = [f"z{i}" for i in range(n)]
        for down in names:  # zone `down` fails, then recovers
            failed = spread(total, names, set(names) - {down})
            back = spread(total, names, set(names))
            current, ready = dict(failed), dict(failed)
            for _ in range(2):
                current = plan_replicas(back, current, ready, floor=total)
                ready = dict(current)
            assert converged(back, current)


def test_converged() -> None:
    assert converged({"a": 1, "b": 0}, {"a": 1})
    assert not converged({"a": 1}, {"a": 1, "b": 1})


def test_remainder_order_is_stable_per_model_and_spreads_models_over_zones() -> None:
    from collections import Counter

    from vigil_operator.core.placement import remainder_order

    zones = ["zone-c", "zone-a", "zone-b"]
    assert remainder_order(zones, "factory/pcb") == remainder_order(zones, "factory/pcb")
    assert sorted(remainder_order(zones, "factory/pcb")) == sorted(zones)
    # 300 two-unit Models: every zone carries a fair share of the units
    load: Counter[str] = Counter()
    for i in range(300):
        order = remainder_order(zones, f"ns/model-{i}")
        load.update(z for z, n in spread(2, order, set(zones)).items() for _ in range(n))
    assert sum(load.values()) == 600
    assert min(load.values()) > 0.8 * 200, load
    assert remainder_order([], "x") == []
