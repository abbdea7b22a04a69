"""The table of attacks: the one place an attack is named, described and built.

The evaluator, the sanity checks, the results table and the plots iterate this table, so
adding an attack is adding one entry here (and its module). The table itself imports no
TensorFlow: `configs.schema` checks `--config.attack.attacks` against it at start-up.

Each entry's `build` names a function `build(model, settings, image_spec)` that returns
`attack(x, targets, epsilon, batch) -> adversarial images`, for one batch of float32
images in [0, 1] and one epsilon in [0, 1] pixel units. `batch` carries what the
evaluator already computed for that batch: `gradient` (the input gradient of the
cross-entropy at the clean images, which FGSM reuses for every epsilon), `seed` (a
stateless seed, two ints) and `clean_correct` (bool [B]).
"""

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack.

    Attributes:
        name: its key in configs and results ("fgsm").
        title: how tables and plots name it ("FGSM").
        description: one line for results.json and the README.
        build: "module:function" (see the module docstring), imported when first used.
        not_weaker_than: attacks it must not do worse than; an evaluation where it does
            (beyond one image) is flagged as possible gradient masking.
        settings: the fields of AttackSettings that change its result (for the record key).
    """

    name: str
    title: str
    description: str
    build: str
    not_weaker_than: tuple = ()
    settings: tuple = ()

    def builder(self):
        module, function = self.build.split(":")
        return getattr(importlib.import_module(module), function)


ATTACKS = {attack.name: attack for attack in (
    Attack("fgsm", "FGSM", "fast gradient sign method (Goodfellow et al., 2015), one step of epsilon",
           "attacks.steps:build_fgsm"),
    Attack("pgd", "PGD", "projected gradient descent (Madry et al., 2018), random start, "
           "steps of step_size, restarts keep the first success",
           "attacks.steps:build_pgd", not_weaker_than=("fgsm",),
           settings=("pgd_steps", "pgd_step_size", "pgd_restarts")),
    Attack("pgd-50", "PGD-50", "PGD with 50 steps (step 2.5 * epsilon / 50 unless pgd_step_size "
           "is set), random start, restarts keep the first success",
           "attacks.steps:build_pgd_50", not_weaker_than=("pgd", "fgsm"),
           settings=("pgd_step_size", "pgd_restarts")),
    Attack("aa-like", "AutoAttack-like (ART)",
           "APGD-CE, APGD-DLR and Square from ART (attacks/strong.py), each on the images the "
           "ones before left correct; not the official AutoAttack",
           "attacks.steps:build_strong", not_weaker_than=("pgd-50", "pgd", "fgsm"),
           settings=("strong",)),
)}

# The per-image worst case over every attack run: what the README's headline uses.
WORST = "worst"
WORST_TITLE = "worst case"


def title(name):
    return WORST_TITLE if name == WORST else ATTACKS[name].title
