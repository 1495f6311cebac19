"""Node settings from command-line flags or a TOML file, validated in one place."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from typing import Any

from quorumdb.core.cluster import Member, local_members
from quorumdb.core.node import DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES, NodeLimits
from quorumdb.runtime.group_commit import FsyncPolicy
from quorumdb.runtime.node_runtime import NodeSettings
from quorumdb.runtime.transport import TransportLimits

EXAMPLE_TOML = """\
# quorumdb node configuration
node_id = "node0"
data_dir = "./data"
fsync = "always"          # always | everysec | no
max_value_bytes = 67108864
max_key_bytes = 65536
max_clients = 10000

[[members]]
node_id = "node0"
host = "10.0.0.1"
peer_port = 7200
resp_port = 7000
http_port = 7100

[[members]]
node_id = "node1"
host = "10.0.0.2"
peer_port = 7200
resp_port = 7000
http_port = 7100
"""


class ConfigError(ValueError):
    """A node configuration that cannot run."""


def settings_from_toml(path: str, data_dir: str | None = None) -> NodeSettings:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    try:
        members = tuple(_member(item) for item in document["members"])
        return build_settings(
            node_id=str(document["node_id"]),
            members=members,
            data_dir=data_dir or str(document.get("data_dir", "./data")),
            fsync=str(document.get("fsync", "always")),
            max_value_bytes=int(document.get("max_value_bytes", DEFAULT_MAX_VALUE_BYTES)),
            max_key_bytes=int(document.get("max_key_bytes", DEFAULT_MAX_KEY_BYTES)),
            max_clients=int(document.get("max_clients", 10_000)),
        )
    except KeyError as error:
        raise ConfigError(f"{path}: missing setting {error}") from None


def _member(item: dict[str, Any]) -> Member:
    return Member(
        node_id=str(item["node_id"]),
        host=str(item["host"]),
        peer_port=int(item["peer_port"]),
        resp_port=int(item["resp_port"]),
        http_port=int(item["http_port"]),
    )


def local_settings(
    index: int,
    node_count: int,
    base_port: int,
    data_dir: str,
    fsync: str = "always",
    host: str = "127.0.0.1",
    **limits: int,
) -> NodeSettings:
    if not 0 <= index < node_count:
        raise ConfigError(f"node index {index} outside 0..{node_count - 1}")
    members = local_members(node_count, base_port, host)
    return build_settings(members[index].node_id, members, data_dir, fsync, **limits)


def joining_settings(
    index: int,
    base_port: int,
    data_dir: str,
    join: str,
    fsync: str = "always",
    host: str = "127.0.0.1",
) -> NodeSettings:
    """A node that joins a running cluster: it knows itself and one member to ask."""
    if index < 0:
        raise ConfigError("node index must not be negative")
    seed_host, _, seed_port = join.rpartition(":")
    if not seed_host or not seed_port.isdigit():
        raise ConfigError(f"--join expects HOST:HTTP_PORT, got {join!r}")
    member = local_members(index + 1, base_port, host)[index]
    settings = build_settings(member.node_id, (member,), data_dir, fsync)
    return replace(settings, join=join)


def build_settings(
    node_id: str,
    members: tuple[Member, ...],
    data_dir: str,
    fsync: str,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
    max_clients: int = 10_000,
) -> NodeSettings:
    try:
        policy = FsyncPolicy(fsync)
    except ValueError:
        raise ConfigError(f"fsync must be always, everysec or no; got {fsync!r}") from None
    ids = [member.node_id for member in members]
    if len(set(ids)) != len(ids):
        raise ConfigError("member ids must be unique")
    if node_id not in ids:
        raise ConfigError(f"node {node_id!r} is not among the members {ids}")
    if max_value_bytes < 16 * 1024 * 1024:
        raise ConfigError("max_value_bytes must allow values of at least 16 MiB")
    limits = NodeLimits(max_key_bytes=max_key_bytes, max_value_bytes=max_value_bytes)
    try:
        limits.validate()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if max_clients < 1:
        raise ConfigError("max_clients must be positive")
    # A forwarded request carries a whole value, so frames must fit the largest one.
    transport = TransportLimits(max_frame_bytes=max_value_bytes + max_key_bytes + (16 << 20))
    return NodeSettings(
        node_id, members, data_dir, policy, limits, transport, max_clients=max_clients
    )
