"""Imports TensorFlow without its start-up chatter reaching the user's terminal.

On CPUs with AVX-512, TensorFlow 2.21 turns oneDNN on and its C++ code writes
"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
and an "I0000 ... oneDNN custom operations are on" line to file descriptor 2 while it is
imported (twice: once per shared library), before any Python logging is set up; no
environment variable silences them (TF_CPP_MIN_LOG_LEVEL does not). The same happens on
any CPU with TF_ENABLE_ONEDNN_OPTS=1.

TensorFlow's oneDNN kernels are turned on here on every x86 CPU (`enable_onednn`), unless
the user's environment says otherwise (`TF_ENABLE_ONEDNN_OPTS=0` keeps them off): TensorFlow
2.21 leaves them off on CPUs without AVX-512, where its own convolutions, and above all their
gradients, are much slower. Measured on the 2-core AVX2 build machine (`make bench`,
float32, batch 128): the contrastive training step at width 1/4 ran at 274 images/s
without oneDNN and 470 with it, at full width 21 and 39.

`import_tensorflow()` points descriptor 2 at a temporary file for the import only, then
writes back every captured line except the known start-up notices, so a real error
printed during the import still reaches the user. This module imports nothing heavy
itself: `run.py` calls it before the stages, which import TensorFlow at module level.
"""

import os
import re
import sys
import tempfile

# Start-up notices that say nothing a user can act on. Anything else is passed through.
_CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^[IW]\d{4} [\d:. ]+\d+ (port|cpu_feature_guard|cuda_\w+|computation_placer)\.cc:\d+\]"
    r"|^To enable the following instructions: .*rebuild TensorFlow"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
)


def is_chatter(line):
    return bool(_CHATTER.search(line))


def enable_onednn(environ=os.environ):
    """Asks TensorFlow for its oneDNN kernels, unless TF_ENABLE_ONEDNN_OPTS is set already.

    Has an effect only before TensorFlow is imported; returns the value in force.
    """
    return environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def import_tensorflow():
    """`import tensorflow`, with its start-up notices on stderr filtered out; returns the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    enable_onednn()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            captured = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in captured.splitlines() if not is_chatter(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
    return tensorflow
