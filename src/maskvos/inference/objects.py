"""The user's object ids and their positions (slots) in the batch of tracked objects."""

from __future__ import annotations

from maskvos.errors import MaskvosError


class UnknownObjectError(MaskvosError):
    """An object id that the session does not know."""


class ObjectRegistry:
    """Maps user object ids (`obj_id`, any int >= 1) to batch slots (`obj_slot`, 0..N-1).

    Slots are dense and follow the order in which objects were first prompted; removing an object
    shifts the slots of those after it down by one, so batched tensors can drop its row.
    """

    def __init__(self) -> None:
        self._ids: list[int] = []

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, obj_id: object) -> bool:
        return obj_id in self._ids

    @property
    def obj_ids(self) -> list[int]:
        """Object ids in slot order."""
        return list(self._ids)

    def add(self, obj_id: int) -> int:
        """The slot of `obj_id`, registering it if new."""
        if isinstance(obj_id, bool) or not isinstance(obj_id, int) or obj_id < 1:
            raise UnknownObjectError(f"Object id {obj_id!r} is not valid; use a positive integer (1, 2, ...).")
        if obj_id not in self._ids:
            self._ids.append(obj_id)
        return self._ids.index(obj_id)

    def slot(self, obj_id: int) -> int:
        """The slot of a known object."""
        try:
            return self._ids.index(obj_id)
        except ValueError:
            known = ", ".join(map(str, self._ids)) or "none"
            raise UnknownObjectError(f"Object id {obj_id} is not tracked (known ids: {known}); prompt it first.") from None

    def remove(self, obj_id: int) -> int:
        """Forget an object; returns the slot it had."""
        slot = self.slot(obj_id)
        del self._ids[slot]
        return slot
