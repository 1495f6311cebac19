"""Salting a hot counter on a real cluster: switched on by the operator, transparent to
Redis clients through any node."""

from __future__ import annotations

import redis

from test_cli import quorumdb


def test_a_salted_counter_through_every_node(cluster3) -> None:
    http = ["--http", f"127.0.0.1:{cluster3.members[0].http_port}"]
    with redis.Redis(port=cluster3.resp_port(0)) as client:
        client.set("likes", 10)  # a counter that existed before salting keeps its value
    salted = quorumdb("keyspace", "salt", "default", "likes", "--ways", "8", *http)
    assert salted.returncode == 0, salted.stderr
    clients = [redis.Redis(port=cluster3.resp_port(index)) for index in range(3)]
    try:
        for index in range(300):
            clients[index % 3].incr("likes")
        for client in clients:
            assert client.get("likes") == b"310"
        assert clients[1].incrby("likes", -10) == 300
        assert clients[2].set("likes", 5) is True
        assert clients[0].get("likes") == b"5"
        try:
            clients[0].append("likes", "x")
            raise AssertionError("APPEND on a salted counter was accepted")
        except redis.ResponseError as error:
            assert "salted" in str(error)
        assert clients[1].delete("likes") == 1
        assert clients[2].get("likes") is None
        assert "likes" not in {key.decode() for key in clients[0].scan_iter(match="likes*")}
    finally:
        for client in clients:
            client.close()
    refused = quorumdb("keyspace", "salt", "default", "likes", "--ways", "1", *http)
    assert refused.returncode != 0 and "2 to 64 sub-keys" in refused.stderr
    off = quorumdb("keyspace", "salt", "default", "likes", "--ways", "0", *http)
    assert off.returncode == 0, off.stderr
