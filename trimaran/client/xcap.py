"""Client for a user's data on the Front End's HTTP API (HTTP Digest): the contact list
(XCAP-style resource-lists document) and meetings."""

from __future__ import annotations

import json
from urllib.parse import quote

import aiohttp

from trimaran.admin.resource_lists import (
    CONTENT_TYPE,
    parse_resource_lists,
    render_resource_lists,
)
from trimaran.sip import digest
from trimaran.sip.errors import SipParseError
from trimaran.store.model import ContactList

_PREFERENCE = ("SHA-256", "MD5")


class XcapError(Exception):
    """The server refused the request; `status` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def list_path(aor: str) -> str:
    """The document path of `aor`'s contact list."""
    return f"/xcap/resource-lists/users/{quote(aor, safe='')}/index"


class XcapClient:
    """One user's session with a Front End's contact-list API."""

    def __init__(self, base_url: str, aor: str, username: str, password: str, *,
                 timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.aor = aor
        self.username = username
        self._password = password
        self._nc = 0

    async def get(self) -> ContactList:
        """Fetch the contact list."""
        status, body = await self._request("GET", b"")
        if status != 200:
            raise XcapError(status, body.decode(errors="replace"))
        return parse_resource_lists(body, self.aor)

    async def put(self, contact_list: ContactList) -> int:
        """Replace the contact list; returns 200 or 201."""
        status, body = await self._request("PUT", render_resource_lists(contact_list))
        if status not in (200, 201):
            raise XcapError(status, body.decode(errors="replace"))
        return status

    async def put_meeting(self, meeting_id: str, subject: str = "",
                          attendees: tuple[str, ...] = ()) -> int:
        """Schedule (201) or change (200) a meeting organized by this user."""
        body = json.dumps({"subject": subject, "attendees": list(attendees)}).encode()
        status, answer = await self._request("PUT", body, f"/conf/meetings/{meeting_id}",
                                             "application/json")
        if status not in (200, 201):
            raise XcapError(status, answer.decode(errors="replace"))
        return status

    async def get_meeting(self, meeting_id: str) -> dict[str, object]:
        """The meeting as JSON (organizer only)."""
        status, answer = await self._request("GET", b"", f"/conf/meetings/{meeting_id}")
        if status != 200:
            raise XcapError(status, answer.decode(errors="replace"))
        value = json.loads(answer)
        if not isinstance(value, dict):
            raise XcapError(status, "meeting: not a JSON object")
        return value

    async def attach(self, meeting_id: str, name: str, data: bytes) -> str:
        """Upload a meeting file; returns its SHA-256."""
        status, answer = await self._request(
            "PUT", data, f"/conf/meetings/{meeting_id}/content/{quote(name, safe='')}",
            "application/octet-stream")
        if status != 201:
            raise XcapError(status, answer.decode(errors="replace"))
        return str(json.loads(answer)["sha256"])

    async def _request(self, method: str, body: bytes, path: str | None = None,
                       content_type: str = CONTENT_TYPE) -> tuple[int, bytes]:
        path = path or list_path(self.aor)
        url = self.base_url + path
        headers = {"Content-Type": content_type} if method == "PUT" else {}
        limit = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=limit) as session:
            async with session.request(method, url, data=body or None,
                                       headers=headers) as resp:
                if resp.status != 401:
                    return resp.status, await resp.read()
                challenge = self._pick(resp.headers.getall("WWW-Authenticate", []))
            self._nc += 1
            creds = digest.answer(challenge, method=method, uri=path, username=self.username,
                                  password=self._password, cnonce=digest.new_cnonce(),
                                  nc=self._nc)
            headers["Authorization"] = str(creds)
            async with session.request(method, url, data=body or None,
                                       headers=headers) as resp:
                return resp.status, await resp.read()

    @staticmethod
    def _pick(values: list[str]) -> digest.Challenge:
        challenges = []
        for value in values:
            try:
                challenges.append(digest.Challenge.parse(value))
            except SipParseError:
                continue
        for algorithm in _PREFERENCE:
            for challenge in challenges:
                if challenge.algorithm == algorithm:
                    return challenge
        raise XcapError(401, "no usable digest challenge")
