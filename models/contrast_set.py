"""What every contrastive loss here compares: anchors against a contrast set.

On one device both are the batch. Under tf.distribute each replica holds only its share
of the global batch; with `gather="global"` its anchors (its own embeddings) are compared
with the embeddings and labels of every replica, gathered with `all_gather`, as SimCLR's
and google-research SupCon's TF2 code do. The loss of the global batch is then the sum
of the replicas' losses, and its gradient exact: the gradient of `all_gather` sums what
every replica sends back to an embedding and keeps the owner's rows. (Comparing local
anchors with a gathered set under `stop_gradient` would drop the other replicas' terms.)
With `gather="local"` each replica contrasts its own share only, as if the global batch
were several small ones: fewer negatives, and a loss that changes with the replica count.

An anchor's own column is masked out of the contrast set: on replica r it sits at the
number of rows of the replicas before r plus the anchor's row.
"""

import dataclasses

import tensorflow as tf

GATHER_FORMS = ("global", "local")


@dataclasses.dataclass(frozen=True)
class ContrastSet:
    """Anchors [n, D] and contrast set [N, D], L2-normalised float32, and their [n, N] masks.

    Attributes:
        anchors: this replica's embeddings (all of them on one device).
        contrast: the embeddings the anchors are compared with (N = n unless gathered).
        same_label: 1.0 where an anchor and a contrast embedding share a label, else 0.0.
        not_self: 0.0 at each anchor's own column, else 1.0.
    """

    anchors: tf.Tensor
    contrast: tf.Tensor
    same_label: tf.Tensor
    not_self: tf.Tensor

    @property
    def contrast_count(self):
        """N as a float32 scalar."""
        return tf.cast(tf.shape(self.contrast)[0], tf.float32)


def contrast_set(labels, embeddings, gather="global"):
    """The ContrastSet of int labels [n] and embeddings [n, D] (any float dtype).

    `gather`: "global" gathers the contrast set from every replica when there are several
    (a replica context of a tf.distribute strategy); "local" never does. On one replica
    both are the same.
    """
    if gather not in GATHER_FORMS:
        raise ValueError(f"gather={gather!r}: choose one of {', '.join(GATHER_FORMS)}.")
    anchors = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
    labels = tf.reshape(labels, [-1])
    count = tf.shape(anchors)[0]
    contrast, contrast_labels, offset = anchors, labels, 0
    context = tf.distribute.get_replica_context()
    if gather == "global" and context is not None and context.num_replicas_in_sync > 1:
        contrast = context.all_gather(anchors, axis=0)
        # tf.identity: labels straight from a distributed iterator fail to gather under
        # MultiWorkerMirroredStrategy ("destinations can not be empty").
        contrast_labels = context.all_gather(tf.identity(labels), axis=0)
        # Replicas may hold different numbers of rows (the last validation batch).
        counts = context.all_gather(tf.reshape(count, [1]), axis=0)
        offset = tf.reduce_sum(counts[:context.replica_id_in_sync_group])
    same_label = tf.cast(tf.equal(labels[:, None], contrast_labels[None, :]), tf.float32)
    not_self = 1.0 - tf.one_hot(offset + tf.range(count), tf.shape(contrast)[0], dtype=tf.float32)
    return ContrastSet(anchors, contrast, same_label, not_self)
