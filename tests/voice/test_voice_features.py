"""Features in each failure mode (SPEC EV-7): the table follows the model's (available /
depends on configuration / not available), and the user is told why a feature is not
available."""

from __future__ import annotations

import pytest

from trimaran.voice.features import (
    MODES,
    TABLE,
    Availability,
    Feature,
    Mode,
    availability,
    limitations,
    markdown_table,
    table_rows,
    why_unavailable,
)

A, D, U = Availability.AVAILABLE, Availability.DEPENDS, Availability.UNAVAILABLE
RESILIENCY = (Mode.BACKUP_REGISTRAR, Mode.BRANCH_SURVIVAL)

# The model's tables for the two resiliency modes (central site: users on the backup
# registrar; branch site: SBA cut off from the central site).
MODEL = {
    Feature.PSTN_OUTBOUND: A,
    Feature.PSTN_INBOUND: A,
    Feature.INTERNAL_CALLS: A,
    Feature.CALL_HOLD_TRANSFER: A,
    Feature.IM: A,
    Feature.PRESENCE_VIEW: A,
    Feature.CALL_FORWARDING: D,
    Feature.VOICEMAIL: D,
    Feature.SEARCH_DIRECTORY: D,
    Feature.PRESENCE_PUBLISH: U,
    Feature.CONTACT_LIST_CHANGES: U,
    Feature.CALL_FORWARDING_SETTINGS: U,
    Feature.CONFERENCING: U,
    Feature.CALL_PARK: U,
    Feature.RESPONSE_GROUPS: U,
    Feature.GROUP_PICKUP: U,
}


def test_ev7_the_table_has_every_feature_in_every_mode() -> None:
    """EV-7: one row per feature, one column per mode, nothing else."""
    assert set(TABLE) == set(Feature)
    assert set(MODES) == set(Mode)
    assert all(len(row) == len(MODES) for row in TABLE.values())
    assert set(MODEL) == set(Feature)


@pytest.mark.parametrize("mode", RESILIENCY)
@pytest.mark.parametrize("feature", list(Feature))
def test_ev7_resiliency_modes_follow_the_models_tables(feature: Feature, mode: Mode) -> None:
    """EV-7: on the backup registrar and in a cut-off branch, voice, IM and presence as
    last seen work; forwarding, voicemail and search depend on configuration; contact
    list and presence changes, conferencing, park, response groups and pickup do not."""
    assert availability(feature, mode) is MODEL[feature]


@pytest.mark.parametrize("mode", [Mode.NORMAL, Mode.FAILED_OVER])
@pytest.mark.parametrize("feature", list(Feature))
def test_ev7_normal_service_and_a_completed_failover_have_every_feature(
        feature: Feature, mode: Mode) -> None:
    """EV-7: at home, or after the pool failed over to its backup pool, all works."""
    assert availability(feature, mode) is A
    assert why_unavailable(feature, mode) is None


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("feature", list(Feature))
def test_ev7_a_feature_not_fully_available_comes_with_a_reason_naming_the_mode(
        feature: Feature, mode: Mode) -> None:
    """EV-7: the system tells the user why: every unavailable or depends cell has a
    sentence saying which mode they are in; available cells have none."""
    reason = why_unavailable(feature, mode)
    if availability(feature, mode) is A:
        assert reason is None
    else:
        assert reason is not None and reason.endswith(".")
        assert "(resiliency mode)" in reason
        assert ("backup registrar" if mode is Mode.BACKUP_REGISTRAR
                else "branch office") in reason


def test_ev7_call_park_reason_is_a_sentence_for_the_user() -> None:
    """EV-7: e.g. call park on the backup registrar."""
    assert why_unavailable(Feature.CALL_PARK, Mode.BACKUP_REGISTRAR) == (
        "Call park is not available while you are signed in to the backup registrar "
        "(resiliency mode)."
    )
    assert why_unavailable(Feature.VOICEMAIL, Mode.BRANCH_SURVIVAL) == (
        "Voicemail works while your branch office is cut off from the central site "
        "(resiliency mode) only if voicemail rerouting was configured."
    )


def test_ev7_limitations_list_what_a_client_is_told_on_entering_a_mode() -> None:
    """EV-7: every limited feature of a mode, with its availability and reason."""
    limited = limitations(Mode.BACKUP_REGISTRAR)
    assert [f for f, _, _ in limited] == [f for f in TABLE if MODEL[f] is not A]
    assert all(why_unavailable(f, Mode.BACKUP_REGISTRAR) == r for f, _, r in limited)
    assert limitations(Mode.NORMAL) == ()


def test_ev7_table_rows_cover_every_feature_and_mode_for_the_cli() -> None:
    """EV-7: `trimaran voice features` and the README print these rows."""
    rows = table_rows()
    assert [r["feature"] for r in rows] == [f.value for f in TABLE]
    for row in rows:
        feature = Feature(row["feature"])
        assert row["title"]
        assert {m: row[m] for m in MODES} == {m.value: availability(feature, m).value
                                              for m in MODES}
    table = markdown_table().splitlines()
    assert table[0] == "| feature | normal | backup_registrar | branch_survival | failed_over |"
    assert "| Call park | available | unavailable | unavailable | available |" in table
    assert len(table) == 2 + len(Feature)
