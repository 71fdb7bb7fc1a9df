"""Response Group decisions (SPEC APP-3), pure and with a fake clock: business hours over
a week (lunch break, a time zone with summer time), holidays, the order in which each
routing method offers a call to agents (longest idle and round robin with their
memory), formal agents signing in, busy agents, queue timeout and overflow."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from trimaran.apps.hours import Openness, decide
from trimaran.apps.model import (
    AgentGroup,
    BusinessHours,
    Holiday,
    Queue,
    RoutingMethod,
    TimeWindow,
    Workflow,
)
from trimaran.apps.rgs import target_uri
from trimaran.apps.routing_methods import (
    AgentBook,
    CallRouting,
    Offer,
    TimedOut,
    Wait,
    overflows,
)

PARIS = ZoneInfo("Europe/Paris")
OFFICE = (TimeWindow("08:00", "12:00"), TimeWindow("13:00", "17:30"))
HOURS = BusinessHours("Europe/Paris", (
    ("mon", OFFICE), ("tue", OFFICE), ("wed", OFFICE), ("thu", OFFICE), ("fri", OFFICE),
    ("sat", (TimeWindow("09:00", "12:00"),)), ("sun", ()),
))
HOLIDAYS = (Holiday("christmas", "2026-12-25", "2026-12-26"),
            Holiday("strike", "2026-05-05T14:00", "2026-05-05T16:30"))
HELPDESK = Workflow("helpdesk", "fe1", "+14255556000", "helpdesk", business_hours=HOURS,
                    holidays=HOLIDAYS)


def paris(text: str) -> float:
    """Wall-clock seconds of a Paris local time."""
    return datetime.fromisoformat(text).replace(tzinfo=PARIS).timestamp()


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("UTC")).timestamp()


# --- business hours and holidays ---------------------------------------------------------

WEEK = [  # 2026-01-05 is a Monday
    ("2026-01-05T07:59", Openness.CLOSED),     # before opening
    ("2026-01-05T08:00", Openness.OPEN),       # opening is inclusive
    ("2026-01-05T11:59", Openness.OPEN),
    ("2026-01-05T12:00", Openness.CLOSED),     # lunch break: the end is exclusive
    ("2026-01-05T12:30", Openness.CLOSED),
    ("2026-01-05T13:00", Openness.OPEN),
    ("2026-01-06T17:29", Openness.OPEN),       # Tuesday
    ("2026-01-06T17:30", Openness.CLOSED),
    ("2026-01-07T03:00", Openness.CLOSED),     # Wednesday night
    ("2026-01-08T10:00", Openness.OPEN),       # Thursday
    ("2026-01-09T16:00", Openness.OPEN),       # Friday
    ("2026-01-10T09:30", Openness.OPEN),       # Saturday morning
    ("2026-01-10T13:00", Openness.CLOSED),     # Saturday afternoon
    ("2026-01-11T10:00", Openness.CLOSED),     # Sunday: listed without windows
]


@pytest.mark.parametrize(("local", "expected"), WEEK)
def test_business_hours_over_a_week_with_a_lunch_break(local: str, expected: Openness) -> None:
    """APP-3: open within the day's windows (start inclusive, end exclusive), closed
    otherwise, in the workflow's time zone."""
    assert decide(HELPDESK, paris(local)).state is expected


@pytest.mark.parametrize(("moment", "expected"), [
    ("2026-01-05T06:59", Openness.CLOSED),     # 07:59 in Paris in winter (UTC+1)
    ("2026-01-05T07:00", Openness.OPEN),       # 08:00 in Paris
    ("2026-07-06T06:00", Openness.OPEN),       # 08:00 in Paris in summer (UTC+2)
    ("2026-07-06T05:59", Openness.CLOSED),
    ("2026-07-06T15:29", Openness.OPEN),       # 17:29 in Paris
    ("2026-07-06T15:30", Openness.CLOSED),
])
def test_business_hours_follow_the_time_zone_and_summer_time(moment: str,
                                                             expected: Openness) -> None:
    """APP-3: the same UTC instant is open or closed by the local time on the wall."""
    assert decide(HELPDESK, utc(moment)).state is expected


@pytest.mark.parametrize(("local", "expected"), [
    ("2026-12-24T23:59", Openness.CLOSED),     # Thursday night, no holiday yet
    ("2026-12-25T00:00", Openness.HOLIDAY),    # a date starts at midnight (inclusive)
    ("2026-12-25T10:00", Openness.HOLIDAY),    # a Friday: the holiday wins over the hours
    ("2026-12-25T23:59", Openness.HOLIDAY),
    ("2026-12-26T00:00", Openness.CLOSED),     # end exclusive: Saturday before 09:00
    ("2026-12-26T09:00", Openness.OPEN),
    ("2026-05-05T13:59", Openness.OPEN),       # date-times
    ("2026-05-05T14:00", Openness.HOLIDAY),
    ("2026-05-05T16:29", Openness.HOLIDAY),
    ("2026-05-05T16:30", Openness.OPEN),
])
def test_holidays_from_start_inclusive_to_end_exclusive(local: str,
                                                        expected: Openness) -> None:
    """APP-3: a holiday closes the workflow, whatever its hours."""
    decision = decide(HELPDESK, paris(local))
    assert decision.state is expected
    if expected is Openness.HOLIDAY:
        assert decision.reason.startswith("Closed for ")


