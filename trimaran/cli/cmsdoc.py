"""What the commands that publish a configuration document share (`voice`, `apps`): the
topology to check it against, the check itself, and the compare-and-set write of a
document on the CMS master (then every Front End pulls at once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from trimaran.cli.common import fail, open_rundir
from trimaran.deploy.dr import Deployment, DrError
from trimaran.topology.errors import Violation, format_violations, has_errors
from trimaran.topology.loader import load_topology
from trimaran.topology.model import Topology

C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)


class _Loaded(Protocol[C_co]):
    """What a document loader returns: the configuration (None: unusable) and why."""

    @property
    def config(self) -> C_co | None: ...

    @property
    def violations(self) -> Sequence[Violation]: ...


def topology_of(topology_file: str | None, rundir: str | None) -> Topology:
    """`--topology FILE`, else the running deployment's topology."""
    if topology_file is not None:
        return load_topology(topology_file)
    return load_topology(open_rundir(rundir).topology)


def checked(file: str, topology: Topology, read: Callable[[str], _Loaded[C]],
            validate: Callable[[C, Topology], list[Violation]],
            what: str) -> tuple[C, list[Violation]]:
    """Load and validate `file`; refuse with every violation when it has errors; else the
    configuration and its warnings."""
    loaded = read(file)
    violations = list(loaded.violations)
    if loaded.config is not None:
        violations += validate(loaded.config, topology)
    if has_errors(violations) or loaded.config is None:
        fail(f"{file} is not a valid {what}:\n{format_violations(violations)}")
    return loaded.config, violations


def master_snapshot(dep: Deployment) -> tuple[str, dict[str, Any]]:
    """The CMS master and its whole snapshot, or a refusal saying why not."""
    try:
        return dep.cms_master()
    except DrError as exc:
        fail(str(exc))


def document_of(snapshot: dict[str, Any], key: str) -> dict[str, Any] | None:
    """Document `key` of a snapshot, None when absent."""
    return next((d for d in snapshot.get("documents", []) if d.get("key") == key), None)


def write_document(dep: Deployment, key: str, body: str) -> dict[str, Any]:
    """Compare-and-set document `key` on the CMS master (refused with the reason), then
    ask every Front End to pull; the master's answer with ``master`` added."""
    master, snapshot = master_snapshot(dep)
    current = document_of(snapshot, key)
    status, answer = dep.first(master, "POST", "/cms/documents", {
        "key": key, "body": body, "check": True,
        "expect_version": int(current["version"]) if current else None}, key=dep.cms_key)
    if status != 200:
        fail(f"the CMS master {master} refused {key}: {answer.get('error', status)}")
    dep.poke_all()
    return {"master": master, **answer}
