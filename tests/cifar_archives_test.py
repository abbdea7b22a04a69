"""The official CIFAR-10 and CIFAR-100 archives, read offline in both formats.

The archives are tiny copies of the official layouts (tests/archive_fixtures.py), so the
tests check every pixel and label, and what happens to a damaged or hostile archive: it is
refused with one message naming the file, it is never changed, and nothing in it runs.
"""

import gzip
import hashlib
import os
import pickle
import shlex
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from common.errors import UserError
from pipeline import datasets
from tests import archive_fixtures

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FORMATS = [
    ("cifar10", "binary", "fine"),
    ("cifar10", "python", "fine"),
    ("cifar100", "binary", "fine"),
    ("cifar100", "binary", "coarse"),
    ("cifar100", "python", "fine"),
    ("cifar100", "python", "coarse"),
]


def fingerprint(path):
    """The file's sha256 and modification time, to show that a loader left it alone."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns


@pytest.mark.parametrize("dataset,fmt,label_type", FORMATS)
def test_archive_loads_every_pixel_and_label(tmp_path, dataset, fmt, label_type):
    archive_fixtures.write_cifar_archive(str(tmp_path), dataset, fmt)
    expected = archive_fixtures.cifar_contents(dataset, label_type)

    data = datasets.load(dataset, str(tmp_path), label_type=label_type, verify_checksums=False)

    assert data.class_names == expected.class_names
    assert data.image_shape == (32, 32, 3)
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    np.testing.assert_array_equal(data.train.images, expected.train_images)
    np.testing.assert_array_equal(data.train.labels, expected.train_labels)
    np.testing.assert_array_equal(data.test.images, expected.test_images)
    np.testing.assert_array_equal(data.test.labels, expected.test_labels)


def test_fine_and_coarse_labels_are_different_columns(tmp_path):
    # The fixture's coarse label is fine // 5, so reading the wrong label byte would show.
    archive_fixtures.write_cifar_archive(str(tmp_path), "cifar100", "binary")

    fine = datasets.load("cifar100", str(tmp_path), label_type="fine", verify_checksums=False)
    coarse = datasets.load("cifar100", str(tmp_path), label_type="coarse", verify_checksums=False)

    np.testing.assert_array_equal(coarse.train.labels, fine.train.labels // 5)
    assert (fine.num_classes, coarse.num_classes) == (100, 20)


def test_binary_record_is_three_planes_of_rows(tmp_path):
    # One hand-made record, independent of the fixture's pixel formula: the R plane comes
    # first, each plane row by row, so byte 1 is R at row 0, column 1, byte 32 is R at row 1,
    # column 0, and byte 1024 + 1023 is G at row 31, column 31.
    pixels = np.zeros(3072, np.uint8)
    pixels[1], pixels[32], pixels[1024 + 1023], pixels[2048 + 33] = 11, 22, 33, 44
    record = bytes([7, 35]) + pixels.tobytes()
    archive_fixtures.write_cifar_archive(
        str(tmp_path), "cifar100", "binary", replace={"cifar-100-binary/train.bin": record})

    data = datasets.load("cifar100", str(tmp_path), verify_checksums=False)

    image = data.train.images[0]
    assert (image[0, 1, 0], image[1, 0, 0], image[31, 31, 1], image[1, 1, 2]) == (11, 22, 33, 44)
    assert np.count_nonzero(image) == 4
    assert data.train.labels.tolist() == [35]


def test_data_dir_may_name_the_archive_itself(tmp_path):
    path = archive_fixtures.write_cifar_archive(str(tmp_path), "cifar100", "python")

    data = datasets.load("cifar100", path, verify_checksums=False)

    assert len(data.train) == len(archive_fixtures.cifar_contents("cifar100").train_labels)


def test_missing_data_dir_is_a_user_error(tmp_path):
    missing = str(tmp_path / "no_such_folder")

    with pytest.raises(UserError, match="no such file or directory") as error:
        datasets.load("cifar100", missing)

    assert missing in str(error.value)
    assert not os.path.exists(missing)


def test_unknown_label_type_is_a_user_error(tmp_path):
    archive_fixtures.write_cifar_archive(str(tmp_path), "cifar100", "binary")

    with pytest.raises(UserError, match="label_type='superclass'"):
        datasets.load("cifar100", str(tmp_path), label_type="superclass", verify_checksums=False)


@pytest.mark.parametrize("dataset,fmt", [("cifar10", "binary"), ("cifar10", "python"),
                                         ("cifar100", "binary"), ("cifar100", "python")])
def test_checksum_mismatch_is_refused_and_the_file_left_untouched(tmp_path, dataset, fmt):
    # The fixture has the official name but not the official bytes.
    path = archive_fixtures.write_cifar_archive(str(tmp_path), dataset, fmt)
    before = fingerprint(path)

    with pytest.raises(UserError) as error:
        datasets.load(dataset, str(tmp_path), verify_checksums=True)

    message = str(error.value)
    assert path in message
    assert "checksum" in message
    assert "--config.data.verify_checksums=False" in message
    assert fingerprint(path) == before
    assert os.listdir(tmp_path) == [os.path.basename(path)]


class _ShellCommand:
    """Pickles as a call of os.system: what a hostile "CIFAR" pickle would hold."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("dataset,member", [
    ("cifar100", "cifar-100-python/meta"),
    ("cifar100", "cifar-100-python/train"),
    ("cifar10", "cifar-10-batches-py/test_batch"),
])
def test_pickle_naming_another_global_is_refused_and_not_run(tmp_path, dataset, member):
    marker = tmp_path / "payload_ran"
    payload = pickle.dumps(_ShellCommand(f"touch {shlex.quote(str(marker))}"), protocol=2)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = archive_fixtures.write_cifar_archive(str(data_dir), dataset, "python",
                                                replace={member: payload})

    with pytest.raises(UserError, match="not plain CIFAR data") as error:
        datasets.load(dataset, str(data_dir), verify_checksums=False)

    assert path in str(error.value)
    assert "system" in str(error.value)
    assert not marker.exists()
    # The payload is live: an ordinary unpickler runs it. This shows the check above would
    # catch a loader that ran it.
    pickle.loads(payload)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["binary", "python"])
