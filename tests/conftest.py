"""Shared pytest settings: the `slow` marker, which only runs with --run-slow.

A slow test needs the full data set (../shared/data) and tens of seconds; `make test`
skips it and `make test-slow` (pytest -m slow --run-slow) runs it.
"""

import os
import sys

import pytest

# `pytest tests` (not only `python -m pytest`) should import the project from this checkout.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(autouse=True, scope="session")
def _decoded_cache_dir(tmp_path_factory):
    """Decoded images are cached in this session's temporary folder, never in ~/.cache.

    Session-scoped, so that it is set before any module's fixtures run. One folder per
    session (per xdist worker): the sample is decoded once, and the `run.py` subprocesses
    the tests start inherit the variable.
    """
    previous = os.environ.get("SUPCON_CACHE_DIR")
    os.environ["SUPCON_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "decoded_cache")
    yield
    if previous is None:
        os.environ.pop("SUPCON_CACHE_DIR", None)
    else:
        os.environ["SUPCON_CACHE_DIR"] = previous


@pytest.fixture
def bfloat16_ops():
    """Skips a test that runs bfloat16 convolutions where oneDNN's instruction-set cap emulates a
    CPU without AVX-512 on one with it: there TensorFlow's bfloat16 ops fail (common.cpu)."""
    from common import cpu
    if cpu.bfloat16_ops_fail():
        pytest.skip(f"bfloat16 ops cannot run under ONEDNN_MAX_CPU_ISA={cpu.isa_cap()} on an "
                    "AVX-512 CPU (a CPU without AVX-512 runs them in TensorFlow's own kernels)")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="Also run the tests marked slow (they need the full data set).")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs the full data set or long runs; "
                                       "skipped unless --run-slow is given.")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow; pass --run-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
