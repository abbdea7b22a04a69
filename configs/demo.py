"""The demo: every stage on the embedded sample of CIFAR-10 (JPEG copies), small and fast.

    python run.py --stage all --config configs/demo.py --workdir runs/demo

What `make demo` runs. About 6 minutes on a 2-core CPU; 2,000 training images and a
quarter-width ResNet-18 give clean accuracy around 40% (numbers in the README), enough
to see every stage work and the pictures fill, not to draw conclusions about the method.
`--config configs/demo.py:smoke` runs the same in seconds (the tests use it).
"""

from configs.base import base_config, shrink_for_smoke


def get_config(arg=None):
    config = base_config()
    config.data.name = "sample"
    config.model.width = 0.25
    config.train.update(batch_size=128, epochs=15, learning_rate=0.1, warmup_epochs=1)
    config.finetune.update(epochs=10, learning_rate=0.5)
    config.attack.update(pgd_steps=10, embedding_examples=400)
    if arg == "smoke":
        shrink_for_smoke(config)
    return config
