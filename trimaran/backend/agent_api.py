"""The mirroring agent's admin HTTP API (BE-4, BE-7).

=======================  ===============================================================
``GET /health``          200 while the agent runs: ``{healthy, node, role, term,
                         serving}``
``GET /principal``       200 when this node is the serving principal, else 503 (for load
                         balancers and scripts; same body as /health)
``GET /metrics``         Prometheus text exposition (`trimaran.backend.metrics`)
``GET /state``           200 `Agent.status`: role, term, principal, exposed, policy,
                         serving, synchronous, instance (running, in recovery, read-only,
                         streaming, sync names, LSNs, the partner as standby: state, sync
                         state, lag in bytes), partner/witness contact ages, the witness's
                         term/principal/exposed, the last decision (action, reason, term,
                         rule, at), the last action and its outcome, a pending manual
                         failover, recent decision changes
``POST /failover``       ``{"to": "mirror"|"primary"|NODE, "force": false}`` → 200
                         ``{result, principal, term, data_loss_possible[, warning]}``
                         once done; 409 ``{error}`` when refused or failed; 400 bad body;
                         504 when it did not finish within the agent's failover timeout
=======================  ===============================================================

Errors are JSON ``{"error": ...}``. Every endpoint but ``/health`` needs admin
credentials (`trimaran.admin.access`): a read token for the GETs, an operator token or
the deployment's admin key for ``POST /failover``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from trimaran.admin import access
from trimaran.security import https

if TYPE_CHECKING:
    from trimaran.backend.agent import Agent

log = logging.getLogger(__name__)


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status,
                        content_type="application/json",
                        headers={"Cache-Control": "no-store"})


class AgentApi:
    """Serves one agent's admin API."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on `host`:`port` (0: any free port); the bound address."""
        app = access.guarded_app(client_max_size=64 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/principal", self._principal)
        app.router.add_get("/state", self._state)
        app.router.add_get("/metrics", self._agent.metrics.handle)
        app.router.add_post("/failover", self._failover)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, host, port,   # OPS-6: only servers call agents
                              ssl_context=https.listener_ssl(strict=True)).start()
        except BaseException:
            await self.close()
            raise
        bound = runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        return self.address

    async def close(self) -> None:
        """Stop serving; idempotent."""
        runner, self._runner = self._runner, None
        self.address = None
        if runner is not None:
            await runner.cleanup()

    def _identity(self) -> dict[str, Any]:
        status = self._agent.status()
        return {"healthy": True, "node": status["node"], "role": status["role"],
                "term": status["term"], "serving": status["serving"]}

    async def _health(self, request: web.Request) -> web.Response:
        return _json(self._identity())

    async def _principal(self, request: web.Request) -> web.Response:
        body = self._identity()
        return _json(body, 200 if body["role"] == "principal" and body["serving"] else 503)

    async def _state(self, request: web.Request) -> web.Response:
        return _json(self._agent.status())

    async def _failover(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _json({"error": "the body must be a JSON object"}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("to"), str):
            return _json({"error": "to: 'mirror', 'primary' or a node name is required"}, 400)
        force, forwarded = body.get("force", False), body.get("forwarded", False)
        if not isinstance(force, bool) or not isinstance(forwarded, bool):
            return _json({"error": "force/forwarded: true or false"}, 400)
        status, answer = await self._agent.failover(body["to"], force=force,
                                                    forwarded=forwarded)
        log.info("agent %s: failover to %s (force=%s): %d %s", self._agent.config.node,
                 body["to"], force, status, answer)
        return _json(answer, status)
