"""Synchronous mirroring with a witness, for real (SPEC BE-1..BE-8): two PostgreSQL
instances (``a`` principal at creation, ``b`` its synchronous mirror), their agents
and the witness, all in this process; a writer going through the Front Ends'
multi-host read-write DSN records which numbers were acknowledged."""

from __future__ import annotations

import asyncio
import time

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.backend.mirroring import Link, Pair, Writer, fetch, mirrored_pair, wait_for
from trimaran.backend import PostgresNotInstalled, find_bin_dir
from trimaran.backend.decide import Timeouts


def _installed() -> bool:
    try:
        find_bin_dir()
    except PostgresNotInstalled:
        return False
    return True


pytestmark = pytest.mark.skipif(not _installed(), reason="PostgreSQL server binaries are "
                                "absent (Debian package 'postgresql')")


async def _numbers(pair: Pair, node: str) -> set[int]:
    return {r["n"] for r in await fetch(pair.instances[node].dsn, "SELECT n FROM numbers")}


async def _crash_node(pair: Pair, node: str) -> None:
    """The machine of `node` is lost: its agent and its instance die."""
    await pair.stop_agent(node)
    await asyncio.to_thread(pair.instances[node].kill)


def _rules(pair: Pair, node: str) -> list[str]:
    return [h["rule"] for h in pair.agents[node].history]


async def test_principal_kill_loses_no_acknowledged_write() -> None:
    """BE-2, BE-6: kill -9 the principal's postmaster under write load: the mirror is
    promoted with the witness's vote (default timeouts), writes succeed again within
    10 s, every acknowledged number is there, and the old principal comes back by
    itself as the new synchronous mirror."""
    async with mirrored_pair(timeouts=Timeouts(), witness_timeout=4.0, tick=0.5) as pair:
        await wait_for(lambda: pair.steady("a", 1), 15, "a principal, b synchronous")
        writer = Writer(pair.dsn)
        writer.start()
        await wait_for(lambda: len(writer.acked) > 50, 10, "writes flowing")
        killed_at = time.monotonic()
        await asyncio.to_thread(pair.instances["a"].kill)
        await wait_for(lambda: writer.acked_after(killed_at) is not None, 10,
                       "writes acknowledged again after the kill")
        resumed = writer.acked_after(killed_at)
        assert resumed is not None and resumed - killed_at < 10.0
        await wait_for(lambda: pair.steady("b", 2), 20, "a back as b's synchronous mirror")
        count = len(writer.acked)
        await wait_for(lambda: len(writer.acked) > count + 20, 10, "writes go on")
        await writer.stop()

        assert "elect" in _rules(pair, "b") and "mirror-rejoin" in _rules(pair, "a")
        assert pair.agents["b"].state.term == pair.agents["a"].state.term == 2
        assert not writer.failed
        on_b = await _numbers(pair, "b")
        assert set(writer.acked) <= on_b, sorted(set(writer.acked) - on_b)
        await wait_for(lambda: pair.status("a")["instance"]["replay_lsn"]
                       == pair.status("b")["instance"]["standby"]["flush_lsn"], 5, "replayed")
        assert set(writer.acked) <= await _numbers(pair, "a")


