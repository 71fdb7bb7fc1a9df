"""Back End mirroring as Prometheus metrics (SPEC OPS-4): an agent's role, term and
replication state, the actions it carried out and its role changes; the witness's view
of each Back End (term, the principal it recognises, each agent's last heartbeat).

Both describe their state at scrape time from what `Agent.status` and
`WitnessCore.view` already report (see `trimaran.admin.metrics` for sources and the
README for the list).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trimaran.admin.metrics import Families, ServerMetrics
from trimaran.backend.decide import Role

if TYPE_CHECKING:
    from trimaran.backend.agent import Agent
    from trimaran.backend.witness import WitnessCore

#: The states of ``backend_role`` and ``witness_agent_role``.
ROLES = (Role.PRINCIPAL.value, Role.MIRROR.value)


class AgentMetrics(ServerMetrics):
    """An agent's metrics: actions and role changes counted, its state described."""

    def __init__(self, agent: Agent) -> None:
        super().__init__(server=agent.config.node, role="backend-agent",
                         pool=agent.config.backend)
        self._actions = self.counter(
            "backend_actions", "Actions the agent carried out, by action (elect, promote, "
            "fence, rejoin, ...) and result (ok, failed)", ["action", "result"])
        self._role_changes = self.counter(
            "backend_role_changes", "Role changes of this node, by the role entered "
            "(principal: a failover to this node)", ["role"])
        self.add_source("agent", lambda families: describe_agent(families, agent.status()))

    def action(self, action: str, ok: bool) -> None:
        """Count an action carried out (`ok`) or failed."""
        self._actions.labels(action=action, result="ok" if ok else "failed").inc()

    def role_entered(self, role: str) -> None:
        """Count a change of this node's durable role to `role`."""
        self._role_changes.labels(role=role).inc()


def describe_agent(families: Families, status: Mapping[str, Any]) -> None:
    """Role, term, serving, synchronous, exposed, the instance, replication lag and
    contact ages, from an `Agent.status` snapshot."""
    families.state("backend_role", "Durable role of this node", ROLES, status["role"])
    families.gauge("backend_term", "Durable term of this node", status["term"])
    families.flag("backend_serving", "1 while this node serves its role (principal: "
                  "read-write; mirror: streaming)", status["serving"])
    families.flag("backend_synchronous", "1 while commits wait for the mirror (principal) "
                  "or the mirror was synchronous (mirror)", status["synchronous"])
    families.flag("backend_exposed", "1 while the principal runs without its mirror",
                  status["exposed"])
    instance = status["instance"]
    families.flag("backend_instance_running", "1 while this node's PostgreSQL runs",
                  instance["running"])
    families.flag("backend_fenced", "1 while this node's PostgreSQL is fenced "
                  "(default_transaction_read_only = on)", instance["read_only"])
    lag = instance["standby"]["lag_bytes"]
    if lag is not None:
        families.gauge("backend_replication_lag_bytes", "WAL bytes the mirror has not yet "
                       "flushed (seen on the principal)", lag)
    ages = (("backend_partner_contact_age_seconds", status["partner_contact_age"],
             "Seconds since the partner's agent last answered"),
            ("backend_witness_contact_age_seconds", status["witness"]["contact_age"],
             "Seconds since the witness last answered"))
    for name, age, doc in ages:
        if age is not None:
            families.gauge(name, doc, age)
    if status["witness"]["term"] is not None:
        families.gauge("backend_witness_term", "Term recorded by the witness, as last heard",
                       status["witness"]["term"])


def describe_witness(families: Families, core: WitnessCore, now: float) -> None:
    """Per Back End: term, principal, exposure, principal silence; per agent: last
    heartbeat age, role, term and whether it serves."""
    for backend in core.backends():
        view = core.view(backend, now)
        families.gauge("witness_backend_term", "Term the witness recorded for a Back End",
                       view["term"], backend=backend)
        if view["principal"] is not None:
            families.gauge("witness_backend_principal", "1 for the principal the witness "
                           "recognises for a Back End", 1.0, backend=backend,
                           principal=view["principal"])
        families.flag("witness_backend_exposed", "1 while the witness lets a Back End's "
                      "principal run without its mirror", view["exposed"], backend=backend)
        families.gauge("witness_principal_silent_seconds", "Seconds since the principal last "
                       "reported serving to the witness", view["principal_silent_for"],
                       backend=backend)
        for agent, contact in view["agents"].items():
            labels = {"backend": backend, "agent": agent}
            families.gauge("witness_agent_heartbeat_age_seconds", "Seconds since an agent's "
                           "last heartbeat", contact["age"], **labels)
            families.state("witness_agent_role", "Role an agent reported in its last "
                           "heartbeat", ROLES, contact["role"], **labels)
            families.gauge("witness_agent_term", "Term an agent reported in its last "
                           "heartbeat", contact["term"], **labels)
            families.flag("witness_agent_serving", "1 when an agent reported serving in its "
                          "last heartbeat", contact["serving"], **labels)
