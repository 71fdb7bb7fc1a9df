"""Keys shared by servers that start together (the pair key of two paired pools) are
created once: every process reads the same key."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from trimaran.deploy.rundir import RunDir


def _read(path: str) -> str:
    return RunDir(path).pair_secret("se1", "se2").hex()


def test_servers_creating_the_pair_key_at_once_agree_on_it(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(6) as workers:
        keys = set(workers.map(_read, [str(tmp_path)] * 24))
    assert len(keys) == 1
    assert RunDir(tmp_path).pair_secret("se2", "se1").hex() in keys      # order-free
    assert oct((tmp_path / "secrets" / "_pair-se1-se2.key").stat().st_mode & 0o777) == "0o600"
