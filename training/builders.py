"""Small builders from a config and a stage's spec to what training needs.

In the spirit of Model Garden's task split (`build_inputs`, `build_model`, `build_losses`,
`build_optimizer`), a few dozen lines each. The stages, the tuner's HyperModel, the bench
and the tests all call these; none assembles a model by hand.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from common.errors import UserError
from models import heads
from models import margin_loss
from models import optimizer as optimizer_lib
from models import precision
from models import resnet
from models.contrastive_model import ContrastiveModel
from models.supcon_loss import SupConLoss
from pipeline import input_pipeline
from training import distributed_loop
from training.adversary import Adversary


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the model needs to know about the data: shape, classes, channel statistics."""

    image_shape: tuple
    num_classes: int
    mean: tuple
    std: tuple

    @classmethod
    def from_split(cls, split, num_classes):
        """Per-channel mean and standard deviation of a split's images, in [0, 1] units."""
        mean, std = channel_statistics(split.images)
        return cls(tuple(split.images.shape[1:]), int(num_classes), mean, std)


def channel_statistics(images, chunk=1024):
    """(mean, std) per channel of uint8 images [N, H, W, C], in [0, 1] units, exactly.

    From integer sums of the pixels and their squares, `chunk` images at a time: numpy's
    own std would hold a float64 copy of every pixel (1.1 GB for CIFAR's 45,000 training
    images, the largest allocation of a training run's start), this about 25 MB.
    """
    channels = images.shape[-1]
    total, squares, count = np.zeros(channels, np.int64), np.zeros(channels, np.int64), 0
    for start in range(0, len(images), chunk):
        pixels = images[start:start + chunk].reshape(-1, channels).astype(np.int64)
        total += pixels.sum(axis=0)
        squares += (pixels * pixels).sum(axis=0)
        count += len(pixels)
    # Python integers: n * sum(x^2) - sum(x)^2 is exact before the one division.
    mean = tuple(int(s) / count / 255.0 for s in total)
    std = tuple((count * int(q) - int(s) ** 2) ** 0.5 / count / 255.0 for s, q in zip(total, squares))
    return mean, std


@dataclasses.dataclass
class Inputs:
    """The training and validation data of one run, and how many steps make an epoch."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    steps_per_epoch: int
    images_per_step: int


def schedule(config, spec):
    """config.train with the fields the stage's own section overrides (finetune's epochs, ...)."""
    merged = config.train.copy_and_resolve_references()
    if spec.schedule:
        own = config[spec.schedule]
        merged.update({key: own[key] for key in ("epochs", "learning_rate", "weight_decay",
                                                 "warmup_epochs") if key in own})
    return merged


def augmentation(config):
    data = config.data
    return dict(padding=data.crop_padding, flip=data.flip, jitter_strength=data.jitter_strength,
                grayscale_probability=data.grayscale_probability)


def build_inputs(config, spec, train_split, validation_split=None, input_context=None):
    """Endless augmented training batches of `spec.views` views, and validation batches.

    The global batch is config.train.batch_size whatever the number of replicas; with an
    `input_context` (tf.distribute) each input pipeline makes its replicas' share of it.
    """
    global_batch = schedule(config, spec).batch_size
    batch = global_batch
    if input_context is not None:
        batch = input_context.get_per_replica_batch_size(global_batch)
    train = input_pipeline.train_dataset(train_split, global_batch, config.seed, spec.views,
                                         augmentation(config), repeat=True,
                                         input_context=input_context)
    validation = (input_pipeline.eval_dataset(validation_split, batch)
                  if validation_split is not None else None)
    steps = schedule(config, spec).steps_per_epoch or len(train_split) // global_batch
    return Inputs(train, validation, steps, global_batch * spec.views)


def build_distributed_inputs(strategy, config, spec, train_split, validation_split=None):
    """`build_inputs` for the replicas of `strategy`: each input pipeline (one per worker)
    makes its replicas' shares of every global batch; validation batches of the global
    size are split across the replicas by tf.distribute."""
    plan = schedule(config, spec)
    train = strategy.distribute_datasets_from_function(
        lambda context: build_inputs(config, spec, train_split, input_context=context).train)
    validation = None
    if validation_split is not None:
        validation = distributed_loop.distributed(
            strategy, input_pipeline.eval_dataset(validation_split, plan.batch_size))
    steps = plan.steps_per_epoch or len(train_split) // plan.batch_size
    return Inputs(train, validation, steps, plan.batch_size * spec.views)


def build_losses(config, spec):
    """The keyword arguments of ContrastiveModel that set its loss terms and weights."""
    if not spec.contrastive:
        return dict(ce_weight=1.0)
    loss = config.loss
    return dict(supcon_loss=SupConLoss(loss.temperature, gather=loss.gather),
                margin_loss=margin_loss.make_margin_loss(loss.margin_form, loss.margin,
                                                         loss.temperature, loss.gather),
                ce_weight=loss.ce_weight, supcon_weight=loss.supcon_weight,
                margin_weight=loss.margin_weight)


def warn_if_margin_unkeepable(loss, num_classes):
    """One WARNING line where a pairwise margin exceeds what `num_classes` classes can all
    keep apart (models/margin_loss.py: d_max(C)); a search may still choose such a margin."""
    if not loss.margin_weight or loss.margin_form != "pairwise" or num_classes < 2:
        return
    keepable = margin_loss.simplex_distance(num_classes)
    if loss.margin > keepable:
        print(f"WARNING: loss.margin={loss.margin:g} is more than {num_classes} classes can all keep "
              f"apart on the unit sphere (at most sqrt(2C/(C-1)) = {keepable:.3f}, a regular "
              f"simplex): the margin term never reaches zero (models/margin_loss.py).", flush=True)


def sync_batchnorm(config):
    """Synchronised BatchNorm, whatever the replica count: on one replica it computes what
    Keras's own does, and the same layers keep checkpoints restorable under any count."""
    return bool(config.model.sync_batchnorm)


