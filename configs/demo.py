"""The demo: every stage on the embedded sample of CIFAR-10 (JPEG copies), small and fast.

    python run.py --stage all --config configs/demo.py --workdir runs/demo

What `make demo` runs: baseline, pretrain, finetune and the arm `robust` (pretrain's joint
loss trained with N-FGSM adversarial training at 8/255, its best epoch by validation PGD
kept), then the attacks and the export. 1,800 training images and a quarter-width
ResNet-18 give clean accuracy around 42% (35% for `robust`); under PGD-10 at 8/255 the
three models without adversarial training keep at most 1.5% and `robust` about 16%
(numbers in the README): enough to see every stage work and the pictures fill, not to
draw conclusions about the method.
`--config configs/demo.py:smoke` runs the same in seconds (the tests use it).
"""

from configs.base import base_config, shrink_for_smoke
from configs.schema import check_argument


def get_config(arg=None):
    check_argument("configs/demo.py", arg, ("smoke",))
    config = base_config()
    config.data.name = "sample"
    config.model.width = 0.25
    config.train.update(batch_size=128, epochs=10, learning_rate=0.1, warmup_epochs=1)
    config.finetune.update(epochs=10, learning_rate=0.5)
    # One batch of all 400 test images: the XLA-compiled attacks then compile once per model.
    config.attack.update(pgd_steps=10, batch_size=400, embedding_examples=400)
    # The paper's joint loss trained adversarially (N-FGSM at 8/255, robust validation each
    # epoch, the best epoch kept), attacked beside the three models above as `robust`.
    config.arms.robust = "pretrain; adversarial.method=n_fgsm"
    if arg == "smoke":
        shrink_for_smoke(config)
    return config
