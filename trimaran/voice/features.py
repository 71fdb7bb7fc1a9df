"""Features available in each failure mode (EV-7), and why one is not.

Theory of operation. What a user can do depends on where they are signed in, which
is one of four modes:

    normal            signed in to the home pool (Front End pool or SBA): everything
    backup_registrar  the home pool is down and the user is signed in to its backup
                      registrar in resiliency mode (EV-4, and EV-5 "SBA down")
    branch_survival   the user is homed on an SBA whose WAN link to the central site
                      is down: still signed in to the SBA, in resiliency mode (EV-5)
    failed_over       the home pool was failed over to its backup pool (DR-1): the
                      backup pool now hosts the user's data, so everything works

The two resiliency modes follow the model's tables ("features available in
resiliency mode", central and branch site resiliency, Lync Server 2013): voice
keeps working — PSTN in and out through the surviving site's mediation and
gateways, calls between users, hold/retrieve/transfer — and so do IM and the
presence last seen; what needs the user's home pool data or a central service
(contact list and presence changes, changes to forwarding, conferencing, call
park, response groups, group pickup) does not; forwarding works as it was set
before the outage, voicemail only where voicemail rerouting is configured, and
directory search only where the address book can be queried from that site
("depends on configuration").

`TABLE` is that table, one row per feature; `availability` reads it,
`why_unavailable` gives the sentence a client shows the user, `table_rows` the
rows for the CLI and the README.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """Where a user is signed in (see the module header)."""

    NORMAL = "normal"
    BACKUP_REGISTRAR = "backup_registrar"
    BRANCH_SURVIVAL = "branch_survival"
    FAILED_OVER = "failed_over"


class Feature(StrEnum):
    """A user-visible feature whose availability depends on the mode."""

    PSTN_OUTBOUND = "pstn_outbound"
    PSTN_INBOUND = "pstn_inbound"
    INTERNAL_CALLS = "internal_calls"
    CALL_HOLD_TRANSFER = "call_hold_transfer"
    IM = "im"
    PRESENCE_VIEW = "presence_view"
    PRESENCE_PUBLISH = "presence_publish"
    CONTACT_LIST_CHANGES = "contact_list_changes"
    CALL_FORWARDING = "call_forwarding"
    CALL_FORWARDING_SETTINGS = "call_forwarding_settings"
    CONFERENCING = "conferencing"
    CALL_PARK = "call_park"
    RESPONSE_GROUPS = "response_groups"
    GROUP_PICKUP = "group_pickup"
    VOICEMAIL = "voicemail"
    SEARCH_DIRECTORY = "search_directory"


class Availability(StrEnum):
    """The model's three answers."""

    AVAILABLE = "available"
    DEPENDS = "depends"          # on configuration made before the outage
    UNAVAILABLE = "unavailable"


A, D, U = Availability.AVAILABLE, Availability.DEPENDS, Availability.UNAVAILABLE

# The columns of TABLE, in order.
MODES: tuple[Mode, ...] = (
    Mode.NORMAL, Mode.BACKUP_REGISTRAR, Mode.BRANCH_SURVIVAL, Mode.FAILED_OVER,
)

Row = tuple[Availability, Availability, Availability, Availability]

# EV-7: the model's tables.       normal  backup_registrar  branch_survival  failed_over
TABLE: dict[Feature, Row] = {
    Feature.PSTN_OUTBOUND:            (A,     A,                A,               A),
    Feature.PSTN_INBOUND:             (A,     A,                A,               A),
    Feature.INTERNAL_CALLS:           (A,     A,                A,               A),
    Feature.CALL_HOLD_TRANSFER:       (A,     A,                A,               A),
    Feature.IM:                       (A,     A,                A,               A),
    Feature.PRESENCE_VIEW:            (A,     A,                A,               A),
    Feature.PRESENCE_PUBLISH:         (A,     U,                U,               A),
    Feature.CONTACT_LIST_CHANGES:     (A,     U,                U,               A),
    Feature.CALL_FORWARDING:          (A,     D,                D,               A),
    Feature.CALL_FORWARDING_SETTINGS: (A,     U,                U,               A),
    Feature.CONFERENCING:             (A,     U,                U,               A),
    Feature.CALL_PARK:                (A,     U,                U,               A),
    Feature.RESPONSE_GROUPS:          (A,     U,                U,               A),
    Feature.GROUP_PICKUP:             (A,     U,                U,               A),
    Feature.VOICEMAIL:                (A,     D,                D,               A),
    Feature.SEARCH_DIRECTORY:         (A,     D,                D,               A),
}

