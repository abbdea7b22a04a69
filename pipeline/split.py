"""`Split`: one split of a data set held in memory, the form every data source returns."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
    """uint8 images [N, H, W, C] and int64 labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def as_dataset(self):
        """A `tf.data.Dataset` of (uint8 image [H, W, C], int64 label)."""
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((self.images, self.labels))
