import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster_harness import LocalTestCluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory):
    """A 3-node cluster of real processes shared by one test module."""
    with LocalTestCluster(3, tmp_path_factory.mktemp("cluster3")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory):
    with LocalTestCluster(1, tmp_path_factory.mktemp("single")) as cluster:
        yield cluster
