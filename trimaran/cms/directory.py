"""Where users are homed, looked up in the Front End pools through their CMS homing
API (`/cms/homing/{user}`, signed with the deployment's CMS key), with a short cache:
the Directors' credential source, and the Front Ends' way to find the home pool of a
user of a pool they hold no copy of.

`RemoteLockouts` gives a Director the account lockout (OPS-6) of the users' home pools:
the homing answer carries the user's lockout row, and every wrong digest response the
Director sees is counted in the home pool's store (``POST /cms/lockouts``)
— so guessing passwords through a Director counts as it does at the Front Ends, and a
lock set anywhere holds at the Directors too (from the next lookup or failure on)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import quote

from trimaran.admin.peerclient import PeerClient
from trimaran.cms.follower import CMS_KEY_ID
from trimaran.store.base import LockoutRepository, StoreError, StoreUnavailable
from trimaran.store.lockouts import LockoutPolicy, lockout_from_json
from trimaran.store.model import Credentials, Lockout
from trimaran.topology.model import PoolRole, Server, Topology
from trimaran.topology.resolver import Resolver

HOMING_TTL = 30.0
HOMING_LIMIT = 100_000


class Directory:
    """User homing looked up in the Front End pools (no user state kept beyond a short
    cache): the `users` of a `RequestAuthenticator`."""

    def __init__(self, topology: Topology, secret: bytes, *, local_host: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pools = Resolver(topology).pools(PoolRole.FRONTEND)
        self._client = PeerClient(CMS_KEY_ID, secret, timeout=1.5, local_host=local_host)
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Credentials, str]] = {}
        self.homes: dict[str, str] = {}            # AOR -> home pool (last looked up)
        #: AOR -> its lockout row, as the last homing answer or counted failure gave it
        self.lockouts: dict[str, Lockout | None] = {}

    @property
    def users(self) -> Directory:
        """The credential lookup (this object)."""
        return self

    async def close(self) -> None:
        """Release connections."""
        await self._client.close()

    async def credentials(self, username: str, realm: str) -> Credentials | None:
        """The user's credentials from whichever pool answers first (None: unknown)."""
        key = (username, realm)
        cached = self._cache.get(key)
        if cached is not None and self._clock() - cached[0] < HOMING_TTL:
            return cached[1]
        answers = await asyncio.gather(*(self._ask(p.servers, username, realm)
                                         for p in self._pools))
        for answer in answers:
            if answer is not None:
                creds, pool = answer
                if len(self._cache) >= HOMING_LIMIT:
                    self._cache.clear()
                self._cache[key] = (self._clock(), creds, pool)
                self.homes[creds.aor] = pool
                return creds
        return None

    async def count_failure(self, aor: str) -> Lockout:
        """Count a wrong digest response of `aor` in its home pool's store; the row
        after it. `StoreUnavailable` when it was not counted there (no server of the
        pool answered, or one refused): the caller then counts it in memory."""
        home = self.homes.get(aor)
        pool = next((p for p in self._pools if p.name == home), None)
        if pool is None:
            raise StoreUnavailable(f"home pool of {aor} unknown")
        for spec in pool.servers:
            status, body = await self._client.call(
                "POST", f"http://{spec.address}:{spec.admin_port}/cms/lockouts", {"aor": aor})
            if status == 200:
                try:
                    row = lockout_from_json(body.get("lockout"))
                except ValueError as exc:
                    raise StoreUnavailable(f"lockout of {aor} from {spec.name}: {exc}") \
                        from None
                if row is None:
                    raise StoreUnavailable(f"lockout of {aor} from {spec.name}: no row")
                self.lockouts[aor] = row
                return row
            if status in (404, 409):
                raise StoreUnavailable(f"failure of {aor} not counted by {spec.name}: "
                                       f"{body.get('error', status)}")
        raise StoreUnavailable(f"no server of pool {pool.name} counted the failure of {aor}")

    async def _ask(self, servers: tuple[Server, ...], username: str,
                   realm: str) -> tuple[Credentials, str] | None:
        for spec in servers:
            status, body = await self._client.call(
                "GET", f"http://{spec.address}:{spec.admin_port}/cms/homing/"
                       f"{quote(username, safe='')}?realm={quote(realm, safe='')}")
            if status == 404:
                return None
            if status != 200:
                continue
            try:
                creds = Credentials(str(body["aor"]), str(body["username"]),
                                    str(body["realm"]), str(body["ha1_md5"]),
                                    str(body["ha1_sha256"]))
                self.lockouts[creds.aor] = lockout_from_json(body.get("lockout"))
                return creds, str(body["pool"])
            except (KeyError, ValueError):
                return None
        return None


class RemoteLockouts(LockoutRepository):
    """The `LockoutRepository` of a Director: the rows the `Directory` learnt, and the
    failures counted in the users' home pools. Only what the authenticator's
    `AccountLockout` uses is here; listing and unlocking are `trimaran user`'s."""

    def __init__(self, directory: Directory, *,
                 on_locked: Callable[[str], None] = lambda _aor: None) -> None:
        self._directory = directory
        self._on_locked = on_locked       # told when a failure counted here locked a user

    async def get(self, aor: str) -> Lockout | None:
        return self._directory.lockouts.get(aor)

    async def credentials_with_lockout(self, username: str, realm: str
                                       ) -> tuple[Credentials, Lockout | None] | None:
        creds = await self._directory.credentials(username, realm)
        if creds is None:
            return None
        return creds, self._directory.lockouts.get(creds.aor)

    async def record_failure(self, aor: str, policy: LockoutPolicy, *, now: float) -> Lockout:
        # the home pool counts with its own policy (the same settings.abuse) and clock
        before = self._directory.lockouts.get(aor)
        row = await self._directory.count_failure(aor)
        if row.locked(now) and not (before is not None and before.locked(now)):
            self._on_locked(aor)
        return row

    async def unlock(self, aor: str, *, now: float) -> bool:
        raise StoreError("a Director does not unlock users: `trimaran user unlock`")

    async def locked(self, *, now: float) -> list[Lockout]:
        return sorted((row for row in self._directory.lockouts.values()
                       if row is not None and row.locked(now)), key=lambda r: r.aor)

    async def count_locked(self, *, now: float) -> int:
        return len(await self.locked(now=now))
