"""Scraping a server's /metrics and reading the exposition back, as Prometheus would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests import admincreds

Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One /metrics exposition, parsed with prometheus_client's parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, Labels], float] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}

    def __call__(self, name: str, **labels: str) -> float | None:
        """The value of the sample `name{labels}`, None when absent."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def series(self, name: str) -> dict[Labels, float]:
        """Every sample named `name`, by its labels."""
        return {labels: value for (n, labels), value in self.samples.items() if n == name}

    def one_hot(self, name: str, **labels: str) -> str | None:
        """The state whose sample of the one-hot gauge `name{labels}` is 1."""
        wanted = set(labels.items())
        hot = [dict(key)["state"] for key, value in self.series(name).items()
               if value == 1 and wanted <= set(key)]
        assert len(hot) <= 1, (name, labels, hot)
        return hot[0] if hot else None


async def scrape(base_url: str, headers: dict[str, str] | None = None) -> Scrape:
    """GET `base_url`/metrics with a read token (or `headers`) and parse it (the answer
    must be 200)."""
    headers = headers if headers is not None else admincreds.headers("read")
    async with aiohttp.ClientSession() as session, \
            session.get(f"{base_url}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        return Scrape(await response.text())


async def scrape_until(base_url: str, check: Callable[[Scrape], bool],
                       timeout: float = 10.0, what: str = "metrics") -> Scrape:
    """Scrape until `check` holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await scrape(base_url)
        if check(got):
            return got
        if loop.time() > deadline:
            raise AssertionError(f"{what} not seen within {timeout} s:\n{got.text}")
        await asyncio.sleep(0.05)
