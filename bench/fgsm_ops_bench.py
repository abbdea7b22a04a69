"""What bounds FGSM / clean: each convolution's gradient to its input against the convolution.

FGSM is a forward pass, a backward pass to the input and a forward pass, so FGSM / clean
is about 2 + (backward to the input / forward). In FLOPs a convolution's gradient with
respect to its input (TensorFlow's `Conv2DBackpropInput`) equals the convolution, which
would make FGSM 3 forwards at most; the question is what the CPU kernels make of it.

For every Conv2D of the width-1/4 ResNet-18 that `bench/attack_bench.py` attacks, at the
same batch (256), this times in alternation (`timing.alternate`), one op per
`tf.function`, the forward convolution (`tf.nn.conv2d`) and its gradient to the input
(`Conv2DBackpropInput`, the op TensorFlow's gradient of Conv2D runs), each without XLA
(TensorFlow's kernels) and with XLA (the compiled form `attacks.evaluate` uses), and
reports per layer and in total the median seconds and the ratio backward / forward. The
FGSM the attack bench times also has the BatchNorm, ReLU and addition gradients, which
this leaves out.

Run alone: `.venv/bin/python bench/fgsm_ops_bench.py`.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from bench import timing
from bench import training_bench
from training.run_context import run_context


def layer_ops(layer, batch_size, jit_compile):
    """(forward, backward to the input) tf.functions of `layer`'s convolution on random tensors."""
    input_shape = (batch_size,) + tuple(layer.input.shape[1:])
    output_shape = (batch_size,) + tuple(layer.output.shape[1:])
    images = tf.random.stateless_uniform(input_shape, [0, 1])
    output_gradient = tf.random.stateless_normal(output_shape, [0, 2])
    kernel = tf.convert_to_tensor(layer.kernel)
    strides, padding = tuple(layer.strides), layer.padding.upper()

    def forward():
        return tf.nn.conv2d(images, kernel, strides, padding)

    def backward():
        return tf.raw_ops.Conv2DBackpropInput(input_sizes=input_shape, filter=kernel,
                                              out_backprop=output_gradient,
                                              strides=(1,) + strides + (1,), padding=padding)

    return (tf.function(forward, jit_compile=jit_compile),
            tf.function(backward, jit_compile=jit_compile))


@run_context(0, "float32", clear_session=False)  # Restores the policy and seeds afterwards.
def run(width=0.25, batch_size=256, rounds=10):
    """Per-layer and total seconds of each convolution and its input gradient, with and without XLA."""
    model = training_bench.classifier_network(width)
    convolutions = [layer for layer in training_bench.layers(model)
                    if isinstance(layer, keras.layers.Conv2D)]
    layers = []
    with timing.Stopwatch() as clock:
        for layer in convolutions:
            row = {"layer": layer.name,
                   "input": list(layer.input.shape[1:]),
                   "output": list(layer.output.shape[1:]),
                   "kernel": list(layer.kernel.shape),
                   "strides": list(layer.strides)}
            for jit_compile, suffix in ((False, "no_xla"), (True, "xla")):
                forward, backward = layer_ops(layer, batch_size, jit_compile)
                # The warm-up traces (and compiles).
                timed = timing.alternate({"forward": forward, "backward": backward}, rounds, warmup=1)
                row[f"forward_seconds_{suffix}"] = timed.seconds("forward")
                row[f"backward_input_seconds_{suffix}"] = timed.seconds("backward")
                row[f"ratio_{suffix}"] = timed.seconds("backward") / timed.seconds("forward")
            layers.append(row)
    totals = {}
    for suffix in ("no_xla", "xla"):
        forward = sum(row[f"forward_seconds_{suffix}"] for row in layers)
        backward = sum(row[f"backward_input_seconds_{suffix}"] for row in layers)
        totals[suffix] = {"forward_seconds": forward, "backward_input_seconds": backward,
                          "ratio": backward / forward,
                          # FGSM / clean if the network were its convolutions alone.
                          "fgsm_over_clean_from_convolutions": 2 + backward / forward}
    return {
        "policy": "float32",
        "width": width,
        "batch_size": batch_size,
        "rounds": rounds,
        "layers": layers,
        "totals": totals,
        "cpu_share": clock.share,
    }


def table(result):
    """A text table of `run()`'s result, one line per convolution."""
    lines = [f"{'layer':<28} {'input':<14} {'kernel':<16} {'stride':<6} "
             f"{'fwd ms':>8} {'bwd ms':>8} {'bwd/fwd':>7} {'XLA fwd':>8} {'XLA bwd':>8} {'bwd/fwd':>7}"]
    for row in result["layers"]:
        lines.append(f"{row['layer']:<28} {'x'.join(map(str, row['input'])):<14} "
                     f"{'x'.join(map(str, row['kernel'])):<16} {row['strides'][0]:<6} "
                     f"{row['forward_seconds_no_xla'] * 1e3:8.2f} {row['backward_input_seconds_no_xla'] * 1e3:8.2f} "
                     f"{row['ratio_no_xla']:7.2f} {row['forward_seconds_xla'] * 1e3:8.2f} "
                     f"{row['backward_input_seconds_xla'] * 1e3:8.2f} {row['ratio_xla']:7.2f}")
    for suffix, label in (("no_xla", "without XLA"), ("xla", "with XLA")):
        total = result["totals"][suffix]
        lines.append(f"all convolutions {label}: forward {total['forward_seconds'] * 1e3:.1f} ms, "
                     f"backward to the input {total['backward_input_seconds'] * 1e3:.1f} ms, "
                     f"ratio {total['ratio']:.2f}, so FGSM / clean >= about "
                     f"{total['fgsm_over_clean_from_convolutions']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    result = run()
    print(f"width {result['width']}, batch {result['batch_size']}, float32, CPU share "
          f"{result['cpu_share']:.2f}")
    print(table(result))
