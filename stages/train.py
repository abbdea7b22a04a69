"""Stages `baseline`, `pretrain` and `finetune`: each trains a model into WORKDIR/<stage>/.

- baseline: ResNet-18 + linear classifier, cross-entropy alone, one view per image.
- pretrain: the paper's joint form, CE + SupCon + margin loss on two views per image.
- finetune: from pretrain's encoder, either a linear probe (frozen encoder in inference
  mode, new linear classifier: SupContrast's protocol) or full fine-tuning, by
  config.finetune.mode, with cross-entropy.

Each writes `config.json` (the resolved config), `history.csv`, TensorBoard logs under
`logs/`, a `backup/` it resumes from after a crash (Keras's BackupAndRestore, once per
epoch), `model.keras` (float32, images in [0, 1] -> logits; written atomically) and
`summary.json` (final metrics, speed), the last two only when the stage completes. A
stage whose summary.json records the same inputs (the config less its attack and export
sections; for finetune also pretrain's model) is not run again.
"""

import hashlib
import json
import math
import os
import sys
import time

import keras
import tensorflow as tf

from models import heads
from models import margin_loss
from models import optimizer as optimizer_lib
from models import precision
from models import resnet
from models.contrastive_model import ContrastiveModel
from models.supcon_loss import SupConLoss
from pipeline import input_pipeline
from pipeline.errors import UserError
from stages import atomic_files
from stages import data as data_stage


class Throughput(keras.callbacks.Callback):
    """Records images per second over the epochs after the first (which includes tracing)."""

    def __init__(self, images_per_step):
        super().__init__()
        self.images_per_step = images_per_step
        self.steps, self.seconds, self.epoch_start = 0, 0.0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
        self.epoch_steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.epoch_steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if epoch > self.params.get("initial_epoch", 0) or self.params.get("epochs", 1) == 1:
            self.seconds += time.perf_counter() - self.epoch_start
            self.steps += self.epoch_steps

    @property
    def images_per_second(self):
        return self.steps * self.images_per_step / self.seconds if self.seconds else None


def float32_copy(model):
    """The same functional model and weights with every layer in float32 (for saving)."""
    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: to_float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [to_float32(value) for value in node]
        return node

    # Layers without a dtype of their own (inputs, the nested models) take the global policy.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = keras.Model.from_config(to_float32(model.get_config()))
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def _jit_compile(value):
    """auto: XLA on a GPU only. (Keras's own "auto" turns XLA on for any device, and on
    the 2-core build machine's CPU XLA made training slower.)"""
    text = str(value).lower()
    if text not in ("auto", "true", "false"):
        raise UserError(f"config.train.jit_compile={value!r}: use auto, true or false.")
    if text == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return text == "true"


def _schedule(config, stage):
    """The training schedule of `stage`: config.train, with finetune's own changes."""
    schedule = config.train.copy_and_resolve_references()
    if stage == "finetune":
        schedule.update(epochs=config.finetune.epochs, learning_rate=config.finetune.learning_rate,
                        weight_decay=config.finetune.weight_decay,
                        warmup_epochs=config.finetune.warmup_epochs)
    return schedule


def _pretrained_encoder(config, workdir, image_shape):
    """pretrain's encoder, rebuilt under the current precision policy, with its weights."""
    path = os.path.join(workdir, "pretrain", "model.keras")
    if not os.path.exists(path):
        raise UserError(f"{path} does not exist: run --stage pretrain with the same --workdir first.")
    saved = keras.models.load_model(path).get_layer("encoder")
    normalize = saved.get_layer("normalize").get_config()
    encoder = resnet.resnet18(image_shape, normalize["mean"], [v ** 0.5 for v in normalize["variance"]],
                              config.model.width)
    encoder.set_weights(saved.get_weights())
    return encoder


def build_model(config, stage, image_shape, num_classes, mean, std, workdir):
    """The ContrastiveModel that `stage` trains."""
    if stage == "finetune":
        encoder = _pretrained_encoder(config, workdir, image_shape)
        if config.finetune.mode == "linear":
            # A frozen BatchNorm layer in Keras 3 also runs in inference mode.
            encoder.trainable = False
        elif config.finetune.mode != "full":
            raise UserError(f"config.finetune.mode={config.finetune.mode!r}: use linear or full.")
    else:
        encoder = resnet.resnet18(image_shape, mean, std, config.model.width)
    classifier = heads.classifier(num_classes)
    if stage != "pretrain":
        return ContrastiveModel(encoder, classifier, name=stage)
    loss = config.loss
    return ContrastiveModel(
        encoder, classifier,
        projection_head=heads.projection_head(encoder.outputs[0].shape[-1], config.model.width),
        supcon_loss=SupConLoss(loss.temperature),
        margin_loss=margin_loss.make_margin_loss(loss.margin_form, loss.margin, loss.temperature),
        ce_weight=loss.ce_weight, supcon_weight=loss.supcon_weight,
        margin_weight=loss.margin_weight, name=stage)


