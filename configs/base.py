"""Defaults shared by every experiment; the files beside this one change what differs.

Every number that decides an experiment is here or in those files. Any field can be
overridden on the command line, e.g. `--config.loss.margin=0.5`, and the resolved
config is written next to each stage's results as `config.json`.
"""

import ml_collections

from attacks.table import ATTACKS


def base_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict(dict(
        name="sample",  # sample, folder, cifar10, cifar100, or another TFDS name.
        data_dir="",  # Offline archives, an image folder or its tar, or a TFDS data_dir.
        image_size=32,
        channels=3,
        label_type="fine",  # CIFAR-100 only: fine (100 classes) or coarse (20).
        verify_checksums=True,
        validation_fraction=0.1,  # Carved from train with the seed; for tuning, never test.
        max_train_examples=0,  # 0 keeps all; smaller values make quick runs.
        crop_padding=4,
        flip=True,
        jitter_strength=0.0,  # SupCon's colour jitter (0.4 there); 0 turns it off.
        grayscale_probability=0.0,  # SupCon's random grayscale (0.2 there).
    ))

    config.model = ml_collections.ConfigDict(dict(
        width=1.0,  # Multiplier of ResNet-18's channels; 1.0 is the paper's network.
        sync_batchnorm=True,  # Over several replicas: BatchNorm statistics of the global batch.
    ))

    # total = ce_weight * CE + supcon_weight * SupCon + margin_weight * Margin (pretrain).
    config.loss = ml_collections.ConfigDict(dict(
        ce_weight=1.0,
        supcon_weight=1.0,
        margin_weight=1.0,
        temperature=0.1,
        margin_form="pairwise",  # pairwise (Hadsell et al. 2006) or additive (SupCon with margin).
        margin=1.0,  # Distance in [0, 2] (pairwise) or similarity margin (additive).
        # Over several replicas: each replica's anchors against the global batch (global) or
        # against its own share only (local, for comparison).
        gather="global",
    ))

    # baseline and pretrain share this schedule, so that they differ only in the loss.
    config.train = ml_collections.ConfigDict(dict(
        batch_size=256,
        epochs=100,
        steps_per_epoch=0,  # 0: one pass over the training images.
        optimizer="sgd",  # sgd or adamw.
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",  # cosine (after a linear warm-up) or constant.
        warmup_epochs=5,
        # > 0: the model kept is the exponential moving average of the weights over the steps
        # (Polyak averaging; the optimiser's `use_ema`), this its momentum (0.999 averages
        # over about 1,000 steps). Robust validation and the kept epochs see the average.
        ema_momentum=0.0,
        precision="auto",  # auto, float32, mixed_float16 or mixed_bfloat16.
        jit_compile="auto",  # auto (XLA on a GPU, not on a CPU), true or false.
        # default (one device), mirrored (this host's GPUs) or multi_worker (hosts in
        # TF_CONFIG); batch_size stays the global batch whatever the replica count.
        strategy="default",
        cpu_replicas=1,  # On a host without GPUs: logical CPU replicas for mirrored (tests).
    ))

    # Adversarial training (training/adversary.py): each batch's adversarial images are
    # crafted before the gradient step and trained on, in the stages listed.
    config.adversarial = ml_collections.ConfigDict(dict(
        method="none",  # none, fgsm_rs, n_fgsm (recommended: no catastrophic overfitting) or pgd.
        epsilon=8.0,  # Out of 255: the L-infinity budget trained for.
        steps=10,  # pgd and TRADES' adversary: steps per batch (fgsm_rs and n_fgsm take one).
        step_size=2.0,  # Out of 255: pgd's step (fgsm_rs steps 1.25 eps, n_fgsm eps).
        bn_mode="inference",  # BatchNorm while crafting: inference (moving statistics) or training.
        stages=("baseline", "pretrain", "finetune"),  # The training stages it applies to.
        ce_on="adversarial",  # Cross-entropy on the adversarial images, or on both clean and adversarial.
        trades_beta=0.0,  # > 0: TRADES, CE(clean) + beta KL(f(x) || f(x')), its KL adversary (6 there).
    ))

    # Robust validation after every epoch (training/robust_validation.py): PGD accuracy on
    # held-out validation images, logged as val_robust_accuracy; the best epoch's model is
    # kept as best_model.keras, and a collapse (catastrophic overfitting) is caught.
    config.validation = ml_collections.ConfigDict(dict(
        robust="auto",  # auto (on where adversarial training is on), true or false.
        attack="pgd",  # pgd (steps below, step 2.5 eps / steps, one random start) or fgsm.
        steps=10,
        epsilon=8.0,  # Out of 255.
        examples=1000,  # Seeded validation images attacked each epoch; 0: all of them.
        batch_size=500,
        collapse_drop=20.0,  # Points of robust accuracy below the best that count as a collapse.
        stop_on_collapse=True,  # End training at a collapse (the best model is kept either way).
        # Which epoch is best: one_se (the most clean-accurate within one standard error of
        # the most robust) or most_robust (training/robust_validation.py).
        keep="one_se",
        use="best",  # Which model finetune, attack and export take: best (epoch) or last.
    ))

    # Further models trained beside the stages, each a stage with config changes, attacked
    # beside them (configs/arms.py): NAME = "STAGE; field=value; ...". None by default.
    config.arms = ml_collections.ConfigDict()

    # Stage `compare` (stages/compare.py): the models it trains and the pairs its verdict
    # judges. An arm named NAME_seedK (configs/arms.py) is NAME trained with another seed:
    # the verdict pools a pair over every seed that both of its models were trained with.
    config.compare = ml_collections.ConfigDict(dict(
        paper_arms=True,  # Train the paper's three (baseline, supcon, supcon_margin) before the arms.
        pairs=("supcon_margin - baseline", "supcon_margin - supcon"),  # "A - B": A judged against B.
        claim="paper",  # Set beside the verdict: "paper" (arXiv 2412.19747's claim), other text, or "".
        # Arms trained last, in this order, after every other arm and seed (questions the
        # results raised); the others train by name, each NAME_seedK after them all.
        follow_ups=(),
    ))

    config.finetune = ml_collections.ConfigDict(dict(
        mode="linear",  # linear: frozen encoder, new linear classifier; full: train all.
        epochs=20,
        learning_rate=0.1,
        weight_decay=0.0,
        warmup_epochs=0,
    ))

    config.attack = ml_collections.ConfigDict(dict(
        models=("baseline", "pretrain", "finetune"),
        attacks=("fgsm", "pgd"),  # Names from attacks/table.py, weakest first.
        # Images each attack runs on: a seeded subset (nested: a smaller one lies inside a
        # larger one) for slow attacks; 0 runs it on every test image.
        subsets=ml_collections.ConfigDict({name.replace("-", "_"): 0 for name in ATTACKS}),
        epsilons=(0, 1, 2, 4, 8, 16),  # Out of 255.
        # An attack's own epsilons, where it runs at others than `epsilons` (a slow attack at
        # the two that matter, say); empty: `epsilons`. The worst case covers the epsilons
        # every attack ran at.
        own_epsilons=ml_collections.ConfigDict({name.replace("-", "_"): () for name in ATTACKS}),
        # The "aa-like" attack (add it to `attacks`): ART's APGD-CE, APGD-DLR and Square,
        # each on the images the ones before left correct (attacks/strong.py).
        strong=ml_collections.ConfigDict(dict(
            attacks=("apgd-ce", "apgd-dlr", "square"),
            apgd_steps=100,  # AutoAttack's standard budget.
            apgd_restarts=1,
            square_queries=1000,  # AutoAttack uses 5,000; see attacks/strong.py for the cost.
        )),
        pgd_steps=10,
        pgd_step_size=0.0,  # Out of 255; 0 uses 2.5 * epsilon / steps (Madry et al.).
        pgd_restarts=1,
        use_predictions=False,  # Attack the model's own predictions, not the labels.
        max_examples=0,  # 0: the whole test split.
        batch_size=256,
        # XLA for the attack steps: auto (on a GPU, or on a CPU without oneDNN, where it
        # halves the time; with oneDNN, on by default, XLA's CPU kernels are slower), true, false.
        jit_compile="auto",
        embedding_examples=1000,  # Test images drawn in the t-SNE picture.
    ))

    config.export = ml_collections.ConfigDict(dict(
        model="finetune",  # Which model to export: a training stage, or an arm's name.
        name="supcon_resnet18",
    ))

    # Stage `tune`: Keras Tuner searches the loss for robustness on the validation split.
    # Each trial trains pretrain's model for tune.epochs and scores it by its accuracy under
    # tune.attack at tune.epsilon; a trial whose clean accuracy is below
    # tune.min_clean_accuracy does not qualify. Ranges are (low, high); low == high fixes it.
    config.tune = ml_collections.ConfigDict(dict(
        algorithm="bayesian",  # random, bayesian or hyperband.
        max_trials=20,  # The trial budget (hyperband: at most this many).
        epochs=10,  # Per trial (hyperband: the most a trial trains); the best is retrained in full.
        margin_forms=("pairwise", "additive"),  # The loss.margin_form values searched.
        pairwise_margin=(0.5, 2.0),  # loss.margin for pairwise: a distance in [0, 2].
        additive_margin=(0.0, 0.4),  # loss.margin for additive: a cosine margin in [0, 1].
        temperature=(0.05, 0.5),  # loss.temperature, sampled on a log scale.
        supcon_weight=(0.0, 2.0),  # loss.supcon_weight.
        margin_weight=(0.0, 2.0),  # loss.margin_weight.
        attack="pgd",  # The objective: pgd (attack.pgd_* settings) or fgsm.
        epsilon=8.0,  # Out of 255.
        min_clean_accuracy=0.3,  # The floor on clean validation accuracy.
        validation_examples=1000,  # Validation images attacked per trial; 0: all.
        jit_compile="auto",  # XLA for a trial's attack: auto (on a GPU only), true or false.
        trials_per_process=1,  # A fresh process every this many trials (memory); 0: one for all.
        overwrite=False,  # True: start the search afresh (deletes WORKDIR/tune/search and trials).
    ))

    # Stage attack on classifiers this project did not train (run.py's --model* flags set
    # these; README, "Evaluating your own model"). Empty `models`: the project's own.
    config.external = ml_collections.ConfigDict(dict(
        models=(),  # .keras files or SavedModel folders, each images -> logits (or probabilities).
        names=(),  # Their names in the tables, one per model; empty: their file names.
        inputs="float01",  # float01: float32 in [0, 1]; float255: float32 in [0, 255]; uint8.
        outputs="logits",  # logits, or probabilities (turned into log-probabilities).
        image_size=0,  # The size the models take; 0: read from the model. Checked against the data.
        channels=0,  # 1 or 3; 0: read from the model. Checked against the data.
        signature="serving_default",  # The SavedModel signature called.
    ))
    return config


def shrink_for_smoke(config):
    """A few steps of everything, for tests: same code paths, seconds instead of hours."""
    config.data.max_train_examples = 256
    config.model.width = 1 / 16
    config.train.update(batch_size=32, epochs=1, steps_per_epoch=2, warmup_epochs=0)
    config.finetune.epochs = 1
    config.attack.update(epsilons=(0, 8), pgd_steps=2, max_examples=64, batch_size=32,
                         embedding_examples=64)
    config.tune.update(max_trials=3, epochs=1, validation_examples=32, min_clean_accuracy=0.0)
    config.validation.update(examples=32, steps=2)
    return config
