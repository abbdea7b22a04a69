"""Image-folder trees (a directory, a .tar or a .tar.gz) and the embedded sample.

The trees are tiny and made here (tests/archive_fixtures.py) with one colour per class,
so each image can be checked against the exact 32x32 picture it should become. The full
CIFAR-10 JPEG tar is checked too, on demand (--run-slow), since it takes half a minute.
"""

import os
import sys

import numpy as np
import pytest

from common.errors import UserError
from pipeline import datasets
from tests import archive_fixtures

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"]
# A baseline JPEG of a solid colour decodes to within a few levels of that colour.
JPEG_TOLERANCE = 3


def write_tree(tmp_path, form):
    """Writes the fixture tree in `form`; returns (the path to load, the FolderTree)."""
    nested = form.startswith("nested ")
    kind = form.removeprefix("nested ")
    # A nested tree is one folder (like the CIFAR-10 JPEG tar's cifar10-jpeg/) holding train/
    # and test/; the path given to the loader is the folder or tar above it.
    tree_root = tmp_path / "tree"
    tree = archive_fixtures.write_image_folder(str(tree_root / "photos" if nested else tree_root))
    if kind == "directory":
        return str(tree_root), tree
    tar_path = str(tmp_path / f"tree.{kind}")
    archive_fixtures.write_tree_tar(str(tree_root), tar_path)
    return tar_path, tree


def assert_images_match(images, expected_images, channels=3):
    """Compares loaded images with the fixture's, naming the file of the first mismatch."""
    assert images.shape == (len(expected_images), 32, 32, channels)
    for image, expected in zip(images, expected_images):
        target = expected.expected.astype(np.float64)
        if channels == 1:
            # ITU-R BT.601 luma, which the PNG and JPEG decoders use for RGB -> gray.
            target = np.round(target @ [0.299, 0.587, 0.114])[..., None]
        if expected.exact:
            tolerance = 0 if channels == 3 else 1
        else:
            tolerance = JPEG_TOLERANCE
        error = np.abs(image.astype(np.float64) - target).max()
        assert error <= tolerance, f"{expected.path}: off by {error} (allowed {tolerance})"


@pytest.mark.parametrize("form", ["directory", "tar", "tar.gz", "tgz",
                                  "nested directory", "nested tar.gz"])
def test_tree_loads_with_sorted_classes_and_exact_images(tmp_path, form):
    path, tree = write_tree(tmp_path, form)

    data = datasets.load("folder", path)

    assert data.class_names == ["apple", "mango", "zebra"]
    for split, expected in ((data.train, tree.train), (data.test, tree.test)):
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
        assert split.labels.tolist() == [image.label for image in expected]
        assert_images_match(split.images, expected)
    assert np.bincount(data.train.labels).tolist() == [3, 2, 3]
    assert np.bincount(data.test.labels).tolist() == [1, 2, 1]


def test_any_size_is_fitted_with_its_aspect_ratio_kept(tmp_path):
    # Spelled out for the two odd shapes of the fixture: 16x64 becomes 8x32 between black
    # bands of 12 rows, 20x10 becomes 32x16 between black bands of 8 columns.
    path, _ = write_tree(tmp_path, "directory")

    data = datasets.load("folder", path)

    zebra_wide = data.train.images[data.train.labels == 2][0]  # train/zebra/z0.png
    assert (zebra_wide[:12] == 0).all() and (zebra_wide[20:] == 0).all()
    assert (zebra_wide[12:20] == (10, 20, 250)).all()
    mango_tall = data.train.images[data.train.labels == 1][1]  # train/mango/m1.png
    assert (mango_tall[:, :8] == 0).all() and (mango_tall[:, 24:] == 0).all()
    assert (mango_tall[:, 8:24] == (20, 160, 60)).all()


@pytest.mark.parametrize("form", ["directory", "tar"])
def test_one_channel_makes_gray_images(tmp_path, form):
    path, tree = write_tree(tmp_path, form)

    data = datasets.load("folder", path, channels=1)

    assert data.image_shape == (32, 32, 1)
    assert_images_match(data.train.images, tree.train, channels=1)
    assert_images_match(data.test.images, tree.test, channels=1)


def write_tree_with_truncated_jpeg(tmp_path):
    """The fixture tree plus train/apple/a9.jpg: the first 200 bytes of a JPEG."""
    path, _ = write_tree(tmp_path, "directory")
    with open(os.path.join(path, "train", "apple", "a1.jpg"), "rb") as f:
        head = f.read(200)
    truncated = os.path.join(path, "train", "apple", "a9.jpg")
    with open(truncated, "wb") as f:
        f.write(head)
    return path, truncated


def test_truncated_jpeg_is_named(tmp_path):
    path, truncated = write_tree_with_truncated_jpeg(tmp_path)

    with pytest.raises(UserError, match="truncated JPEG .*; replace or remove it") as error:
        datasets.load("folder", path)

    assert str(error.value).startswith(truncated + ":")


def test_truncated_jpeg_leaves_stderr_to_the_error_line(tmp_path, capfd):
    # libjpeg would print "Improper call to JPEG library" itself; the loader refuses the
    # file before libjpeg sees it, so run.py's error line stays the only one.
    path, _ = write_tree_with_truncated_jpeg(tmp_path)
    capfd.readouterr()

    with pytest.raises(UserError):
        datasets.load("folder", path)

    assert "JPEG library" not in capfd.readouterr().err


def test_embedded_sample_is_200_training_and_40_test_images_per_class():
    data = datasets.load("sample")

    assert data.class_names == CIFAR10_CLASS_NAMES
    assert data.image_shape == (32, 32, 3)
    assert (len(data.train), len(data.test)) == (2000, 400)
    assert np.bincount(data.train.labels).tolist() == [200] * 10
    assert np.bincount(data.test.labels).tolist() == [40] * 10


def shared_data_dir():
    """The folder with the full data sets: $SUPCON_SHARED_DATA, else ../shared/data beside the
    checkout ($SUPCON_REPO_ROOT names the checkout when tests run from Bazel's runfiles)."""
    if os.environ.get("SUPCON_SHARED_DATA"):
        return os.environ["SUPCON_SHARED_DATA"]
    return os.path.join(os.environ.get("SUPCON_REPO_ROOT", REPO_ROOT), "..", "shared", "data")


@pytest.mark.slow
def test_full_cifar10_jpeg_tar():
    path = os.path.join(shared_data_dir(), "cifar10-jpeg.tar")
    if not os.path.isfile(path):
        pytest.skip(f"{path} is absent")

    data = datasets.load("folder", path)

    assert data.class_names == CIFAR10_CLASS_NAMES
    assert data.image_shape == (32, 32, 3)
    assert np.bincount(data.train.labels).tolist() == [5000] * 10
    assert np.bincount(data.test.labels).tolist() == [1000] * 10
    # CIFAR-10's published per-channel training means. The JPEG copies, decoded with the
    # accurate DCT, give them to within 0.0002; TensorFlow's default fast DCT would be off by
    # 0.005 in red and blue, and red and blue swapped by 0.045.
    means = data.train.images.reshape(-1, 3).mean(axis=0) / 255.0
    np.testing.assert_allclose(means, [0.4914, 0.4822, 0.4465], atol=0.001)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