def _training_inputs(config, workdir, stage):
    """What decides a stage's model: the config less the attack and export sections, and
    for finetune the pretrained model it starts from (by content)."""
    resolved = json.loads(config.to_json_best_effort())
    inputs = {key: value for key, value in resolved.items() if key not in ("attack", "export")}
    parent = os.path.join(workdir, "pretrain", "model.keras")
    if stage == "finetune" and os.path.exists(parent):
        with open(parent, "rb") as f:
            inputs["pretrain_sha256"] = hashlib.sha256(f.read()).hexdigest()
    return resolved, inputs


def train(config, workdir, stage):
    """Trains `stage` (baseline, pretrain or finetune); returns its summary dict."""
    out = os.path.join(workdir, stage)
    summary_path = os.path.join(out, "summary.json")
    resolved, inputs = _training_inputs(config, workdir, stage)
    if os.path.exists(summary_path) and os.path.exists(os.path.join(out, "model.keras")):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("inputs") == inputs:
            print(f"{stage}: already done with this config in {out}; delete it to train again.")
            return summary
    os.makedirs(out, exist_ok=True)
    atomic_files.write_json(os.path.join(out, "config.json"), resolved)

    policy = precision.set_policy(config.train.precision)
    keras.utils.set_random_seed(config.seed)
    data, train_split, validation_split = data_stage.training_splits(config)
    mean, std = data_stage.channel_statistics(train_split)
    schedule = _schedule(config, stage)
    views = 2 if stage == "pretrain" else 1
    augmentation = dict(padding=config.data.crop_padding, flip=config.data.flip,
                        jitter_strength=config.data.jitter_strength,
                        grayscale_probability=config.data.grayscale_probability)
    batch_size = schedule.batch_size
    train_data = input_pipeline.train_dataset(train_split, batch_size, config.seed, views,
                                              augmentation, repeat=True)
    validation_data = (input_pipeline.eval_dataset(validation_split, batch_size)
                       if validation_split is not None else None)
    steps_per_epoch = schedule.steps_per_epoch or len(train_split) // batch_size

    model = build_model(config, stage, data.image_shape, data.num_classes, mean, std, workdir)
    model.compile(optimizer=optimizer_lib.build_optimizer(schedule, schedule.epochs * steps_per_epoch),
                  jit_compile=_jit_compile(schedule.jit_compile))
    model(tf.zeros((1,) + data.image_shape), training=False)  # BackupAndRestore needs it built.
    throughput = Throughput(batch_size * views)
    print(f"{stage}: {len(train_split)} training images, {steps_per_epoch} steps per epoch, "
          f"{schedule.epochs} epochs, precision policy {policy}", flush=True)
    history = model.fit(
        train_data, epochs=schedule.epochs, steps_per_epoch=steps_per_epoch,
        validation_data=validation_data, shuffle=False, verbose=1 if sys.stdout.isatty() else 2,
        callbacks=[keras.callbacks.BackupAndRestore(os.path.join(out, "backup"), double_checkpoint=True),
                   keras.callbacks.TerminateOnNaN(),
                   keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
                   keras.callbacks.TensorBoard(os.path.join(out, "logs")),
                   throughput])
    # Empty when a crash came after the last epoch's backup: fit then resumes past the end.
    losses = history.history.get("loss", [])
    if losses and not math.isfinite(losses[-1]):
        raise RuntimeError(f"{stage}: the loss became NaN or infinite; lower the learning rate.")

    atomic_files.save_model(float32_copy(model.classifier_model(name=stage)),
                            os.path.join(out, "model.keras"))
    final = {name: float(values[-1]) for name, values in history.history.items() if values}
    summary = {"stage": stage, "policy": policy, "train_images": len(train_split),
               "images_per_second": throughput.images_per_second, "final": final,
               "inputs": inputs}
    atomic_files.write_json(summary_path, summary)
    return summary


def run_baseline(config, workdir):
    return train(config, workdir, "baseline")


def run_pretrain(config, workdir):
    return train(config, workdir, "pretrain")


def run_finetune(config, workdir):
    return train(config, workdir, "finetune")
