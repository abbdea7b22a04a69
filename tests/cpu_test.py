"""What the project reads of the CPU (`common.cpu`): bfloat16 counts only where oneDNN may use it.

A CPU with AVX512_BF16 under `ONEDNN_MAX_CPU_ISA=AVX2` (what `make bench BENCH_ISA=AVX2` sets)
runs bfloat16 convolutions in emulated code, so `--precision=auto` must pick float32 there,
as it does on a CPU without the instructions.
"""

import pytest

from common import cpu

BF16_CPU = frozenset({"fpu", "avx2", "fma", "avx512f", "avx512_bf16"})
AVX2_CPU = frozenset({"fpu", "avx2", "fma"})


@pytest.fixture
def flags(monkeypatch):
    """Sets the CPU flags `common.cpu` sees: flags(BF16_CPU)."""
    return lambda chosen: monkeypatch.setattr(cpu, "flags", lambda: chosen)


@pytest.mark.parametrize("environ, expected", [
    ({}, True),
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
    ({"ONEDNN_MAX_CPU_ISA": "avx2"}, False),  # oneDNN reads the name in either case
    ({"DNNL_MAX_CPU_ISA": "AVX512_CORE"}, False),  # the older name, AVX-512 without bfloat16
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, True),
    ({"ONEDNN_MAX_CPU_ISA": "ALL"}, True),
])
def test_bfloat16_counts_where_onednn_may_use_it(flags, environ, expected):
    flags(BF16_CPU)
    assert cpu.has_bfloat16(environ) is expected


def test_no_cap_gives_bfloat16_to_a_cpu_without_it(flags):
    flags(AVX2_CPU)
    assert cpu.has_bfloat16({}) is False
    assert cpu.has_bfloat16({"ONEDNN_MAX_CPU_ISA": "ALL"}) is False


def test_auto_precision_and_the_bench_follow_the_cap(flags, monkeypatch):
    from bench import machine
    from models import precision

    if precision.tf.config.list_physical_devices("GPU"):
        pytest.skip("with a GPU, auto picks mixed_float16 whatever the CPU")
    flags(BF16_CPU)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert precision.resolve("auto", width=0.25) == "mixed_bfloat16"
    assert machine.describe()["onednn_max_cpu_isa"] is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.resolve("auto", width=0.25) == "float32"
    described = machine.describe()
    assert described["onednn_max_cpu_isa"] == "AVX2" and described["cpu_bfloat16"] is False
    # The emulated run's file is named apart from the machine's own figures.
    assert described["slug"] == machine.slug() + "-as-avx2"


if __name__ == "__main__":
    import sys
    sys.exit(pytest.main([__file__, "-q"]))
