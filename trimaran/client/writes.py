"""Persistent writes by simulated users, with a record of what was acknowledged, so
a failover test, drill or benchmark can check afterwards that nothing acknowledged
was lost (SPEC DR-5 RPO).

Each user keeps writing, one change at a time: a new contact appended to their
contact list (the whole list is PUT, so the list on any server that has the latest
acknowledged version contains every contact acknowledged before it), a meeting
scheduled, or — for users with a signed-in client — persistent presence published
with a numbered note (PUBLISH over SIP). A write goes to the server that served the
user last; when it refuses (409: the user is served by another pool; 503: read-only
during a failover) or does not answer, the writer tries the next server of its list.
`lost()` compares the acknowledged writes with what a server holds now.

A `tag` makes the values of one run of writers distinct from an earlier run's for
the same users (a drill repeated on one deployment), so that an old run's contact,
meeting or note can neither collide with nor stand in for a new one.

With `read_first`, a contact write first reads the list the server holds and PUTs that
plus the new contact (a client that edits the server's copy): a contact the server has
lost then stays lost instead of being re-sent by the next write, so a later check
still sees the loss even when writing went on after the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from trimaran.client.ua import UserAgent
from trimaran.client.xcap import XcapClient, XcapError
from trimaran.net.transport import TransportError
from trimaran.roles.frontend.presence import basic_pidf
from trimaran.sip.errors import SipError
from trimaran.store.model import ContactEntry, ContactList


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged write."""

    aor: str
    kind: str          # "contact" | "meeting" | "presence"
    value: str         # the contact URI, the meeting id or the presence note
    at: float          # wall-clock time of the acknowledgement
    sent: float = 0.0  # wall-clock time the acknowledged attempt was sent


@dataclass
class WriterStats:
    """What the writers did."""

    acked: list[Ack] = field(default_factory=list)
    refused: int = 0
    unreachable: int = 0
    #: every refused or unanswered attempt: (wall-clock time, "refused"|"unreachable")
    failures: list[tuple[float, str]] = field(default_factory=list)

    def refusal(self) -> None:
        """Count an attempt a server refused."""
        self.refused += 1
        self.failures.append((time.time(), "refused"))

    def no_answer(self) -> None:
        """Count an attempt no server answered."""
        self.unreachable += 1
        self.failures.append((time.time(), "unreachable"))


class UserWriter:
    """One user writing continuously against a list of HTTP base URLs."""

    def __init__(self, aor: str, username: str, password: str, bases: list[str],
                 stats: WriterStats, domain: str, agent: UserAgent | None = None, *,
                 read_first: bool = False, tag: str = "") -> None:
        self.aor = aor
        self.read_first = read_first
        self.tag = tag
        self.agent = agent
        self.bases = bases
        self.stats = stats
        self.domain = domain
        self._index = 0
        self._client = XcapClient(bases[0], aor, username, password)
        self._contacts: list[str] = []
        self._count = 0

    async def write_once(self) -> bool:
        """Write the next change once it is acknowledged by some server (tries each
        server once); False when none acknowledged it."""
        self._count += 1
        name = self.aor.split(":", 1)[1].split("@", 1)[0] + self.tag
        if self._count % 4 == 2 and self.agent is not None:
            return await self._publish(f"{name}-p{self._count}")
        kind = "meeting" if self._count % 4 == 0 else "contact"
        value = f"{name}-m{self._count}" if kind == "meeting" else \
            f"sip:{name}-c{self._count}@{self.domain}"
        for _ in range(len(self.bases)):
            self._client.base_url = self.bases[self._index % len(self.bases)]
            sent = time.time()
            try:
                if kind == "meeting":
                    await self._client.put_meeting(value, subject=f"meeting {self._count}")
                else:
                    known = self._contacts
                    if self.read_first:
                        known = [c.uri for c in (await self._client.get()).contacts]
                    # a retry of a write that took effect unanswered finds it there
                    added = [] if value in known else [value]
                    entries = tuple(ContactEntry(uri) for uri in [*known, *added])
                    await self._client.put(ContactList(self.aor, (), entries))
                    self._contacts = [*known, *added]
            except XcapError as exc:
                self.stats.refusal()
                if exc.status in (401, 403, 404, 400):
                    raise
                self._index += 1
                continue
            except (TimeoutError, aiohttp.ClientError, OSError):
                self.stats.no_answer()
                self._index += 1
                continue
            self.stats.acked.append(Ack(self.aor, kind, value, time.time(), sent))
            return True
        return False


    async def _publish(self, note: str) -> bool:
        assert self.agent is not None
        if self.agent.registered_server is None:
            self.stats.no_answer()
            return False
        sent = time.time()
        try:
            response = await self.agent.publish(basic_pidf(self.aor, "open", note))
        except (SipError, TransportError, OSError, TimeoutError):
            self.stats.no_answer()
            return False
        if not 200 <= response.status < 300:
            self.stats.refusal()
            return False
        self.stats.acked.append(Ack(self.aor, "presence", note, time.time(), sent))
        return True


