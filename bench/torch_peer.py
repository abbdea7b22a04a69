"""The PyTorch peer of the project's training step: the same network, heads, losses and
optimiser, written the way a SupContrast-style PyTorch loop would run them, on the CPU.

What is the same as the Keras side (models/resnet.py, models/heads.py,
models/supcon_loss.py, models/margin_loss.py, models/optimizer.py):

- the CIFAR ResNet-18: input normalised by per-channel mean and std, a 3x3 stride-1 stem
  conv + BN + ReLU without max-pooling, four stages of two BasicBlocks of
  `channels(64|128|256|512, width)` channels (`max(8, round(base * width))`), a 1x1
  projection shortcut (conv + BN) where the shape changes, global average pooling;
  convolutions without bias, padded as Keras' padding="same" (TensorFlow's rule, which
  gives a 3x3 stride-2 convolution its one row and column of padding after the image, none
  before: `SameConv2d`); BN momentum 0.1 (Keras' 0.9) and epsilon 1e-5, its moving variance
  moved by the batch's biased variance as Keras' is (`BatchNorm2d`); Keras' initial weights
  (truncated-normal he_normal convolutions, glorot_uniform dense kernels, zero biases);
- the classifier Linear(features, 10) and the projection head Linear(features,
  channels(512, w)) -> ReLU -> Linear(., channels(128, w)) -> L2 normalisation; the
  classifier and the head's last layer run in float32, as the Keras heads do;
- the losses, in float32: cross-entropy on the logits; SupCon L_out at temperature 0.1
  (an anchor without positives contributes 0 and counts in the mean); the pairwise
  Hadsell margin loss (margin 1.0), the mean over ordered pairs i != j of
  y d^2 + (1 - y) relu(m - d)^2 with d = sqrt(max(2 - 2 z_i.z_j, 1e-12)); summed with
  weights 1;
- SGD, learning rate 0.1, momentum 0.9, weight decay 5e-4 on the convolution and dense
  kernels only (the project excludes BN parameters and biases). PyTorch's decay is added
  to the gradient, and so runs through the momentum; Keras' is decoupled, lr * decay * w
  taken off the weight directly. The first step from zero momentum is the same on both,
  w - lr * (g + decay * w); later steps differ by where the decay goes, not in their work.

tests/torch_peer_test.py proves the equivalence at width 1/16: with the Keras model's
weights copied in, the peer gives the same logits (inference and training mode), moving
statistics, embeddings, losses, gradients and first optimiser step, to float32 rounding.
`make bench` runs it in bench/.peer-venv.

Two workloads: "plain" (cross-entropy only, one view, B images a step, like the
`baseline` stage and train_step_bench's plain fit) and "contrastive" (two views of B
images, 2B images a step, stacked view-major with the labels repeated, CE + SupCon +
margin, like the `pretrain` stage). Every step uses one fixed synthetic batch held in
memory, so only the step is timed.

The settings a PyTorch user would try: float32 or bfloat16 autocast
(`torch.autocast("cpu", dtype=torch.bfloat16)`, only fast where the CPU has AVX512_BF16
or AMX: elsewhere it is emulated and `supported_precisions()` leaves it out), the
channels_last memory format on or off, and `torch.compile` (Inductor, which needs a
working C++ compiler: `compile_available()` says whether it works here, and why not)
on or off. `best_setting` times every setting in alternation (`bench.timing.alternate`)
and returns the fastest.

torch runs on `torch.set_num_threads(cpu.CORES)` threads, the cores this process may use
(`os.sched_getaffinity`), the same as TensorFlow's default intra-op pool. Its
OpenMP threads (libgomp) spin while they wait for each other, unless OMP_WAIT_POLICY=PASSIVE
is set before torch is imported: on a machine that other programs keep busy the spinning
burns the time slices the other threads need, and the step ran 4x slower on the build
machine (width 1/4, plain: 16.6 images/s spinning, 65.6 passive, 92.7 on one thread).

This module imports neither TensorFlow nor Keras, and nor do the bench modules it uses
(`common.cpu`, `bench.timing`): `python bench/torch_peer.py` needs torch only and prints
every setting's images/s.
"""

import argparse
import functools
import itertools
import math
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F
from torch import nn

from common import cpu
from bench import timing

torch.set_num_threads(cpu.CORES)

# The same as bench/training_bench.py (CIFAR-10's statistics; the speed does not depend on them).
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
STAGE_WIDTHS = (64, 128, 256, 512)
TEMPERATURE = 0.1
MARGIN = 1.0
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
_SQUARED_DISTANCE_FLOOR = 1e-12
# The standard deviation of a unit normal truncated at +-2 (Keras' VarianceScaling divides by it).
_TRUNCATED_NORMAL_STD = 0.87962566103423978

