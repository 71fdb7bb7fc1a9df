"""OPS-6 abuse limits without I/O, on a scripted clock: the per-source token buckets, the
flow limit of a REGISTER plan, the sliding-window lockout rule and the Front End's
lockout counting (through the store, and on its own while the store is away)."""

from __future__ import annotations

import pytest

from trimaran.admin.metrics import Metrics
from trimaran.roles.frontend.abuse import (
    AccountLockout,
    FrontEndLimits,
    RateLimiter,
    TrustedSources,
    adds_flow_beyond,
    retry_after,
)
from trimaran.roles.frontend.registrar import RegisterPlan
from trimaran.store.base import LockoutRepository, StoreUnavailable
from trimaran.store.lockouts import (
    LockoutPolicy,
    after_failure,
    lockout_from_json,
    lockout_to_json,
)
from trimaran.store.model import Binding, Credentials, Lockout
from trimaran.topology.model import AbuseLimits

ALICE = "sip:alice@trimaran.test"


# -- token buckets ----------------------------------------------------------------------

def test_a_source_gets_its_burst_then_waits_for_tokens_at_the_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.check("10.0.0.1", "REGISTER", 100.0) for _ in range(3)] == [0.0] * 3
    assert limiter.check("10.0.0.1", "REGISTER", 100.0) == pytest.approx(0.5)
    assert limiter.check("10.0.0.1", "REGISTER", 100.25) == pytest.approx(0.25)
    assert limiter.check("10.0.0.1", "REGISTER", 100.5) == 0.0   # one token came back
    assert limiter.check("10.0.0.1", "REGISTER", 100.5) > 0


def test_refused_requests_take_no_token_so_a_patient_client_gets_through() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.check("s", "MESSAGE", 0.0) == 0.0
    for _ in range(100):
        assert limiter.check("s", "MESSAGE", 0.5) > 0
    assert limiter.check("s", "MESSAGE", 1.0) == 0.0


def test_sources_and_method_classes_have_their_own_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    for _ in range(2):
        assert limiter.check("a", "REGISTER", 0.0) == 0.0
    assert limiter.check("a", "REGISTER", 0.0) > 0
    assert limiter.check("a", "MESSAGE", 0.0) == 0.0
    assert limiter.check("a", "INVITE", 0.0) == 0.0
    assert limiter.check("b", "REGISTER", 0.0) == 0.0


def test_idle_buckets_are_dropped_and_memory_stays_bounded() -> None:
    limiter = RateLimiter(rate=10.0, burst=5, max_buckets=100)
    for i in range(1000):                       # a spoofed-source flood at one instant
        limiter.check(f"10.0.{i // 256}.{i % 256}", "REGISTER", 0.0)
    assert len(limiter) == 100
    limiter.check("10.9.9.9", "REGISTER", 0.6)  # 0.5 s refills a bucket: all idle now
    assert len(limiter) == 1


def test_the_bucket_of_an_active_source_is_kept_while_others_expire() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    for t in (0.0, 0.0, 0.0):
        limiter.check("busy", "REGISTER", t)
    limiter.check("idle", "REGISTER", 0.0)
    limiter.check("busy", "REGISTER", 1.5)
    limiter.check("other", "REGISTER", 2.5)     # idle has been full again since t = 1
    assert len(limiter) == 2
    assert limiter.check("busy", "REGISTER", 2.5) == 0.0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.01) == "1"
    assert retry_after(1.0) == "1"
    assert retry_after(2.2) == "3"


def test_trusted_sources_are_addresses_and_networks() -> None:
    trusted = TrustedSources(["127.0.0.1", "::1", "10.1.0.0/16"])
    assert "127.0.0.1" in trusted and "::1" in trusted and "10.1.200.3" in trusted
    assert "127.0.0.2" not in trusted and "10.2.0.1" not in trusted
    assert "not-an-address" not in trusted


def test_limits_apply_to_register_message_invite_from_untrusted_sources_only() -> None:
    limits = FrontEndLimits(
        AbuseLimits(rate_per_second=1.0, rate_burst=1, trusted_sources=("10.1.0.0/16",)),
        ("192.0.2.10",), NoStore(), Metrics(), store_ok=lambda: True, agent=lambda: "x:5060")
    for method in ("REGISTER", "MESSAGE", "INVITE"):
        assert limits.rate_wait("192.0.2.99", method, 0.0) == 0.0
        assert limits.rate_wait("192.0.2.99", method, 0.0) > 0
    assert all(limits.rate_wait("192.0.2.99", "OPTIONS", 0.0) == 0.0 for _ in range(5))
    assert all(limits.rate_wait("192.0.2.10", "REGISTER", 0.0) == 0.0 for _ in range(5))
    assert all(limits.rate_wait("10.1.2.3", "INVITE", 0.0) == 0.0 for _ in range(5))


