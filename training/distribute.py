"""tf.distribute for the training stages: the strategy `config.train.strategy` names, and
which worker writes what.

- `default`: TensorFlow's default strategy, one device.
- `mirrored`: `MirroredStrategy` over this host's GPUs; on a host without GPUs over
  `config.train.cpu_replicas` logical CPU devices (they share the cores: for tests and
  for measuring the overhead, never faster).
- `multi_worker`: `MultiWorkerMirroredStrategy`; the hosts, and this one's place among
  them, come from the TF_CONFIG environment variable (README, "Scaling out"). Each
  worker's replicas are its GPUs, or one CPU.

A process has one strategy, made before TensorFlow runs its first operation: collective
ops are configured at program start-up, and logical devices before TensorFlow sets up
its devices. `strategy(train)` makes it on its first call and returns it afterwards.

Checkpoints and logs are written by the chief (TF_CONFIG's `chief` task, else worker 0).
The other workers go through the same saves, since reading a distributed variable can
be a collective that every worker must join, but into a temporary folder of their own
(`writable_dir`), removed when training ends. Every worker restores from the chief's
checkpoint, so under several hosts the workdir must be on a file system they share.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from common.errors import UserError
from configs.schema import STRATEGIES

_MADE = {}


def strategy(train):
    """The strategy for config.train (its `strategy` and `cpu_replicas`), made once per process."""
    name = train.strategy
    if name not in STRATEGIES:
        raise UserError(f"--strategy={name}: choose one of {', '.join(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    key = (name, int(train.cpu_replicas))
    if key not in _MADE:
        _MADE[key] = _mirrored(key[1]) if name == "mirrored" else _multi_worker()
    return _MADE[key]


def _logical_cpus(count):
    """The names of `count` logical CPU devices, splitting the CPU if TensorFlow has not started."""
    if count > 1:
        try:
            tf.config.set_logical_device_configuration(
                tf.config.list_physical_devices("CPU")[0],
                [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            pass  # TensorFlow has set up its devices already; they are checked below.
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < count:
        raise UserError(f"--config.train.cpu_replicas={count}: TensorFlow started with "
                        f"{len(devices)} CPU device(s) before the strategy was made; start a "
                        "fresh process.")
    return [device.name for device in devices[:count]]


def _mirrored(cpu_replicas):
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MirroredStrategy(_logical_cpus(cpu_replicas))


def _multi_worker():
    if not os.environ.get("TF_CONFIG"):
        raise UserError("--strategy=multi_worker needs the TF_CONFIG environment variable (the "
                        "workers' addresses and this one's index); see the README, 'Scaling out'.")
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        tf_config["cluster"], tf_config["task"]["type"], tf_config["task"]["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"TF_CONFIG is not valid ({error!r}); it needs "
                        '{"cluster": {"worker": ["host:port", ...]}, '
                        '"task": {"type": "worker", "index": N}}.') from None
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as error:
        if "startup" in str(error) or "initialized" in str(error):
            raise UserError("--strategy=multi_worker: the strategy must be made before TensorFlow "
                            f"runs anything in this process ({error}); start a fresh process.") from None
        raise


def worker(strategy_):
    """(task type, index, number of tasks) of this process under several workers, else None."""
    resolver = getattr(strategy_, "cluster_resolver", None)
    if resolver is None:
        return None
    cluster = resolver.cluster_spec().as_dict()
    tasks = sum(len(addresses) for job, addresses in cluster.items() if job in ("chief", "worker"))
    if tasks < 2:
        return None
    return resolver.task_type, resolver.task_id, tasks


def chief_process(train):
    """False only in a worker other than the chief under multi_worker (from TF_CONFIG, so
    without TensorFlow): the stages after training (attack, export) run on the chief."""
    if train.strategy != "multi_worker":
        return True
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task, cluster = tf_config.get("task", {}), tf_config.get("cluster", {})
    except (ValueError, AttributeError):
        return True  # strategy() explains what is wrong with it.
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def wait_for_workers(strategy_):
    """Returns once every worker has called it; at once on one host."""
    if worker(strategy_) is None:
        return
    tf.function(lambda: strategy_.reduce(
        tf.distribute.ReduceOp.SUM, strategy_.run(lambda: tf.constant(1.0)), axis=None))()


def is_chief(strategy_):
    """True where checkpoints, logs and results are written: one device, or the chief worker."""
    return bool(strategy_.extended.should_checkpoint)


def describe(strategy_):
    """E.g. '2 replicas (MirroredStrategy)' or '4 replicas (MultiWorkerMirroredStrategy; worker 1 of 2)'."""
    replicas = strategy_.num_replicas_in_sync
    name = type(strategy_).__name__
    name = {"_DefaultDistributionStrategy": "one device",
            "CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}.get(name, name)
    text = f"{replicas} replica{'s' if replicas > 1 else ''} ({name}"
    place = worker(strategy_)
    if place:
        text += f"; {place[0]} {place[1]} of {place[2]}"
    return text + ")"


@contextlib.contextmanager
def writable_dir(strategy_, path):
    """Yields `path` on the chief; on another worker a temporary folder, removed on exit."""
    if is_chief(strategy_):
        yield path
        return
    place = worker(strategy_)
    temporary = tempfile.mkdtemp(prefix=f"supcon-{place[0]}{place[1]}-" if place else "supcon-")
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


class WorkerBackupAndRestore(keras.callbacks.Callback):
    """Keras's BackupAndRestore for a worker that is not the chief: it restores from the
    chief's `backup_dir` but saves into its own `save_dir`, and deletes only that."""

    def __init__(self, backup_dir, save_dir, **kwargs):
        super().__init__()
        self.reader = keras.callbacks.BackupAndRestore(backup_dir, **kwargs)
        self.writer = keras.callbacks.BackupAndRestore(save_dir, **kwargs)

    def set_model(self, model):
        super().set_model(model)
        self.reader.set_model(model)
        self.writer.set_model(model)

    def on_train_begin(self, logs=None):
        self.reader.on_train_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        self.writer.on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.writer.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.writer.on_train_end(logs)


def backup_callback(strategy_, backup_dir, save_dir, **kwargs):
    """BackupAndRestore into `backup_dir` on the chief, WorkerBackupAndRestore elsewhere."""
    if is_chief(strategy_):
        return keras.callbacks.BackupAndRestore(backup_dir, **kwargs)
    return WorkerBackupAndRestore(backup_dir, save_dir, **kwargs)


def weights_digest(model):
    """The first 16 hex digits of the sha256 of every weight: equal on every worker when in step."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]
