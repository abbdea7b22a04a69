"""The adversary of adversarial training: crafts each training batch's adversarial images.

Built from config.adversarial and handed to the training model
(`models.contrastive_model.ContrastiveModel(adversary=...)`), which calls it before its
gradient tape, so that `models/` never imports `attacks/` and the trainer and the
evaluator share one attack (`attacks.pgd.perturb`). The methods, with epsilon eps:

- `fgsm_rs` (Wong, Rice and Kolter, 2020): start uniform in [-eps, eps], one step of
  1.25 eps, projected onto the eps-ball.
- `n_fgsm` (de Jorge et al., 2022): start uniform in [-2 eps, 2 eps], one step of eps, not
  projected (only [0, 1] bounds it), so the training perturbation reaches 3 eps. It avoids
  catastrophic overfitting at 8/255 without extra cost, hence the recommended default.
- `pgd` (Madry et al., 2018): start uniform in [-eps, eps], `steps` projected steps of
  `step_size`; k + 1 forward-backward passes per batch instead of 2.
- with `trades_beta` > 0 (Zhang et al., 2019): the adversary maximises
  KL(f(x) || f(x')) from x + 0.001 N(0, 1), by the method's steps, projected; the model
  then trains on CE(f(x), y) + beta KL(f(x) || f(x')).

Crafting runs the network in inference mode (`bn_mode="inference"`, BatchNorm's moving
statistics: TRADES' and "Bag of tricks"' choice) or training mode (batch statistics, as
Madry's and Rice's PGD-AT); either way it changes no weight and no moving statistic.

The start is seeded by (config seed, optimiser step), so a resumed run crafts the same
images; under tf.distribute the noise is drawn for the global batch and each replica takes
its rows, so two replicas craft what one device crafts on the concatenated batch.
"""

import dataclasses

import tensorflow as tf

from attacks.fgsm import kl_divergence
from attacks.pgd import perturb
from attacks.pgd import start_noise

METHODS = ("none", "fgsm_rs", "n_fgsm", "pgd")
BN_MODES = ("inference", "training")
# Start (kind, scale), step size as a multiple of eps (None: the config's step_size),
# steps (None: the config's), and whether each step is projected onto the eps-ball.
RECIPES = {
    "fgsm_rs": dict(start="uniform", start_scale=1.0, step=1.25, steps=1, project=True),
    "n_fgsm": dict(start="uniform", start_scale=2.0, step=1.0, steps=1, project=False),
    "pgd": dict(start="uniform", start_scale=1.0, step=None, steps=None, project=True),
}
TRADES_START_SCALE = 0.001
# Multiplies the adversary's loss under mixed_float16 (see attacks.fgsm.input_gradient).
FLOAT16_GRADIENT_SCALE = 2.0 ** 12


@dataclasses.dataclass(frozen=True)
class Adversary:
    """Crafts adversarial images for a batch; see the module docstring.

    Attributes:
        method: one of METHODS but "none".
        epsilon: in [0, 1] pixel units.
        steps, step_size: for pgd (and TRADES' adversary); step_size in [0, 1] pixel units.
        bn_mode: "inference" or "training".
        trades_beta: > 0 for TRADES' adversary and loss term.
        seed: the run's seed.
    """

    method: str
    epsilon: float
    steps: int = 10
    step_size: float = 2 / 255
    bn_mode: str = "inference"
    trades_beta: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.method not in RECIPES:
            raise ValueError(f"adversarial method {self.method!r}: choose one of "
                             f"{', '.join(RECIPES)}.")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode {self.bn_mode!r}: choose one of {', '.join(BN_MODES)}.")

    @classmethod
    def from_config(cls, config, stage):
        """The adversary config.adversarial asks for in `stage`, or None (no AT there)."""
        adversarial = config.adversarial
        if adversarial.method == "none" or stage not in tuple(adversarial.stages):
            return None
        return cls(adversarial.method, adversarial.epsilon / 255.0, int(adversarial.steps),
                   adversarial.step_size / 255.0, adversarial.bn_mode,
                   float(adversarial.trades_beta), int(config.seed))

    @property
    def recipe(self):
        recipe = dict(RECIPES[self.method])
        if recipe["steps"] is None:
            recipe["steps"] = self.steps
        step_size = self.step_size if recipe["step"] is None else recipe["step"] * self.epsilon
        if self.trades_beta:
            recipe.update(start="normal", start_scale=TRADES_START_SCALE, project=True)
        return recipe, step_size

    @property
    def reach(self):
        """The largest L-infinity distance of a crafted image from its original."""
        recipe, _ = self.recipe
        if recipe["project"]:
            return self.epsilon
        return (recipe["start_scale"] + recipe["step"] * recipe["steps"]) * self.epsilon

    def noise_seed(self, step):
        return tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64)])

    def __call__(self, model, images, labels, step):
        """Adversarial images like `images` ([B, H, W, C] or [B, V, H, W, C], float in [0, 1]).

        Args:
            model: has `logits(x, training)` -> logits [N, K] for x [N, H, W, C], and
                `non_trainable_variables` (the moving statistics, kept as they were).
            labels: int [B].
            step: the optimiser's step (seeds the start).
        """
        recipe, step_size = self.recipe
        shape = tf.shape(images)
        # Image-major rows, views of an image side by side: crafting treats rows alike.
        flat = tf.reshape(images, tf.concat([[-1], shape[-3:]], axis=0))
        labels = tf.repeat(tf.cast(labels, tf.int32), tf.shape(flat)[0] // shape[0])
        training = self.bn_mode == "training"
        loss = {}
        targets = labels
        if self.trades_beta:
            targets = tf.stop_gradient(tf.nn.softmax(tf.cast(model.logits(flat, False), tf.float32)))
            loss = dict(loss=kl_divergence)
        noise = tf.reshape(_replica_rows(_global_noise(images, self, recipe, step)), tf.shape(flat))
        start = tf.clip_by_value(flat + tf.cast(noise, flat.dtype), 0.0, 1.0)
        saved = [(variable, tf.identity(variable.value)) for variable in
                 model.non_trainable_variables] if training else []
        adversarial = perturb(
            lambda x, training=False: model.logits(x, training), flat, targets, self.epsilon,
            recipe["steps"], step_size, project=recipe["project"], training=training,
            gradient_scale=_gradient_scale(model), start_images=start, **loss)
        if saved:
            # Training-mode BatchNorm moved its statistics while crafting: put them back.
            with tf.control_dependencies([adversarial]):
                restore = [variable.assign(value) for variable, value in saved]
            with tf.control_dependencies(restore):
                adversarial = tf.identity(adversarial)
        return tf.reshape(tf.stop_gradient(adversarial), shape)


def _global_noise(images, adversary, recipe, step):
    """The start's noise for the global batch (the replicas' batches concatenated), from
    which each replica takes its rows: one device and several craft the same images."""
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    shape = tf.shape(images)
    global_shape = tf.concat([[shape[0] * replicas], shape[1:]], axis=0)
    return start_noise(global_shape, adversary.epsilon, recipe["start"], recipe["start_scale"],
                       adversary.noise_seed(step))


def _replica_rows(noise):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return noise
    rows = tf.shape(noise)[0] // context.num_replicas_in_sync
    start = context.replica_id_in_sync_group * rows
    return noise[start:start + rows]


def _gradient_scale(model):
    """FLOAT16_GRADIENT_SCALE where the network computes in float16, else 1."""
    dtype = getattr(model.encoder, "compute_dtype", "float32")
    return FLOAT16_GRADIENT_SCALE if str(dtype) == "float16" else 1.0