def build_encoder(config, data_info):
    return resnet.resnet18(data_info.image_shape, data_info.mean, data_info.std, config.model.width,
                           sync_batchnorm=sync_batchnorm(config))


def load_encoder(path, config, data_info):
    """The encoder saved in a stage's model.keras, rebuilt under the current dtype policy."""
    if not os.path.exists(path):
        stage = os.path.basename(os.path.dirname(path))
        raise UserError(f"{path} does not exist: run --stage {stage} with the same --workdir first.")
    saved = keras.models.load_model(path).get_layer("encoder")
    normalize = saved.get_layer("normalize").get_config()
    encoder = resnet.resnet18(data_info.image_shape, normalize["mean"],
                              [v ** 0.5 for v in normalize["variance"]], config.model.width,
                              sync_batchnorm=sync_batchnorm(config))
    encoder.set_weights(saved.get_weights())
    return encoder


def build_model(config, spec, data_info, encoder=None):
    """The ContrastiveModel `spec` trains; `encoder` (for finetune: pretrain's) or a new one,
    with the adversary of config.adversarial where it trains this stage."""
    if encoder is None:
        encoder = build_encoder(config, data_info)
    elif spec.schedule == "finetune" and config.finetune.mode == "linear":
        # A frozen BatchNorm layer in Keras 3 also runs in inference mode.
        encoder.trainable = False
    projection = None
    if spec.contrastive:
        projection = heads.projection_head(encoder.outputs[0].shape[-1], config.model.width)
        warn_if_margin_unkeepable(config.loss, data_info.num_classes)
    model = ContrastiveModel(encoder, heads.classifier(data_info.num_classes),
                             projection_head=projection, name=spec.name,
                             adversary=Adversary.from_config(config, spec.name),
                             ce_on=config.adversarial.ce_on, **build_losses(config, spec))
    # Built now, so that a checkpoint (BackupAndRestore) can be restored into it.
    model(tf.zeros((1,) + tuple(data_info.image_shape)), training=False)
    return model


def build_optimizer(config, spec, steps_per_epoch):
    plan = schedule(config, spec)
    return optimizer_lib.build_optimizer(plan, plan.epochs * steps_per_epoch)


def compile_model(model, config, spec, steps_per_epoch):
    """Compiles `model` with its optimizer; returns it."""
    model.compile(optimizer=build_optimizer(config, spec, steps_per_epoch),
                  jit_compile=precision.jit_compile(schedule(config, spec).jit_compile))
    return model
