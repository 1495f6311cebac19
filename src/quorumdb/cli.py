"""The `quorumdb` command: one program whose verbs mirror the layers."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_PORT = 7000


def _add_cluster_layout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="base port: node i serves RESP on PORT+i, HTTP on PORT+100+i, "
        "peers on PORT+200+i (default %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default="./data",
        help="directory holding one subdirectory per node (default %(default)s)",
    )
    parser.add_argument(
        "--fsync",
        choices=["always", "everysec", "no"],
        default="always",
        help="durability: 'always' fsyncs every group commit before "
        "acknowledging; 'everysec' may lose the last second; 'no' leaves "
        "flushing to the OS (default %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def _cmd_up(args: argparse.Namespace) -> int:
    from quorumdb.local_cluster import LocalCluster, run_up

    if args.nodes < 1:
        print("error: --nodes must be at least 1", file=sys.stderr)
        return 2
    cluster = LocalCluster(
        args.nodes, args.port, args.data_dir, args.fsync, args.host, args.log_level
    )
    return run_up(cluster)


def _cmd_node(args: argparse.Namespace) -> int:
    from quorumdb.runtime import node_config
    from quorumdb.runtime.process import run

    if args.print_example_config:
        print(node_config.EXAMPLE_TOML, end="")
        return 0
    try:
        if args.config:
            settings = node_config.settings_from_toml(args.config, args.data_dir_override)
        elif args.join:
            settings = node_config.joining_settings(
                args.index, args.port, args.data_dir, args.join, args.fsync, args.host
            )
        else:
            settings = node_config.local_settings(
                args.index, args.nodes, args.port, args.data_dir, args.fsync, args.host
            )
    except node_config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {settings.node_id} %(levelname)s %(name)s: %(message)s",
    )
    try:
        run(settings, tune_gc=args.gc == "tuned")
    except (OSError, RuntimeError) as error:  # a taken port, a refused join
        print(f"error: node {settings.node_id} cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from quorumdb.client import Client

    return Client(args.node, keyspace=args.keyspace)


def _show(value: bytes | None) -> str:
    if value is None:
        return "(nil)"
    return value.decode("utf-8", "backslashreplace")


def _cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        value = client.get(args.key)
    print(_show(value))
    return 0 if value is not None else 1


def _cmd_put(args: argparse.Namespace) -> int:
    with _client(args) as client:
        written = client.put(
            args.key,
            args.value,
            expire_ms=args.expire_ms,
            if_absent=args.if_absent,
            if_present=args.if_present,
        )
    print("OK" if written else "not written (condition not met)")
    return 0 if written else 1


def _cmd_del(args: argparse.Namespace) -> int:
    with _client(args) as client:
        deleted = sum(client.delete(key) for key in args.keys)
    print(deleted)
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    if args.start is not None or args.end is not None:
        return _scan_range(args)
    count = 0
    with _client(args) as client:
        for key in client.scan(match=args.match, count=100):
            print(_show(key))
            count += 1
            if args.limit and count >= args.limit:
                break
    return 0


def _scan_range(args: argparse.Namespace) -> int:
    """Keys of [--start, --end) in key order across the cluster (QUORUMDB.RANGE)."""
    if args.match:
        print("error: --match applies to the unordered scan, not --start/--end", file=sys.stderr)
        return 2
    start = (args.start or "").encode()
    end = args.end.encode() if args.end else None
    if end is not None and end <= start:
        print("error: --end must be greater than --start", file=sys.stderr)
        return 2
    with _client(args) as client:
        for key in client.range_keys(start, end, limit=args.limit or None):
            print(_show(key))
    return 0


def _http_base(args: argparse.Namespace) -> str:
    return f"http://{args.http}"


def keyspace_owners(layout_document: dict[str, Any]) -> list[str]:
    """The owner of every partition, decoded by the same layout code the nodes run."""
    from quorumdb.core.partitioning import layout_from_dict

    layout = layout_from_dict(layout_document)
    return [layout.owner(partition) for partition in layout.partition_ids]


def _cmd_status(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.table import Table

    try:
        document = httpx.get(f"{_http_base(args)}/v1/cluster", timeout=5).json()
    except httpx.HTTPError as error:
        print(f"error: cannot reach {args.http}: {error}", file=sys.stderr)
        return 1
    if args.hot:
        return _print_hot(document, args)
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    console = Console()
    members = Table(title=f"members (map version {document['version']})")
    for column in ("node", "RESP", "HTTP", "peer", "health"):
        members.add_column(column)
    for member in document["members"]:
        health = member.get("health", "unknown")  # the failure detector's view
        try:
            httpx.get(f"http://{member['host']}:{member['http_port']}/healthz", timeout=1)
        except httpx.HTTPError:
            health = f"[red]unreachable[/red] ({health})"
        members.add_row(
            member["node_id"],
            f"{member['host']}:{member['resp_port']}",
            f"{member['host']}:{member['http_port']}",
            f"{member['host']}:{member['peer_port']}",
            health,
        )
    console.print(members)
    controller = document.get("controller")
    if controller:
        console.print(
            f"controller: leader {controller['leader'] or '(electing)'}, term {controller['term']},"
            f" voters {', '.join(controller['voters'])},"
            f" learners {', '.join(controller['learners']) or '-'}"
        )
    rebalance = document.get("rebalance")
    if rebalance and rebalance["state"] not in (None, "done", "cancelled"):
        console.print(
            f"rebalance: plan {rebalance['plan_id']} {rebalance['state']},"
            f" {rebalance['transfers_done']}/{rebalance['transfers_total']} transfers done"
        )
    keyspaces = Table(title="keyspaces")
    for column in ("keyspace", "partitioning", "partitions", "replicas", "partitions per node"):
        keyspaces.add_column(column)
    for name, keyspace in document["keyspaces"].items():
        per_node: dict[str, int] = {}
        for owner in keyspace_owners(keyspace["layout"]):
            per_node[owner] = per_node.get(owner, 0) + 1
        spread = ", ".join(f"{node}={count}" for node, count in sorted(per_node.items()))
        keyspaces.add_row(
            name,
            keyspace["partitioning"],
            str(keyspace["partition_count"]),
            str(keyspace["replication_factor"]),
            spread,
        )
    console.print(keyspaces)
    if args.replicas:
        _print_replicas(console, document)
    else:
        _print_replica_summary(console, document)
    return 0


def _print_replica_summary(console: Any, document: dict[str, Any]) -> None:
    """Per replicated keyspace on the asked node: partitions it leads and follows, and
    its followers' worst lag (`status --replicas` lists every replica)."""
    from rich.table import Table

    rows = document.get("replicas") or []
    if not rows:
        return
    summary: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = summary.setdefault(
            row["keyspace"], {"leads": 0, "follows": 0, "lag": 0, "lag_ms": 0, "lost": 0}
        )
        entry["leads" if row["role"] == "leader" else "follows"] += 1
        entry["lost"] += row["lost"]
        for progress in row.get("followers", {}).values():
            entry["lag"] = max(entry["lag"], progress["lag"])
            entry["lag_ms"] = max(entry["lag_ms"], progress["lag_ms"])
    table = Table(title=f"replicas on {document.get('node', '?')} (status --replicas: each one)")
    for column in ("keyspace", "leads", "follows", "worst follower lag", "lost+found"):
        table.add_column(column)
    for name, entry in sorted(summary.items()):
        lag = f"{entry['lag']} entries / {entry['lag_ms']} ms"
        table.add_row(name, str(entry["leads"]), str(entry["follows"]), lag, str(entry["lost"]))
    console.print(table)


