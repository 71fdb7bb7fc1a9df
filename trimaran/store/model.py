"""The records Trimaran keeps, as frozen values. The store knows nothing of SIP."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class User:
    """A user homed on a pool. `aor` is canonical (`sip:user@domain`, see URI.aor)."""

    aor: str
    pool: str
    display_name: str = ""
    number: str | None = None          # E.164 (+...) when the user has a phone number
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest secrets of a user: HA1 per algorithm (RFC 2617 / RFC 8760); never the password."""

    aor: str
    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str

    def __repr__(self) -> str:  # secrets never appear in logs or tracebacks
        return f"Credentials({self.aor!r}, username={self.username!r}, realm={self.realm!r})"

    def ha1(self, algorithm: str) -> str | None:
        """The HA1 for `algorithm` ("MD5" or "SHA-256"), None for others."""
        return {"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256}.get(algorithm)


@dataclass(frozen=True, slots=True)
class Lockout:
    """A user's recent failed digest responses and the lock they led to (runtime state
    of the pool, shared by its servers; not logged). `failures` are the times of the
    failures still inside the policy's window, oldest first; `locked_until` is 0.0 when
    the user was never locked (see `trimaran.store.lockouts`)."""

    aor: str
    failures: tuple[float, ...] = ()
    locked_at: float = 0.0
    locked_until: float = 0.0

    def locked(self, now: float) -> bool:
        """True while the lock holds."""
        return self.locked_until > now


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of an AOR (RFC 3261 §10, RFC 5626 instance/reg-id).

    `server` is the Front End holding the client's flow; `flow_id` identifies that
    flow on that server; `source` is where the REGISTER came from
    ("udp:127.0.0.1:5070") so requests can be sent back over the same path.
    """

    aor: str
    contact: str                 # the Contact URI as registered
    expires_at: float            # wall-clock epoch seconds
    call_id: str
    cseq: int
    server: str
    flow_id: str = ""
    source: str = ""
    instance_id: str | None = None
    reg_id: int | None = None
    q: float = 1.0
    params: str = ""             # the Contact header params as sent (for fetches)

    @property
    def key(self) -> str:
        """What makes two bindings "the same" (RFC 5626 §6: instance+reg-id, else the URI)."""
        if self.instance_id is not None:
            return f"{self.instance_id}|{self.reg_id or 0}"
        return self.contact


@dataclass(frozen=True, slots=True)
class ContactGroup:
    """A named group in a user's contact list."""

    name: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class ContactEntry:
    """One contact in a user's list; `groups` are group names."""

    uri: str
    display_name: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContactList:
    """A user's whole contact list: groups and contacts."""

    owner: str
    groups: tuple[ContactGroup, ...] = ()
    contacts: tuple[ContactEntry, ...] = ()

    def has_contact(self, uri: str) -> bool:
        """True when `uri` is in the list."""
        return any(c.uri == uri for c in self.contacts)


@dataclass(frozen=True, slots=True)
class PresenceRule:
    """Who may see a presentity's presence: `allow`, `block` (RFC 5025 sub-handling spirit)."""

    owner: str
    watcher: str            # an AOR, or "*" for everybody
    action: str             # "allow" | "block"


@dataclass(frozen=True, slots=True)
class Publication:
    """Published event state (RFC 3903) for an AOR; persistent ones survive expiry notes."""

    aor: str
    etag: str
    event: str
    content_type: str
    body: bytes
    expires_at: float
    server: str = ""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A SUBSCRIBE dialog the server acts as notifier in (RFC 6665)."""

    id: str                      # "<call-id>|<our tag>"
    subscriber: str              # watcher AOR
    target: str                  # presentity AOR
    event: str
    expires_at: float
    dialog: str                  # serialised dialog state (JSON) for NOTIFYs
    server: str = ""


@dataclass(frozen=True, slots=True)
class Meeting:
    """A scheduled or ad-hoc conference organised by a user of the pool."""

    id: str
    organizer: str
    subject: str = ""
    created_at: float = 0.0
    expires_at: float | None = None
    attendees: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The last sign of life of a server of a pool."""

    server: str
    pool: str
    at: float
    state: str = "up"            # "up" | "draining" | "stopping"
    info: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log row (the Backup Service's outbox)."""

    seq: int
    pool: str
    # category: "user" | "credentials" | "contacts" | "presence-rules" | "presence" |
    # "meeting" | "meeting-content" | "cms"
    category: str
    key: str
    op: str            # "put" | "delete"
    payload: str       # JSON of the new value ("" for delete)
    at: float


@dataclass(frozen=True, slots=True)
class MeetingContent:
    """A file attached to a meeting, by reference: the bytes are stored once, under
    their SHA-256 (content-addressed), and shipped only where they are missing."""

    meeting_id: str
    name: str
    sha256: str          # hex digest of the bytes
    size: int


@dataclass(frozen=True, slots=True)
class CmsDocument:
    """One document of the central management store (topology, settings, per-pool
    failover state, the master locator). `version` is the CMS version (a counter over
    the whole CMS) at which the document was last written."""

    key: str
    body: str            # JSON (or YAML for the topology) text
    version: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class BackupProgress:
    """How far the Backup Service has applied one source pool's change log here."""

    source: str
    seq: int             # the last applied change's sequence number (0: none yet)
    change_at: float     # when that change was written on the source (0.0: none)
    applied_at: float    # when it was applied here (0.0: never)
