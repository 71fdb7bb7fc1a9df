"""IM conferences (SPEC APP-7) as real processes: an Enterprise pool of two Front End
servers on one PostgreSQL Back End. The organizer schedules a meeting over HTTP;
participants signed in on different servers of the pool join its focus, talk, and
leave, while a roster subscription (RFC 4575) follows them."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.drpair import DOMAIN, wait_for
from tests.voice.deployment import Voice, running_voice
from trimaran.apps.conference_info import parse
from trimaran.client.conference import (
    ConferenceError,
    RosterWatch,
    heard,
    join,
    roster,
    say,
)
from trimaran.client.dialogs import CallFailed
from trimaran.client.ua import UAConfig, UserAgent
from trimaran.client.xcap import XcapClient
from trimaran.net.transport import Address
from trimaran.roles.frontend.apps import focus_uri
from trimaran.sip import digest
from trimaran.store.model import Credentials, User
from trimaran.store.postgres import PostgresStore

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(),
                       reason="PostgreSQL server binaries missing"),
]

FE1A, FE1B = "127.0.34.1", "127.0.34.2"
DB = "127.0.34.21"
TOPOLOGY = f"""
name: conferences
sip_domain: {DOMAIN}
sites:
  - name: dc1
pools:
  - name: fe1
    site: dc1
    role: frontend
    edition: enterprise
    servers:
      - {{name: fe1a, address: {FE1A}}}
      - {{name: fe1b, address: {FE1B}}}
    backend:
      principal: {{address: {DB}, port: 5432}}
settings:
  heartbeat_seconds: 0.5
  failure_detection_seconds: 2
"""
#: name -> (display name, Front End signed in to, client address)
PEOPLE = {
    "olga": ("Olga Organizer", FE1B, "127.0.34.30"),
    "alice": ("Alice", FE1A, "127.0.34.31"),
    "bob": ("Bob", FE1B, "127.0.34.32"),
    "carol": ("Carol", FE1A, "127.0.34.33"),
    "dave": ("Dave", FE1B, "127.0.34.34"),
}
WAIT = 10.0


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


async def _create_users() -> None:
    store = PostgresStore(f"postgresql://trimaran@{DB}:5432/trimaran", pool="fe1")
    await store.open()
    try:
        for name, (display, _, _) in PEOPLE.items():
            password = f"{name}-pw"
            await store.users.add(User(aor(name), "fe1", display), Credentials(
                aor(name), name, DOMAIN, digest.ha1(name, DOMAIN, password, "MD5"),
                digest.ha1(name, DOMAIN, password, "SHA-256")), now=time.time())
    finally:
        await store.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[Voice]:
    # Not under pytest's base temp dir: a pytest session starting meanwhile (anyone's,
    # same user) resets that dir to 0700, and the `postgres` user could no longer reach
    # the data directory `trimaran up` has just made traversable for it.
    tmp = Path(tempfile.mkdtemp(prefix="trimaran-conf-"))
    try:
        with running_voice(tmp, TOPOLOGY) as deployment:
            asyncio.run(_create_users())
            yield deployment
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class People:
    """The users signed in for one test, each pinned to one Front End server."""

    pool: Voice
    agents: dict[str, UserAgent] = field(default_factory=dict)

    async def sign_in(self, *names: str) -> None:
        for name in names:
            display, server, host = PEOPLE[name]
            ua = UserAgent(UAConfig(aor=aor(name), password=f"{name}-pw", display_name=display,
                                    servers=(Address("tcp", server, 5060),), local_host=host))
            await ua.start()
            self.agents[name] = ua
            response = await ua.register()
            assert response.status == 200, (name, response.status, response.reason)

    def __getitem__(self, name: str) -> UserAgent:
        return self.agents[name]

    def conference_status(self) -> dict[str, object]:
        """The conference application's status on the pool's active application server
        (fe1a: the first live server by name)."""
        apps = self.pool.status(FE1A)["apps"]
        assert isinstance(apps, dict)
        status = apps["apps"]["conference"]
        assert isinstance(status, dict)
        return status


@pytest.fixture
async def people(pool: Voice) -> AsyncIterator[People]:
    signed_in = People(pool)
    try:
        yield signed_in
    finally:
        for ua in signed_in.agents.values():
            await ua.close()


async def _schedule(meeting_id: str, subject: str) -> str:
    """Olga schedules a meeting over HTTP on a Front End of her pool; its focus URI."""
    olga = XcapClient(f"http://{FE1B}:8080", aor("olga"), "olga", "olga-pw")
    assert await olga.put_meeting(meeting_id, subject=subject,
                                  attendees=(aor("alice"), aor("bob"), aor("carol"))) == 201
    return focus_uri(aor("olga"), meeting_id)


async def _roster_is(watch: RosterWatch, *names: str) -> None:
    expected = sorted(aor(n) for n in names)
    await watch.wait_until(lambda r: r.participants() == expected, WAIT)


async def test_participants_on_both_servers_join_talk_and_leave_with_the_roster_following(
        people: People) -> None:
    """APP-7: joins and leaves through either Front End server reach the focus; every
    message reaches the two other participants, naming its author; the roster
    subscription gets the full state, then one NOTIFY (one version more) per change."""
    await people.sign_in("olga", "alice", "bob", "carol")
    focus = await _schedule("weekly-sync", "Weekly sync")
    watch = await roster(people["olga"], focus)
    await watch.next_update(WAIT)
    assert (watch.roster.version, watch.participants, watch.roster.subject) == \
        (1, [], "Weekly sync")

    calls = {}
    for name in ("alice", "bob", "carol"):            # fe1a, fe1b, fe1a
        calls[name] = await join(people[name], focus)
        await _roster_is(watch, *calls)
    assert watch.roster.version == 4 and watch.roster.user_count == 3
    bob_entry = watch.roster.users[aor("bob")]
    assert bob_entry.display == "Bob" and bob_entry.roles == ("attendee",)
    assert bob_entry.endpoints[0].call_id == calls["bob"].call_id

    response = await say(people["alice"], calls["alice"], "hello from fe1a")
    assert response.status == 200
    for name in ("bob", "carol"):
        message = await heard(people[name], calls[name], WAIT)
        assert (message.sender, message.display, message.text) == \
            (aor("alice"), "Alice", "hello from fe1a")
        assert message.request.from_.uri.param("opaque") == "app:conf:focus:id:weekly-sync"

    # Outside any dialog, to the focus URI: the Front End routes it to the focus too.
    response = await people["bob"].send_message(focus, "and hello from fe1b")
    assert response.status == 200
    for name in ("alice", "carol"):
        message = await heard(people[name], calls[name], WAIT)
        assert (message.sender, message.text) == (aor("bob"), "and hello from fe1b")

    async def delivered() -> bool:
        return people.conference_status()["deliveries"] == 4
    await wait_for(delivered, WAIT, "four deliveries counted")
    status = people.conference_status()
    assert status["meetings_active"] == 1 and status["participants"] == 3
    assert status["messages_relayed"] == 2
    assert people["alice"].messages.empty()               # nobody hears their own words

    await calls["carol"].bye()
    await _roster_is(watch, "alice", "bob")
    await calls["alice"].bye()
    await calls["bob"].bye()
    await _roster_is(watch)
    assert (watch.roster.version, watch.roster.user_count) == (7, 0)
    assert watch.notifications == 7                      # no version was ever missed

    assert (await watch.close()).status == 200
    final = await watch.subscription.next_notify(WAIT)
    assert (final.headers.get("Subscription-State") or "").startswith("terminated")
    assert people.conference_status()["meetings_active"] == 0


async def test_a_meeting_that_does_not_exist_cannot_be_joined_or_watched(
        people: People) -> None:
    """APP-7: the focus of a meeting the organizer's pool does not have answers 404."""
    await people.sign_in("alice")
    focus = focus_uri(aor("olga"), "no-such-meeting")
    with pytest.raises(CallFailed) as refused:
        await join(people["alice"], focus)
    assert (refused.value.status, refused.value.reason) == (404, "No such meeting")
    with pytest.raises(ConferenceError) as not_watched:
        await roster(people["alice"], focus)
    assert not_watched.value.status == 404