def _release(busy: set[int], index: int, _: object) -> None:
    busy.discard(index)


def note_number(note: str) -> int:
    """The write number in a presence note "<user>-p<N>"."""
    return int(note.rsplit("-p", 1)[1])


class Writers:
    """Many users writing at a total rate until stopped."""

    def __init__(self, users: list[tuple[str, str, str]], bases: list[str] | None = None, *,
                 domain: str, rate: float, agents: Mapping[str, UserAgent] | None = None,
                 bases_of: Mapping[str, list[str]] | None = None,
                 read_first: bool = False, tag: str = "") -> None:
        self.stats = WriterStats()
        agents = agents or {}
        bases_of = bases_of or {}
        self.writers = [UserWriter(aor, username, password, list(bases_of.get(aor, bases or [])),
                                   self.stats, domain, agents.get(aor), read_first=read_first,
                                   tag=tag)
                        for aor, username, password in users]
        self.rate = rate
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        """Write in the background (again, after `stop`)."""
        self._stop.clear()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop writing and wait for the writes in flight."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        interval = 1.0 / self.rate
        pending: set[asyncio.Task[bool]] = set()
        i = 0
        busy: set[int] = set()
        while not self._stop.is_set():
            index = i % len(self.writers)
            i += 1
            if index not in busy:
                busy.add(index)
                task = asyncio.ensure_future(self.writers[index].write_once())
                task.add_done_callback(functools.partial(_release, busy, index))
                pending.add(task)
                task.add_done_callback(pending.discard)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def lost(self, contacts_of: Callable[[str], Awaitable[set[str]]],
                   meeting_exists: Callable[[str, str], Awaitable[bool]],
                   before: float | None = None,
                   presence_of: Callable[[str], Awaitable[str]] | None = None) -> list[Ack]:
        """Acknowledged writes (acknowledged before `before`, when given) that are not
        where they should be: `contacts_of(aor)` awaits the URIs in the user's list,
        `meeting_exists(aor, id)` awaits a bool, `presence_of(aor)` the text of the
        user's current presence documents (a presence write is there when a note of
        that write or a later one is)."""
        missing = []
        latest: dict[str, set[str]] = {}
        notes: dict[tuple[str, str], int] = {}
        for ack in self.stats.acked:
            if before is not None and ack.at >= before:
                continue
            if ack.kind == "presence":
                if presence_of is None:
                    continue
                series = ack.value.rsplit("-p", 1)[0]      # this writer's notes only
                if (ack.aor, series) not in notes:
                    found = re.findall(rf"<note>{re.escape(series)}-p(\d+)</note>",
                                       await presence_of(ack.aor))
                    notes[ack.aor, series] = max((int(n) for n in found), default=-1)
                if notes[ack.aor, series] < note_number(ack.value):
                    missing.append(ack)
            elif ack.kind == "contact":
                if ack.aor not in latest:
                    latest[ack.aor] = await contacts_of(ack.aor)
                if ack.value not in latest[ack.aor]:
                    missing.append(ack)
            elif not await meeting_exists(ack.aor, ack.value):
                missing.append(ack)
        return missing
