"""Issue #11's goals for `make bench`, each stated once: the figure, its bound, the
direction and the unit. The bench modules and bench/figures.py read them from here.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Goal:
    """`figure` must be at least (`direction` ">=") or at most ("<=") `bound`, in `unit`.

    The unit "%" means a fraction shown as a percentage (0.75 reads ">= 75%"), "x" a
    multiple; a ratio has no unit.
    """

    figure: str
    bound: float
    direction: str
    unit: str = ""

    def met(self, measured):
        return measured >= self.bound if self.direction == ">=" else measured <= self.bound

    def __str__(self):
        if self.unit == "%":
            return f"{self.direction} {self.bound:.0%}"
        separator = "" if self.unit in ("", "x") else " "
        return f"{self.direction} {self.bound:,}{separator}{self.unit}"


PEER_SPEED = Goal("the project's training step's images/s / the fastest PyTorch setting's, "
                  "same network, losses and batch", 1.0, ">=")
CUSTOM_STEP_SPEED = Goal("the custom contrastive train_step's speed / a plain Keras fit's, same "
                         "network and images (plain seconds per step / custom seconds per step)",
                         0.95, ">=")
UTILISATION = Goal("full-width float32 training FLOP/s / the measured float32 matmul FLOP/s",
                   0.75, ">=", "%")
PIPELINE_OVER_TRAINING = Goal("the input pipeline's views/s / the images/s training at width "
                              "1/4 consumes", 10, ">=", "x")
# 10x the width-1/4 training of a 2-core machine, as a rate of its own.
PIPELINE_VIEWS_PER_SECOND = Goal("the input pipeline's augmented views/s (two views, batch 256)",
                                 20_000, ">=", "views/s")
FGSM_OVER_CLEAN = Goal("FGSM's seconds / a clean forward pass's, width 1/4, 256 images, as the "
                       "evaluator runs them", 2.5, "<=")
BFLOAT16_SPEEDUP = Goal("mixed_bfloat16 / float32 training images/s, full width", 1.3, ">=")
AUTO_PRECISION_SPEEDUP = Goal("training images/s under the policy `--precision=auto` picks / "
                              "under float32, at each width", 1.0, ">=")
PEAK_MEMORY = Goal("peak resident memory of full-width training, batch 128", 2.5, "<=", "GB")
STARTUP = Goal("seconds from process start to the end of the first training step", 15, "<=", "s")
DEMO = Goal("wall time of `make demo` after set-up", 10, "<=", "min")
