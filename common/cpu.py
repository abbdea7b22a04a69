"""The CPU this process runs on, read from /proc/cpuinfo in this one place.

It imports neither TensorFlow nor Keras, so that `models.precision` (what `--precision=auto`
picks), bench/ and bench/torch_peer.py (which runs with torch alone) read the machine alike.

oneDNN's instruction-set cap counts. `ONEDNN_MAX_CPU_ISA` (oneDNN's own variable, which
TensorFlow's bundled oneDNN and PyTorch's both honour) keeps oneDNN's kernels below an
instruction set the CPU has: with `ONEDNN_MAX_CPU_ISA=AVX2` a CPU with AVX512_BF16 runs the
convolutions as a CPU with AVX2 alone would, and bfloat16 convolutions fall back to
emulated code, so `has_bfloat16()` says False there. `make bench BENCH_ISA=AVX2` measures
this way what the AVX2 machine kind would give (same instruction sets, not the same
microarchitecture: the figures are labelled as emulated).
"""

import functools
import os
import platform

# The cores this process may run on (its affinity), which is what the timed code gets.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

# oneDNN's ISA names (its documentation, "CPU Dispatcher Control") below AVX-512, and below
# the first with bfloat16 arithmetic (AVX512_CORE_BF16): a cap at one of the latter leaves
# bfloat16 emulated.
ISA_CAPS_BELOW_AVX512 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2"})
ISA_CAPS_WITHOUT_BFLOAT16 = ISA_CAPS_BELOW_AVX512 | {"AVX512_CORE", "AVX512_CORE_VNNI"}


@functools.lru_cache(maxsize=None)
def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def model_name():
    """The `model name` line of /proc/cpuinfo (the processor's marketing name)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def flags():
    """The set of words on /proc/cpuinfo's lines (its `flags` among them); empty without it."""
    return frozenset(_cpuinfo().split())


def isa_cap(environ=os.environ):
    """oneDNN's instruction-set cap from the environment, upper-cased ('' when unset)."""
    return (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").upper()


def bfloat16_ops_fail(environ=os.environ):
    """True where TensorFlow's bfloat16 convolutions and BatchNorm cannot run with oneDNN on.

    TensorFlow hands bfloat16 ops to oneDNN wherever the CPU has AVX512F (its
    `IsBF16SupportedByOneDNNOnThisCPU`, tensorflow/core/graph/mkl_graph_util.h); a cap below
    AVX-512 leaves oneDNN without a kernel for them ("could not create a primitive
    descriptor"). A CPU without AVX-512 runs them in TensorFlow's own kernels instead, so
    this happens only where the cap emulates such a CPU (`make bench BENCH_ISA=AVX2`).
    """
    return (isa_cap(environ) in ISA_CAPS_BELOW_AVX512 and "avx512f" in flags()
            and environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0")


def has_bfloat16(environ=os.environ):
    """True if the CPU has bfloat16 instructions (AVX512_BF16 or AMX-BF16) and oneDNN may use
    them: elsewhere bfloat16 arithmetic is emulated."""
    if isa_cap(environ) in ISA_CAPS_WITHOUT_BFLOAT16:
        return False
    return bool(flags() & {"avx512_bf16", "amx_bf16"})
