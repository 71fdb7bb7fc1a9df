"""The witness (trimaran.backend.witness): votes, exposure, terms and fencing of lower
terms on the sans-IO core with scripted time; durability and the HTTP API on the
real service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import admincreds
from trimaran.backend.witness import Record, Witness, WitnessCore, WitnessError

B = "pool1"
TIMEOUT = 4.0


class Core:
    """A `WitnessCore` started at time 0 whose saves are recorded."""

    def __init__(self, records: dict[str, Record] | None = None, now: float = 0.0) -> None:
        self.saved: list[tuple[str, Record]] = []
        self.core = WitnessCore(lambda b, r: self.saved.append((b, r)), now=now,
                                principal_timeout=TIMEOUT, records=records)

    def beat(self, now: float, agent: str = "a", *, role: str = "principal", term: int = 1,
             serving: bool = True, synchronous: bool = True,
             exposed: bool = False) -> dict[str, Any]:
        return self.core.heartbeat(B, {"agent": agent, "role": role, "term": term,
                                       "serving": serving, "synchronous": synchronous,
                                       "exposed": exposed, "sees_partner": True}, now)

    def vote(self, now: float, candidate: str = "b", term: int = 2, *,
             synchronous: bool = True, **extra: Any) -> dict[str, Any]:
        return self.core.vote(B, {"candidate": candidate, "term": term,
                                  "synchronous": synchronous, **extra}, now)

    def expose(self, now: float, agent: str = "a", term: int = 1,
               exposed: bool = True) -> dict[str, Any]:
        return self.core.expose(B, {"agent": agent, "term": term, "exposed": exposed}, now)


def running_pair(now: float = 0.0) -> Core:
    """Principal ``a`` and mirror ``b`` in term 1, both reporting serving at `now`."""
    w = Core()
    w.beat(now)
    w.beat(now, "b", role="mirror")
    return w


def refused(call: Any, status: int = 409) -> str:
    with pytest.raises(WitnessError) as info:
        call()
    assert info.value.status == status
    return info.value.message


# --- terms and heartbeats -------------------------------------------------------------

def test_the_principal_s_first_heartbeat_records_its_term_durably() -> None:
    w = Core()
    view = w.beat(0.0)
    assert (view["term"], view["principal"], view["exposed"]) == (1, "a", False)
    assert w.saved == [(B, Record(1, "a", False))]
    assert view["agents"]["a"]["serving"] and view["principal_timeout"] == TIMEOUT


def test_a_lower_term_is_refused_with_the_current_view() -> None:
    """BE-3: fencing by term — the stale agent learns the current term."""
    w = running_pair()
    w.vote(5.0)
    with pytest.raises(WitnessError) as info:
        w.beat(5.1, "a", term=1)
    assert info.value.status == 409 and "stale term 1" in info.value.message
    assert info.value.view is not None and info.value.view["term"] == 2
    assert "stale term" in refused(lambda: w.vote(5.2, "a", term=1))
    assert "not the principal" in refused(lambda: w.expose(5.3, "a", term=1))


def test_a_higher_term_from_a_principal_is_adopted() -> None:
    """A failover forced while the witness was away."""
    w = running_pair()
    view = w.beat(1.0, "b", term=3, exposed=True)
    assert (view["term"], view["principal"], view["exposed"]) == (3, "b", True)
    assert w.saved[-1] == (B, Record(3, "b", True))


def test_a_mirror_s_higher_term_changes_nothing() -> None:
    w = running_pair()
    assert w.beat(1.0, "b", role="mirror", term=7)["term"] == 1


# --- votes (BE-2, BE-3, BE-5) ---------------------------------------------------------

def test_no_vote_while_the_principal_is_heard() -> None:
    """BE-3: partners cut from each other, the witness still hears the principal."""
    w = running_pair()
    w.beat(3.0)
    assert "heard principal a serving" in refused(lambda: w.vote(6.9))


def test_a_vote_goes_to_the_synchronous_mirror_after_the_principal_s_silence() -> None:
    """BE-2: recorded durably before the answer, with the principal's clock reset."""
    w = running_pair()
    w.beat(1.0, serving=False)              # its agent answers, its instance is down
    answer = w.vote(4.1)
    assert answer["granted"] and answer["view"]["principal"] == "b"
    assert w.saved[-1] == (B, Record(2, "b", False))
    assert answer["view"]["principal_silent_for"] == 0.0
    assert w.vote(4.2)["granted"]           # a retry of the same vote: same answer
    assert len(w.saved) == 2


def test_no_vote_for_a_mirror_that_was_not_synchronous() -> None:
    w = running_pair()
    assert "not synchronous" in refused(lambda: w.vote(5.0, synchronous=False))


def test_no_vote_while_the_principal_runs_exposed() -> None:
    """BE-5: no failover until the mirror has resynchronised."""
    w = running_pair()
    w.beat(0.0, "b", role="mirror", serving=False)
    w.expose(5.0)
    assert "exposed" in refused(lambda: w.vote(20.0))
    w.beat(21.0, synchronous=True)          # the principal is synchronous again
    assert not w.core.view(B, 21.0)["exposed"]
    assert w.vote(30.0)["granted"]


@pytest.mark.parametrize(("term", "candidate", "reason"), [
    (3, "b", "not the next term"),
    (2, "a", "is the principal already"),
])
def test_malformed_votes_are_refused(term: int, candidate: str, reason: str) -> None:
    w = running_pair()
    assert reason in refused(lambda: w.vote(10.0, candidate, term))


