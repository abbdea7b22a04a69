"""The TFDS fallback fails within seconds offline, saying how to give the files instead."""

import socket
import sys
import time

import pytest

from common.errors import UserError
from pipeline import datasets
from pipeline import tfds_source


def test_unprepared_cifar100_offline_says_which_archives_to_provide(tmp_path, monkeypatch):
    # Imported first so that the time measured is the loader's, not TFDS's import.
    import tensorflow_datasets  # noqa: F401
    probed = []

    def unreachable(host, *args, **kwargs):
        probed.append(host)
        return False

    monkeypatch.setattr(tfds_source, "reachable", unreachable)
    start = time.monotonic()

    with pytest.raises(UserError) as error:
        datasets.load("cifar100", data_dir=str(tmp_path))

    assert time.monotonic() - start < 10
    assert len(probed) == 1
    message = str(error.value)
    assert "--dataset=cifar100" in message
    assert "cannot be reached" in message
    assert probed[0] in message
    assert "cifar-100-binary.tar.gz or cifar-100-python.tar.gz" in message
    assert "--data_dir=<that folder>" in message
    # Nothing was downloaded or prepared into the folder.
    assert list(tmp_path.iterdir()) == []


def closed_port():
    """A local port nothing listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_closed_port_is_unreachable_at_once():
    start = time.monotonic()

    assert not tfds_source.reachable("127.0.0.1", port=closed_port())

    assert time.monotonic() - start < 1


def test_listening_port_is_reachable():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        assert tfds_source.reachable("127.0.0.1", port=server.getsockname()[1])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
