"""The experiment on real photos: does the margin help? CIFAR-10 (JPEG copies), three models.

    make reproduce
    # = python run.py --stage compare --config configs/real_photos.py --workdir runs/real_photos

Trains the paper's comparison (`stages/compare.py`): a cross-entropy baseline, SupCon + CE
(margin weight 0) and SupCon + margin + CE, with the same quarter-width ResNet-18, data,
schedule and seed, on the 45,000 training images of ../shared/data/cifar10-jpeg.tar (all
60,000 CIFAR-10 photographs as JPEG copies, about 30 dB PSNR from the originals; 5,000 go
to validation), then attacks all three on the 10,000 test images: FGSM on all of them,
PGD-10 on a seeded 2,000, the AutoAttack-like evaluation (ART: APGD-CE, APGD-DLR,
Square) on 1,000 of those, and the per-image worst case over all three there.

Budget: about 3 hours of training on the 2-core build machine with TensorFlow's own CPU
kernels (width 1/4 trains at about 210 images/s there in float32: 10 epochs of 45,000
images is 36 minutes for the baseline and twice that for each two-view model), about half
that with oneDNN (run.py's default): measured 2026-12-03, about 290 s per two-view epoch
(310 images/s). Then the attacks, per model: FGSM on 10,000 images 81 s, PGD-10 on 2,000
about 4.5 minutes, the AutoAttack-like cascade on 1,000 at 5 epsilons 36 minutes for
the baseline (APGD-CE's 100 steps on every clean-correct image at every epsilon are most
of it; 6 minutes for 500 images at 1/255). It is more than one working session: `make
save-progress` and `make reproduce` carry it across machines
(tools/experiment_progress.py), and a cut attack carries on from its last batch and
epsilon. The margin: pairwise (Hadsell),
1.0 in distance between unit vectors, the config's default (a stated default: the short
`tune` search on the validation split is the other way to pick it).

`:smoke` shrinks everything to seconds (the tests use it).
"""

import os

from configs.base import base_config, shrink_for_smoke
from configs.schema import check_argument

CIFAR10_JPEG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                            "shared", "data", "cifar10-jpeg.tar")


def get_config(arg=None):
    check_argument("configs/real_photos.py", arg, ("smoke",))
    config = base_config()
    config.data.update(name="folder", data_dir=os.path.normpath(CIFAR10_JPEG))
    config.model.width = 0.25
    config.train.update(batch_size=256, epochs=10, learning_rate=0.1, warmup_epochs=1)
    config.loss.update(margin_form="pairwise", margin=1.0, temperature=0.1)
    config.attack.update(
        attacks=("fgsm", "pgd", "aa-like"), epsilons=(0, 1, 2, 4, 8, 16), pgd_steps=10,
        batch_size=500, embedding_examples=1000)
    # FGSM on all 10,000 test images, PGD-10 on a seeded 2,000, the AutoAttack-like
    # evaluation on 1,000 of those (nested subsets, so the worst case covers 1,000).
    config.attack.subsets.pgd = 2000
    config.attack.subsets.aa_like = 1000
    if arg == "smoke":
        shrink_for_smoke(config)
        config.attack.attacks = ("fgsm", "pgd")
        config.attack.subsets.pgd = 32
    return config
