"""`quorumdb lostfound list|replay|discard`: the writes replication undid, across the
cluster. `list` asks every member (each keeps its own lost+found); `replay` and
`discard` call the node an entry's id names (`<node>:<hex>`), found through the member
list of the node given with --http."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

PAGE_LIMIT = 1_000  # entries per request (the API's maximum)
PAGES_PER_NODE_MAX = 1_000  # a bound on one node's listing: a million entries


class CliError(Exception):
    """What to print after `error:`; the command exits 1."""


def add_arguments(lostfound: argparse.ArgumentParser, http_option: Any) -> None:
    actions = lostfound.add_subparsers(dest="lostfound_command", required=True)
    listing = actions.add_parser(
        "list",
        help="every member's entries: writes undone by a failover, and their state",
        description="every member's entries: writes undone by a failover, and their state",
    )
    listing.add_argument("--json", action="store_true", help="print the entries as JSON")
    http_option(listing)
    for name, help_text in (
        ("replay", "write an entry's lost value again (through the key's leader)"),
        ("discard", "mark an entry reviewed and not to be replayed"),
    ):
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("id", help="the entry's id, NODE:HEX, from `quorumdb lostfound list`")
        http_option(sub)


def run(args: argparse.Namespace) -> int:
    try:
        if args.lostfound_command == "list":
            return _list(args)
        return _resolve(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _request(address: str, method: str, path: str, params: Any = None) -> Any:
    import httpx

    try:
        response = httpx.request(method, f"http://{address}{path}", params=params, timeout=30)
    except httpx.HTTPError as error:
        raise CliError(f"cannot reach {address}: {error}") from None
    try:
        document = response.json()
    except ValueError:
        raise CliError(f"{address} answered {response.status_code}: {response.text}") from None
    if response.status_code >= 400:
        raise CliError(str(document.get("message", document)))
    return document


def _members(args: argparse.Namespace) -> dict[str, str]:
    """node id -> its HTTP address, from the member list of the node at --http."""
    cluster = _request(args.http, "GET", "/v1/cluster")
    return {m["node_id"]: f"{m['host']}:{m['http_port']}" for m in cluster["members"]}


def _node_entries(address: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = None
    for _ in range(PAGES_PER_NODE_MAX):
        params = {"limit": PAGE_LIMIT, **({"after": after} if after else {})}
        page = _request(address, "GET", "/v1/lostfound", params)
        entries += page["entries"]
        after = page["next"]
        if after is None:
            break
    return entries


def _list(args: argparse.Namespace) -> int:
    entries: list[dict[str, Any]] = []
    unreachable: list[str] = []
    for node_id, address in sorted(_members(args).items()):
        try:
            entries += _node_entries(address)
        except CliError as error:
            unreachable.append(f"{node_id}: {error}")
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        _print_table(entries)
    for problem in unreachable:
        print(f"error: {problem}; its entries are missing", file=sys.stderr)
    return 1 if unreachable else 0


def _print_table(entries: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not entries:
        console.print("lost+found is empty on every reachable node")
        return
    table = Table(title="lost+found (writes undone by a failover)")
    table.add_column("id", overflow="fold")
    for column in ("keyspace", "partition", "epoch.seq", "key", "lost value", "expires", "state"):
        table.add_column(column)
    for entry in entries:
        if entry["deleted"]:
            value = "(deleted)"
        else:
            value = _shown(entry["value"], entry["value_encoding"])
        state = "replayed" if entry["replayed"] else "discarded" if entry["discarded"] else ""
        table.add_row(
            entry["id"],
            entry["keyspace"],
            str(entry["partition"]),
            f"{entry['epoch']}.{entry['sequence']}",
            _shown(entry["key"], entry["key_encoding"]),
            value,
            "" if entry["expire_at_ms"] is None else str(entry["expire_at_ms"]),
            state or "[yellow]pending[/yellow]",
        )
    console.print(table)
    pending = sum(1 for entry in entries if not (entry["replayed"] or entry["discarded"]))
    console.print(f"{pending} pending: `quorumdb lostfound replay ID` or `discard ID`")


def _shown(text: str, encoding: str, width: int = 40) -> str:
    shown = text if encoding == "utf-8" else f"base64:{text}"
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _resolve(args: argparse.Namespace) -> int:
    from quorumdb.core.replication.lost_found import LostWriteIdError, parse_lost_write_id

    try:
        node_id, _ = parse_lost_write_id(args.id)
    except LostWriteIdError as error:
        raise CliError(str(error)) from None
    address = _members(args).get(node_id)
    if address is None:
        raise CliError(f"the id names node {node_id}, which is not a member")
    path = f"/v1/lostfound/{quote(args.id, safe=':')}"
    if args.lostfound_command == "replay":
        document = _request(address, "POST", f"{path}/replay")
    else:
        document = _request(address, "DELETE", path)
    print(json.dumps(document))
    return 0
