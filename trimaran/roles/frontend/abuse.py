"""Abuse limits of a Front End (SPEC OPS-6): per-source rate limits, flows per user,
account lockout after repeated failed digest responses.

Theory of operation.

* **Rate limits** (`RateLimiter`). Each source address has a token bucket per method
  class (REGISTER, MESSAGE, INVITE): `rate` tokens a second, at most `burst` held; a
  request takes one. A request finding its bucket empty is answered 503 with
  Retry-After — the time until a token is back — and a reason (RFC 3261 §21.5.4,
  the overload answer of RFC 6357 §4), before any other work. Other methods, other
  sources and the sources the limits trust (`TrustedSources`: the deployment's own
  servers, `settings.abuse.trusted_sources`) are never limited. Memory is bounded: a
  bucket idle long enough to be full again is the same as no bucket and is dropped;
  beyond `max_buckets` the least recently used is dropped (forgiven) first.
* **Flows per user** (`adds_flow_beyond`). A REGISTER that would give a user a binding
  it does not hold (a new connection or instance) beyond the limit is refused;
  refreshes and removals of held bindings always pass.
* **Lockout** (`AccountLockout`). A wrong digest response of a known user
  (`digest.AuthResult.wrong_response`: not a stale nonce, not missing credentials) is
  counted in the pool's store (`LockoutRepository.record_failure`), so the servers of
  a pool count together and see the same lock; a locked user's requests are refused
  whatever the password. The lock is read with the credentials, in the one store read
  every authenticated request makes anyway (`credentials_with_lockout`), so every
  server sees a lock or an unlock at the user's next request. While the store is away
  (resiliency mode) this server counts and locks on its own, from what it last read.

Everything takes `now` from the caller; nothing here does I/O but the store calls.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from trimaran.admin.metrics import Metrics
from trimaran.roles.frontend.registrar import RegisterPlan
from trimaran.sip.headers import Headers
from trimaran.store.base import LockoutRepository, StoreUnavailable
from trimaran.store.lockouts import LockoutPolicy, after_failure
from trimaran.store.model import Binding, Credentials, Lockout
from trimaran.topology.model import AbuseLimits

log = logging.getLogger(__name__)

#: The method classes with a bucket each; other methods are not rate-limited.
RATE_LIMITED_METHODS = ("REGISTER", "MESSAGE", "INVITE")
#: Buckets kept at most (about 300 bytes each: 15 MB when full).
MAX_BUCKETS = 50_000

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedSources:
    """Source addresses the rate limits never apply to: exact addresses and networks."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._hosts: set[str] = set()
        self._networks: list[_Network] = []
        for entry in entries:
            network = ipaddress.ip_network(entry, strict=False)
            if network.num_addresses == 1:
                self._hosts.add(str(network.network_address))
            else:
                self._networks.append(network)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        if host in self._hosts:
            return True
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


class RateLimiter:
    """Token buckets per (source, method class); see the module header."""

    def __init__(self, rate: float, burst: int, *, max_buckets: int = MAX_BUCKETS) -> None:
        if not (rate > 0 and burst >= 1 and max_buckets >= 1):
            raise ValueError("need rate > 0, burst >= 1 and max_buckets >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_buckets = max_buckets
        self._refill = self.burst / rate      # an idle bucket is full again after this
        # (source, method) -> (tokens, when counted); least recently used first
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, source: str, method: str, now: float) -> float:
        """Take a token for a `method` request from `source` at `now`: 0.0 when it may
        go on, else the seconds until a token is back (nothing is taken then)."""
        key = (source, method)
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        self._evict(now)
        return wait

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            key, (_tokens, last) = next(iter(buckets.items()))
            if len(buckets) <= self.max_buckets and now - last < self._refill:
                return
            del buckets[key]


