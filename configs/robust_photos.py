"""Robust models on real photos: does SupCon or the margin add robustness on top of adversarial training?

    make reproduce-robust
    # = python run.py --stage tune    --config configs/robust_photos.py:tune --workdir runs/robust_photos
    #   python run.py --stage compare --config configs/robust_photos.py      --workdir runs/robust_photos

Every arm trains the quarter-width ResNet-18 on the 45,000 training images of
../shared/data/cifar10-jpeg.tar (CIFAR-10 as JPEG copies; 5,000 go to validation) with
N-FGSM adversarial training at 8/255 (de Jorge et al. 2022: a start drawn from
[-16/255, 16/255], one step of 8/255, no projection back; the single-step method that
does not overfit catastrophically at 8/255, `training/adversary.py`), the same schedule
(SGD, momentum 0.9, weight decay 5e-3 decoupled = the recipes' 5e-4 coupled, batch 128,
learning rate 0.1 after a 2-epoch warm-up, cosine to 0 over 25 epochs), data order,
augmentation (crop and flip) and seed, PGD-10 accuracy at 8/255 on 1,000 validation images
after every epoch, and its best epoch kept (the most clean-accurate within one standard
error of the most robust, `training/robust_validation.py`):

1. `at_ce`: cross-entropy on the adversarial images (the field's standard);
2. `at_supcon`: SupCon + CE on two adversarial views, margin weight 0;
3. `at_supcon_margin`: SupCon + margin + CE, the margin chosen by the `tune` search below;
4. `at_ce_long`: `at_ce` trained for as long in wall time as `at_supcon_margin` took
   (64 epochs: 25 times the ratio of their median epoch times, 229 s / 89 s).

Arms 1-3 train again with seed 1 (`*_seed1`: another validation split, initialisation,
data order and augmentation), and the verdict pools both seeds once both exist.

Then two questions the results raised, seed 0 only, trained last in this order
(`config.compare.follow_ups`; at_ce_half_width trained before the seed-1 arms, in the
first run that knew it, when follow-ups still trained among the seed-0 arms):

- The goal (40% under the worst case at 8/255 with at least 70% clean; the best of arms
  1-3, at_ce, reached 35.5% with 67.6%): `at_ce_half_width`, at_ce at half width (the
  issue allows it). Its N-FGSM training step takes 0.56 s against quarter width's 0.19 s
  (2.9x; 128 images, mixed_bfloat16, measured alternately in one run, 2026-12-07), so
  about 4 minutes an epoch with validation, 1.8 hours for 25 epochs.
- `at_supcon_margin_keepable`, arm 3 with the search's best margin that 10 classes can all
  keep apart (pairwise 0.958, trial 00). The search's choice, 1.76, is beyond the 1.49 a
  regular simplex gives (models/margin_loss.py), and arm 3 overfit catastrophically for
  ten epochs (validation PGD-10 0.1-19% at epochs 2-11) before it recovered; this arm
  tells whether a margin the classes can keep does so too.

The search (`:tune`): 6 Bayesian trials of 5 epochs on a seeded 10,000 of the training
images, the margin's form (pairwise or additive) and value searched, temperature and
weights as the arms have them, each trial scored by PGD-10 accuracy at 8/255 on 1,000
validation images (a trial under 20% clean accuracy does not qualify).

The search's answer (2026-12-07, results/robust_photos/tune/): pairwise margin 1.76, PGD
accuracy 25.3% against 24.7-24.9% for the other five trials (margins 0.96-1.89, all
pairwise: the Bayesian oracle never drew the additive form in 6 trials), a spread within
one standard error of 1,000 images (1.4 points): the margin's value barely matters after 5
epochs. Each trial took about 7 minutes alone on the machine below.

Weight decay: Keras's SGD decays the weights outside the momentum, PyTorch's (which the
published recipes use) inside it, ten times more at momentum 0.9 (models/optimizer.py). The
first at_ce run had 5e-4 in Keras's form; the same arm with 5e-3 (both trained from the
same seed, validation PGD-10 at 8/255 / clean, on the same 1,000 images):

    epoch        10           15           20           21           25
    5e-4    32.7 / 49.9  36.3 / 54.9  37.0 / 60.9  37.4 / 61.1  37.5 / 61.3
    5e-3    32.3 / 52.1  34.8 / 59.5  40.1 / 66.4  39.4 / 67.2  40.3 / 68.8

so every arm trains with 5e-3. The first run is kept out of the results (the record of both
runs: results/robust_photos/weight_decay.md).

Measured on the 2-core AMD EPYC with AVX512_BF16 (mixed_bfloat16, 2026-12-07): a training
step of 128 images takes 0.23-0.25 s for AT + CE and 0.62 s for AT + SupCon (two views);
an epoch of 351 steps with its validation passes took 89 s for at_ce, 213 s for
at_supcon and 229 s for at_supcon_margin (medians of 25 epochs, history.csv's
epoch_seconds): arms 1-3 train 25 epochs in 3.7 hours together by the medians (4.9 hours
by the sums, which include the epochs paused while the machine ran tests).

The evaluation of each arm's best epoch: clean and FGSM on all 10,000 test images at 1,
2, 4, 8, 16/255; PGD-10 and PGD-50 on a seeded 2,000 at 2, 4, 8, 16/255; the
AutoAttack-like evaluation (APGD-CE, APGD-DLR, Square) and the per-image worst case on
1,000 of those at 4 and 8/255.

`:smoke` shrinks everything to seconds (the tests use it).
"""

from configs import real_photos
from configs.base import shrink_for_smoke
from configs.schema import check_argument

