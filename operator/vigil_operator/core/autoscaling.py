"""The autoscaling policy: a pure function of (context, state) -> (decision, state).

Load is the total over the units that answered the last scrape, in the units
of `scaling.metric`: busy fraction (utilization), requests/s (rps) or
in-flight requests (concurrency). For utilization the units report rejected
work too (requests refused with RESOURCE_EXHAUSTED, valued at the mean busy
time per request), so an overloaded model shows its real demand, not a
saturated 100 %: one decision sizes it, where HPA can only grow a saturated
deployment by its target ratio per sync period.

Decisions, every tick:
- stable: ceil(mean load over `stable_window_s` / target), held within a
  10 % tolerance of the current count so that noise never moves it, and
  held until half a window of history exists (after an operator restart);
- panic: when the mean over `panic_window_s` exceeds what the ready units can
  serve at 100 % (or the newest sample does while that mean is above target),
  scale at once to ceil(newest load / target) and do not scale down for a
  stable window (as Knative's KPA, but triggered by saturation rather than
  at 200 % of target);
- scale-up after `scale_up_stabilization_s` (the lowest recommendation in
  that window), scale-down after `scale_down_stabilization_s` (the highest),
  as the HPA's behaviour fields; clamped to [minUnits, maxUnits].
No sample (no unit answered) is no information: the count is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from .spec import ModelSpec

TOLERANCE: Final = 0.1


@dataclass(frozen=True)
class Sample:
    t: float  # seconds, the caller's clock
    load: float  # total over the units that answered
    units: int  # units that answered (ready and scraped)


@dataclass(frozen=True)
class PolicyConfig:
    metric: str
    target: float  # per unit
    min_units: int
    max_units: int
    scale_up_stabilization_s: float = 0.0
    scale_down_stabilization_s: float = 300.0
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0


def policy_for(
    spec: ModelSpec, *, stable_window_s: float, panic_window_s: float
) -> PolicyConfig | None:
    """The policy's settings for a Model, or None when it does not autoscale
    (Stopped, or no maxUnits: minUnits rules). The windows are the shell's."""
    if not spec.running or spec.max_units is None:
        return None
    return PolicyConfig(
        metric=spec.scaling.metric,
        target=spec.scaling.target,
        min_units=spec.min_units,
        max_units=spec.max_units,
        scale_up_stabilization_s=spec.scaling.scale_up_stabilization_s,
        scale_down_stabilization_s=spec.scaling.scale_down_stabilization_s,
        stable_window_s=stable_window_s,
        panic_window_s=panic_window_s,
    )


@dataclass(frozen=True)
class ScalingState:
    samples: tuple[Sample, ...] = ()
    recommendations: tuple[tuple[float, int], ...] = ()  # (t, units)
    panic_until: float = -math.inf
    desired: int | None = None


@dataclass(frozen=True)
class Decision:
    desired: int
    previous: int
    reason: str  # in numbers, for the Event
    panic: bool = False
    load: float | None = None  # the stable-window mean, for the metric
    recommendation: int | None = None

    @property
    def changed(self) -> bool:
        return self.desired != self.previous


def _mean(samples: tuple[Sample, ...], since: float) -> float | None:
    window = [s.load for s in samples if s.t >= since]
    return sum(window) / len(window) if window else None


def _units(load: float, target: float) -> int:
    return max(0, math.ceil(load / target - 1e-9))


def autoscale(
    cfg: PolicyConfig, state: ScalingState, sample: Sample | None, now: float, ready: int
) -> tuple[Decision, ScalingState]:
    """One tick. `ready` is the number of units in service (capacity now)."""
    current = state.desired if state.desired is not None else cfg.min_units
    current = min(max(current, cfg.min_units), cfg.max_units)
    keep = max(cfg.stable_window_s, cfg.scale_down_stabilization_s, cfg.scale_up_stabilization_s)
    samples = state.samples + ((sample,) if sample is not None else ())
    samples = tuple(s for s in samples if s.t > now - cfg.stable_window_s)
    stable = _mean(samples, now - cfg.stable_window_s)
    if stable is None:  # nobody answered: no information, keep the count
        decision = Decision(current, current, "no unit reported load", load=None)
        return decision, replace(state, samples=samples, desired=current)

    short = _mean(samples, now - cfg.panic_window_s)
    short = stable if short is None else short
    # Saturation: the short-window load exceeds the ready units at 100 % busy
    # (for rps and concurrency: at twice their target, as KPA's threshold).
    # Saturated when the short window says so, or when the newest sample
    # exceeds capacity while the short window is already above target (a
    # step seen on its first tick, without waiting for the window to fill).
    full = 1.0 if cfg.metric == "utilization" else 2.0 * cfg.target
    capacity = max(ready, 1) * full
    newest = samples[-1].load if sample is not None else 0.0
    saturated = short > capacity or (newest > capacity and short > max(ready, 1) * cfg.target)
    panic_until = now + cfg.stable_window_s if saturated else state.panic_until
    panic = now < panic_until

    if current > 0 and abs(stable / (current * cfg.target) - 1.0) <= TOLERANCE:
        rec = current  # within tolerance of the target: hold
    elif stable < current * cfg.target:
        # Scale down to the fewest units within tolerance, so that a load on a
        # unit boundary does not alternate between two recommendations.
        rec = _units(stable, cfg.target * (1 + TOLERANCE))
    else:
        rec = _units(stable, cfg.target)
    if now - samples[0].t < cfg.stable_window_s / 2:
        rec = current  # too little history to average the noise out (after a start)
    if panic:  # sized from the newest load, so one step reaches it
        rec = max(rec, current, _units(max(short, samples[-1].load), cfg.target))
    rec = min(max(rec, cfg.min_units), cfg.max_units)

    kept = tuple((t, n) for t, n in state.recommendations if t > now - keep)
    recs = (*kept, (now, rec))
    desired = current
    if rec > current:
        window = [n for t, n in recs if t >= now - cfg.scale_up_stabilization_s]
        desired = max(current, min(window))
    elif rec < current and not panic:
        window = [n for t, n in recs if t >= now - cfg.scale_down_stabilization_s]
        desired = min(current, max(window))

    reason = _reason(cfg, current, desired, ready, stable, short, panic)
    decision = Decision(desired, current, reason, panic, stable, rec)
    new_state = ScalingState(samples, recs, panic_until, desired)
    return decision, new_state


def _reason(
    cfg: PolicyConfig,
    current: int,
    desired: int,
    ready: int,
    stable: float,
    short: float,
    panic: bool,
) -> str:
    """The decision in numbers, for the ScaledUp/ScaledDown Event and the log."""
    if desired > current and panic:
        return (
            f"{cfg.metric} {short:.2f} over {ready} units exceeds their capacity "
            f"(target {cfg.target:g} each): {current} -> {desired}"
        )
    if desired > current:
        return (
            f"{cfg.metric} {stable:.2f} over {ready} units ({stable / max(ready, 1):.2f} each) "
            f"> target {cfg.target:g}: {current} -> {desired}"
        )
    if desired < current:  # per unit of the current count: what scaling down changes
        return (
            f"{cfg.metric} {stable:.2f} over {current} units "
            f"({stable / max(current, 1):.2f} each) < target {cfg.target:g} "
            f"for {cfg.scale_down_stabilization_s:g}s: {current} -> {desired}"
        )
    return f"{cfg.metric} {stable:.2f} over {ready} units: steady at {current}"
