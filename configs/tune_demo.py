"""A small search of the loss on the embedded sample: the README's `tune` section.

    python run.py --stage tune --config configs/tune_demo.py --workdir runs/tune

The demo's data and quarter-width network (configs/demo.py); 8 random trials of 5 epochs,
each scored by PGD-10 accuracy at 2/255 on all 200 validation images (the demo's models
keep about 20% there and about 1% at 8/255, too little to rank them), if its clean
validation accuracy reaches 20% (twice chance). 34 CPU-minutes (1 h 30 min on the busy
2-core build machine); the best trial reached 24.5% PGD and 37.5% clean accuracy (README).
It ends by printing the best trial and the command that retrains it in full:

    python run.py --stage all --config runs/tune/tune/best_config.py --workdir runs/tune-best

`--config configs/tune_demo.py:smoke` runs the same in seconds.
"""

from configs import demo
from configs.base import shrink_for_smoke
from configs.schema import check_argument


def get_config(arg=None):
    check_argument("configs/tune_demo.py", arg, ("smoke",))
    config = demo.get_config()
    config.tune.update(algorithm="random", max_trials=8, epochs=5, epsilon=2.0,
                       min_clean_accuracy=0.2, validation_examples=0)
    if arg == "smoke":
        shrink_for_smoke(config)
    return config