# The arms (configs/arms.py), each a training stage with its config changes, trained in
# the order of their names, then arms 1-3 with seed 1 (`_seed1`), then the follow-ups.
ARMS = {
    "at_ce": "baseline",
    "at_supcon": "pretrain; loss.margin_weight=0.0",
    # The margin the search chose (results/robust_photos/tune/summary.md): pairwise, 1.76.
    "at_supcon_margin": "pretrain; loss.margin_form=pairwise; loss.margin=1.759",
    # at_ce for as long as at_supcon_margin trained: 25 epochs times the ratio of the two
    # arms' median epoch times, 229.1 s / 89.4 s (history.csv's epoch_seconds), = 64.
    "at_ce_long": "baseline; train.epochs=64",
}
REPLICATED = ("at_ce", "at_supcon", "at_supcon_margin")
SEEDS = (1,)
# After the arms and seeds, in this order (config.compare.follow_ups), questions
# they raised, seed 0 only. The goal (40% under the worst case at 8/255 with 70% clean):
# at_ce, 35.5% / 67.6%, is the best of arms 1-3, and the issue allows half width: at_ce at
# half width, the same schedule. Then 1.76 is more than 10 classes can all keep apart on
# the unit sphere (at most 1.49, models/margin_loss.py): the search's best trial among
# margins they can keep (trial 00, pairwise 0.958, 24.9% against 25.3%) trained as
# at_supcon_margin was.
FOLLOW_UPS = {
    "at_ce_half_width": "baseline; model.width=0.5",
    "at_supcon_margin_keepable": "pretrain; loss.margin_form=pairwise; loss.margin=0.958",
}
# Each pair "A - B": A judged against B, on the same test images, pooled over the seeds.
PAIRS = ("at_supcon - at_ce", "at_supcon_margin - at_supcon", "at_supcon_margin - at_ce",
         "at_supcon_margin - at_ce_long", "at_supcon_margin_keepable - at_supcon",
         "at_supcon_margin_keepable - at_supcon_margin", "at_ce_half_width - at_ce")
QUESTION = ("contrastive terms add robustness on top of adversarial training: SupCon + CE over "
            "cross-entropy alone (1-2 AutoAttack points at best in published work), and the margin "
            "over SupCon + CE, both trained with N-FGSM at 8/255.")


def get_config(arg=None):
    check_argument("configs/robust_photos.py", arg, ("tune", "seed0", "smoke"))
    config = real_photos.get_config()
    # Weight decay 5e-3 in Keras's decoupled form is the recipes' 5e-4 in PyTorch's coupled
    # form (models/optimizer.py); 5e-4 here was ten times weaker and cost at_ce 3 points of
    # validation PGD-10 and 6 of clean accuracy at epochs 20-21 (docstring).
    config.train.update(batch_size=128, epochs=25, learning_rate=0.1, warmup_epochs=2,
                        weight_decay=5e-3)
    config.adversarial.update(method="n_fgsm", epsilon=8.0)
    config.validation.update(attack="pgd", steps=10, epsilon=8.0, examples=1000)
    config.loss.update(temperature=0.1, supcon_weight=1.0, margin_weight=1.0)
    config.attack.update(attacks=("fgsm", "pgd", "pgd-50", "aa-like"), epsilons=(0, 1, 2, 4, 8, 16),
                         batch_size=500, pgd_steps=10, embedding_examples=1000)
    # FGSM on all 10,000 test images; PGD-10 and PGD-50 on a seeded 2,000 at 2-16/255; the
    # AutoAttack-like evaluation on 1,000 of those at 4 and 8/255 (nested subsets, so the
    # worst case covers those 1,000 at 4 and 8/255).
    config.attack.subsets.update(fgsm=0, pgd=2000, pgd_50=2000, aa_like=1000)
    config.attack.own_epsilons.update(pgd=(0, 2, 4, 8, 16), pgd_50=(0, 2, 4, 8, 16),
                                      aa_like=(0, 4, 8))
    config.tune.update(
        algorithm="bayesian", max_trials=6, epochs=5, margin_forms=("pairwise", "additive"),
        pairwise_margin=(0.25, 2.0), additive_margin=(0.0, 0.4), temperature=(0.1, 0.1),
        supcon_weight=(1.0, 1.0), margin_weight=(1.0, 1.0), attack="pgd", epsilon=8.0,
        min_clean_accuracy=0.2, validation_examples=1000)
    config.compare.update(paper_arms=False, pairs=PAIRS, claim=QUESTION, follow_ups=tuple(FOLLOW_UPS))
    for name, text in {**ARMS, **FOLLOW_UPS}.items():
        config.arms[name] = text
    if arg == "tune":
        # A seeded 10,000 of the 45,000 training images (the validation split is the arms').
        config.data.max_train_examples = 10000
        # The search ran with the weaker decay, before the convention above was found; its
        # six margins scored within one standard error of each other (docstring), so it was
        # not run again. Pinned, so that the committed search stays the one this asks for.
        config.train.weight_decay = 5e-4
        return config
    if arg != "seed0":
        for seed in SEEDS:
            for name in REPLICATED:
                config.arms[f"{name}_seed{seed}"] = f"{ARMS[name]}; seed={seed}"
    if arg == "smoke":
        shrink_for_smoke(config)
        config.arms.at_ce_long = "baseline; train.epochs=2"  # Longer than at_ce's 1, as above.
        config.arms.at_ce_half_width = "baseline; model.width=0.125"  # Twice the smoke's width.
        config.attack.update(attacks=("fgsm", "pgd", "pgd-50"))
        config.attack.subsets.update(pgd=32, pgd_50=16)
        config.attack.own_epsilons.update(pgd=(0, 8), pgd_50=(0, 8), aa_like=(0, 8))
    return config
