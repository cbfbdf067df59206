"""Leader election decisions, driven with a fake clock and an in-memory Lease
that enforces resourceVersion like the API server does."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from vigil_operator.core.election import (
    Create,
    ElectionConfig,
    ElectionConfigError,
    LeaseRecord,
    Memory,
    Update,
    Wait,
    attempt,
    may_write,
    released,
    tenure_end,
)

CFG = ElectionConfig()  # 15 s / 10 s / 2 s
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Conflict(Exception):
    pass


@dataclass
class FakeLease:
    """One Lease object: writes must name the version they read."""

    record: LeaseRecord | None = None
    version: int = 0
    writes: list[str] = field(default_factory=list)

    def read(self) -> tuple[LeaseRecord | None, str | None]:
        return self.record, (str(self.version) if self.record else None)

    def write(self, action: Create | Update) -> None:
        if isinstance(action, Create):
            if self.record is not None:
                raise Conflict("AlreadyExists")
        elif action.version != str(self.version):
            raise Conflict("stale resourceVersion")
        self.record, self.version = action.record, self.version + 1
        self.writes.append(action.record.holder)


@dataclass
class Candidate:
    """What the shell does per try, minus the I/O: read, decide, write; the fence
    deadline moves to `sent + renew deadline` on success."""

    name: str
    lease: FakeLease
    memory: Memory = field(default_factory=Memory)
    valid_until: float | None = None

    def read(self, now: float) -> Create | Update | Wait:
        record, version = self.lease.read()
        action, self.memory = attempt(
            record,
            version,
            self.memory,
            now=now,
            wall=T0 + timedelta(seconds=now),
            identity=self.name,
            config=CFG,
        )
        return action

    def write(self, action: Create | Update | Wait, now: float) -> bool:
        if isinstance(action, Wait):
            return False
        try:
            self.lease.write(action)
        except Conflict:
            return False
        self.valid_until = tenure_end(now, CFG)
        return True

    def tick(self, now: float) -> bool:
        return self.write(self.read(now), now)

    def leads(self, now: float) -> bool:
        return may_write(self.valid_until, now)


def test_first_candidate_creates_the_lease_with_the_record_client_go_writes() -> None:
    lease = FakeLease()
    a = Candidate("a", lease)
    assert a.tick(0.0)
    assert lease.record == LeaseRecord("a", 15, T0, T0, 0)
    assert lease.record.to_spec() == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-01-01T00:00:00.000000Z",
        "renewTime": "2026-01-01T00:00:00.000000Z",
        "leaseTransitions": 0,
    }
    assert LeaseRecord.from_spec(lease.record.to_spec()) == lease.record


def test_two_candidates_reading_the_same_version_never_both_win() -> None:
    for existing in (None, LeaseRecord("gone", 15, T0, T0, 3)):
        lease = FakeLease(record=existing)
        a, b = Candidate("a", lease), Candidate("b", lease)
        if existing is not None:  # both have watched it lapse
            a.read(0.0), b.read(0.0)
        now = 16.0
        act_a, act_b = a.read(now), b.read(now)
        assert not isinstance(act_a, Wait) and not isinstance(act_b, Wait)
        assert [a.write(act_a, now), b.write(act_b, now)] == [True, False]
        assert a.leads(now) and not b.leads(now)
        # b learns it lost at its next try, and waits the full lease from that change
        assert b.read(now + 2) == Wait("a", 15.0)


def test_a_standby_waits_the_lease_duration_of_its_own_clock_since_the_last_change() -> None:
    lease = FakeLease()
    a, b = Candidate("a", lease), Candidate("b", lease)
    assert a.tick(0.0)
    decisions = {}
    for now in range(2, 30, 2):  # a renews until t=10, then dies
        if now <= 10:
            assert a.tick(float(now))
        decisions[now] = b.tick(float(now))
    # b saw a's last renewal (written at t=10) at t=10: it may take over from t=25 on
    assert [t for t, won in decisions.items() if won] == [26, 28]  # acquired, then renewed
    assert lease.record is not None
    assert (lease.record.holder, lease.record.transitions) == ("b", 1)
    assert lease.record.acquire_time == T0 + timedelta(seconds=26)
    assert not a.leads(26.0)  # a's own tenure ended at 10 + 10 = 20


def test_standby_ignores_the_holders_timestamps() -> None:
    """A renewTime far in the past (a skewed clock) does not shorten the wait."""
    stale = LeaseRecord("a", 15, T0 - timedelta(days=1), T0 - timedelta(days=1), 0)
    b = Candidate("b", FakeLease(record=stale, version=7))
    assert b.read(100.0) == Wait("a", 15.0)
    assert isinstance(b.read(114.9), Wait)
    assert isinstance(b.read(115.0), Update)


def test_renewal_keeps_acquire_time_and_transitions() -> None:
    lease = FakeLease(record=LeaseRecord("a", 15, T0, T0, 4), version=3)
    a = Candidate("a", lease)
    assert a.tick(5.0)
    assert lease.record == LeaseRecord("a", 15, T0, T0 + timedelta(seconds=5), 4)


def test_leader_stops_writing_before_anyone_may_take_over() -> None:
    """The fencing margin: the leader's last write is allowed strictly before
    renew deadline after its last renewal; a standby that saw that renewal at
    the earliest possible moment takes over only lease duration after it."""
    lease = FakeLease()
    a, b = Candidate("a", lease), Candidate("b", lease)
    assert a.tick(0.0)
    assert isinstance(b.read(0.0), Wait)  # b sees the write the instant it lands
    # a is frozen (SIGSTOP) from here on; b keeps trying
    takeover = next(t / 10 for t in range(0, 400) if b.tick(t / 10))
    last_write = max(t / 100 for t in range(0, 4000) if a.leads(t / 100))
    assert (
        last_write
        < CFG.renew_deadline_s
        <= takeover - (CFG.lease_duration_s - CFG.renew_deadline_s)
    )
    # thawed, a finds its tenure over before it writes anything
    assert not a.leads(takeover)


def test_a_released_lease_is_taken_at_the_next_try() -> None:
    lease = FakeLease()
    a, b = Candidate("a", lease), Candidate("b", lease)
    assert a.tick(0.0)
    assert isinstance(b.read(1.0), Wait)
    assert lease.record is not None
    lease.write(Update(released(lease.record, wall=T0), str(lease.version)))
    assert b.tick(2.0)
    assert (lease.record.holder, lease.record.transitions) == ("b", 1)


def test_a_leader_that_lost_the_lease_sees_the_new_holder() -> None:
    lease = FakeLease(record=LeaseRecord("b", 15, T0, T0, 1), version=9)
    a = Candidate("a", lease, memory=Memory(LeaseRecord("a", 15, T0, T0, 0), "8", 0.0))
    assert a.read(3.0) == Wait("b", 15.0)


def test_may_write_is_closed_without_a_tenure_and_at_its_end() -> None:
    assert not may_write(None, 0.0)
    assert may_write(10.0, 9.999)
    assert not may_write(10.0, 10.0)


@pytest.mark.parametrize(
    ("durations", "message"),
    [
        ((10.0, 10.0, 2.0), "lease duration (10.0s) must exceed renew deadline"),
        ((15.0, 2.0, 2.0), "renew deadline (2.0s) must exceed 1.2 x retry period"),
        ((15.0, 10.0, 0.0), "retry period must be > 0"),
    ],
)
def test_unsafe_durations_are_refused_with_a_reason(
    durations: tuple[float, float, float], message: str
) -> None:
    with pytest.raises(ElectionConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ElectionConfig(*durations)


def test_fractional_lease_duration_rounds_up() -> None:
    assert ElectionConfig(2.5, 1.5, 0.5).lease_seconds == 3
