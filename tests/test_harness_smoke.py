import redis


def test_cluster_of_three_serves_through_every_node(cluster3) -> None:
    clients = [redis.Redis(port=cluster3.resp_port(i)) for i in range(3)]
    for index in range(30):
        assert clients[index % 3].set(f"smoke:{index}", index)
    for index in range(30):
        assert clients[(index + 1) % 3].get(f"smoke:{index}") == str(index).encode()