def test_a_workflow_without_business_hours_is_open_except_on_holidays() -> None:
    """APP-3: no hours means always open; holidays are then in UTC."""
    always = Workflow("always", "fe1", "+14255556001", "q", holidays=HOLIDAYS[:1])
    assert decide(always, utc("2026-01-11T03:00")).state is Openness.OPEN
    assert decide(always, utc("2026-12-25T03:00")).state is Openness.HOLIDAY


def test_24_00_closes_at_midnight() -> None:
    late = Workflow("late", "fe1", "+14255556002", "q", business_hours=BusinessHours(
        "UTC", (("mon", (TimeWindow("20:00", "24:00"),)),)))
    assert decide(late, utc("2026-01-05T23:59")).state is Openness.OPEN
    assert decide(late, utc("2026-01-06T00:00")).state is Openness.CLOSED


# --- routing methods ---------------------------------------------------------------------

A, B, C = (f"sip:{n}@trimaran.test" for n in ("alice", "bob", "carol"))


def group(routing: RoutingMethod, *, formal: bool = False, alert: float = 10.0,
          name: str = "g") -> AgentGroup:
    return AgentGroup(name, (A, B, C), routing, formal, alert)


def queue(timeout: float | None = None, overflow: int | None = None,
          groups: tuple[str, ...] = ("g",)) -> Queue:
    return Queue("q", groups, timeout_seconds=timeout, overflow_calls=overflow)


def offers(routing: CallRouting, book: AgentBook, now: float, count: int) -> list[tuple[str, ...]]:
    """The agents of the next `count` offers, each refused at once."""
    seen = []
    for _ in range(count):
        step = routing.next(book, now)
        assert isinstance(step, Offer), step
        seen.append(step.agents)
    return seen


def test_serial_offers_one_agent_at_a_time_in_list_order_then_starts_over() -> None:
    """APP-3 serial: list order; after the last agent, the first again."""
    book, g = AgentBook(), group(RoutingMethod.SERIAL)
    routing = CallRouting(queue(), [g], 0.0, pause=0.0)
    assert offers(routing, book, 0.0, 4) == [(A,), (B,), (C,), (A,)]


def test_each_offer_alerts_for_the_groups_alert_seconds_capped_by_the_queue_timeout() -> None:
    book, g = AgentBook(), group(RoutingMethod.SERIAL, alert=10.0)
    routing = CallRouting(queue(timeout=25.0), [g], 100.0)
    assert routing.next(book, 100.0) == Offer("g", (A,), 110.0)
    assert routing.next(book, 110.0) == Offer("g", (B,), 120.0)
    assert routing.next(book, 120.0) == Offer("g", (C,), 125.0)
    assert routing.next(book, 125.0) == TimedOut(25.0)


def test_longest_idle_offers_the_agent_idle_longest_first() -> None:
    """APP-3 longest idle: never had a call first (list order), then by when each one's
    last call ended."""
    book, g = AgentBook(), group(RoutingMethod.LONGEST_IDLE)
    for agent, ended in ((A, 50.0), (B, 10.0)):
        book.call_started(agent)
        book.call_ended(agent, ended)
    assert offers(CallRouting(queue(), [g], 60.0), book, 60.0, 3) == [(C,), (B,), (A,)]
    book.call_started(C)
    book.call_ended(C, 70.0)
    assert offers(CallRouting(queue(), [g], 80.0), book, 80.0, 3) == [(B,), (A,), (C,)]


def test_round_robin_starts_after_the_agent_offered_last_time() -> None:
    """APP-3 round robin: the group remembers whom it offered a call last, across calls."""
    book, g = AgentBook(), group(RoutingMethod.ROUND_ROBIN)
    assert offers(CallRouting(queue(), [g], 0.0), book, 0.0, 1) == [(A,)]    # A answers
    assert offers(CallRouting(queue(), [g], 1.0), book, 1.0, 2) == [(B,), (C,)]
    assert offers(CallRouting(queue(), [g], 2.0), book, 2.0, 1) == [(A,)]
    other = group(RoutingMethod.ROUND_ROBIN, name="other")   # memory is per group
    assert offers(CallRouting(queue(groups=("other",)), [other], 3.0), book, 3.0, 1) == [(A,)]


def test_parallel_offers_every_available_agent_at_once() -> None:
    """APP-3 parallel: all at once, but not an agent busy on one of our calls."""
    book, g = AgentBook(), group(RoutingMethod.PARALLEL)
    book.call_started(B)
    assert offers(CallRouting(queue(), [g], 0.0), book, 0.0, 1) == [(A, C)]