def _print_replicas(console: Any, document: dict[str, Any]) -> None:
    """The replicas the asked node holds: role, epoch, position, and per follower of a
    leader here, how far behind it is (entries and milliseconds)."""
    from rich.table import Table

    rows = document.get("replicas") or []
    if not rows:
        return
    table = Table(title=f"replicas on {document.get('node', '?')}")
    for column in ("keyspace", "partition", "role", "epoch", "last", "followers (lag)", "lost"):
        table.add_column(column)
    for row in rows:
        followers = row.get("followers", {})
        lag = ", ".join(
            f"{node}: {progress['lag']} entries / {progress['lag_ms']} ms"
            for node, progress in sorted(followers.items())
        )
        if row["role"] != "leader":
            staleness = row.get("staleness_ms")
            lag = "-" if staleness is None else f"(caught up {staleness} ms ago)"
        epoch, sequence = row["last"]
        table.add_row(
            row["keyspace"],
            str(row["partition"]),
            row["role"],
            str(row["epoch"]),
            f"{epoch}.{sequence}",
            lag,
            str(row["lost"]),
        )
    console.print(table)


def _print_hot(cluster: dict[str, Any], args: argparse.Namespace) -> int:
    """Ask every member for its load; keys are counted where they are served (the owner),
    so the per-node lists never count one request twice."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    hot_keys: list[dict[str, Any]] = []
    partitions: list[dict[str, Any]] = []
    unreachable: list[str] = []
    for member in cluster["members"]:
        url = f"http://{member['host']}:{member['http_port']}/v1/load"
        try:
            limit = min(max(args.limit, 1), 100)
            load = httpx.get(url, params={"limit": limit}, timeout=2).json()
        except httpx.HTTPError:
            unreachable.append(member["node_id"])
            continue
        for entry in load["hot_keys"]:
            hot_keys.append({**entry, "node": member["node_id"]})
        for entry in load["partitions"]:
            partitions.append({**entry, "node": member["node_id"]})
    hot_keys.sort(key=lambda entry: -entry["requests_per_second"])
    partitions.sort(key=lambda entry: -entry["requests_per_second"])
    hot_keys, partitions = hot_keys[: args.limit], partitions[: args.limit]
    if args.json:
        document = {"hot_keys": hot_keys, "partitions": partitions, "unreachable": unreachable}
        print(json.dumps(document, indent=2))
        return 0
    console = Console()
    keys_table = Table(title="hottest keys (sampled estimate, last 10-20 s)")
    for column in ("keyspace", "key", "node", "requests/s", "± error/s"):
        keys_table.add_column(column)
    for entry in hot_keys:
        keys_table.add_row(
            entry["keyspace"],
            entry["key"] if entry["encoding"] == "utf-8" else f"base64:{entry['key']}",
            entry["node"],
            f"{entry['requests_per_second']:.1f}",
            f"{entry['error_per_second']:.1f}",
        )
    console.print(keys_table)
    partitions_table = Table(title="hottest partitions")
    for column in ("keyspace", "partition", "node", "requests/s", "requests total"):
        partitions_table.add_column(column)
    for entry in partitions:
        partitions_table.add_row(
            entry["keyspace"],
            str(entry["partition"]),
            entry["node"],
            f"{entry['requests_per_second']:.1f}",
            str(entry["requests_total"]),
        )
    console.print(partitions_table)
    for node_id in unreachable:
        console.print(f"[red]{node_id} unreachable: its load is missing[/red]")
    return 0


def _cmd_rebalance(args: argparse.Namespace) -> int:
    from quorumdb import admin_cli

    return admin_cli.run_rebalance(args)


def _cmd_member(args: argparse.Namespace) -> int:
    from quorumdb import admin_cli

    return admin_cli.run_member(args)


def _cmd_keyspace(args: argparse.Namespace) -> int:
    import httpx

    if args.keyspace_command == "salt":
        from quorumdb import admin_cli

        return admin_cli.run_salt(args)
    if args.keyspace_command == "move-replica":
        from quorumdb import admin_cli

        return admin_cli.run_move_replica(args)

    base = _http_base(args)
    try:
        if args.keyspace_command == "create":
            if args.replicas is None:
                args.replicas = 3 if args.replication == "single-leader" else 1
            body = {
                "name": args.name,
                "partitioning": args.partitioning,
                "replication": args.replication,
                "replicas": args.replicas,
                "sync": args.sync,
                "log_format": args.log_format,
                "deterministic": not args.nondeterministic,
            }
            response = httpx.post(f"{base}/v1/keyspaces", json=body, timeout=10)
        else:
            response = httpx.get(f"{base}/v1/keyspaces", timeout=10)
    except httpx.HTTPError as error:
        print(f"error: cannot reach {args.http}: {error}", file=sys.stderr)
        return 1
    document = response.json()
    if response.status_code >= 400:
        print(f"error: {document.get('message', document)}", file=sys.stderr)
        return 1
    if args.keyspace_command == "show":
        matches = [k for k in document["keyspaces"] if k["name"] == args.name]
        if not matches:
            print(f"error: no keyspace named {args.name!r}", file=sys.stderr)
            return 1
        document = matches[0]
    print(json.dumps(document, indent=2))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from quorumdb.bench import command
    from quorumdb.gc_tuning import tune_for_hot_loop

    tune_for_hot_loop()  # the load generator shares the machine with what it measures
    return command.run(args)


def _cmd_sim(args: argparse.Namespace) -> int:
    from quorumdb.sim import command

    return command.run(args)


def _cmd_check(args: argparse.Namespace) -> int:
    from quorumdb.check import command

    return command.run(args)


def _cmd_lostfound(args: argparse.Namespace) -> int:
    from quorumdb import lost_found_cli

    return lost_found_cli.run(args)


def _cmd_lab(args: argparse.Namespace) -> int:
    from quorumdb.lab import command

    return command.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quorumdb",
        description="quorumdb: a distributed key-value database with selectable modes.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    def verb(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    up = verb("up", "start a local cluster of separate node processes in the foreground", _cmd_up)
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default %(default)s)")
    _add_cluster_layout(up)

    node = verb("node", "run one node (for clusters spread over machines)", _cmd_node)
    node.add_argument(
        "--config", help="TOML file with node_id, members and settings (see --print-example-config)"
    )
    node.add_argument("--data-dir-override", help=argparse.SUPPRESS)
    node.add_argument(
        "--join",
        metavar="HOST:HTTP_PORT",
        help="join a running cluster through any member's HTTP address; with --index and"
        " --port this node takes the local layout's ports for its index (e.g. --index 3"
        " --join 127.0.0.1:7100 adds node3 on 7003/7103/7203)",
    )
    node.add_argument(
        "--print-example-config",
        action="store_true",
        help="print an example TOML configuration and exit",
    )
    node.add_argument(
        "--gc",
        choices=["tuned", "default"],
        default="tuned",
        help="the garbage collector: 'tuned' freezes start-up objects and collects young"
        " objects every 50,000 allocations instead of 700 (fewer, shorter pauses);"
        " 'default' keeps CPython's settings (default %(default)s)",
    )
    node.add_argument(
        "--index",
        type=int,
        default=0,
        help="without --config: this node's index in the local layout",
    )
    node.add_argument(
        "--nodes", type=int, default=1, help="without --config: number of nodes in the local layout"
    )
    _add_cluster_layout(node)

    def data_verb(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        sub = verb(name, help_text, handler)
        sub.add_argument(
            "--node",
            default=f"127.0.0.1:{DEFAULT_PORT}",
            help="any node's RESP address HOST:PORT (default %(default)s)",
        )
        sub.add_argument("--keyspace", default="default", help="keyspace (default %(default)s)")
        return sub

    get = data_verb("get", "read a key", _cmd_get)
    get.add_argument("key")
    put = data_verb("put", "write a key", _cmd_put)
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--expire-ms", type=int, help="time to live in milliseconds")
    put.add_argument("--if-absent", action="store_true", help="write only if the key is absent")
    put.add_argument("--if-present", action="store_true", help="write only if the key exists")
    delete = data_verb("del", "delete keys", _cmd_del)
    delete.add_argument("keys", nargs="+")
    scan = data_verb("scan", "list keys of the keyspace (every partition)", _cmd_scan)
    scan.add_argument("--match", help="glob pattern, as in Redis SCAN MATCH")
    scan.add_argument("--start", help="with or without --end: the keys from START on, in key order")
    scan.add_argument("--end", help="with or without --start: the keys below END, in key order")
    scan.add_argument("--limit", type=int, default=0, help="stop after this many keys")

    def http_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--http",
            default=f"127.0.0.1:{DEFAULT_PORT + 100}",
            help="any node's HTTP address HOST:PORT (default %(default)s)",
        )

    status = verb("status", "members, keyspaces and partition owners", _cmd_status)
    http_option(status)
    status.add_argument("--json", action="store_true", help="print the raw cluster document")
    status.add_argument(
        "--hot", action="store_true", help="the hottest keys and partitions across the cluster"
    )
    status.add_argument(
        "--limit", type=int, default=10, help="with --hot: how many to show (default %(default)s)"
    )
    status.add_argument(
        "--replicas",
        action="store_true",
        help="list every replica on the asked node (default: a summary per keyspace)",
    )

    keyspace = verb("keyspace", "create, list and show keyspaces", _cmd_keyspace)
    keyspace_verbs = keyspace.add_subparsers(dest="keyspace_command", required=True)
    create = keyspace_verbs.add_parser("create", help="create a keyspace")
    create.add_argument("name")
    create.add_argument(
        "--partitioning",
        default="fixed:64",
        help="mod-n | fixed[:COUNT] | range[:split_bytes=64MiB,split_ops_per_second=N]"
        " | per-node[:COUNT] | ring[:vnodes=N] (default %(default)s; see docs/partitioning.md)",
    )
    create.add_argument(
        "--replication",
        choices=["none", "single-leader"],
        default="none",
        help="single-leader: a leader and followers per partition (default %(default)s)",
    )
    create.add_argument(
        "--replicas", type=int, default=None, help="copies of each partition (single-leader: 3)"
    )
    create.add_argument(
        "--sync",
        choices=["all", "majority", "semi", "async"],
        default="majority",
        help="when a write is acknowledged: every follower, a majority, one synchronous"
        " follower, or the leader alone (default %(default)s; see docs/replication.md)",
    )
    create.add_argument(
        "--log-format",
        choices=["row", "statement"],
        default="row",
        help="single-leader: ship resulting rows, or the statements (default %(default)s)",
    )
    create.add_argument(
        "--nondeterministic",
        action="store_true",
        help="statement: ship server-time and random-id puts as they are, so replicas"
        " diverge (a demonstration; see `quorumdb lab statement-divergence`)",
    )
    http_option(create)
    listing = keyspace_verbs.add_parser("list", help="list keyspaces")
    http_option(listing)
    show = keyspace_verbs.add_parser("show", help="show one keyspace")
    show.add_argument("name")
    http_option(show)
    salt = keyspace_verbs.add_parser(
        "salt", help="spread a hot counter key's writes over WAYS sub-keys (0: switch off)"
    )
    salt.add_argument("name")
    salt.add_argument("key")
    salt.add_argument("--ways", type=int, required=True, help="2 to 64, or 0 to unsalt")
    http_option(salt)
    move = keyspace_verbs.add_parser(
        "move-replica",
        help="replace a follower of a replicated partition by another member: it catches"
        " up as a learner, then takes the follower's place (the controller also moves"
        " replicas by itself on joins and decommissions; see docs/replication.md)",
    )
    move.add_argument("name")
    move.add_argument("partition", type=int)
    move.add_argument("--from", dest="source", required=True, help="the follower to replace")
    move.add_argument("--to", dest="target", required=True, help="the member to take its place")
    http_option(move)

    from quorumdb import admin_cli

    rebalance = verb(
        "rebalance", "plan, approve, pause, resume and watch data movement", _cmd_rebalance
    )
    member = verb("member", "member weights and decommissioning", _cmd_member)
    admin_cli.add_arguments(rebalance, member, http_option)
    lostfound = verb(
        "lostfound", "list, replay and discard writes a failover undid", _cmd_lostfound
    )
    from quorumdb import lost_found_cli

    lost_found_cli.add_arguments(lostfound, http_option)

    bench = verb("bench", "measure throughput and latency of RESP targets in one run", _cmd_bench)
    from quorumdb.bench import command as bench_command

    bench_command.add_arguments(bench)

    sim = verb("sim", "deterministic simulation of a cluster under faults", _cmd_sim)
    try:
        from quorumdb.sim import command as sim_command
    except ImportError:  # pragma: no cover - only while the simulator is absent
        pass
    else:
        sim_command.add_arguments(sim)

    check = verb("check", "run the history checkers on a recorded history file", _cmd_check)
    from quorumdb.check import command as check_command

    check_command.add_arguments(check)

    lab = verb("lab", "reproduce a claim of the notes and print the measured table", _cmd_lab)
    from quorumdb.lab import command as lab_command

    lab_command.add_arguments(lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        # The data verbs talk RESP through redis-py, whose errors (a node that cannot be
        # reached, an unknown keyspace) are not builtin ConnectionErrors.
        from redis.exceptions import RedisError

        if not isinstance(error, ConnectionError | RedisError):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
