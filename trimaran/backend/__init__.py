"""The pool's Back End: local PostgreSQL instances (`instance`), and later their
mirroring (agent, witness, roles and terms; DESIGN §3 "Back End mirroring")."""

from trimaran.backend.instance import (
    BackendError,
    PgInstance,
    PostgresNotInstalled,
    find_bin_dir,
)

__all__ = ["BackendError", "PgInstance", "PostgresNotInstalled", "find_bin_dir"]
