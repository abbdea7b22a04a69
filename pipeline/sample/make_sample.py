"""Rebuilds the embedded sample from the CIFAR-10 JPEG copies.

    python pipeline/sample/make_sample.py ../shared/data/cifar10-jpeg.tar pipeline/sample/cifar10_sample.tar.gz

Draws a fixed number of images per class and split with a fixed seed and
copies their JPEG bytes unchanged into a gzipped tar laid out as
`cifar10-sample/{train,test}/<class>/NNNN.jpg`, the image-folder layout that
`pipeline.image_folder` reads. Running it twice gives the same file
(sha256 1a7c356ee86abdc0abf9e7d12670cf99a8661df9af7958b20c9a1897c478007b).
"""

import gzip
import io
import os
import random
import sys
import tarfile

TRAIN_PER_CLASS = 200
TEST_PER_CLASS = 40
SEED = 20241227  # The paper's arXiv date; any fixed value would do.


def main(source_tar, destination):
    if os.path.exists(destination):
        sys.exit(f"{destination} exists; remove it yourself first if you mean to rebuild it.")
    members = {}
    with tarfile.open(source_tar) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] in ("train", "test"):
                members.setdefault((parts[1], parts[2]), []).append(member)
        rng = random.Random(SEED)
        chosen = []
        for split, class_name in sorted(members):
            count = TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS
            candidates = sorted(members[(split, class_name)], key=lambda m: m.name)
            chosen.extend(sorted(rng.sample(candidates, count), key=lambda m: m.name))
        buffer = io.BytesIO()
        # Fixed times, modes and ordering make the archive reproducible byte for byte.
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as out:
            for member in chosen:
                data = tar.extractfile(member).read()
                info = tarfile.TarInfo("cifar10-sample/" + member.name.split("/", 1)[1])
                info.size, info.mtime, info.mode = len(data), 1577836800, 0o644
                out.addfile(info, io.BytesIO(data))
    with open(destination, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
            gz.write(buffer.getvalue())
    print(f"wrote {len(chosen)} images to {destination}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
