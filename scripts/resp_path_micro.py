"""Microseconds of Python per command on the RESP hot path, without sockets.

Feeds 16-command chunks (what `redis-benchmark -P 16` sends) straight into one
connection object backed by a real node runtime and LMDB, so the figure moves only
with the code, not with the machine's network stack or the other processes.

    python scripts/resp_path_micro.py [--chunks 5000] [--profile] [--bare]
    python scripts/resp_path_micro.py --unpipelined-durable [--chunks 2000]

`--bare` measures the bare server's loop (scripts/bare_resp_server.py) on the same
chunks: the floor for Python and hiredis alone; `--bare --ready-replies`, its mode that
keeps each value as its encoded GET reply.

`--unpipelined-durable` is `redis-benchmark -c 50` without `-P`, durable: 50 connections
each send one SET, the loop runs group commit (`--fsync always`, with fdatasync replaced
by nothing: the disk is not what this measures), and the replies are released; it prints
the Python per SET spent reading (`data_received`) and releasing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_transport import RecordingTransport  # noqa: E402
from quorumdb.api.resp_server import RespConnection, RespServer
from quorumdb.runtime import node_config
from quorumdb.runtime.node_runtime import NodeRuntime
from quorumdb.runtime.process import resp_limits_for

SET_CHUNK = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n" * 16
GET_CHUNK = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n" * 16


def measure_bare(chunks: int, ready_replies: bool) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bare_resp_server
    from bare_resp_server import BareProtocol

    bare_resp_server.READY_REPLIES = ready_replies

    protocol = BareProtocol()
    protocol.connection_made(RecordingTransport(keep=False))  # type: ignore[arg-type]
    for name, chunk in (("SET", SET_CHUNK), ("GET", GET_CHUNK)):
        started = time.perf_counter()
        for _ in range(chunks):
            protocol.data_received(chunk)
        elapsed = time.perf_counter() - started
        kind = "bare server, ready replies" if ready_replies else "bare server"
        print(f"{name}: {elapsed / chunks / 16 * 1e6:.2f} us per command ({kind})")


async def measure(chunks: int, fsync: str, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = node_config.local_settings(0, 1, 19900, data_dir, fsync)
        runtime = NodeRuntime(settings, asyncio.get_running_loop())
        server = RespServer(runtime, resp_limits_for(settings))
        connection = RespConnection(server)
        connection.connection_made(RecordingTransport(keep=False))  # type: ignore[arg-type]
        for name, chunk in (("SET", SET_CHUNK), ("GET", GET_CHUNK)):
            started = time.perf_counter()
            for index in range(chunks):
                connection.data_received(chunk)
                server.flush_all()  # each chunk's write, as at the end of the loop's turn
                if index % 10 == 0:
                    await asyncio.sleep(0)  # let group commit run, as the loop would
            await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            print(f"{name}: {elapsed / chunks / 16 * 1e6:.2f} us per command (fsync {fsync})")
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(chunks):
                connection.data_received(GET_CHUNK)
                server.flush_all()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        await runtime.close()


async def measure_unpipelined_durable(rounds: int, connection_count: int) -> None:
    os.fdatasync = lambda descriptor: None  # this process only: the Python is measured
    chunk = SET_CHUNK[: len(SET_CHUNK) // 16]
    with tempfile.TemporaryDirectory() as data_dir:
        settings = node_config.local_settings(0, 1, 19900, data_dir, "always")
        runtime = NodeRuntime(settings, asyncio.get_running_loop())
        server = RespServer(runtime, resp_limits_for(settings))
        connections = []
        for _ in range(connection_count):
            connection = RespConnection(server)
            connection.connection_made(RecordingTransport(keep=False))  # type: ignore[arg-type]
            connections.append(connection)
        commit = runtime.commit
        release = commit._release_durable
        spent = {"read": 0.0, "release": 0.0}

        def timed_release() -> None:
            started = time.perf_counter()
            release()
            spent["release"] += time.perf_counter() - started

        commit._release_durable = timed_release  # type: ignore[method-assign]

        async def run(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                for connection in connections:
                    connection.data_received(chunk)
                spent["read"] += time.perf_counter() - started
                for _ in range(6):  # group commit collects, syncs and releases
                    await asyncio.sleep(0)

        await run(200)  # warm up
        spent["read"] = spent["release"] = 0.0
        groups_before = commit.group_count
        await run(rounds)
        commands = rounds * connection_count
        print(
            f"unpipelined durable SET: {spent['read'] / commands * 1e6:.2f} us reading, "
            f"{spent['release'] / commands * 1e6:.2f} us releasing per command "
            f"({commit.group_count - groups_before} groups for {rounds} rounds)"
        )
        await runtime.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--fsync", default="no", choices=["always", "everysec", "no"])
    parser.add_argument("--profile", action="store_true", help="profile the GET path")
    parser.add_argument("--bare", action="store_true", help="the bare server's loop instead")
    parser.add_argument(
        "--ready-replies", action="store_true", help="with --bare: its --ready-replies mode"
    )
    parser.add_argument(
        "--unpipelined-durable",
        action="store_true",
        help="50 connections, one SET each per group, fsync always (fdatasync stubbed)",
    )
    args = parser.parse_args()
    if args.unpipelined_durable:
        asyncio.run(measure_unpipelined_durable(args.chunks, 50))
    elif args.bare:
        measure_bare(args.chunks, args.ready_replies)
    else:
        asyncio.run(measure(args.chunks, args.fsync, args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
