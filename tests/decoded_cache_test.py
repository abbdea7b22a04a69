"""The on-disk cache of decoded images (pipeline/decoded_cache.py), on tiny trees and archives.

Every test points $SUPCON_CACHE_DIR at its own temporary folder, so nothing here reads or
writes the real ~/.cache. A decoder wrapped to count its calls shows whether a load was
served from the cache.
"""

import hashlib
import logging
import os
import sys

import numpy as np
import pytest

from common.errors import UserError
from pipeline import cifar_archives
from pipeline import datasets
from pipeline import decoded_cache
from pipeline import image_folder
from tests import archive_fixtures


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """A fresh cache folder for each test, never the user's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SUPCON_CACHE_DIR", str(path))
    return path


@pytest.fixture
def decodes(monkeypatch):
    """Counts the calls of the image decoder (`image_folder._decode`)."""
    calls = []
    real = image_folder._decode

    def counting(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(image_folder, "_decode", counting)
    return calls


def write_source(tmp_path, form):
    """The fixture tree as a directory or a tar; returns (the path to load, the tree's root)."""
    root = tmp_path / "tree"
    archive_fixtures.write_image_folder(str(root))
    if form == "directory":
        return str(root), str(root)
    return archive_fixtures.write_tree_tar(str(root), str(tmp_path / f"tree.{form}")), str(root)


def entries(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def assert_same_data(first, second):
    assert second.class_names == first.class_names
    for split in ("train", "test"):
        a, b = getattr(first, split), getattr(second, split)
        assert b.images.dtype == np.uint8 and b.labels.dtype == np.int64
        np.testing.assert_array_equal(b.images, a.images)
        np.testing.assert_array_equal(b.labels, a.labels)


def fingerprints(*paths):
    """sha256 and mtime_ns of every file at or below `paths`, to show that they were only read."""
    found = {}
    for path in paths:
        files = [path] if os.path.isfile(path) else [
            os.path.join(d, n) for d, _, names in os.walk(path) for n in names]
        for name in files:
            with open(name, "rb") as f:
                found[name] = (hashlib.sha256(f.read()).hexdigest(), os.stat(name).st_mtime_ns)
    return found


@pytest.mark.parametrize("form", ["directory", "tar", "tar.gz"])
def test_second_load_reads_the_cache_and_returns_the_same_data(tmp_path, cache_dir, decodes, form):
    path, _ = write_source(tmp_path, form)

    first = datasets.load("folder", path)
    assert len(decodes) == 2  # train and test
    assert len(entries(cache_dir)) == 1 and entries(cache_dir)[0].endswith(".npz")
    second = datasets.load("folder", path)

    assert len(decodes) == 2  # nothing decoded the second time
    assert_same_data(first, second)
    assert second.class_names == ["apple", "mango", "zebra"]
    if form == "tar":
        assert_same_data(datasets.load("folder", path, cache=False), second)


def test_a_cache_hit_never_calls_the_decoder(tmp_path, monkeypatch):
    path, _ = write_source(tmp_path, "tar")
    first = datasets.load("folder", path)

    def refuse(*args):
        raise AssertionError("decoded although the cache holds the data")

    monkeypatch.setattr(image_folder, "_decode", refuse)
    assert_same_data(first, datasets.load("folder", path))


def test_a_changed_tar_misses_even_with_the_same_size_and_time(tmp_path, decodes):
    path, root = write_source(tmp_path, "tar")
    first = datasets.load("folder", path)
    before = os.stat(path)
    # Rewrite train/apple/a0.png in another colour; tar pads members to 512 bytes, so the tar
    # keeps its size, and its modification time is set back: only the content differs.
    png = os.path.join(root, "train", "apple", "a0.png")
    import tensorflow as tf
    with open(png, "wb") as f:
        f.write(tf.io.encode_png(np.full((32, 32, 3), (0, 0, 255), np.uint8)).numpy())
    archive_fixtures.write_tree_tar(root, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    second = datasets.load("folder", path)

    assert len(decodes) == 4
    assert (second.train.images[0] == (0, 0, 255)).all()
    assert not np.array_equal(first.train.images[0], second.train.images[0])


@pytest.mark.parametrize("change", ["mtime", "size", "added file", "renamed file"])
def test_a_changed_folder_misses(tmp_path, decodes, change):
    path, _ = write_source(tmp_path, "directory")
    datasets.load("folder", path)
    png = os.path.join(path, "train", "apple", "a0.png")
    status = os.stat(png)
    if change == "mtime":
        os.utime(png, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    elif change == "size":
        # Noise makes a larger PNG; its modification time is set back, so only the size differs.
        import tensorflow as tf
        noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        with open(png, "wb") as f:
            f.write(tf.io.encode_png(noise).numpy())
        os.utime(png, ns=(status.st_atime_ns, status.st_mtime_ns))
        assert os.stat(png).st_size != status.st_size
    elif change == "added file":
        with open(png, "rb") as f:
            data = f.read()
        with open(os.path.join(path, "train", "apple", "a3.png"), "wb") as f:
            f.write(data)
    else:
        os.rename(png, os.path.join(path, "train", "apple", "b0.png"))

    second = datasets.load("folder", path)

    assert len(decodes) == 4
    if change == "size":
        assert not (second.train.images[0] == (200, 30, 40)).all()
    if change == "added file":
        assert np.bincount(second.train.labels).tolist() == [4, 2, 3]


def test_each_parameter_has_its_own_entry(tmp_path, cache_dir, decodes):
    path, _ = write_source(tmp_path, "tar")
    shapes = {}
    for size, channels in ((32, 3), (16, 3), (32, 1)):
        shapes[(size, channels)] = datasets.load("folder", path, image_size=size,
                                                 channels=channels).image_shape
    assert len(decodes) == 6
    assert shapes == {(32, 3): (32, 32, 3), (16, 3): (16, 16, 3), (32, 1): (32, 32, 1)}
    assert len(entries(cache_dir)) == 3

    for size, channels in shapes:
        data = datasets.load("folder", path, image_size=size, channels=channels)
        assert data.image_shape == shapes[(size, channels)]
    assert len(decodes) == 6


def damage(entry, how, other_entry):
    with open(entry, "rb") as f:
        data = f.read()
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "flipped bytes":  # inside the image data: the zip's CRC-32 catches it
        middle = len(data) // 2
        flipped = bytes(b ^ 0xFF for b in data[middle:middle + 16])
        data = data[:middle] + flipped + data[middle + 16:]
    elif how == "not a zip":
        data = b"hello" * 100
    elif how == "another key":  # a whole entry made for other parameters, under this name
        with open(other_entry, "rb") as f:
            data = f.read()
    elif how == "pickled object":
        import io
        buffer = io.BytesIO()
        np.savez(buffer, key=np.array("x"), train_images=np.array([object()], dtype=object))
        data = buffer.getvalue()
    with open(entry, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("how", ["truncated", "flipped bytes", "not a zip", "another key",
                                 "pickled object"])
def test_a_damaged_entry_is_ignored_with_a_warning_and_rewritten(tmp_path, cache_dir, decodes,
                                                                 caplog, how):
    path, _ = write_source(tmp_path, "tar")
    first = datasets.load("folder", path)
    (entry,) = entries(cache_dir)
    other = None
    if how == "another key":
        datasets.load("folder", path, image_size=16)
        (other,) = set(entries(cache_dir)) - {entry}
        other = str(cache_dir / other)
    damage(str(cache_dir / entry), how, other)

    with caplog.at_level(logging.WARNING):
        second = datasets.load("folder", path)

    decoded = len(decodes)
    assert decoded == (6 if other else 4)  # decoded again
    assert_same_data(first, second)
    assert any("unusable decoded-data cache entry" in r.getMessage() and entry in r.getMessage()
               for r in caplog.records), caplog.text
    assert entry in entries(cache_dir) and len(entries(cache_dir)) == (2 if other else 1)
    assert_same_data(first, datasets.load("folder", path))
    assert len(decodes) == decoded  # rewritten: the next load reads it


class DiskFull(OSError):
    pass


def failing_savez(error):
    """An `np.savez` that writes the start of a zip, then fails with `error`."""
    def savez(file, **arrays):
        file.write(b"PK\x03\x04" + b"\0" * 1000)
        raise error
    return savez


def test_a_failed_write_leaves_no_entry_and_the_load_succeeds(tmp_path, cache_dir, decodes,
                                                              monkeypatch, caplog):
    path, _ = write_source(tmp_path, "tar")
    expected = datasets.load("folder", path, cache=False)

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(decoded_cache.np, "savez", failing_savez(DiskFull(28, "No space left")))
        data = datasets.load("folder", path)

    assert_same_data(expected, data)
    assert "could not write the decoded-data cache entry" in caplog.text
    assert entries(cache_dir) == []  # neither an entry nor the temporary file
    datasets.load("folder", path)
    assert len(decodes) == 6  # the next load decoded (nothing half-written was read) ...
    assert len(entries(cache_dir)) == 1  # ... and wrote the entry


def test_an_interrupted_write_leaves_no_entry(tmp_path, cache_dir, decodes, monkeypatch):
    path, _ = write_source(tmp_path, "tar")

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(decoded_cache.np, "savez", failing_savez(KeyboardInterrupt()))
        datasets.load("folder", path)

    assert entries(cache_dir) == []
    datasets.load("folder", path)
    assert len(decodes) == 4


def test_a_killed_writers_temporary_file_is_never_read(tmp_path, cache_dir, decodes):
    path, _ = write_source(tmp_path, "tar")
    expected = datasets.load("folder", path)
    (entry,) = entries(cache_dir)
    # What a writer killed mid-write leaves: the start of the entry under a temporary name.
    with open(cache_dir / entry, "rb") as f:
        head = f.read(2000)
    os.remove(cache_dir / entry)
    leftover = cache_dir / f".{entry}.k1ll3d.tmp"
    leftover.write_bytes(head)

    assert_same_data(expected, datasets.load("folder", path))

    assert len(decodes) == 4
    assert sorted(entries(cache_dir)) == sorted([entry, leftover.name])  # a recent one is kept
    old = os.stat(leftover).st_mtime - 2 * 24 * 3600
    os.utime(leftover, (old, old))
    os.remove(cache_dir / entry)
    datasets.load("folder", path)
    assert entries(cache_dir) == [entry]  # a day-old leftover is removed by the next write


def test_a_source_changed_during_decoding_is_not_cached(tmp_path, cache_dir, monkeypatch):
    path, _ = write_source(tmp_path, "directory")
    real = image_folder._decode

    def decode_then_edit(entries_, size, channels, source):
        png = os.path.join(path, "train", "apple", "a0.png")
        status = os.stat(png)
        os.utime(png, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
        return real(entries_, size, channels, source)

    monkeypatch.setattr(image_folder, "_decode", decode_then_edit)
    datasets.load("folder", path)

    assert entries(cache_dir) == []


@pytest.mark.parametrize("form", ["directory", "tar.gz"])
def test_the_source_is_only_read(tmp_path, cache_dir, form):
    path, root = write_source(tmp_path, form)
    before = fingerprints(path, root)
    listing = sorted(os.listdir(tmp_path))

    datasets.load("folder", path)
    datasets.load("folder", path)
    (entry,) = entries(cache_dir)
    damage(str(cache_dir / entry), "truncated", None)
    datasets.load("folder", path)

    assert fingerprints(path, root) == before
    assert sorted(name for name in os.listdir(tmp_path) if name != "cache") == listing


def test_official_archives_are_cached_and_still_checked(tmp_path, cache_dir, monkeypatch):
    archive_fixtures.write_cifar_archive(str(tmp_path), "cifar100", "binary")
    expected = archive_fixtures.cifar_contents("cifar100", "coarse")
    first = datasets.load("cifar100", str(tmp_path), label_type="coarse", verify_checksums=False)
    fine = datasets.load("cifar100", str(tmp_path), label_type="fine", verify_checksums=False)
    assert len(entries(cache_dir)) == 2

    def refuse(*args):
        raise AssertionError("read although the cache holds the data")

    monkeypatch.setattr(cifar_archives, "_read_binary", refuse)
    second = datasets.load("cifar100", str(tmp_path), label_type="coarse", verify_checksums=False)

    assert_same_data(first, second)
    np.testing.assert_array_equal(second.train.labels, expected.train_labels)
    assert second.class_names == expected.class_names
    np.testing.assert_array_equal(
        datasets.load("cifar100", str(tmp_path), verify_checksums=False).train.labels,
        fine.train.labels)
    # The fixture is not the official file: the checksum still refuses it, cached or not.
    with pytest.raises(UserError, match="checksum mismatch"):
        datasets.load("cifar100", str(tmp_path), verify_checksums=True)


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch, decodes):
    for value in ("off", "OFF", " none ", "0", "false", "no"):
        monkeypatch.setenv("SUPCON_CACHE_DIR", value)
        assert decoded_cache.cache_directory() is None, value
    monkeypatch.setenv("SUPCON_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    path, _ = write_source(tmp_path, "tar")

    datasets.load("folder", path)
    datasets.load("folder", path)

    assert len(decodes) == 4
    assert sorted(os.listdir(tmp_path)) == ["tree", "tree.tar"]


def test_cache_false_neither_reads_nor_writes(tmp_path, cache_dir, decodes):
    path, _ = write_source(tmp_path, "tar")
    datasets.load("folder", path, cache=False)
    assert entries(cache_dir) == []
    datasets.load("folder", path)
    datasets.load("folder", path, cache=False)
    assert len(decodes) == 6


def test_where_the_cache_lives(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("SUPCON_CACHE_DIR", raising=False)
    assert decoded_cache.cache_directory() == str(tmp_path / "home" / ".cache" / "supcon_robust")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert decoded_cache.cache_directory() == str(tmp_path / "home" / ".cache" / "supcon_robust")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert decoded_cache.cache_directory() == str(tmp_path / "xdg" / "supcon_robust")
    monkeypatch.setenv("SUPCON_CACHE_DIR", str(tmp_path / "mine"))
    assert decoded_cache.cache_directory() == str(tmp_path / "mine")
    monkeypatch.setenv("SUPCON_CACHE_DIR", "")
    assert decoded_cache.cache_directory() == str(tmp_path / "xdg" / "supcon_robust")


def test_an_unwritable_cache_costs_only_a_warning(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SUPCON_CACHE_DIR", str(blocker / "cache"))
    path, _ = write_source(tmp_path, "tar")

    with caplog.at_level(logging.WARNING):
        data = datasets.load("folder", path)

    assert len(data.train) == 8
    assert "could not write the decoded-data cache entry" in caplog.text


def test_bad_paths_are_still_reported_by_the_loader(tmp_path, cache_dir):
    with pytest.raises(UserError, match="no such file or directory"):
        datasets.load("folder", str(tmp_path / "missing.tar"))
    not_a_tar = tmp_path / "photos.zip"
    not_a_tar.write_bytes(b"PK")
    with pytest.raises(UserError, match="neither a directory nor"):
        datasets.load("folder", str(not_a_tar))
    assert entries(cache_dir) == []


@pytest.mark.slow
def test_full_cifar10_jpeg_tar_round_trip(cache_dir):
    # Where tests/image_folder_test.py finds the full data set.
    repo_root = os.environ.get("SUPCON_REPO_ROOT",
                               os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    data_dir = os.environ.get("SUPCON_SHARED_DATA") or os.path.join(repo_root, "..", "shared",
                                                                     "data")
    path = os.path.join(data_dir, "cifar10-jpeg.tar")
    if not os.path.isfile(path):
        pytest.skip(f"{path} is absent")
    decoded = datasets.load("folder", path)
    cached = datasets.load("folder", path)

    assert_same_data(decoded, cached)
    assert len(cached.train) == 50000 and len(cached.test) == 10000


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