# What each feature is called in a table.
TITLES: dict[Feature, str] = {
    Feature.PSTN_OUTBOUND: "Outbound PSTN calls",
    Feature.PSTN_INBOUND: "Inbound PSTN calls",
    Feature.INTERNAL_CALLS: "Calls between users",
    Feature.CALL_HOLD_TRANSFER: "Call hold, retrieve and transfer",
    Feature.IM: "Instant messaging between users",
    Feature.PRESENCE_VIEW: "Seeing presence (as last known)",
    Feature.PRESENCE_PUBLISH: "Changing your presence",
    Feature.CONTACT_LIST_CHANGES: "Changing your contact list",
    Feature.CALL_FORWARDING: "Call forwarding and simultaneous ringing",
    Feature.CALL_FORWARDING_SETTINGS: "Changing call forwarding settings",
    Feature.CONFERENCING: "Conferencing (meetings, dial-in)",
    Feature.CALL_PARK: "Call park",
    Feature.RESPONSE_GROUPS: "Response groups",
    Feature.GROUP_PICKUP: "Group call pickup",
    Feature.VOICEMAIL: "Voicemail",
    Feature.SEARCH_DIRECTORY: "Searching the directory",
}

# Why a feature is limited; "{mode}" is the phrase of MODE_PHRASES.
REASONS: dict[Feature, str] = {
    Feature.PRESENCE_PUBLISH: "You cannot change your presence {mode}; others see it as "
                              "last known",
    Feature.CONTACT_LIST_CHANGES: "Your contact list cannot be changed {mode}",
    Feature.CALL_FORWARDING: "Call forwarding and simultaneous ringing work only as they "
                             "were set before the outage {mode}",
    Feature.CALL_FORWARDING_SETTINGS: "Call forwarding settings cannot be changed {mode}",
    Feature.CONFERENCING: "Conferencing is not available {mode}",
    Feature.CALL_PARK: "Call park is not available {mode}",
    Feature.RESPONSE_GROUPS: "Response groups are not available {mode}",
    Feature.GROUP_PICKUP: "Group call pickup is not available {mode}",
    Feature.VOICEMAIL: "Voicemail works {mode} only if voicemail rerouting was configured",
    Feature.SEARCH_DIRECTORY: "Directory search works {mode} only if the address book can "
                              "be queried from where you are signed in",
}

MODE_PHRASES: dict[Mode, str] = {
    Mode.BACKUP_REGISTRAR: "while you are signed in to the backup registrar (resiliency "
                           "mode)",
    Mode.BRANCH_SURVIVAL: "while your branch office is cut off from the central site "
                          "(resiliency mode)",
}


def availability(feature: Feature, mode: Mode) -> Availability:
    """Whether `feature` works in `mode`, per the model's tables (EV-7)."""
    return TABLE[feature][MODES.index(mode)]


def why_unavailable(feature: Feature, mode: Mode) -> str | None:
    """The sentence telling the user why `feature` is not (or not surely) available in
    `mode`; None when it is available."""
    if availability(feature, mode) is Availability.AVAILABLE:
        return None
    return REASONS[feature].format(mode=MODE_PHRASES[mode]) + "."


def limitations(mode: Mode) -> tuple[tuple[Feature, Availability, str], ...]:
    """Every feature not fully available in `mode`, with its availability and reason,
    in table order: what a client is told when it enters that mode."""
    found: list[tuple[Feature, Availability, str]] = []
    for feature in TABLE:
        reason = why_unavailable(feature, mode)
        if reason is not None:
            found.append((feature, availability(feature, mode), reason))
    return tuple(found)


def table_rows() -> list[dict[str, str]]:
    """The table, one row per feature: ``{"feature": "call_park", "title": "Call park",
    "normal": "available", "backup_registrar": "unavailable", ...}`` (modes in `MODES`
    order), ready for JSON or a text table."""
    rows = []
    for feature, cells in TABLE.items():
        row = {"feature": feature.value, "title": TITLES[feature]}
        row.update({mode.value: cell.value for mode, cell in zip(MODES, cells, strict=True)})
        rows.append(row)
    return rows


def markdown_table() -> str:
    """The table as Markdown (for the README and ``trimaran voice features``)."""
    lines = ["| feature | " + " | ".join(MODES) + " |",
             "|---|" + "---|" * len(MODES)]
    lines.extend(f"| {row['title']} | " + " | ".join(row[m] for m in MODES) + " |"
                 for row in table_rows())
    return "\n".join(lines)


__all__ = [
    "MODES",
    "TABLE",
    "Availability",
    "Feature",
    "Mode",
    "availability",
    "limitations",
    "markdown_table",
    "table_rows",
    "why_unavailable",
]
