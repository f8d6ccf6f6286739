"""Object id <-> batch slot bookkeeping."""

import pytest

from maskvos.inference.objects import ObjectRegistry, UnknownObjectError


def test_slots_follow_first_prompt_order_and_shift_on_removal():
    reg = ObjectRegistry()
    assert [reg.add(7), reg.add(2), reg.add(7), reg.add(5)] == [0, 1, 0, 2]
    assert reg.obj_ids == [7, 2, 5] and len(reg) == 3 and 2 in reg
    assert reg.remove(2) == 1
    assert reg.obj_ids == [7, 5] and reg.slot(5) == 1


def test_bad_and_unknown_ids():
    reg = ObjectRegistry()
    reg.add(1)
    with pytest.raises(UnknownObjectError, match="Object id 3 is not tracked \\(known ids: 1\\)"):
        reg.slot(3)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(UnknownObjectError, match="positive integer"):
            reg.add(bad)
