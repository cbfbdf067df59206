"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it, as pure decisions.

One attempt is a function of (the Lease as read, what this candidate saw
before, now, its identity, the config) returning what to write, if anything.
The shell reads the Lease, calls `attempt`, and sends the write with the
Lease's resourceVersion, so of two candidates that read the same version only
one write succeeds (the other gets 409): never two leaders.

Time is the subtle part. A candidate does not trust the holder's renewTime
(another machine's clock): it waits until the record has stayed unchanged for
leaseDurationSeconds of its own monotonic clock since it first saw it. The
leader, in turn, counts its tenure from the moment it *sent* its last
successful write and stops writing `renew_deadline_s` after that; since
anyone else saw that write after it was sent, the leader has stopped at least
`lease_duration_s - renew_deadline_s` before anyone else can take over,
however slow the answer was. That margin is the fencing: a leader paused
(SIGSTOP, a VM freeze, a starved CPU) past its deadline finds, when it runs
again, that it may no longer write (`may_write`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

JITTER = 1.2  # client-go's JitterFactor: retries are spread over [period, 1.2 x period]


class ElectionConfigError(ValueError):
    """Durations that would let a leader outlive its lease."""


@dataclass(frozen=True)
class ElectionConfig:
    """client-go's defaults (kube-controller-manager's, too)."""

    lease_duration_s: float = 15.0  # how long others wait after the last change they saw
    renew_deadline_s: float = 10.0  # the leader stops writing this long after its last renewal
    retry_period_s: float = 2.0  # between attempts, acquiring or renewing

    def __post_init__(self) -> None:
        if self.retry_period_s <= 0:
            raise ElectionConfigError(f"retry period must be > 0, got {self.retry_period_s}")
        if self.renew_deadline_s <= JITTER * self.retry_period_s:
            raise ElectionConfigError(
                f"renew deadline ({self.renew_deadline_s}s) must exceed {JITTER} x retry period "
                f"({self.retry_period_s}s): the leader needs more than one try to renew"
            )
        if self.lease_duration_s <= self.renew_deadline_s:
            raise ElectionConfigError(
                f"lease duration ({self.lease_duration_s}s) must exceed renew deadline "
                f"({self.renew_deadline_s}s): the leader must stop before others may take over"
            )

    @property
    def lease_seconds(self) -> int:
        """leaseDurationSeconds is an integer; round up, never shorten the wait."""
        return math.ceil(self.lease_duration_s)


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease's spec, as client-go's LeaderElectionRecord."""

    holder: str  # "" once released
    lease_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=_parse_time(spec.get("acquireTime")),
            renew_time=_parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": _format_time(self.acquire_time),
            "renewTime": _format_time(self.renew_time),
            "leaseTransitions": self.transitions,
        }


def _parse_time(raw: Any) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None  # a foreign writer's odd timestamp: we never rely on it anyway


def _format_time(value: datetime | None) -> str | None:
    """metav1.MicroTime: RFC 3339 with microseconds, in UTC."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Memory:
    """What a candidate remembers between attempts: the record it last saw and
    when (its own monotonic clock) that record last changed."""

    record: LeaseRecord | None = None
    version: str | None = None
    observed_at: float = 0.0


@dataclass(frozen=True)
class Create:
    """No Lease yet: create it holding it."""

    record: LeaseRecord


@dataclass(frozen=True)
class Update:
    """Take over or renew: replace the Lease, guarded by the version that was read."""

    record: LeaseRecord
    version: str | None


@dataclass(frozen=True)
class Wait:
    """Someone else holds a lease that is still valid by our own clock."""

    holder: str
    expires_in_s: float


Action = Create | Update | Wait


def attempt(
    lease: LeaseRecord | None,
    version: str | None,
    memory: Memory,
    *,
    now: float,
    wall: datetime,
    identity: str,
    config: ElectionConfig,
) -> tuple[Action, Memory]:
    """One try to acquire or renew (client-go's tryAcquireOrRenew).

    `lease` is the Lease's spec as just read (None: there is none), `version`
    its resourceVersion, `now` the monotonic clock, `wall` the UTC time that
    goes into the record for humans.
    """
    mine = LeaseRecord(
        holder=identity,
        lease_seconds=config.lease_seconds,
        acquire_time=wall,
        renew_time=wall,
        transitions=0,
    )
    if lease is None:
        return Create(mine), Memory(mine, None, now)
    if (lease, version) != (memory.record, memory.version):
        memory = Memory(lease, version, now)  # it changed: its lease starts counting now
    if lease.holder and lease.holder != identity:
        expires = memory.observed_at + lease.lease_seconds
        if now < expires:
            return Wait(lease.holder, expires - now), memory
    if lease.holder == identity:  # a renewal keeps the tenure's start and count
        mine = replace(mine, acquire_time=lease.acquire_time or wall, transitions=lease.transitions)
    else:
        mine = replace(mine, transitions=lease.transitions + 1)
    return Update(mine, version), memory


def released(lease: LeaseRecord, *, wall: datetime) -> LeaseRecord:
    """The record a leader leaves when it stops on purpose (client-go's
    ReleaseOnCancel): no holder, so a standby takes over at its next try."""
    return replace(lease, holder="", lease_seconds=1, acquire_time=wall, renew_time=wall)


def tenure_end(sent_at: float, config: ElectionConfig) -> float:
    """Until when a leader may write after a write of the Lease sent at `sent_at`
    (monotonic) succeeded."""
    return sent_at + config.renew_deadline_s


def may_write(valid_until: float | None, now: float) -> bool:
    """The fence: writes leave the process only strictly before the tenure's end."""
    return valid_until is not None and now < valid_until
