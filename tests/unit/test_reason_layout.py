"""The drain reason layout: the operator's words first, jueying's tag last; earlier versions' reasons still
recognised as jueying's (and their automatic ones as automatic), so an upgrade never strands a drain."""

from __future__ import annotations

import pytest

from jueying_cli.actions.plan import require_reason
from jueying_cli.errors import BadInputError
from jueying_cli.scheduler.base import (
    NodeState,
    auto_reason,
    is_auto_reason,
    is_jueying_reason,
    jueying_reason,
    reason_user,
)
from jueying_cli.vocab import SchedulerState


@pytest.mark.parametrize(("reason", "ours", "auto", "user"), [
    ("xid 79 on GPU 3 [jueying:alice]", True, False, "alice"),
    ("ecc_uncorrected ECC_DBE_VOLATILE gpu2 [jueying-check]", True, True, "jueying-check"),
    # written by earlier versions
    ("jueying: xid 79 [alice]", True, False, "alice"),
    ("jueying: auto: xid XID_79 gpu0 [jueying-check]", True, True, "jueying-check"),
    ("jueying: failover to node06: xid 79 [root]", True, False, "root"),
    # anyone else's
    ("xid 79", False, False, None),
    ("maintenance [ops]", False, False, "ops"),
    ("jueying [jueying:] x", False, False, None),
    ("x [jueying:a b]", False, False, "jueying:a b"),
    ("x [jueying:alice] and more", False, False, None),
    ("x[jueying:alice]", False, False, None),
    ("x [jueying-check] ", False, False, None),
])
def test_which_reasons_are_jueyings(reason: str, ours: bool, auto: bool, user: str | None) -> None:
    assert is_jueying_reason(reason) is ours
    assert is_auto_reason(reason) is auto
    assert reason_user(reason) == user
    assert NodeState("n", SchedulerState.DRAINED, True, reason).owned is ours


def test_the_operators_words_come_first_and_fill_sinfos_20_characters() -> None:
    reason = jueying_reason("xid 79 on GPU 3, ticket OPS-1234", "alice")
    assert reason == "xid 79 on GPU 3, ticket OPS-1234 [jueying:alice]"
    assert reason[:20] == "xid 79 on GPU 3, tic"
    assert auto_reason("ecc_uncorrected ECC_DBE_VOLATILE gpu2") == \
        "ecc_uncorrected ECC_DBE_VOLATILE gpu2 [jueying-check]"


@pytest.mark.parametrize("copied", ["xid 79 [jueying:bob]", "jueying: xid 79 [bob]",
                                    "jueying: auto: xid 79 [jueying-check]", "xid 79 [jueying-check]",
                                    "  xid\t79  [jueying:bob] [jueying:carol]"])
def test_a_reason_copied_back_from_sinfo_is_not_tagged_twice_nor_made_automatic(copied: str) -> None:
    assert jueying_reason(copied, "alice") == "xid 79 [jueying:alice]"


def test_a_user_name_cannot_break_the_tag() -> None:
    reason = jueying_reason("x", "a b]c")
    assert reason == "x [jueying:a_b_c]" and is_jueying_reason(reason)


@pytest.mark.parametrize("text", ["", "   ", "jueying:", "[jueying:bob]", " [jueying-check]", "jueying: auto: "])
def test_a_reason_of_nothing_but_jueyings_own_marks_is_refused(text: str) -> None:
    with pytest.raises(BadInputError, match="a reason is required"):
        require_reason(text)
