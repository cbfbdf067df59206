"""Where units go: an even spread over healthy zones, reached surge first.

`spread` says how many units each zone should have; `plan_replicas` says what
to set each zone's Deployment to *now* so that the Ready count never drops
below the floor on the way there: growing zones get their target at once,
shrinking zones give up only units that are not Ready, plus as many Ready
units as the Ready total can spare. A zone that turns unhealthy therefore
loses its non-serving units at once and its still-Ready ones only when their
replacements elsewhere are Ready; a recovered zone gets its share back the
same way, surge first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence


def remainder_order(zones: Sequence[str], model_key: str) -> list[str]:
    """The zones in sorted order, rotated by a hash of the Model's key.

    Stable for a Model (its remainder units stay put), but different Models
    start at different zones, so a cluster of 2-unit Models over 3 zones does
    not load the alphabetically first two zones with every unit.
    """
    ordered = sorted(zones)
    if not ordered:
        return ordered
    shift = int(hashlib.sha256(model_key.encode()).hexdigest()[:8], 16) % len(ordered)
    return ordered[shift:] + ordered[:shift]


def spread(total: int, zones_in_order: Sequence[str], healthy: Collection[str]) -> dict[str, int]:
    """Units per zone: even over the healthy zones, the remainder to the first healthy
    zones in the given (stable) order, 0 for unhealthy ones. With no healthy zone the
    units are spread over all zones, so they start wherever nodes come back first
    (the status reports that no zone is healthy)."""
    if total < 0:
        raise ValueError("total must be >= 0")
    usable = [z for z in zones_in_order if z in healthy] or list(zones_in_order)
    out = dict.fromkeys(zones_in_order, 0)
    if not usable:
        return out
    base, extra = divmod(total, len(usable))
    for i, zone in enumerate(usable):
        out[zone] = base + (1 if i < extra else 0)
    # The contract's availability promise, true of any even spread.
    assert total < 2 or len(usable) < 2 or sum(1 for z in usable if out[z]) >= 2
    return out


def plan_replicas(
    target: Mapping[str, int],
    current_replicas: Mapping[str, int],
    ready: Mapping[str, int],
    floor: int,
) -> dict[str, int]:
    """Replicas to set now per zone (zones only in `current_replicas` have target 0).

    `floor` is the Ready count that shrinking must not go below (the desired units
    while Running, 0 when Stopped). Deployments remove not-Ready Pods first, so
    shrinking a zone costs Ready units only beyond its not-Ready ones. Zones are
    shrunk in sorted order, so the plan is deterministic.
    """
    zones = sorted(set(target) | set(current_replicas))
    budget = sum(min(ready.get(z, 0), current_replicas.get(z, 0)) for z in zones) - floor
    out: dict[str, int] = {}
    for zone in zones:
        want, have = target.get(zone, 0), current_replicas.get(zone, 0)
        if want >= have:
            out[zone] = want
            continue
        not_ready = have - min(ready.get(zone, 0), have)
        free = min(have - want, not_ready)
        costly = min(have - want - free, max(budget, 0))
        budget -= costly
        out[zone] = have - free - costly
    return out


def converged(target: Mapping[str, int], current_replicas: Mapping[str, int]) -> bool:
    """Whether every zone already has exactly its target (zones absent count as 0)."""
    zones = set(target) | set(current_replicas)
    return all(target.get(z, 0) == current_replicas.get(z, 0) for z in zones)
