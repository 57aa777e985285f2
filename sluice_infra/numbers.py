"""Reading numbers out of templated inventories, where a whole number may arrive as an int or
as the digit string a Jinja expression rendered."""

from __future__ import annotations

from typing import Any


def whole_number(value: Any) -> int | None:
    """``value`` as an int (digit strings too, as templated inventories give), else None;
    booleans are not numbers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