async def test_old_principal_returns_rewound_fenced_and_as_synchronous_mirror() -> None:
    """BE-3, BE-6: the principal's machine dies; after the failover its instance is
    started by hand, read-write, in the old term: no commit is acknowledged there (its
    mirror now follows b). Its agent then adopts the higher term, fences, rewinds it
    and makes it b's synchronous mirror; a direct write on it is refused."""
    async with mirrored_pair() as pair:
        await wait_for(lambda: pair.steady("a", 1), 15, "a principal, b synchronous")
        await fetch(pair.dsn, "INSERT INTO numbers VALUES (1)")
        await _crash_node(pair, "a")
        await wait_for(lambda: pair.status("b")["serving"] and pair.status("b")["term"] == 2,
                       10, "b principal in term 2")
        await fetch(pair.dsn, "INSERT INTO numbers VALUES (2)")

        old = pair.instances["a"]
        await asyncio.to_thread(old.start)                      # an admin's mistake
        conn = await asyncpg.connect(old.dsn, timeout=5)
        try:
            with pytest.raises(TimeoutError):                   # waits for a mirror: never
                await conn.execute("INSERT INTO numbers VALUES (666)", timeout=1.0)
        finally:
            conn.terminate()

        await pair.start_agent("a")
        await wait_for(lambda: pair.steady("b", 2), 20, "a back as b's synchronous mirror")
        assert _rules(pair, "a")[:3] == ["higher-term-elsewhere", "mirror-read-write",
                                         "mirror-rejoin"]
        assert "rewound" in (pair.agents["a"].last_action.detail if
                             pair.agents["a"].last_action else "")
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await fetch(old.dsn, "INSERT INTO numbers VALUES (3)")
        await fetch(pair.dsn, "INSERT INTO numbers VALUES (4)")
        await wait_for(lambda: pair.status("a")["instance"]["replay_lsn"]
                       == pair.status("b")["instance"]["standby"]["flush_lsn"], 5, "replayed")
        assert await _numbers(pair, "a") == await _numbers(pair, "b") == {1, 2, 4}


async def test_without_the_witness_no_automatic_failover_but_a_forced_one() -> None:
    """BE-3, BE-4: the witness is down when the principal's machine dies: the mirror
    never promotes by itself; the admin's forced failover works, says it may lose
    data, and runs exposed; the witness, back, adopts the new term; the old principal
    rejoins and protection is restored without the admin."""
    async with mirrored_pair() as pair:
        await wait_for(lambda: pair.steady("a", 1), 15, "a principal, b synchronous")
        await pair.stop_witness()
        await _crash_node(pair, "a")
        await asyncio.sleep(4.0)
        status = pair.status("b")
        assert status["role"] == "mirror" and status["instance"]["in_recovery"]
        assert pair.decision("b") == "mirror-alone"

        code, body = await pair.failover("b", "mirror", force=True)
        assert code == 200, body
        assert body["principal"] == "b" and body["term"] == 2 and body["data_loss_possible"]
        await fetch(pair.dsn, "INSERT INTO numbers VALUES (1)")
        assert pair.status("b")["exposed"]

        await pair.start_witness()
        assert pair.witness is not None
        await wait_for(lambda: pair.witness is not None
                       and pair.witness.core.view("pool1", time.monotonic())["term"] == 2,
                       5, "the witness adopts term 2")
        await pair.start_agent("a")
        await wait_for(lambda: pair.steady("b", 2), 20, "a back as b's synchronous mirror")
        view = pair.witness.core.view("pool1", time.monotonic())
        assert view["principal"] == "b" and not view["exposed"]


def partner_links(pair: Pair) -> list[Link]:
    """The links between the partners (not the principal's link to the witness)."""
    return [link for name, link in pair.links.items() if name != "a->witness"]


async def test_partners_cut_off_from_each_other_but_seeing_the_witness_do_not_fail_over(
        ) -> None:
    """BE-3, BE-5: every path between the partners is cut — agent to agent both ways
    and the replication stream (TCP relays that are closed) — while both still reach
    the witness. No failover: the mirror stays (the witness still hears the
    principal); the principal, policy available, runs exposed with the witness's
    agreement and writes go on. Healed, the mirror catches up and the principal is
    synchronous again."""
    async with mirrored_pair(partner_links=True) as pair:
        await wait_for(lambda: pair.steady("a", 1), 15, "a principal, b synchronous")
        writer = Writer(pair.dsn)
        writer.start()
        await wait_for(lambda: len(writer.acked) > 20, 10, "writes flowing")
        for link in partner_links(pair):
            await link.cut()
        cut_at = time.monotonic()
        await wait_for(lambda: pair.status("a")["exposed"], 10, "a runs exposed")
        await asyncio.sleep(pair.witness_timeout + 1.0)
        assert pair.status("b")["role"] == "mirror" and pair.status("b")["term"] == 1
        assert "partners-cut" in _rules(pair, "b")             # before a went exposed
        assert pair.decision("b") == "principal-exposed"        # and since then
        assert "elect" not in _rules(pair, "b")
        assert pair.status("a")["role"] == "principal" and pair.status("a")["serving"]
        late = writer.acked_after(cut_at + pair.witness_timeout)
        assert late is not None, "writes stopped during the cut"

        for link in partner_links(pair):
            await link.heal()
        await wait_for(lambda: pair.steady("a", 1), 20, "b synchronous again, exposure over")
        await writer.stop()
        assert not writer.failed
        await wait_for(lambda: pair.status("b")["instance"]["replay_lsn"]
                       == pair.status("a")["instance"]["standby"]["flush_lsn"], 5, "replayed")
        assert set(writer.acked) <= await _numbers(pair, "b")