WORKLOADS = ("plain", "contrastive")
PRECISIONS = ("float32", "bfloat16")


def channels(base, width):
    """Channels of a layer whose full-width count is `base`, at least 8 (models/resnet.py's rule)."""
    return max(8, int(round(base * width)))


def supported_precisions():
    """The precisions worth timing on this CPU: bfloat16 only with hardware support."""
    return PRECISIONS if cpu.has_bfloat16() else ("float32",)


# --- The network --------------------------------------------------------------------------


def _same_padding(size, kernel, stride):
    """(before, after) padding of TensorFlow's padding="same" along an axis of `size` values."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free nn.Conv2d padded as Keras' Conv2D(padding="same") is (TensorFlow's rule).

    Where the padding is odd TensorFlow puts the extra row and column after the image, not
    before: a 3x3 stride-2 convolution of an even size pads 0 rows above and 1 below, so its
    output i sees input rows 2i..2i+2, where nn.Conv2d(padding=1) would see 2i-1..2i+1. Those
    convolutions (the first of stages 2-4) pad explicitly; every other one is symmetric and
    takes nn.Conv2d's own padding.
    """

    def __init__(self, c_in, c_out, kernel, stride):
        super().__init__(c_in, c_out, kernel, stride, padding=0, bias=False)

    def forward(self, x):
        (top, bottom), (left, right) = (
            _same_padding(size, kernel, stride)
            for size, kernel, stride in zip(x.shape[-2:], self.kernel_size, self.stride))
        if (top, left) == (bottom, right):
            return F.conv2d(x, self.weight, None, self.stride, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, None, self.stride)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose moving variance moves by the batch's biased variance, as Keras' does.

    PyTorch moves it by the unbiased variance, n / (n - 1) times larger (n = B * H * W);
    both normalise by the biased one. Here PyTorch's own kernel moves a copy of the moving
    variance (autograd keeps that copy for the backward pass, so it must not change after),
    from which a few operations on [C] vectors give the layer's own Keras' value.
    """

    def forward(self, x):
        if not (self.training and self.track_running_stats):
            return super().forward(x)
        moved = self.running_var.clone()
        outputs = F.batch_norm(x, self.running_mean, moved, self.weight, self.bias, True,
                               self.momentum, self.eps)
        with torch.no_grad():
            count = x.numel() // x.shape[1]
            # moved = (1 - m) v_old + m v n / (n - 1); Keras' is (1 - m) v_old + m v.
            unbiased_step = moved - (1.0 - self.momentum) * self.running_var
            self.running_var.copy_(moved - unbiased_step / count)
        return outputs


def _conv_bn(c_in, c_out, kernel, stride):
    return nn.Sequential(SameConv2d(c_in, c_out, kernel, stride),
                         BatchNorm2d(c_out, eps=1e-5, momentum=0.1))


def keras_initialisation(module):
    """Keras' initial weights: he_normal convolutions (a normal truncated at 2 standard
    deviations, scaled to variance 2 / fan_in), glorot_uniform Dense kernels, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.weight[0].numel()
            std = math.sqrt(2.0 / fan_in) / _TRUNCATED_NORMAL_STD
            nn.init.trunc_normal_(layer.weight, std=std, a=-2.0 * std, b=2.0 * std)
        elif isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1)
        self.shortcut = (_conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out
                         else nn.Identity())

    def forward(self, x):
        out = F.relu(self.conv1(x))
        return F.relu(self.conv2(out) + self.shortcut(x))


