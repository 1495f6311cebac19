"""Redis's integer rules, shared by the commands that read a value as a number."""

from __future__ import annotations

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def parse_int64(value: bytes) -> int | None:
    """Redis accepts only canonical base-10 integers: no spaces, no '+', no leading zeros."""
    if not value or len(value) > 20:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    if str(number).encode() != value or not INT64_MIN <= number <= INT64_MAX:
        return None
    return number
