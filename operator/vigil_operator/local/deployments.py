"""The Deployment controller's decisions for one zone's units (pure).

The core sets each zone's replicas; a Deployment then decides which Pods to
create and delete. This does the same for local units: scale to `replicas`
(removing units that are not Ready first, then the most recently Ready, as
the ReplicaSet controller ranks them), and when the unit template changes (a
new artifact) roll over with maxSurge 1 and maxUnavailable 0, as the
Deployments the operator writes do: a new unit first, an old one only once
`replicas` Ready units remain without it.
"""

from __future__ import annotations

from collections.abc import Sequence

from vigil_operator.local.world import UnitView


def removal_order(units: Sequence[UnitView]) -> list[UnitView]:
    """Units in the order a ReplicaSet removes them: not Ready before Ready, newer
    before older among the not Ready, the most recently Ready first among the Ready."""

    def rank(u: UnitView) -> tuple[int, float]:
        if not u.ready:
            return (0, -u.created_mono)
        return (1, -(u.ready_since or 0.0))

    return sorted(units, key=rank)


def plan_zone(
    units: Sequence[UnitView], replicas: int, template: str, max_surge: int = 1
) -> tuple[int, list[str]]:
    """(units to start, names of units to stop) so the zone's live (not
    terminating) `units` move towards
    `replicas` units of `template` without fewer than `replicas` Ready ones
    while old units serve (maxUnavailable 0)."""
    replicas = max(replicas, 0)
    new = [u for u in units if u.template == template]
    old = [u for u in units if u.template != template]
    stop: list[UnitView] = []
    if len(new) > replicas:
        extra = removal_order(new)[: len(new) - replicas]
        stop += extra
        new = [u for u in new if u not in extra]
    if not old:
        return replicas - len(new), [u.name for u in stop]
    stop += [u for u in old if not u.ready]  # they serve nothing: at once
    old_ready = [u for u in old if u.ready]
    spare = sum(u.ready for u in new) + len(old_ready) - replicas
    retire = removal_order(old_ready)[: max(0, min(spare, len(old_ready)))]
    stop += retire
    staying = len(old_ready) - len(retire)
    start = max(0, min(replicas - len(new), replicas + max_surge - len(new) - staying))
    return start, [u.name for u in stop]
