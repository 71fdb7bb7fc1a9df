"""The Mediation role (SPEC EV-2, EV-3): a B2BUA between the Front End pools and PSTN
gateways, pooled; the SBA runs one beside its registrar (EV-5)."""

from trimaran.topology.model import Pool, PoolRole, Server

#: An SBA's mediation half listens on the SBA's SIP port plus this (its registrar on
#: the SIP port itself): gateways and Front Ends send calls there.
SBA_MEDIATION_PORT_OFFSET = 1


def mediation_port(pool: Pool, server: Server) -> int:
    """The SIP port of `server`'s mediation service (a Mediation or SBA pool's server)."""
    return server.sip_port + SBA_MEDIATION_PORT_OFFSET if pool.role is PoolRole.SBA \
        else server.sip_port