async def test_principal_cut_off_from_mirror_and_witness_is_fenced_and_replaced(
        ) -> None:
    """BE-3: the principal loses both its mirror and the witness (every link from it
    cut: agent to agent both ways, the replication stream, its witness link). It must
    stop accepting writes; the mirror, with the witness's vote, takes over in a higher
    term; a write sent straight to the old principal is refused (no split brain);
    healed, the old principal rejoins as the synchronous mirror."""
    async with mirrored_pair(partner_links=True) as pair:
        await wait_for(lambda: pair.steady("a", 1), 15, "a principal, b synchronous")
        writer = Writer(pair.dsn)
        writer.start()
        await wait_for(lambda: len(writer.acked) > 20, 10, "writes flowing")
        for link in pair.links.values():
            await link.cut()
        cut_at = time.monotonic()
        await wait_for(lambda: pair.status("b")["role"] == "principal"
                       and pair.status("b")["serving"], 15, "b promoted")
        assert pair.status("b")["term"] == 2
        await wait_for(lambda: pair.status("a")["instance"]["read_only"], 10, "a fenced")
        with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError):
            await fetch(pair.instances["a"].dsn, "INSERT INTO numbers VALUES (-1)")
        await wait_for(lambda: writer.acked_after(cut_at) is not None, 10, "writes go on, on b")
        for link in pair.links.values():
            await link.heal()
        await wait_for(lambda: pair.steady("b", 2), 30, "a back as b's synchronous mirror")
        await writer.stop()
        assert set(writer.acked) <= await _numbers(pair, "b")
        assert -1 not in await _numbers(pair, "b")


async def test_planned_failover_and_back_under_write_load_lose_nothing() -> None:
    """BE-4: a planned failover to the mirror and back, while a writer writes: each
    call returns once done, says no data was lost, and no write fails (beyond the
    writer's retries) or goes missing. The request may go to either agent."""
    async with mirrored_pair() as pair:
        await wait_for(lambda: pair.steady("a", 1), 15, "a principal, b synchronous")
        writer = Writer(pair.dsn)
        writer.start()
        await wait_for(lambda: len(writer.acked) > 20, 10, "writes flowing")

        code, body = await pair.failover("a", "mirror")          # run by the principal
        assert code == 200, body
        assert body == {"result": "done", "principal": "b", "term": 2,
                        "data_loss_possible": False}
        await wait_for(lambda: pair.steady("b", 2), 20, "a rejoined as b's mirror")
        count = len(writer.acked)
        await wait_for(lambda: len(writer.acked) > count + 20, 10, "writes go on")

        code, body = await pair.failover("a", "primary")         # forwarded to b
        assert code == 200, body
        assert body["principal"] == "a" and body["term"] == 3
        await wait_for(lambda: pair.steady("a", 3), 20, "b rejoined as a's mirror")
        count = len(writer.acked)
        await wait_for(lambda: len(writer.acked) > count + 20, 10, "writes go on")
        await writer.stop()

        assert not writer.failed
        assert writer.acked == list(range(1, len(writer.acked) + 1))
        assert set(writer.acked) <= await _numbers(pair, "a")
        code, body = await pair.failover("b", "primary")
        assert code == 200 and body["result"] == "nothing to do"