def test_attendant_offers_every_signed_in_agent_busy_or_not() -> None:
    """APP-3 attendant: busy and alerted agents too, but only those signed in."""
    book, g = AgentBook(), group(RoutingMethod.ATTENDANT, formal=True)
    book.sign_in("g", A)
    book.sign_in("g", B)
    book.call_started(A)
    book.alerting(B, True)
    assert offers(CallRouting(queue(), [g], 0.0), book, 0.0, 1) == [(A, B)]


def test_busy_or_alerted_agents_are_skipped() -> None:
    book, g = AgentBook(), group(RoutingMethod.SERIAL)
    book.call_started(A)
    book.alerting(B, True)
    assert offers(CallRouting(queue(), [g], 0.0, pause=0.0), book, 0.0, 2) == [(C,), (C,)]
    book.alerting(B, False)
    book.call_ended(A, 1.0)
    assert not book.busy(A)
    assert offers(CallRouting(queue(), [g], 2.0), book, 2.0, 1) == [(A,)]


def test_a_formal_agent_is_offered_calls_only_while_signed_in() -> None:
    """APP-3: formal agents sign in and out; informal ones are always in."""
    book, g = AgentBook(), group(RoutingMethod.SERIAL, formal=True)
    routing = CallRouting(queue(), [g], 0.0, pause=0.0)
    assert routing.next(book, 0.0) == Wait(None)
    book.sign_in("g", "sip:bob@TRIMARAN.test")           # the domain's case does not matter
    assert routing.next(book, 1.0) == Offer("g", (B,), 11.0)
    book.sign_out("g", B)
    assert routing.next(book, 2.0) == Wait(None)
    assert book.signed_in(g) == ()
    assert book.signed_in(group(RoutingMethod.SERIAL)) == (A, B, C)


def test_groups_of_a_queue_are_tried_in_order() -> None:
    book = AgentBook()
    first = AgentGroup("first", (A,), RoutingMethod.SERIAL)
    second = AgentGroup("second", (B, C), RoutingMethod.PARALLEL)
    routing = CallRouting(queue(groups=("first", "second")), [first, second], 0.0, pause=0.0)
    assert [s.agents for s in (routing.next(book, 0.0), routing.next(book, 1.0),
                               routing.next(book, 2.0))
            if isinstance(s, Offer)] == [(A,), (B, C), (A,)]


# --- the queue: waiting, starting over, timeout, overflow --------------------------------


def test_a_cycle_that_ended_quickly_pauses_before_starting_over() -> None:
    """Agents refusing at once are not called in a tight loop."""
    book, g = AgentBook(), AgentGroup("g", (A,), RoutingMethod.SERIAL)
    routing = CallRouting(queue(timeout=60.0), [g], 0.0, pause=2.0)
    assert routing.next(book, 0.0) == Offer("g", (A,), 20.0)
    assert routing.next(book, 0.5) == Wait(2.0)          # A refused after 0.5 s
    assert routing.next(book, 1.0) == Wait(2.0)          # woken early: still paused
    assert routing.next(book, 2.0) == Offer("g", (A,), 22.0)
    assert routing.next(book, 22.0) == Offer("g", (A,), 42.0)   # a full alert: at once


def test_a_call_nobody_can_take_waits_until_the_timeout() -> None:
    """APP-3: the call waits (for a sign-in, a free agent) and times out."""
    book, g = AgentBook(), group(RoutingMethod.SERIAL, formal=True)
    routing = CallRouting(queue(timeout=30.0), [g], 10.0)
    assert routing.next(book, 10.0) == Wait(40.0)
    assert routing.next(book, 39.9) == Wait(40.0)
    assert routing.next(book, 40.0) == TimedOut(30.0)


def test_without_a_timeout_a_call_waits_for_ever() -> None:
    book, g = AgentBook(), group(RoutingMethod.SERIAL, formal=True)
    assert CallRouting(queue(), [g], 0.0).next(book, 1e9) == Wait(None)


@pytest.mark.parametrize(("limit", "waiting", "overflow"), [
    (None, 1000, False),
    (1, 0, False),        # the first call waits
    (1, 1, True),         # a second one would make two wait: more than 1
    (3, 2, False),
    (3, 3, True),
])
def test_overflow_when_more_than_overflow_calls_would_wait(limit: int | None, waiting: int,
                                                         overflow: bool) -> None:
    """APP-3: more than `overflow_calls` waiting → the new call overflows."""
    assert overflows(queue(overflow=limit), waiting) is overflow


@pytest.mark.parametrize(("target", "uri"), [
    ("sip:operator@trimaran.test", "sip:operator@trimaran.test"),
    ("+14255550100", "sip:+14255550100@trimaran.test;user=phone"),
    ("tel:+14255550100", "sip:+14255550100@trimaran.test;user=phone"),
    ("*7001", "sip:*7001@trimaran.test;user=phone"),
])
def test_forward_targets_become_uris_the_front_end_routes(target: str, uri: str) -> None:
    assert target_uri(target, "trimaran.test") == uri
