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


@pytest.mark.parametrize("environ, cpu_flags, expected", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, BF16_CPU, True),  # the emulation: TensorFlow sends them to oneDNN
    ({"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}, BF16_CPU, False),  # Eigen's
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, BF16_CPU, False),  # oneDNN emulates bfloat16 there
    ({}, BF16_CPU, False),
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, AVX2_CPU, False),  # a real AVX2 CPU: TensorFlow's own kernels
])
def test_bfloat16_ops_fail_only_under_a_cap_below_avx512_on_an_avx512_cpu(flags, environ, cpu_flags,
                                                                           expected):
    flags(cpu_flags)
    assert cpu.bfloat16_ops_fail(environ) is expected


def test_asking_for_bfloat16_under_such_a_cap_is_one_clear_error(flags, monkeypatch):
    from common.errors import UserError
    from models import precision

    if precision.tf.config.list_physical_devices("GPU"):
        pytest.skip("on a GPU bfloat16 runs there")
    flags(BF16_CPU)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    with pytest.raises(UserError, match="mixed_bfloat16 cannot run with ONEDNN_MAX_CPU_ISA=AVX2"):
        precision.resolve("mixed_bfloat16")


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