def test_refusals_say_why_and_are_counted() -> None:
    metrics = Metrics()
    limits = FrontEndLimits(AbuseLimits(rate_per_second=0.5, rate_burst=1,
                                        max_flows_per_user=1, trusted_sources=()),
                            (), NoStore(), metrics, store_ok=lambda: True,
                            agent=lambda: "192.0.2.1:5060")
    assert limits.rate_refusal("192.0.2.99", "INVITE", 0.0) is None
    refusal = limits.rate_refusal("192.0.2.99", "INVITE", 0.5)
    assert refusal is not None and refusal.status == 503
    assert "too many INVITE requests" in refusal.reason
    assert refusal.headers.get("Retry-After") == "2"          # 1.5 s to the next token
    assert metrics.sample("sip_rate_limited_total", method="INVITE") == 1
    flows = limits.flow_refusal([binding("a")], plan((binding("bb"),)))
    assert flows is not None and (flows.status, flows.reason) == (
        403, "Too many registrations for this user")
    assert flows.headers.get("Warning") == ('399 192.0.2.1:5060 "at most 1 registrations '
                                            '(connections or devices) per user"')
    assert limits.flow_refusal([binding("a")], plan((binding("a"),))) is None
    assert metrics.sample("registrar_flows_refused_total") == 1


def test_zero_turns_each_limit_off() -> None:
    limits = FrontEndLimits(AbuseLimits(rate_per_second=0, max_flows_per_user=0,
                                        lockout_failures=0, trusted_sources=()),
                            (), NoStore(), Metrics(), store_ok=lambda: True,
                            agent=lambda: "x:5060")
    assert limits.rate is None and limits.lockout is None and limits.max_flows == 0
    assert all(limits.rate_wait("192.0.2.99", "REGISTER", 0.0) == 0.0 for _ in range(500))


# -- flows per user -----------------------------------------------------------------------

def binding(instance: str) -> Binding:
    return Binding(ALICE, f"sip:alice@192.0.2.1:{5060 + len(instance)}", 1000.0, "c", 1,
                   "se1", instance_id=instance, reg_id=1)


def plan(upsert: tuple[Binding, ...] = (), remove: tuple[str, ...] = ()) -> RegisterPlan:
    return RegisterPlan(ALICE, upsert, remove, False, False)


def test_a_new_binding_beyond_the_limit_is_refused_and_refreshes_never_are() -> None:
    held = [binding("a"), binding("bb")]
    assert adds_flow_beyond(held, plan((binding("ccc"),)), 2)
    assert not adds_flow_beyond(held, plan((binding("ccc"),)), 3)
    assert not adds_flow_beyond(held, plan((binding("a"), binding("bb"))), 2)   # refresh
    assert not adds_flow_beyond(held, plan((binding("ccc"),), (binding("a").key,)), 2)
    assert not adds_flow_beyond(held, plan((), (binding("a").key,)), 1)      # removal
    assert not adds_flow_beyond(held, plan((binding("ccc"),)), 0)            # no limit


# -- the lockout rule --------------------------------------------------------------------

POLICY = LockoutPolicy(failures=3, window=300.0, duration=900.0)


def fail_at(times: list[float], policy: LockoutPolicy = POLICY) -> Lockout | None:
    row: Lockout | None = None
    for t in times:
        row = after_failure(row, ALICE, policy, t)
    return row


def test_n_failures_within_the_window_lock_for_the_duration() -> None:
    row = fail_at([0.0, 100.0])
    assert row is not None and not row.locked(100.0) and row.failures == (0.0, 100.0)
    row = after_failure(row, ALICE, POLICY, 299.0)
    assert row.locked(299.0) and row.locked_at == 299.0 and row.locked_until == 1199.0
    assert not row.locked(1199.0)


def test_the_window_slides_failures_older_than_it_do_not_count() -> None:
    row = fail_at([0.0, 200.0, 301.0])        # 0.0 left the window at 300
    assert row is not None and not row.locked(301.0) and row.failures == (200.0, 301.0)
    row = fail_at([0.0, 200.0, 301.0, 499.0])
    assert row is not None and row.locked(499.0)


def test_failures_while_locked_neither_count_nor_extend_the_lock() -> None:
    locked = fail_at([0.0, 1.0, 2.0])
    assert locked is not None
    assert after_failure(locked, ALICE, POLICY, 500.0) == locked


def test_after_the_lock_expires_counting_starts_again() -> None:
    row = fail_at([0.0, 1.0, 2.0, 903.0])
    assert row is not None and not row.locked(903.0) and row.failures == (903.0,)
    row = fail_at([0.0, 1.0, 2.0, 903.0, 904.0, 905.0])
    assert row is not None and row.locked(905.0) and row.locked_until == 1805.0


def test_a_row_keeps_at_most_failures_minus_one_times() -> None:
    policy = LockoutPolicy(failures=4, window=1e9, duration=1.0)
    row = fail_at([0.0, 1.0, 2.0], policy)
    assert row is not None and len(row.failures) == 3
    one = LockoutPolicy(failures=1, window=10.0, duration=5.0)
    assert after_failure(None, ALICE, one, 0.0).locked(0.0)


@pytest.mark.parametrize("args", [(0, 1.0, 1.0), (1001, 1.0, 1.0), (3, 0.0, 1.0),
                                  (3, 1.0, -1.0), (3, float("inf"), 1.0)])