@pytest.mark.parametrize("kept_fraction", [0.0, 0.1, 0.5, 0.9])
def test_truncated_archive_is_a_user_error(tmp_path, fmt, kept_fraction):
    path = archive_fixtures.write_cifar_archive(str(tmp_path), "cifar100", fmt)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:int(kept_fraction * len(data))])
    before = fingerprint(path)

    with pytest.raises(UserError, match="corrupt or truncated") as error:
        datasets.load("cifar100", str(tmp_path), verify_checksums=False)

    assert path in str(error.value)
    assert fingerprint(path) == before


@pytest.mark.parametrize("dataset,fmt,member,contents", [
    # A binary record whose (CIFAR-100: fine) label byte is 200.
    ("cifar100", "binary", "cifar-100-binary/train.bin",
     archive_fixtures.binary_records([[3, 3], [3, 200]])),
    ("cifar10", "binary", "cifar-10-batches-bin/test_batch.bin",
     archive_fixtures.binary_records([[1], [200]])),
    ("cifar100", "python", "cifar-100-python/test", archive_fixtures.python2_pickle({
        b"data": archive_fixtures.plane_rows(0, 2), b"fine_labels": [3, 200],
        b"coarse_labels": [0, 0]})),
])
def test_label_outside_the_classes_is_a_user_error(tmp_path, dataset, fmt, member, contents):
    path = archive_fixtures.write_cifar_archive(str(tmp_path), dataset, fmt,
                                                replace={member: contents})

    with pytest.raises(UserError) as error:
        datasets.load(dataset, str(tmp_path), verify_checksums=False)

    message = str(error.value)
    assert path in message
    assert "label 200 of example 1 is outside" in message


TIB = 1 << 40
HOSTILE_PICKLES = {
    # numpy's _reconstruct would allocate the start shape: "Unable to allocate 10.0 TiB".
    "start_shape_of_10_tib": (archive_fixtures.hostile_array_pickle(start_shape=(10 * TIB,)), "starts as"),
    "state_of_10_tib_over_10_bytes": (archive_fixtures.hostile_array_pickle(shape=(10 * TIB,)), "claims"),
    # An object array is allocated at its claimed shape before its list is read.
    "object_array_of_10_tib": (archive_fixtures.hostile_array_pickle(shape=(10 * TIB,), dtype=b"O", raw=[1, 2]),
                               "not numbers"),
    # The C unpickler allocates a BINBYTES8's stated length before reading it.
    "bytes_of_10_tib": (pickle.PROTO + b"\x04" + pickle.BINBYTES8 + struct.pack("<Q", 10 * TIB) + b"abc",
                        "damaged"),
}


@pytest.mark.parametrize("name", list(HOSTILE_PICKLES))
def test_a_pickle_claiming_an_absurd_size_is_refused_in_one_line(tmp_path, name):
    contents, fragment = HOSTILE_PICKLES[name]
    path = archive_fixtures.write_cifar_archive(str(tmp_path), "cifar10", "python",
                                                replace={"cifar-10-batches-py/test_batch": contents})
    before = fingerprint(path)

    with pytest.raises(UserError, match=fragment) as error:
        datasets.load("cifar10", str(tmp_path), verify_checksums=False, cache=False)

    assert str(error.value).startswith(f"{path}: a pickle in it is ")
    assert "\n" not in str(error.value)
    assert fingerprint(path) == before


def test_an_absurd_array_header_is_refused_before_its_memory_is_asked_for(tmp_path):
    # Under a 1 GiB address-space limit, a 2 GiB claim would be a MemoryError had the loader
    # (numpy's _reconstruct, an unchecked state) allocated it before checking it.
    path = archive_fixtures.write_cifar_archive(
        str(tmp_path), "cifar10", "python",
        replace={"cifar-10-batches-py/data_batch_1": archive_fixtures.hostile_array_pickle(start_shape=(2 << 30,))})
    program = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from common.errors import UserError\n"
        "from pipeline import cifar_archives\n"
        "try:\n"
        "    cifar_archives.load(sys.argv[1], cifar_archives.ARCHIVES[2], verify=False)\n"
        "except UserError as error:\n"
        "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", program, path], capture_output=True, text=True,
                            timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "starts as (2147483648,)" in result.stdout


@pytest.mark.parametrize("compressed", [False, True])
def test_a_tar_member_claiming_an_absurd_size_is_refused_without_reading_it(tmp_path, compressed):
    header = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    header.size = 10 * TIB
    data = header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 2048
    path = str(tmp_path / "cifar-10-python.tar.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if compressed else data)

    with pytest.raises(UserError, match="claims 10,995,116,277,760 bytes") as error:
        datasets.load("cifar10", str(tmp_path), verify_checksums=False, cache=False)

    assert "not the official archive" in str(error.value)


def test_a_text_file_named_like_an_archive_is_one_line(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_text("these are not the images you are looking for\n")

    with pytest.raises(UserError) as error:
        datasets.load("cifar10", str(tmp_path), verify_checksums=False, cache=False)

    message = str(error.value)
    assert "\n" not in message
    assert f"{path}: corrupt or truncated archive (not a tar archive" in message


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
