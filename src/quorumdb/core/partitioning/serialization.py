"""Checked reads of layout fields from JSON-decoded dictionaries."""

from __future__ import annotations

from quorumdb.core.partitioning.interface import PartitioningError


def int_list(data: dict[str, object], name: str) -> list[int]:
    value = data.get(name)
    if not isinstance(value, list) or not all(type(item) is int for item in value):
        raise PartitioningError(f"layout field {name!r} must be a list of integers")
    return value


def str_list(data: dict[str, object], name: str) -> list[str]:
    value = data.get(name)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PartitioningError(f"layout field {name!r} must be a list of strings")
    return value


def integer(data: dict[str, object], name: str) -> int:
    value = data.get(name)
    if type(value) is not int:
        raise PartitioningError(f"layout field {name!r} must be an integer")
    return value