def test_a_policy_out_of_bounds_is_refused(args: tuple[int, float, float]) -> None:
    with pytest.raises(ValueError):
        LockoutPolicy(*args)


# -- counting through the store, and alone while it is away ----------------------------------

class NoStore(LockoutRepository):
    """A lockout repository that is never reachable."""

    async def get(self, aor: str) -> Lockout | None:
        raise StoreUnavailable("back end unreachable")

    async def credentials_with_lockout(self, username: str, realm: str
                                       ) -> tuple[Credentials, Lockout | None] | None:
        raise StoreUnavailable("back end unreachable")

    async def record_failure(self, aor: str, policy: LockoutPolicy, *, now: float) -> Lockout:
        raise StoreUnavailable("back end unreachable")

    async def unlock(self, aor: str, *, now: float) -> bool:
        raise StoreUnavailable("back end unreachable")

    async def locked(self, *, now: float) -> list[Lockout]:
        raise StoreUnavailable("back end unreachable")

    async def count_locked(self, *, now: float) -> int:
        raise StoreUnavailable("back end unreachable")


class MemoryStore(NoStore):
    """The pool's store, as far as lockouts go: the rows, shared by every server."""

    def __init__(self) -> None:
        self.rows: dict[str, Lockout] = {}

    async def get(self, aor: str) -> Lockout | None:
        return self.rows.get(aor)

    async def credentials_with_lockout(self, username: str, realm: str
                                       ) -> tuple[Credentials, Lockout | None] | None:
        aor = f"sip:{username}@{realm}"
        return Credentials(aor, username, realm, "0" * 32, "0" * 64), self.rows.get(aor)

    async def record_failure(self, aor: str, policy: LockoutPolicy, *, now: float) -> Lockout:
        self.rows[aor] = after_failure(self.rows.get(aor), aor, policy, now)
        return self.rows[aor]

    async def unlock(self, aor: str, *, now: float) -> bool:
        row = self.rows.pop(aor, None)
        return row is not None and row.locked(now)


async def test_servers_of_a_pool_count_together_and_one_unlock_clears_the_lock() -> None:
    store, locked_here = MemoryStore(), []
    a = AccountLockout(store, POLICY, on_locked=locked_here.append)
    b = AccountLockout(store, POLICY)
    assert not await a.failed(ALICE, 10.0)
    assert not await b.failed(ALICE, 11.0)
    assert await a.failed(ALICE, 12.0)
    assert locked_here == [ALICE]
    assert await b.locked(ALICE, 13.0) and await a.locked(ALICE, 13.0)
    assert await b.failed(ALICE, 14.0)          # still locked; not a new lock
    assert locked_here == [ALICE]
    assert await store.unlock(ALICE, now=15.0)
    assert not await a.locked(ALICE, 15.0) and not await b.locked(ALICE, 15.0)
    assert not await a.locked(ALICE, 12.0 + 900.0 + 1)


async def test_a_lock_is_seen_with_the_credentials_read_for_every_request() -> None:
    store = MemoryStore()
    a, b = AccountLockout(store, POLICY), AccountLockout(store, POLICY)
    for t in (1.0, 2.0, 3.0):
        await a.failed(ALICE, t)
    assert not b.locked_now(ALICE, 4.0)             # b has not read alice since
    assert await b.credentials("alice", "trimaran.test") is not None
    assert b.locked_now(ALICE, 4.0)
    await store.unlock(ALICE, now=5.0)
    assert a.locked_now(ALICE, 5.0)                 # until a reads alice again
    await a.credentials("alice", "trimaran.test")
    assert not a.locked_now(ALICE, 5.0)


async def test_without_the_store_a_server_counts_and_locks_on_its_own() -> None:
    store, healthy = MemoryStore(), [True]
    lockout = AccountLockout(store, POLICY, store_ok=lambda: healthy[0])
    assert not await lockout.failed(ALICE, 0.0)     # counted in the store
    healthy[0] = False                              # resiliency mode: memory only
    assert not await lockout.failed(ALICE, 1.0)
    assert await lockout.failed(ALICE, 2.0)
    assert await lockout.locked(ALICE, 3.0)
    assert store.rows[ALICE].failures == (0.0,)     # the store saw only the first


async def test_an_unreachable_store_falls_back_to_what_was_last_read() -> None:
    lockout = AccountLockout(NoStore(), LockoutPolicy(failures=2, window=60.0, duration=60.0))
    assert not await lockout.failed(ALICE, 0.0)
    assert await lockout.failed(ALICE, 1.0)
    assert await lockout.locked(ALICE, 2.0)
    assert not await lockout.locked(ALICE, 61.0)


def test_a_lockout_row_crosses_to_a_director_unchanged_and_bad_rows_are_refused() -> None:
    row = Lockout("sip:a@x", (1.5, 2.5), locked_at=3.0, locked_until=903.0)
    assert lockout_from_json(lockout_to_json(row)) == row
    assert lockout_from_json(lockout_to_json(None)) is None
    for bad in ("x", {"failures": []}, {"aor": "sip:a@x", "failures": ["no"]},
                {"aor": "sip:a@x", "locked_until": {}}):
        with pytest.raises(ValueError):
            lockout_from_json(bad)
