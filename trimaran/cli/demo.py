"""`trimaran demo`: the embedded default — a paired Standard Edition deployment on loopback.

Starts `examples/standard-pair.yaml` (pools se1 in dc1 and se2 in dc2), creates
demo users, then runs a short scripted session with the client library: two
users register, put each other in their contact lists, exchange presence and
IMs and place a call. The deployment is left running for real SIP clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path

import click

from trimaran.admin import access
from trimaran.cli.common import fail
from trimaran.cli.deploy import describe, start_deployment
from trimaran.deploy.rundir import RunDir
from trimaran.deploy.supervisor import pid_alive, stop_all
from trimaran.sip import digest
from trimaran.store.base import Conflict
from trimaran.store.model import Credentials, User
from trimaran.store.sqlite import SqliteStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOMAIN = "trimaran.test"
USERS = {  # name: (pool, password, number)
    "alice": ("se1", "alice-demo-pw", "+15550100001"),
    "bob": ("se1", "bob-demo-pw", "+15550100002"),
    "carol": ("se2", "carol-demo-pw", "+15550200001"),
}


async def create_users(run: RunDir) -> None:
    """Create the demo users in their pools' stores (idempotent)."""
    for pool in sorted({p for p, _, _ in USERS.values()}):
        store = SqliteStore(run.store_path(pool), pool=pool)
        await store.open()
        try:
            for name, (home, password, number) in USERS.items():
                if home != pool:
                    continue
                aor = f"sip:{name}@{DOMAIN}"
                creds = Credentials(aor, name, DOMAIN,
                                    digest.ha1(name, DOMAIN, password, "MD5"),
                                    digest.ha1(name, DOMAIN, password, "SHA-256"))
                with contextlib.suppress(Conflict):  # already there from an earlier run
                    await store.users.add(User(aor, pool, name.capitalize(), number), creds,
                                          now=time.time())
        finally:
            await store.close()


@click.command()
@click.option("--dir", "rundir", default="run-demo", show_default=True,
              help="run directory of the demo deployment")
@click.option("--topology", "file", default=str(EXAMPLES / "standard-pair.yaml"),
              show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--script/--no-script", default=True, help="run the scripted session")
def demo(rundir: str, file: str, script: bool) -> None:
    """Start the embedded default deployment and show it working."""
    from trimaran.cli.demo_script import run_script

    run = RunDir(rundir)
    if run.state_file.exists():
        state = run.load_state()
        if any(pid_alive(s.pid) for s in state.servers.values()):
            click.echo(f"stopping the previous demo in {run.path}")
            stop_all(state)
    state = start_deployment(file, run, 30.0)
    describe(state, run)
    asyncio.run(create_users(run))
    click.echo(f"demo users: {', '.join(f'{n}@{DOMAIN} ({p[0]})' for n, p in USERS.items())}")
    if script:
        se1 = state.servers["se1"]
        try:
            asyncio.run(run_script(se1.address, se1.sip_port, se1.admin_port, USERS, DOMAIN))
        except Exception as exc:  # noqa: BLE001 - the demo reports and keeps the deployment
            fail(f"the scripted session failed: {exc!r}; the deployment is still running "
                 f"(logs in {run.path / 'logs'})")
    alice = USERS["alice"]
    first = state.servers["se1"]
    command = "trimaran" if shutil.which("trimaran") else "./run trimaran"
    # The page needs admin credentials (OPS-6): a read-only token for the browser.
    viewer, _ = access.mint(run.admin_key(), "demo-viewer", access.READ, days=7)
    click.echo(f"""
The deployment keeps running. Point a SIP client (e.g. baresip, linphone) at it:
  registrar / outbound proxy : {first.address}:{first.sip_port} (UDP or TCP)
  domain / digest realm      : {DOMAIN}
  user                       : alice@{DOMAIN}   password {alice[1]}
Status:  {command} status --dir {run.path}
         live page: http://{first.address}:{first.admin_port}/status/page  (any browser; sign
         in with any user name and, as password, this read-only admin token, valid 7 days:
         {viewer}
         more: {command} admin token create --name NAME --scope read --dir {run.path})
Drills:  {command} drill pool-loss --dir {run.path}       (lose se1, fail over, fail back;
         also server-kill, site-loss, wan-cut, ...: {command} drill --help)
DR:      {command} backup status se1 --dir {run.path}     (se1 is copied to se2 as you go)
         {command} site fail dc1 --dir {run.path}         (lose data center 1)
         {command} cms failover --disaster --dir {run.path}
         {command} pool failover se1 --disaster --dir {run.path}   (alice and bob move to se2)
         {command} site restore dc1 --dir {run.path} ; {command} pool failback se1 --dir {run.path}
Stop:    {command} down --dir {run.path}""")