class ResNet18(nn.Module):
    """images [N, 3, H, W] in [0, 1] -> features [N, channels(512, width)]."""

    def __init__(self, width=1.0, mean=MEAN, std=STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        stem = channels(64, width)
        self.stem = _conv_bn(IMAGE_SHAPE[-1], stem, 3, 1)
        blocks, c_in = [], stem
        for stage, base in enumerate(STAGE_WIDTHS):
            for block in range(2):
                stride = 2 if (stage > 0 and block == 0) else 1
                blocks.append(BasicBlock(c_in, channels(base, width), stride))
                c_in = channels(base, width)
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = c_in

    def forward(self, images):
        x = (images - self.mean) / self.std
        x = F.relu(self.stem(x))
        x = self.blocks(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class _Float32Linear(nn.Linear):
    """A Linear layer that runs in float32 under autocast (the Keras heads' dtype="float32")."""

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return super().forward(x.float())


class ProjectionHead(nn.Module):
    """features -> Linear(channels(512, w)) -> ReLU -> Linear(channels(128, w)) -> L2-normalised z."""

    def __init__(self, feature_dim, width=1.0):
        super().__init__()
        self.hidden = nn.Linear(feature_dim, channels(512, width))
        self.out = _Float32Linear(channels(512, width), channels(128, width))

    def forward(self, features):
        return F.normalize(self.out(F.relu(self.hidden(features))), dim=1)


class PeerNetwork(nn.Module):
    """Encoder + classifier (+ projection head): images -> (logits, z or None)."""

    def __init__(self, width=1.0, contrastive=True):
        super().__init__()
        self.encoder = ResNet18(width)
        self.classifier = _Float32Linear(self.encoder.feature_dim, NUM_CLASSES)
        self.projection_head = ProjectionHead(self.encoder.feature_dim, width) if contrastive else None
        keras_initialisation(self)

    def forward(self, images):
        features = self.encoder(images)
        z = self.projection_head(features) if self.projection_head is not None else None
        return self.classifier(features), z


# --- The losses (float32) -------------------------------------------------------------------


def supcon_loss(labels, embeddings, temperature=TEMPERATURE):
    """SupCon L_out, the mean over anchors; an anchor without positives contributes 0."""
    z = F.normalize(embeddings.float(), dim=1)
    count = z.shape[0]
    not_self = 1.0 - torch.eye(count, dtype=z.dtype, device=z.device)
    positives = (labels[:, None] == labels[None, :]).to(z.dtype) * not_self
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_denominator = torch.log((torch.exp(logits) * not_self).sum(dim=1, keepdim=True))
    log_probability = logits - log_denominator
    positive_count = positives.sum(dim=1)
    summed = (positives * log_probability).sum(dim=1)
    per_anchor = torch.where(positive_count > 0, summed / positive_count.clamp(min=1.0),
                             torch.zeros_like(summed))
    return -per_anchor.mean()


def margin_loss(labels, embeddings, margin=MARGIN):
    """Hadsell et al. (2006): mean over ordered pairs i != j of y d^2 + (1 - y) relu(m - d)^2."""
    z = F.normalize(embeddings.float(), dim=1)
    count = z.shape[0]
    not_self = 1.0 - torch.eye(count, dtype=z.dtype, device=z.device)
    same = (labels[:, None] == labels[None, :]).to(z.dtype)
    squared = torch.clamp(2.0 - 2.0 * (z @ z.T), min=_SQUARED_DISTANCE_FLOOR)
    distance = torch.sqrt(squared)
    pair_loss = same * squared + (1.0 - same) * torch.square(F.relu(margin - distance))
    return ((pair_loss * not_self).sum(dim=1) / max(count - 1, 1)).mean()


def total_loss(network, images, labels, contrastive):
    """CE (+ SupCon + margin), all with weight 1, as the project's `pretrain` stage."""
    logits, z = network(images)
    loss = F.cross_entropy(logits.float(), labels)
    if contrastive:
        loss = loss + supcon_loss(labels, z) + margin_loss(labels, z)
    return loss


def make_optimizer(network):
    """SGD(0.1, momentum 0.9), weight decay 5e-4 on conv and dense kernels only.

    PyTorch adds the decay to the gradient, so it passes through the momentum; Keras's is
    decoupled (models/optimizer.py). The first step is the same (tests/torch_peer_test.py);
    the arithmetic per step is the same size, which is all the bench needs."""
    decay, no_decay = [], []
    for name, parameter in network.named_parameters():
        is_kernel = parameter.ndim > 1  # Conv and Linear weights; BN scale/shift and biases are 1-D.
        (decay if is_kernel else no_decay).append(parameter)
    return torch.optim.SGD([{"params": decay, "weight_decay": WEIGHT_DECAY},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=LEARNING_RATE, momentum=MOMENTUM)


# --- The step ---------------------------------------------------------------------------------


def synthetic_batch(batch_size, views=1, seed=0, image_shape=IMAGE_SHAPE):
    """A fixed batch: images [V*B, 3, 32, 32] in [0, 1] (view-major) and labels [V*B]."""
    generator = torch.Generator().manual_seed(seed)
    height, width, depth = image_shape
    images = torch.rand((views, batch_size, depth, height, width), generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    return images.reshape(views * batch_size, depth, height, width), labels.repeat(views)


@functools.lru_cache(maxsize=None)
def compile_available():
    """(True, "") if torch.compile (Inductor, C++ code generation) works here, else (False, why)."""
    try:
        compiled = torch.compile(lambda x: torch.sin(x) * 2 + 1)
        x = torch.randn(8)
        if not torch.allclose(compiled(x), torch.sin(x) * 2 + 1):
            return False, "torch.compile gave a different result"
    except Exception as error:  # Any failure (no compiler, no Python headers) means: skip it.
        first_line = (str(error).strip().splitlines() or [""])[0]
        return False, f"torch.compile failed: {type(error).__name__}: {first_line[:300]}"
    return True, ""


def setting_name(precision, channels_last, compile):
    return "+".join([precision, "channels_last" if channels_last else "contiguous",
                     "compile" if compile else "eager"])


class PeerStep:
    """One training step of the peer on a fixed batch: `step()` returns the loss as a float.

    Attributes: `images_per_step`, `setting` (e.g. "float32+channels_last+eager"),
    `network`, `optimizer`.
    """

    def __init__(self, workload, width, batch_size, precision="float32", channels_last=False,
                 compile=False, seed=0):
        if workload not in WORKLOADS:
            raise ValueError(f"workload {workload!r}: choose one of {', '.join(WORKLOADS)}.")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
        torch.manual_seed(seed)
        self.workload, self.precision = workload, precision
        self.contrastive = workload == "contrastive"
        self.setting = setting_name(precision, channels_last, compile)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network = PeerNetwork(width, contrastive=self.contrastive).to(memory_format=memory_format)
        self.network.train()
        self.optimizer = make_optimizer(self.network)
        images, self.labels = synthetic_batch(batch_size, views=2 if self.contrastive else 1, seed=seed)
        self.images = images.contiguous(memory_format=memory_format)
        self.images_per_step = self.images.shape[0]
        loss_function = functools.partial(total_loss, contrastive=self.contrastive)
        self._loss = torch.compile(loss_function) if compile else loss_function

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            loss = self._loss(self.network, self.images, self.labels)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def make_step(workload, width, batch_size, precision="float32", channels_last=False,
              compile=False, seed=0):
    """A callable running one training step of the peer; it returns the loss as a float."""
    return PeerStep(workload, width, batch_size, precision, channels_last, compile, seed)


def settings(precision, compile_settings=None):
    """(channels_last, compile) pairs to try; compile only where it works."""
    if compile_settings is None:
        compile_settings = (False, True) if compile_available()[0] else (False,)
    return list(itertools.product((False, True), compile_settings))


def best_setting(workload, width, batch_size, precision="float32", rounds=3, warmup=2,
                 compile_settings=None):
    """Times every setting (channels_last x compile) in alternation; returns the fastest.

    Each setting gets `warmup` untimed steps (the first compiles), then `rounds` rounds
    in which every setting runs one step, in a rotating order (`timing.alternate`).
    Returns a dict: `setting` (the winner's name), `images_per_second` (its median),
    `step` (the winner's PeerStep, warm, to be timed further), `per_setting` ({name:
    images/s}), `compile` (whether torch.compile was tried, and if not why), and
    `warmup_seconds` per setting.
    """
    compile_ok, compile_why = compile_available()
    steps, warmup_seconds = {}, {}
    for channels_last, compile in settings(precision, compile_settings):
        start = time.perf_counter()
        step = make_step(workload, width, batch_size, precision, channels_last, compile)
        for _ in range(warmup):
            step()
        steps[step.setting] = step
        warmup_seconds[step.setting] = time.perf_counter() - start
    timed = timing.alternate(steps, rounds)
    per_setting = {name: step.images_per_step / timed.seconds(name) for name, step in steps.items()}
    winner = max(per_setting, key=per_setting.get)
    return {
        "setting": winner,
        "images_per_second": per_setting[winner],
        "step": steps[winner],
        "per_setting": per_setting,
        "compile": "tried" if compile_ok and compile_settings is None else (
            compile_why or "not tried"),
        "warmup_seconds": warmup_seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description="Images/s of every setting of the PyTorch peer.")
    parser.add_argument("--workload", choices=WORKLOADS, default="contrastive")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch_size", type=int, default=128,
                        help="images per view (the contrastive workload has 2 views)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (cores: {cpu.CORES}), "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"bfloat16 hardware: {'yes' if cpu.has_bfloat16() else 'no'}")
    ok, why = compile_available()
    print(f"torch.compile: {'works' if ok else why}")
    result = best_setting(args.workload, args.width, args.batch_size, args.precision, args.rounds)
    for name, rate in sorted(result["per_setting"].items(), key=lambda item: -item[1]):
        print(f"{name:40s} {rate:8.1f} images/s  (build + warm-up {result['warmup_seconds'][name]:.0f} s)")
    print(f"best: {result['setting']}")


if __name__ == "__main__":
    main()
