"""The pool's Back End (DESIGN §3 "Back End mirroring", SPEC BE-1..BE-8).

- `instance`: a local PostgreSQL instance (`PgInstance`: initdb, clone, start, stop,
  kill; for mirroring also promote, pg_rewind, re-clone, standby setup).
- `pair`: `create_pair`, a new principal with its synchronous mirror.
- `decide`: the sans-IO decision core (quorum, terms, fencing, exposure) as a rule
  table; `Observation` in, `Decision` out.
- `agent` (+ `agent_actions`, `agent_io`, `agent_api`): the agent beside each
  instance — the reconcile loop, its actions and its admin API.
- `witness`: the witness service, the third vote.
"""

from trimaran.backend.instance import (
    BackendError,
    PgInstance,
    PostgresNotInstalled,
    find_bin_dir,
)

__all__ = ["BackendError", "PgInstance", "PostgresNotInstalled", "find_bin_dir"]