def retry_after(wait: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait of `wait` seconds."""
    return str(max(1, math.ceil(wait)))


def adds_flow_beyond(existing: Sequence[Binding], plan: RegisterPlan, limit: int) -> bool:
    """True when `plan` gives the user a binding it does not hold and the user would
    then hold more than `limit` bindings (0: no limit)."""
    if limit <= 0:
        return False
    held = {b.key for b in existing}
    new = {b.key for b in plan.upsert} - held
    if not new:
        return False
    return len((held - set(plan.remove)) | new) > limit


class AccountLockout:
    """Counts a pool's users' wrong digest responses into its store and tells who is
    locked (see the module header). `store_ok` says whether to use the store now;
    `on_locked(aor)` is called when a failure counted here locks an account."""

    def __init__(self, repository: LockoutRepository, policy: LockoutPolicy, *,
                 store_ok: Callable[[], bool] = lambda: True,
                 on_locked: Callable[[str], None] = lambda _aor: None) -> None:
        self.policy = policy
        self._repository = repository
        self._store_ok = store_ok
        self._on_locked = on_locked
        #: The last row seen per user (the store's, or counted here while it is away).
        self._known: dict[str, Lockout] = {}

    async def credentials(self, username: str, realm: str) -> Credentials | None:
        """`UserRepository.credentials`, noting the user's lockout row read with them (one
        store read; raises `StoreUnavailable` as the store does)."""
        found = await self._repository.credentials_with_lockout(username, realm)
        if found is None:
            return None
        credentials, row = found
        self._remember(credentials.aor, row)
        return credentials

    def locked_now(self, aor: str, now: float) -> bool:
        """True while `aor` is locked, as of the last read (`credentials`, `locked`) or
        failure counted here."""
        row = self._known.get(aor)
        return row is not None and row.locked(now)

    async def locked(self, aor: str, now: float) -> bool:
        """True while `aor` is locked (read from the store now, when it is used)."""
        row = self._known.get(aor)
        if self._store_ok():
            try:
                row = await self._repository.get(aor)
            except StoreUnavailable as exc:
                log.info("lockout of %s read from memory: %s", aor, exc)
            else:
                self._remember(aor, row)
        return row is not None and row.locked(now)

    async def failed(self, aor: str, now: float) -> bool:
        """Count a wrong response of `aor` at `now`; True when the account is locked
        after it."""
        before = self._known.get(aor)
        row: Lockout | None = None
        if self._store_ok():
            try:
                row = await self._repository.record_failure(aor, self.policy, now=now)
            except StoreUnavailable as exc:
                log.info("failure of %s counted in memory: %s", aor, exc)
        if row is None:
            row = after_failure(before, aor, self.policy, now)
        self._remember(aor, row)
        if row.locked_at == now and row.locked(now):
            log.warning("account %s locked until %.0f: %s", aor, row.locked_until,
                        self.policy.describe())
            self._on_locked(aor)
        return row.locked(now)

    def _remember(self, aor: str, row: Lockout | None) -> None:
        if row is None:
            self._known.pop(aor, None)
        else:
            self._known[aor] = row


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused by a limit: the response to send."""

    status: int
    reason: str
    headers: Headers


def lockout_policy(limits: AbuseLimits) -> LockoutPolicy | None:
    """The account lockout `settings.abuse` asks for (None: `lockout_failures` is 0)."""
    if limits.lockout_failures <= 0:
        return None
    return LockoutPolicy(limits.lockout_failures, limits.lockout_window_seconds,
                         limits.lockout_seconds)


class FrontEndLimits:
    """One Front End's abuse limits, from `settings.abuse`; a limit set to 0 is None
    (`rate`, `lockout`) or 0 (`max_flows`). `lockouts` is the pool's store's; `agent`
    is this server's SIP address (``host:port``, for Warning headers)."""

    def __init__(self, limits: AbuseLimits, deployment_hosts: Iterable[str],
                 lockouts: LockoutRepository, metrics: Metrics, *,
                 store_ok: Callable[[], bool], agent: Callable[[], str]) -> None:
        self.trusted = TrustedSources((*limits.trusted_sources, *deployment_hosts))
        self.rate = RateLimiter(limits.rate_per_second, limits.rate_burst) \
            if limits.rate_per_second > 0 else None
        self.max_flows = limits.max_flows_per_user
        policy = lockout_policy(limits)
        self.lockout = AccountLockout(
            lockouts, policy, store_ok=store_ok, on_locked=lambda _aor: metrics.lockout()) \
            if policy is not None else None
        self._metrics = metrics
        self._agent = agent

    def rate_wait(self, source: str, method: str, now: float) -> float:
        """0.0 when a `method` request from `source` may go on at `now` (monotonic),
        else the seconds until it may."""
        if self.rate is None or method not in RATE_LIMITED_METHODS or source in self.trusted:
            return 0.0
        return self.rate.check(source, method, now)

    def rate_refusal(self, source: str, method: str, now: float) -> Refusal | None:
        """The 503 for a request from `source` beyond its rate (counted), or None."""
        wait = self.rate_wait(source, method, now)
        if wait <= 0:
            return None
        self._metrics.rate_limited(method)
        return Refusal(503, f"Service Unavailable (rate limit: too many {method} requests "
                       "from your address)", Headers([("Retry-After", retry_after(wait))]))

    def flow_refusal(self, existing: Sequence[Binding], plan: RegisterPlan) -> Refusal | None:
        """The 403 for a REGISTER adding a flow beyond the limit (counted), or None.
        403, not 503: a client told 503 tries the next server, to be refused again."""
        if not adds_flow_beyond(existing, plan, self.max_flows):
            return None
        self._metrics.flow_refused()
        return Refusal(403, "Too many registrations for this user", Headers([("Warning",
            self.warning(f"at most {self.max_flows} registrations (connections or devices) "
                         "per user"))]))

    def warning(self, text: str) -> str:
        """A Warning header value from this server (RFC 3261 §20.43, code 399)."""
        return f'399 {self._agent()} "{text}"'

