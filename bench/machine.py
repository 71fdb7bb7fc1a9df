"""What machine a benchmark ran on, for the results files."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    """Markdown bullet lines naming the machine and the run."""
    return [f"- host: {platform.node()}", f"- cpu: {cpu_model()} x {os.cpu_count()}",
            f"- python: {platform.python_version()}",
            f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
