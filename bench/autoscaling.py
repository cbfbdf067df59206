"""Our autoscaler against the HPA's and Knative KPA's algorithms, same traces.

A discrete-time simulator (1 s steps): offered load in units of work (1.0 =
one unit 100 % busy), units with capacity 1.0 that become ready
`--start-delay` seconds after they are asked for (a GPU model load), and
removed at once. Each policy sees what its real counterpart sees:

- ours: `vigil_operator.core.autoscaling.autoscale` itself (not a copy),
  ticked every 2 s (the scrape interval) with the load the units report:
  busy work plus refused work, i.e. the offered load whenever a unit is ready;
- HPA (autoscaling/v2, resource utilization): every 15 s, utilization of the
  ready units (capped at 100 %: a busy GPU cannot report more) from
  metrics-server's last completed 15 s window, which is `--hpa-metric-lag`
  seconds old at the sync (7 s: the two 15 s loops are not aligned; 0: the
  best case, printed by `--hpa-metric-lag 0`), tolerance 0.1, scale-up limited
  to max(4 pods, 100 %) per period, scale-down stabilization 300 s;
- KPA (Knative): every 2 s, the concurrency its queue proxies see (which
  includes excess requests, so the offered load), 60 s stable window, 6 s
  panic window, panic at 200 % of target, no scale-down while panicking,
  scale-down rate limit 2x per tick.
Every policy has the same target (0.6 per unit), bounds (1..20) and starts
at the size its trace's first second needs.

Per trace and policy: overload seconds (offered > ready capacity),
unit-seconds (units provisioned, starting ones included), scale events.
Last line: summary overload_vs_hpa=R overload_vs_kpa=R unit_seconds_vs_hpa=R
noisy_scale_events=N
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "inference-server")]

from vigil_operator.core.autoscaling import (  # noqa: E402
    PolicyConfig,
    Sample,
    ScalingState,
    autoscale,
)

TARGET, MIN, MAX = 0.6, 1, 20
Trace = Callable[[int], float]


def traces(seed: int, length: int) -> dict[str, Trace]:
    rng = random.Random(seed)
    noise = [rng.gauss(0, 0.15) for _ in range(length)]
    return {
        "step": lambda t: 1.0 if t < 600 or t >= 2400 else 4.0,
        "spike": lambda t: 6.0 if 900 <= t < 1020 else 1.5,
        "ramp": lambda t: 0.5 + 6.5 * min(t, 2400) / 2400,
        "diurnal": lambda t: 3.0 + 2.5 * math.sin(2 * math.pi * t / 3600),
        "noisy": lambda t: max(0.0, 2.4 * (1 + noise[t])),
        "drop": lambda t: 4.0 if t < 900 else 0.2,
    }


class Units:
    """Provisioned units; each is ready `delay` seconds after it was asked for."""

    def __init__(self, n: int, delay: float) -> None:
        self.delay = delay
        self.ready_at: list[float] = [-math.inf] * n

    def ready(self, t: float) -> int:
        return sum(1 for r in self.ready_at if r <= t)

    def resize(self, n: int, t: float) -> None:
        if n > len(self.ready_at):
            self.ready_at += [t + self.delay] * (n - len(self.ready_at))
        elif n < len(self.ready_at):  # not-ready ones go first, as a Deployment does
            self.ready_at.sort()
            del self.ready_at[n:]


@dataclass
class Result:
    overload_s: float = 0.0
    unit_s: float = 0.0
    events: int = 0


class Ours:
    period = 2

    def __init__(self, start: int) -> None:
        self.cfg = PolicyConfig("utilization", TARGET, MIN, MAX)
        self.state = ScalingState(desired=start)

    def decide(self, t: int, window: list[float], ready: int, current: int) -> int:
        load = sum(window) / len(window)  # rates between two scrapes
        sample = Sample(float(t), load, ready) if ready else None
        decision, self.state = autoscale(self.cfg, self.state, sample, float(t), ready)
        return decision.desired


class HPA:
    period = 15
    lag = 7  # seconds between metrics-server's scrape and the HPA's sync (set by main)

    def __init__(self, start: int) -> None:
        self.recs: deque[tuple[int, int]] = deque()
        self.seen: deque[tuple[int, float, int]] = deque()  # (t, offered, ready)

    def observe(self, t: int, offered: float, ready: int) -> None:
        self.seen.append((t, offered, ready))
        while self.seen and self.seen[0][0] <= t - 60:
            self.seen.popleft()

    def decide(self, t: int, window: list[float], ready: int, current: int) -> int:
        # metrics-server's last completed 15 s window, `lag` seconds old
        end = t - self.lag
        past = [(o, r) for s, o, r in self.seen if end - 15 < s <= end]
        if not past or past[-1][1] == 0:
            return current
        ready = past[-1][1]
        offered = sum(o for o, _ in past) / len(past)
        util = min(1.0, offered / ready)  # a busy fraction: capped at 100 %
        ratio = util / TARGET
        rec = current if abs(ratio - 1) <= 0.1 else math.ceil(ready * ratio)
        rec = min(rec, max(current + 4, 2 * current))  # default scale-up policies
        rec = min(max(rec, MIN), MAX)
        self.recs.append((t, rec))
        while self.recs and self.recs[0][0] < t - 300:
            self.recs.popleft()
        if rec < current:  # scale-down stabilization: the highest recommendation
            return max(n for _, n in self.recs)
        return rec


class KPA:
    period = 2

    def __init__(self, start: int) -> None:
        self.history: deque[tuple[int, float]] = deque()
        self.panic_since: int | None = None

    def decide(self, t: int, window: list[float], ready: int, current: int) -> int:
        self.history.append((t, sum(window) / len(window)))
        while self.history[0][0] <= t - 60:
            self.history.popleft()
        stable = sum(v for _, v in self.history) / len(self.history)
        recent = [v for s, v in self.history if s > t - 6]
        panic_load = sum(recent) / len(recent)
        want_stable = math.ceil(stable / TARGET)
        want_panic = math.ceil(panic_load / TARGET)
        if want_panic / max(ready, 1) >= 2.0:
            self.panic_since = t
        elif self.panic_since is not None and t - self.panic_since >= 60:
            self.panic_since = None
        if self.panic_since is not None:
            want = max(current, want_panic)
        else:
            want = max(want_stable, math.ceil(current / 2))  # max scale-down rate 2x
        return min(max(want, MIN), MAX)


def simulate(policy_cls: type, trace: Trace, length: int, delay: float) -> Result:
    start = min(max(math.ceil(trace(0) / TARGET), MIN), MAX)
    units = Units(start, delay)
    policy = policy_cls(start)
    result = Result()
    window: list[float] = []
    for t in range(length):
        offered = trace(t)
        ready = units.ready(t)
        if isinstance(policy, HPA):
            policy.observe(t, offered, ready)
        result.overload_s += offered > ready
        result.unit_s += len(units.ready_at)
        window.append(offered)
        if t % policy.period == policy.period - 1:
            current = len(units.ready_at)
            desired = policy.decide(t, window, ready, current)
            window = []
            if desired != current:
                result.events += 1
                units.resize(desired, t)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=3600, help="seconds per trace")
    ap.add_argument("--start-delay", type=float, default=30.0, help="unit start-up seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--hpa-metric-lag",
        type=int,
        default=7,
        help="age of the HPA's metric window at its sync (metrics-server and the "
        "HPA each run every 15 s, unaligned: 7 s is the expected offset; 0 is the "
        "best case)",
    )
    args = ap.parse_args()
    HPA.lag = args.hpa_metric_lag
    policies = {"ours": Ours, "hpa": HPA, "kpa": KPA}
    totals = {p: Result() for p in policies}
    print(
        f"{args.length}s per trace, start delay {args.start_delay:g}s, target {TARGET}, "
        f"units {MIN}..{MAX}, HPA metric lag {args.hpa_metric_lag}s"
    )
    print(f"{'trace':8} {'policy':6} {'overload s':>10} {'unit-s':>8} {'events':>6}")
    noisy_events = 0
    for name, trace in traces(args.seed, args.length).items():
        results = {
            p: simulate(cls, trace, args.length, args.start_delay) for p, cls in policies.items()
        }
        for p, r in results.items():
            print(f"{name:8} {p:6} {r.overload_s:10.0f} {r.unit_s:8.0f} {r.events:6d}")
            t = totals[p]
            t.overload_s += r.overload_s
            t.unit_s += r.unit_s
            t.events += r.events
        o, h, k = results["ours"], results["hpa"], results["kpa"]
        print(
            f"{'':8} ours/hpa overload {_ratio(o.overload_s, h.overload_s)} "
            f"unit-s {o.unit_s / h.unit_s:.2f}; ours/kpa overload "
            f"{_ratio(o.overload_s, k.overload_s)} unit-s {o.unit_s / k.unit_s:.2f}"
        )
        if name == "noisy":
            noisy_events = o.events
    o, h, k = totals["ours"], totals["hpa"], totals["kpa"]
    print(
        f"{'total':8} ours {o.overload_s:.0f} s / {o.unit_s:.0f} unit-s; "
        f"hpa {h.overload_s:.0f} / {h.unit_s:.0f}; kpa {k.overload_s:.0f} / {k.unit_s:.0f}"
    )
    print(
        f"summary overload_vs_hpa={_ratio(o.overload_s, h.overload_s)} "
        f"overload_vs_kpa={_ratio(o.overload_s, k.overload_s)} "
        f"unit_seconds_vs_hpa={o.unit_s / h.unit_s:.2f} noisy_scale_events={noisy_events}"
    )
    return 0


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else ("0.00" if a == 0 else "inf")


if __name__ == "__main__":
    sys.exit(main())
