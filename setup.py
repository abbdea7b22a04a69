"""Installs the project: `pip install -e '.[cpu]'` (or `.[gpu]`), with `-c constraints.txt` for exact versions.

TensorFlow comes from an extra because its CPU and GPU builds are different packages:
`cpu` gives tensorflow-cpu (274 MB), `gpu` gives tensorflow[and-cuda] (with CUDA).
tensorflow-addons is deliberately absent: it reached end of life in 2024 and does not
import beside Keras 3; the margin loss it offered is written in `models/margin_loss.py`.
"""

import setuptools

setuptools.setup(
    name="supcon-robust",
    version="0.1.0",
    description="ResNet-18 trained with supervised contrastive + margin losses for adversarial "
                "robustness, with FGSM/PGD evaluation and TF Serving export (Keras 3).",
    python_requires=">=3.11",
    packages=["common", "pipeline", "models", "attacks", "stages", "configs", "report", "training", "tuning"],
    py_modules=["run"],
    package_data={"pipeline": ["sample/*.tar.gz", "sample/README.md"]},
    install_requires=[
        "absl-py",
        "adversarial-robustness-toolbox==1.20.1",  # attacks/strong.py: APGD and Square.
        "importlib_resources",  # TFDS imports it on Python 3.11 without declaring it.
        "keras==3.15.1",
        "keras-tuner==1.4.8",
        "matplotlib",
        "ml_collections",
        "multiprocess==0.70.19",  # ART's own AutoAttack class needs it (attacks/strong.py does not).
        "numpy",
        "scikit-learn",
        "tensorboard==2.21.0",  # Keras Tuner fails every trial quietly without it.
        "tensorflow-datasets==4.9.10",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        "test": ["pytest", "pytest-xdist", "cleverhans==4.0.0"],
        # Only for bench/peer_bench.py and tests/torch_peer_test.py (`make bench-peer`, in its
        # own venv); never needed to run.
        "bench-peer": ["torch==2.13.0", "pytest"],
    },
    entry_points={"console_scripts": ["supcon-robust=run:entry_point"]},
)
