"""The scripted session of `trimaran demo`, run with the client library."""

from __future__ import annotations

import asyncio

import click

from trimaran.client.ua import UAConfig, UserAgent
from trimaran.client.xcap import XcapClient
from trimaran.net.transport import Address
from trimaran.roles.frontend.presence import basic_pidf
from trimaran.store.model import ContactEntry, ContactGroup, ContactList


def say(who: str, text: str) -> None:
    """One line of the demo's story."""
    click.echo(f"  {click.style(who, bold=True):>18}  {text}")


async def run_script(host: str, sip_port: int, admin_port: int,
                     users: dict[str, tuple[str, str, str]], domain: str) -> None:
    """alice and bob (pool se1): register, contact lists, presence, IM, a call."""
    server = Address("tcp", host, sip_port)

    async def agent(name: str) -> UserAgent:
        ua = UserAgent(UAConfig(aor=f"sip:{name}@{domain}", password=users[name][1],
                                servers=(server,), display_name=name.capitalize()))
        await ua.start()
        return ua

    click.echo("\nscripted session on pool se1:")
    alice, bob = await agent("alice"), await agent("bob")
    try:
        for ua, name in ((alice, "alice"), (bob, "bob")):
            response = await ua.register()
            say(name, f"REGISTER over TCP with digest auth -> {response.status} {response.reason}")
        base = f"http://{host}:{admin_port}"
        for owner, other in (("alice", "bob"), ("bob", "alice")):
            xcap = XcapClient(base, f"sip:{owner}@{domain}", owner, users[owner][1])
            status = await xcap.put(ContactList(
                f"sip:{owner}@{domain}", (ContactGroup("Friends"),),
                (ContactEntry(f"sip:{other}@{domain}", other.capitalize(), ("Friends",)),)))
            say(owner, f"puts {other} in the contact list (XCAP PUT) -> HTTP {status}")
        subscription, response = await bob.subscribe(f"sip:alice@{domain}")
        say("bob", f"SUBSCRIBE to alice's presence -> {response.status}")
        first = await subscription.next_notify()
        say("bob", f"NOTIFY: alice is {basic_of(first.body)}")
        response = await alice.publish(basic_pidf(f"sip:alice@{domain}", "open",
                                                  "In the office"))
        say("alice", f"PUBLISH presence 'open: In the office' -> {response.status}")
        update = await subscription.next_notify()
        say("bob", f"NOTIFY: alice is {basic_of(update.body)}")
        response = await alice.send_message(f"sip:bob@{domain}", "Hi Bob, lunch at noon?")
        say("alice", f"MESSAGE to bob -> {response.status}")
        message = await bob.next_message()
        say("bob", f"receives: {message.body.decode()!r}")
        response = await bob.send_message(f"sip:alice@{domain}", "Sure!")
        reply = await alice.next_message()
        say("alice", f"receives: {reply.body.decode()!r} ({response.status})")
        pending = alice.start_call(f"sip:bob@{domain}", b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\n")
        call = await asyncio.wait_for(bob.incoming_calls.get(), 10)
        say("bob", "phone rings (INVITE relayed by se1, 180 Ringing)")
        await call.answer(b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\n")
        await alice.wait_answer(pending)
        say("alice", "call answered: 200 OK, ACK sent")
        response = await pending.bye()
        await call.wait_ended()
        say("alice", f"hangs up: BYE -> {response.status}; bob sees the call end")
        await subscription.unsubscribe()
        await alice.unregister()
        await bob.unregister()
        say("both", "unregister")
    finally:
        await alice.close()
        await bob.close()


def basic_of(body: bytes) -> str:
    """The <basic> status of a PIDF body (for display)."""
    text = body.decode(errors="replace")
    start = text.find("<basic>")
    end = text.find("</basic>")
    return text[start + 7:end] if start >= 0 and end > start else "unknown"