def test_no_vote_before_any_principal_is_known() -> None:
    w = Core()
    assert "no principal known" in refused(lambda: w.vote(10.0, "b", 1))


def test_a_planned_handover_needs_no_silence() -> None:
    """BE-4: the principal itself passes the term on."""
    w = running_pair()
    answer = w.vote(0.5, requested_by="a")
    assert answer["view"]["principal"] == "b" and not answer["view"]["exposed"]
    w2 = running_pair()
    assert "not caught up" in refused(lambda: w2.vote(0.5, requested_by="a",
                                                      synchronous=False))


def test_a_forced_vote_needs_silence_and_leaves_the_new_principal_exposed() -> None:
    """BE-4: --force may lose data; not while the witness hears the principal."""
    w = running_pair()
    assert "heard principal" in refused(lambda: w.vote(1.0, force=True, synchronous=False))
    answer = w.vote(5.0, force=True, synchronous=False)
    assert answer["view"]["principal"] == "b" and answer["view"]["exposed"]


def test_after_a_restart_the_witness_waits_a_full_timeout_before_voting() -> None:
    w = Core({B: Record(1, "a", False)}, now=100.0)
    assert "heard principal" in refused(lambda: w.vote(103.0))
    assert w.vote(104.5)["granted"]


# --- exposure (BE-5) ------------------------------------------------------------------

def test_exposure_only_when_the_mirror_is_not_heard_streaming() -> None:
    w = running_pair()
    assert "hears mirror b streaming" in refused(lambda: w.expose(1.0))
    w.beat(2.0, "b", role="mirror", serving=False)     # its standby stopped streaming
    assert "hears mirror" in refused(lambda: w.expose(3.0))
    assert w.expose(4.1)["view"]["exposed"]
    assert w.saved[-1] == (B, Record(1, "a", True))
    assert w.expose(4.2)["granted"]                    # idempotent
    assert not w.expose(5.0, exposed=False)["view"]["exposed"]


def test_only_the_principal_of_the_term_may_run_exposed() -> None:
    w = running_pair()
    assert "not the principal" in refused(lambda: w.expose(9.0, "b"))


def test_bad_requests_are_refused_with_400() -> None:
    w = running_pair()
    assert "agent" in refused(lambda: w.core.heartbeat(B, {"role": "mirror"}, 0.0), 400)
    assert "term" in refused(lambda: w.core.vote(B, {"candidate": "b", "term": -1,
                                                     "synchronous": True}, 0.0), 400)
    assert "synchronous" in refused(lambda: w.core.vote(B, {"candidate": "b", "term": 2},
                                                        0.0), 400)
    assert "role" in refused(lambda: w.core.heartbeat(B, {"agent": "a", "role": "boss",
                                                          "term": 1}, 0.0), 400)
    assert "back end id" in refused(lambda: w.core.heartbeat("../x", {}, 0.0), 400)
    assert refused(lambda: w.core.view("nope", 0.0), 404)


# --- the service ----------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, \
            session.post(url, json=body, headers=admincreds.headers()) as response:
        return response.status, await response.json()


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, \
            session.get(url, headers=admincreds.headers("read")) as response:
        return response.status, await response.json()


async def test_the_service_records_votes_durably_across_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    witness = Witness(tmp_path / "w", "127.0.0.1", 0, principal_timeout=TIMEOUT, clock=clock)
    await witness.start()
    try:
        base = f"{witness.url}/backends/{B}"
        beat = {"agent": "a", "role": "principal", "term": 1, "serving": True,
                "synchronous": True, "exposed": False, "sees_partner": True}
        assert (await _post(f"{base}/heartbeat", beat))[0] == 200
        clock.now = 10.0
        status, body = await _post(f"{base}/vote", {"candidate": "b", "term": 2,
                                                    "synchronous": True})
        assert status == 200 and body["granted"]
        status, body = await _post(f"{base}/heartbeat", beat)          # a is stale
        assert status == 409 and body["view"]["term"] == 2 and not body["granted"]
        status, body = await _post(f"{base}/vote", {"candidate": "a", "term": 2,
                                                    "synchronous": True})
        assert status == 409 and "error" in body
        assert (await _post(f"{base}/vote", {"bad": 1}))[0] == 400
        assert (await _get(f"{witness.url}/health"))[1]["backends"] == 1
    finally:
        await witness.close()

    record = json.loads((tmp_path / "w" / f"{B}.json").read_text())
    assert {k: record[k] for k in ("version", "backend", "term", "principal", "exposed")} == \
        {"version": 1, "backend": B, "term": 2, "principal": "b", "exposed": False}

    again = Witness(tmp_path / "w", "127.0.0.1", 0, clock=clock)
    await again.start()
    try:
        status, view = await _get(f"{again.url}/backends/{B}")
        assert status == 200 and (view["term"], view["principal"]) == (2, "b")
        assert (await _get(f"{again.url}/backends"))[1][B]["term"] == 2
        assert (await _get(f"{again.url}/backends/other"))[0] == 404
    finally:
        await again.close()


async def test_a_corrupt_record_stops_the_witness_from_starting(tmp_path: Path) -> None:
    (tmp_path / f"{B}.json").write_text("{not json")
    with pytest.raises(Exception, match="not valid JSON"):
        Witness(tmp_path, "127.0.0.1", 0)
