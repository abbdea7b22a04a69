"""The training loop, under any tf.distribute strategy: `strategy.run` around the model's
own `train_step`, with Keras's callbacks driven the way `Model.fit` drives them.

Keras 3's `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so this
loop stands in for it under every strategy, one device included: one path, tested on one
device as on several. Each step, every replica runs `model.train_step` on its share of
the global batch; Keras's losses divide by the replica count and the optimiser sums the
replicas' gradients, which gives the gradient of the global batch's mean loss. The
metrics are then read in cross-replica context, which sums the replicas (and, across
workers, is a collective every worker joins), so the progress bar, history.csv,
TensorBoard, the divergence stop and a tuner's callbacks all see the global batch's
values. Validation runs `test_step` the same way over batches split across the replicas
(the last one unevenly; a replica may get none).

BackupAndRestore works as under `fit`: it restores in `on_train_begin` and sets
`model._initial_epoch`, from which the loop starts. Under several workers they must all
start from the same epoch, which is checked (they differ when a worker cannot see the
chief's checkpoint), and a collective that fails because a peer is gone ends training
with `WorkerLost`: at once when the peer's process died, within TensorFlow's health
check (30 s between checks, then three tries of up to 10 s) when its host vanished.
"""

import re

import keras
import tensorflow as tf

from common.errors import UserError
from common.errors import WorkerLost
from training import distribute

# What a collective raises when a peer is gone: Unavailable when its process died or the
# health check aborted the collectives; the others for a restarted or timed-out peer.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError,
               tf.errors.FailedPreconditionError)


def distributed(strategy, dataset):
    """`dataset` as the strategy's replicas read it: a tf.data.Dataset of global batches is
    split across them; a distributed dataset (or None) is returned as it is."""
    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    options = tf.data.Options()
    # Every worker reads the whole dataset and keeps its replicas' rows of each batch; in
    # memory there are no files to shard by, which is what AUTO would try first.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _global_logs(strategy, model, replica_logs):
    """The step's logs over the global batch: metrics read across replicas, the rest (the
    learning rate) from the first local replica."""
    results = {metric.name: metric.result() for metric in model.metrics}
    return {name: results[name] if name in results
            else strategy.experimental_local_results(value)[0]
            for name, value in replica_logs.items()}


def _numbers(logs):
    return {name: float(value) for name, value in logs.items()}


def _check_same_start(strategy, epoch):
    """Raises UserError unless every worker starts at the same epoch."""
    if distribute.worker(strategy) is None:
        return
    gather = tf.function(lambda: strategy.gather(
        strategy.run(lambda: tf.constant([epoch], tf.int64)), axis=0))
    epochs = sorted(set(gather().numpy().tolist()))
    if len(epochs) > 1:
        raise UserError(f"the workers would resume at different epochs ({epochs}): every worker "
                        "must read the chief's checkpoint, so WORKDIR must be on a file system "
                        "they all share.")


def train_step_function(model):
    """A tf.function(iterator) -> logs that takes one step of `model` under its strategy:
    `model.train_step` on every replica's share of the next global batch, then the logs
    of the global batch."""
    strategy = model.distribute_strategy
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    replica_step = model.train_step
    if model.jit_compile and strategy.num_replicas_in_sync == 1:
        # XLA for the step as `fit` compiles it; with several replicas the step holds the
        # gradients' all-reduce, which is left to TensorFlow's collectives.
        replica_step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True)

    @tf.function
    def train_step(iterator):
        replica_logs = strategy.run(replica_step, args=(next(iterator),))
        return _global_logs(strategy, model, replica_logs)

    return train_step


def fit(model, train, epochs, steps_per_epoch, validation=None, callbacks=(), verbose=1):
    """Trains `model` (compiled, built under its strategy's scope) like `Model.fit`.

    Args:
        train: endless training batches: a tf.data.Dataset of global batches, or a
            distributed dataset (`strategy.distribute_datasets_from_function`).
        epochs, steps_per_epoch: the schedule; a resumed run starts at `model._initial_epoch`.
        validation: validation batches (either kind), or None.
        callbacks: Keras callbacks, called as `fit` calls them.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.

    Returns the `keras.callbacks.History`.
    """
    strategy = model.distribute_strategy
    train = distributed(strategy, train)
    validation = distributed(strategy, validation)
    train_step = train_step_function(model)

    @tf.function(reduce_retracing=True)
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch, model=model)
    where = "at the start"
    try:
        iterator = iter(train)
        model.stop_training = False
        callback_list.on_train_begin()
        initial_epoch = model._initial_epoch or 0
        _check_same_start(strategy, initial_epoch)
        logs, training_logs = {}, None
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for step in range(steps_per_epoch):
                where = f"at epoch {epoch + 1}, step {step + 1}"
                callback_list.on_train_batch_begin(step)
                logs = _numbers(train_step(iterator))
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            epoch_logs = dict(logs)
            if validation is not None:
                where = f"in the validation of epoch {epoch + 1}"
                epoch_logs.update({f"val_{name}": value for name, value in
                                   _evaluate(model, test_step, validation, callback_list).items()})
            where = f"at the end of epoch {epoch + 1}"
            callback_list.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if model.stop_training:
                break
        _finalize(model, callbacks)
        callback_list.on_train_end(logs=training_logs)
    except PEER_ERRORS as error:
        if distribute.worker(strategy) is None:
            raise
        raise WorkerLost(f"another worker stopped answering {where} ({_cause(error)})") from None
    finally:
        model._initial_epoch = None
    return model.history


def _finalize(model, callbacks):
    """Leaves the optimiser's final values in the model (its moving average of the weights,
    where it keeps one), as `fit` does. When training stopped early after `SwapEMAWeights`
    put the average into the model at the end of an epoch, the model holds it already and
    the optimiser the raw weights, which `finalize_variable_values` would put back."""
    if not any(isinstance(callback, keras.callbacks.SwapEMAWeights)
               and callback._ema_weights_in_model for callback in callbacks):
        model.optimizer.finalize_variable_values(model.trainable_weights)


def _cause(error):
    """The first line of TensorFlow's reason, without the name of the function it failed in."""
    text = re.sub(r"\{\{[^}]*\}\}", "", str(error)).strip()
    text = text.split("aborted by:", 1)[-1].strip()
    return (text.splitlines()[0].rstrip(":") if text else "") or type(error).__name__


def _evaluate(model, test_step, validation, callback_list):
    """The metrics of one pass over `validation`, as `Model.evaluate` inside `fit` gives them."""
    model.reset_metrics()
    callback_list.on_test_begin()
    for step, batch in enumerate(validation):
        callback_list.on_test_batch_begin(step)
        test_step(batch)
        callback_list.on_test_batch_end(step, {})
    logs = _numbers({metric.name: metric.result() for metric in model.metrics})
    callback_list.on_test_end(logs)
    return logs
