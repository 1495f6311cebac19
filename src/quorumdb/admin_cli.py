"""The operator verbs that change the cluster: `quorumdb rebalance ...`, `quorumdb member ...`
and `quorumdb keyspace salt`. Each is one HTTP call to any node (which forwards it to
the controller leader), except `rebalance status --watch`, which polls."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

TERMINAL_PLAN_STATES = ("done", "cancelled")


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import httpx

    try:
        response = httpx.request(method, f"http://{args.http}{path}", json=body, timeout=30)
    except httpx.HTTPError as error:
        raise SystemExit(f"error: cannot reach {args.http}: {error}") from None
    document = response.json()
    if response.status_code >= 400:
        raise SystemExit(f"error: {document.get('message', document)}")
    return document


def add_arguments(
    rebalance: argparse.ArgumentParser,
    member: argparse.ArgumentParser,
    http_option: Any,
) -> None:
    actions = rebalance.add_subparsers(dest="rebalance_command", required=True)
    for name, help_text in (
        ("plan", "show the plan the controller proposes (manual mode waits for approve)"),
        ("status", "the current plan and each transfer's progress"),
        ("approve", "let the proposed plan run"),
        ("pause", "pause the snapshot copies (live writes keep flowing)"),
        ("resume", "resume a paused plan"),
        ("cancel", "abandon a plan before any transfer has switched (else pause it)"),
    ):
        sub = actions.add_parser(name, help=help_text, description=help_text)
        http_option(sub)
        sub.add_argument("--json", action="store_true", help="print the raw document")
        if name == "status":
            sub.add_argument(
                "--watch", action="store_true", help="show a progress bar until the plan ends"
            )
            sub.add_argument(
                "--timeout", type=float, default=600.0, help="stop watching after SECONDS"
            )
    mode = actions.add_parser("mode", help="manual (plans wait for approve) or automatic")
    mode.add_argument("mode", choices=["manual", "automatic"])
    http_option(mode)
    throttle = actions.add_parser("throttle", help="bytes per second each transfer may copy")
    throttle.add_argument("bytes_per_second", type=int)
    http_option(throttle)

    member_actions = member.add_subparsers(dest="member_command", required=True)
    weight = member_actions.add_parser("weight", help="give a member more or fewer partitions")
    weight.add_argument("node_id")
    weight.add_argument("weight", type=int)
    http_option(weight)
    leave = member_actions.add_parser(
        "decommission", help="move a member's data away; it is marked left when done"
    )
    leave.add_argument("node_id")
    http_option(leave)


def run_rebalance(args: argparse.Namespace) -> int:
    action = args.rebalance_command
    if action in ("approve", "pause", "resume", "cancel"):
        document = _request(args, "POST", f"/v1/rebalance/{action}")
        print(json.dumps(document, indent=2) if getattr(args, "json", False) else document["state"])
        return 0
    if action == "mode":
        print(json.dumps(_request(args, "PUT", "/v1/rebalance", {"mode": args.mode})))
        return 0
    if action == "throttle":
        body = {"throttle_bytes_per_second": args.bytes_per_second}
        print(json.dumps(_request(args, "PUT", "/v1/rebalance", body)))
        return 0
    document = _request(args, "GET", "/v1/rebalance")
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    if action == "status" and args.watch:
        return _watch(args)
    _print_plan(document)
    return 0


def _print_plan(document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    throttle = document["throttle_bytes_per_second"]
    console.print(f"mode: {document['mode']}, throttle: {throttle} bytes/s per transfer")
    plan = document["plan"]
    if plan is None:
        console.print("no plan: every keyspace is placed for the current members")
        return
    done = sum(1 for transfer in plan["transfers"] if transfer["state"] == "done")
    console.print(
        f"plan {plan['plan_id']} ({plan['state']}): {plan['reason']};"
        f" {done}/{len(plan['transfers'])} transfers done"
    )
    table = Table()
    for column in ("keyspace", "from", "to", "state", "copied bytes"):
        table.add_column(column)
    for transfer in plan["transfers"]:
        table.add_row(
            transfer["keyspace"],
            f"{transfer['source_node']} p{transfer['source_partition']}",
            f"{transfer['target_node']} p{transfer['target_partition']}",
            transfer["state"],
            str(transfer["copied_bytes"]),
        )
    console.print(table)
    if plan["state"] == "proposed":
        console.print("run `quorumdb rebalance approve` to start it")


def _watch(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    deadline = time.monotonic() + args.timeout
    with Progress() as progress:
        task = progress.add_task("rebalancing", total=None)
        while time.monotonic() < deadline:
            plan = _request(args, "GET", "/v1/rebalance")["plan"]
            if plan is None:
                progress.update(task, total=1, completed=1, description="nothing to do")
                return 0
            transfers = plan["transfers"]
            done = sum(1 for transfer in transfers if transfer["state"] == "done")
            copied = sum(transfer["copied_bytes"] for transfer in transfers)
            progress.update(
                task,
                total=max(len(transfers), 1),
                completed=done if transfers else 1,
                description=f"plan {plan['plan_id']} {plan['state']}, {copied} bytes copied",
            )
            if plan["state"] in TERMINAL_PLAN_STATES:
                return 0 if plan["state"] == "done" else 1
            time.sleep(0.5)
    print("error: the plan did not finish before --timeout", file=sys.stderr)
    return 1


def run_member(args: argparse.Namespace) -> int:
    if args.member_command == "weight":
        body = {"weight": args.weight}
        document = _request(args, "PUT", f"/v1/members/{args.node_id}/weight", body)
    else:
        document = _request(args, "POST", f"/v1/members/{args.node_id}/decommission")
    print(json.dumps(document))
    return 0


def run_move_replica(args: argparse.Namespace) -> int:
    body = {"source": args.source, "target": args.target}
    path = f"/v1/keyspaces/{args.name}/partitions/{args.partition}/move-replica"
    print(json.dumps(_request(args, "POST", path, body)))
    return 0


def run_salt(args: argparse.Namespace) -> int:
    body = {"key": args.key, "ways": args.ways}
    document = _request(args, "POST", f"/v1/keyspaces/{args.name}/salted-keys", body)
    print(json.dumps(document))
    return 0