async def test_only_participants_may_write_to_the_conference(people: People) -> None:
    """APP-7: a message to the focus URI from someone who has not joined is refused and
    reaches nobody."""
    await people.sign_in("alice", "dave")
    focus = await _schedule("stand-up", "Stand-up")
    call = await join(people["alice"], focus)
    response = await people["dave"].send_message(focus, "let me in")
    assert (response.status, response.reason) == (403, "Join the conference first")
    await say(people["alice"], call, "anyone?")            # still works; dave hears nothing
    assert people["dave"].messages.empty()
    await call.bye()



async def test_a_participant_who_vanished_is_dropped_when_messages_cannot_reach_them(
        people: People) -> None:
    """APP-7: a client gone without BYE leaves the roster once three messages in a row
    could not be delivered to it; the others keep talking."""
    await people.sign_in("olga", "alice", "bob", "carol")
    focus = await _schedule("retro", "Retro")
    watch = await roster(people["olga"], focus)
    calls = {name: await join(people[name], focus) for name in ("alice", "bob", "carol")}
    await _roster_is(watch, "alice", "bob", "carol")
    await people["bob"].close()                    # no BYE, no unregister: just gone
    for n in range(3):
        assert (await say(people["alice"], calls["alice"], f"still there? {n}")).status == 200
        assert (await heard(people["carol"], calls["carol"], WAIT)).text == f"still there? {n}"
    await _roster_is(watch, "alice", "carol")
    for name in ("alice", "carol"):
        await calls[name].bye()


async def test_a_roster_refresh_brings_the_full_state_and_an_unrefreshed_one_runs_out(
        people: People) -> None:
    """APP-7 over RFC 6665: a refresh is answered with the full state (the next
    version); a subscription left to expire ends with a final NOTIFY."""
    await people.sign_in("olga", "alice")
    focus = await _schedule("brief", "Brief")
    call = await join(people["alice"], focus)
    watch = await roster(people["olga"], focus, expires=2)
    await _roster_is(watch, "alice")
    assert (await watch.subscription.refresh(2)).status == 200
    again = parse((await watch.subscription.next_notify(WAIT)).body)
    assert (again.state, again.version, [u.entity for u in again.users]) == \
        ("full", 2, [aor("alice")])
    final = await watch.subscription.next_notify(WAIT)          # 2 s on, not refreshed
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert watch.subscription.terminated.is_set()
    await call.bye()
