"""Every bad input a user can give `run.py`, through the real command line.

Each must end with exit status 2 and exactly one line on stderr, `error: ...`, naming the
file, flag or config field and the fix, with no traceback, and must leave the input
exactly as it was. This must hold on every CPU and with oneDNN on or off: with oneDNN on
(run.py's default, and TensorFlow's own on AVX-512 machines) TensorFlow prints start-up
lines to stderr at import, so part of the commands run as a user's shell leaves it (run.py
turns oneDNN on) and the rest with TF_ENABLE_ONEDNN_OPTS=0 (a user who turns it off).

Each command imports TensorFlow (seconds), so the commands are started together, once per
module, two at a time (`cli_runs`); each test then checks one of them.
"""

import concurrent.futures
import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import time

import pytest

from tests import archive_fixtures

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ["data", "baseline", "pretrain", "finetune", "attack", "export", "all", "tune", "compare"]
# Seconds within which an unknown data set name is reported (it runs first, beside one other
# command, and under `make test` beside another test process); a TFDS download left to
# itself offline retries for minutes.
FAST_SECONDS = 60


def fingerprint(path):
    """What must not change: sha256 and mtime of a file, or of everything in a folder."""
    if not path or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns
    entries = []
    for directory, subdirectories, names in os.walk(path):
        subdirectories.sort()
        entries.append((os.path.relpath(directory, path), os.stat(directory).st_mtime_ns))
        entries.extend((os.path.relpath(os.path.join(directory, name), path),
                        fingerprint(os.path.join(directory, name))) for name in sorted(names))
    return entries


@dataclasses.dataclass
class BadInput:
    """A command line with one mistake in it, and what its error line must say."""

    flags: list
    input_path: str  # The file or folder that must be left as it was; None for a flag.
    fragments: list  # Each must appear in the error line: the file or flag, and the fix.
    undo: object = None  # Called once the command ran (e.g. a read-only folder made writable).
    skip: str = None  # Why this machine cannot make this input (its command is not run).


def missing_directory(tmp):
    missing = os.path.join(tmp, "no_such_folder")
    return BadInput(["--dataset=folder", f"--data_dir={missing}"], missing,
                    [f"{missing}: no such file or directory", "pass --data_dir="])


def empty_directory(tmp):
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    return BadInput(["--dataset=folder", f"--data_dir={empty}"], empty,
                    [f"{empty}: holds no images", "expected train/<class>/<image>"])


def truncated_archive(tmp):
    path = archive_fixtures.write_cifar_archive(tmp, "cifar100", "binary")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    return BadInput(["--dataset=cifar100", f"--data_dir={tmp}",
                     "--config.data.verify_checksums=False"], tmp,
                    [f"{path}: corrupt or truncated archive", "download it again"])


def checksum_mismatch(tmp):
    # The fixture has the official name but not the official bytes; checking is on by default.
    path = archive_fixtures.write_cifar_archive(tmp, "cifar10", "python")
    return BadInput(["--dataset=cifar10", f"--data_dir={tmp}"], tmp,
                    [f"{path}: checksum mismatch", "download it again",
                     "--config.data.verify_checksums=False"])


def unreadable_image(tmp):
    archive_fixtures.write_image_folder(tmp)
    broken = os.path.join(tmp, "train", "mango", "m9.jpg")
    with open(broken, "wb") as f:
        f.write(b"this is not a JPEG" * 10)
    return BadInput(["--dataset=folder", f"--data_dir={tmp}"], tmp,
                    [f"{broken}: not a readable image", "replace or remove it"])


def empty_class_folder(tmp):
    archive_fixtures.write_image_folder(tmp)
    os.makedirs(os.path.join(tmp, "train", "kiwi"))
    return BadInput(["--dataset=folder", f"--data_dir={tmp}"], tmp,
                    [f"{tmp}: train/kiwi/ holds no images", "add some or remove the folder"])


def label_out_of_range(tmp):
    records = archive_fixtures.binary_records([[3, 3], [3, 200]])
    path = archive_fixtures.write_cifar_archive(
        tmp, "cifar100", "binary", replace={"cifar-100-binary/train.bin": records})
    return BadInput(["--dataset=cifar100", f"--data_dir={tmp}",
                     "--config.data.verify_checksums=False"], tmp,
                    [f"{path}: label 200 of example 1 is outside 0..99", "download it again"])


def unknown_dataset(tmp):
    # Neither a source of this project nor a TFDS name: refused without trying to download.
    return BadInput(["--dataset=no_such_set"], None,
                    ["--dataset=no_such_set: not a known data set",
                     "use sample, folder, cifar10, cifar100"])


def folder_without_data_dir(tmp):
    return BadInput(["--dataset=folder"], None, ["--dataset=folder needs --data_dir="])


def workdir_is_a_file(tmp):
    path = os.path.join(tmp, "notes.txt")
    with open(path, "w") as f:
        f.write("not a folder\n")
    return BadInput([f"--workdir={path}"], tmp, [f"--workdir={path} is a file", "give a folder"])


def read_only_workdir(tmp):
    """A workdir this process may not write: mode 555, or for root (whom modes do not stop)
    the immutable attribute, which needs chattr and a file system that has it."""
    workdir = os.path.join(tmp, "shared_results")
    os.makedirs(workdir)
    if os.geteuid() != 0:
        os.chmod(workdir, 0o555)
        undo = lambda: os.chmod(workdir, 0o755)  # noqa: E731
    elif subprocess.run(["chattr", "+i", workdir], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", workdir], check=True)  # noqa: E731
    else:
        return BadInput([], None, [], skip="running as root without chattr +i: no folder is "
                                           "read-only to this process")
    return BadInput([f"--workdir={workdir}"], workdir,
                    [f"--workdir={workdir}: cannot write there", "a folder you can write to"], undo)


def absurd_pickle_header(tmp):
    # The array header of a batch claims 10 TiB: refused before anything is allocated.
    contents = archive_fixtures.hostile_array_pickle(start_shape=(10 << 40,))
    path = archive_fixtures.write_cifar_archive(
        tmp, "cifar10", "python", replace={"cifar-10-batches-py/data_batch_1": contents})
    return BadInput(["--dataset=cifar10", f"--data_dir={tmp}", "--config.data.verify_checksums=False"],
                    tmp, [f"{path}: a pickle in it is not plain CIFAR data",
                          "starts as (10995116277760,)", "not the official archive"])


def text_named_tar_gz(tmp):
    path = os.path.join(tmp, "photos.tar.gz")
    with open(path, "w") as f:
        f.write("train/ and test/ are on the other disk\n" * 5)
    return BadInput(["--dataset=folder", f"--data_dir={path}"], tmp,
                    [f"{path}: corrupt or truncated tar (not a tar archive", "make it again"])


def model_of_another_size(tmp):
    # A classifier of 28x28 grey images evaluated on the 32x32 RGB sample.
    import keras

    path = os.path.join(tmp, "mnist_cnn.keras")
    keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(path)
    return BadInput(["--stage=attack", f"--model={path}", "--config=configs/demo.py:smoke"], tmp,
                    [f"--model={path}: takes 28x28x1 images but the data are 32x32x3",
                     "--config.data.image_size=32", "--config.data.channels=3"])


def flag_mistake(flags, *fragments):
    """A mistake in the flags or config alone: no file to leave unchanged."""
    def make(tmp):
        return BadInput(list(flags), None, list(fragments))
    return make


# Config and flag mistakes are checked before TensorFlow is imported.
CONFIG_MISTAKES = {
    "unknown_stage": flag_mistake(["--stage=nosuchstage"], "--stage=nosuchstage",
                                  "data|baseline|pretrain"),
    "negative_margin": flag_mistake(["--config.loss.margin=-0.5"], "--config.loss.margin=-0.5",
                                    "must be in [0, 2]"),
    "additive_margin_too_large": flag_mistake(
        ["--config.loss.margin_form=additive", "--config.loss.margin=1.5"],
        "--config.loss.margin=1.5", "must be in [0, 1] for loss.margin_form=additive"),
    "zero_temperature": flag_mistake(["--config.loss.temperature=0"], "--config.loss.temperature=0.0",
                                     "must be in (0, 10]"),
    "epsilon_above_255": flag_mistake(["--config.attack.epsilons=0,300"], "--config.attack.epsilons",
                                      "item 300", "[0, 255]"),
    "bogus_finetune_mode": flag_mistake(["--config.finetune.mode=bogus"], "--config.finetune.mode=bogus",
                                        "one of linear, full"),
    "unknown_config_argument": flag_mistake(["--config=configs/demo.py:smok"], "configs/demo.py:smok",
                                            "use configs/demo.py or configs/demo.py:smoke"),
    "unknown_config_field": flag_mistake(["--config.loss.marginn=0.5"], "--config.loss.marginn",
                                         "no such field"),
    "missing_config_file": flag_mistake(["--config=configs/nosuch.py"], "--config=configs/nosuch.py",
                                        "no such config file"),
    "unknown_attack": flag_mistake(["--config.attack.attacks=fgsm,cw"], "--config.attack.attacks",
                                   "item 'cw'"),
    # Every field of adversarial training and robust validation.
    "unknown_adversarial_method": flag_mistake(
        ["--config.adversarial.method=fgm"], "--config.adversarial.method=fgm",
        "one of none, fgsm_rs, n_fgsm, pgd"),
    "zero_adversarial_epsilon": flag_mistake(
        ["--config.adversarial.epsilon=0"], "--config.adversarial.epsilon=0.0", "(0, 255]"),
    "adversarial_epsilon_above_255": flag_mistake(
        ["--config.adversarial.epsilon=300"], "--config.adversarial.epsilon=300.0", "(0, 255]"),
    "zero_adversarial_steps": flag_mistake(
        ["--config.adversarial.steps=0"], "--config.adversarial.steps=0", "[1, inf]"),
    "zero_adversarial_step_size": flag_mistake(
        ["--config.adversarial.step_size=0"], "--config.adversarial.step_size=0.0", "(0, 255]"),
    "bogus_bn_mode": flag_mistake(["--config.adversarial.bn_mode=eval"],
                                  "--config.adversarial.bn_mode=eval", "one of inference, training"),
    "unknown_adversarial_stage": flag_mistake(
        ["--config.adversarial.stages=baseline,attack"], "--config.adversarial.stages",
        "item 'attack'"),
    "bogus_ce_on": flag_mistake(["--config.adversarial.ce_on=clean"],
                                "--config.adversarial.ce_on=clean", "one of adversarial, both"),
    "negative_trades_beta": flag_mistake(
        ["--config.adversarial.method=pgd", "--config.adversarial.trades_beta=-1"],
        "--config.adversarial.trades_beta=-1.0", "[0, 100]"),
    "trades_without_adversary": flag_mistake(
        ["--config.adversarial.trades_beta=6"], "--config.adversarial.trades_beta=6.0",
        "needs an adversary"),
    "trades_with_ce_on_both": flag_mistake(
        ["--config.adversarial.method=pgd", "--config.adversarial.trades_beta=6",
         "--config.adversarial.ce_on=both"], "--config.adversarial.ce_on=both", "TRADES"),
    "bogus_robust_validation": flag_mistake(
        ["--config.validation.robust=sometimes"], "--config.validation.robust=sometimes",
        "one of auto, True, False"),
    "bogus_validation_attack": flag_mistake(
        ["--config.validation.attack=aa-like"], "--config.validation.attack=aa-like", "one of pgd, fgsm"),
    "zero_validation_steps": flag_mistake(
        ["--config.validation.steps=0"], "--config.validation.steps=0", "[1, inf]"),
    "zero_validation_epsilon": flag_mistake(
        ["--config.validation.epsilon=0"], "--config.validation.epsilon=0.0", "(0, 255]"),
    "negative_validation_examples": flag_mistake(
        ["--config.validation.examples=-5"], "--config.validation.examples=-5", "[0, inf]"),
    "zero_collapse_drop": flag_mistake(
        ["--config.validation.collapse_drop=0"], "--config.validation.collapse_drop=0.0", "(0, 100]"),
    "bogus_stop_on_collapse": flag_mistake(
        ["--config.validation.stop_on_collapse=maybe"], "--config.validation.stop_on_collapse=maybe",
        "Non-boolean argument"),
    "bogus_validation_use": flag_mistake(
        ["--config.validation.use=first"], "--config.validation.use=first", "one of best, last"),
    # The comparison's pairs and an attack's own epsilons.
    "pair_without_a_dash": flag_mistake(
        ["--config.compare.pairs=supcon_margin"], "--config.compare.pairs", "must be 'A - B'"),
    "pair_naming_an_untrained_model": flag_mistake(
        ["--config.compare.pairs=supcon_margin - robust_long"], "--config.compare.pairs",
        "names 'robust_long', which stage compare does not train"),
    "follow_up_that_is_no_arm": flag_mistake(
        ["--config.compare.follow_ups=robust,robust_long"], "--config.compare.follow_ups",
        "item 'robust_long' is not an arm of this config", "its arms: robust"),
    "export_of_an_unknown_model": flag_mistake(
        ["--config.export.model=robust_long"], "--config.export.model=robust_long",
        "must be a training stage or an arm of this config", "finetune, robust"),
    "own_epsilon_above_255": flag_mistake(
        ["--config.attack.own_epsilons.pgd=0,8,300"], "--config.attack.own_epsilons.pgd",
        "item 300", "[0, 255]"),
    "robust_validation_without_validation_images": flag_mistake(
        ["--config.adversarial.method=n_fgsm", "--config.data.validation_fraction=0"],
        "--config.data.validation_fraction=0.0", "robust validation needs validation images"),
}

BAD_INPUTS = {function.__name__: function for function in (
    unknown_dataset, missing_directory, empty_directory, truncated_archive, checksum_mismatch,
    unreadable_image, empty_class_folder, label_out_of_range, folder_without_data_dir)}
BAD_INPUTS.update(CONFIG_MISTAKES)
# The workdir, hostile or mistaken files, and a model trained elsewhere that does not fit.
BAD_INPUTS.update({function.__name__: function for function in (
    workdir_is_a_file, read_only_workdir, absurd_pickle_header, text_named_tar_gz,
    model_of_another_size)})
# The mistakes in a flag alone, with no file to leave unchanged.
FLAG_MISTAKES = ("unknown_dataset", "folder_without_data_dir", *CONFIG_MISTAKES)
# Run with oneDNN on (run.py's default); the others with TF_ENABLE_ONEDNN_OPTS=0.
ONEDNN = ("empty_directory", "unreadable_image", "unknown_dataset", "negative_margin")
# Seconds within which a config mistake is reported: no TensorFlow import.
CONFIG_SECONDS = 10


@dataclasses.dataclass
class Run:
    bad_input: BadInput
    before: object  # fingerprint of bad_input.input_path before the command
    result: subprocess.CompletedProcess
    seconds: float
    cache: str = None  # The command's own SUPCON_CACHE_DIR.


def test_onednn_is_on_unless_the_user_turned_it_off():
    from common import startup

    assert startup.enable_onednn({}) == "1"
    assert startup.enable_onednn({"TF_ENABLE_ONEDNN_OPTS": "0"}) == "0"


def test_true_and_false_typed_on_the_command_line_fit_a_field_whose_default_is_auto():
    # --config.attack.jit_compile=True arrives as the text "True": the field's default is text.
    from configs import demo
    from configs import schema
    from common.errors import UserError

    config = demo.get_config("smoke")
    config.attack.jit_compile, config.train.jit_compile = "True", "false"
    schema.validate(config)
    config.attack.jit_compile = "maybe"
    with pytest.raises(UserError, match="--config.attack.jit_compile=maybe: must be one of auto"):
        schema.validate(config)


def run_cli(flags, workdir, onednn=False, cache_dir=None):
    """Runs `python run.py --stage data FLAGS` as a user would; returns (result, seconds).

    `cache_dir`, when given, is the command's own cache of decoded images.
    """
    environment = dict(os.environ)
    if cache_dir:
        environment["SUPCON_CACHE_DIR"] = cache_dir
    # The test checks what a user sees by default, whatever the caller's shell sets.
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    environment.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if not onednn:
        environment["TF_ENABLE_ONEDNN_OPTS"] = "0"
    start = time.monotonic()
    result = subprocess.run([sys.executable, "run.py", "--stage", "data", f"--workdir={workdir}",
                             *flags], cwd=REPO_ROOT, env=environment, capture_output=True,
                            text=True, timeout=120)
    return result, time.monotonic() - start


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Runs the command of every bad input, one with --verbose, and --help, two at a time."""
    commands = {}  # name -> (BadInput or None, flags)
    for name, make in BAD_INPUTS.items():
        bad_input = make(str(tmp_path_factory.mktemp(name)))
        if not bad_input.skip:
            commands[name] = (bad_input, bad_input.flags)
    verbose = empty_directory(str(tmp_path_factory.mktemp("verbose")))
    commands["verbose"] = (verbose, verbose.flags + ["--verbose"])
    commands["help"] = (None, ["--help"])
    workdirs = tmp_path_factory.mktemp("workdirs")

    caches = tmp_path_factory.mktemp("caches")

    befores = {name: fingerprint(bad_input and bad_input.input_path)
               for name, (bad_input, _) in commands.items()}
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(run_cli, flags, str(workdirs / name), name in ONEDNN,
                                         str(caches / name))
                       for name, (_, flags) in commands.items()}
            return {name: Run(commands[name][0], befores[name], *future.result(), str(caches / name))
                    for name, future in futures.items()}
    finally:
        for bad_input, _ in commands.values():
            if bad_input is not None and bad_input.undo is not None:
                bad_input.undo()


def ran(cli_runs, name):
    """The run of `name`, or a skip when this machine could not make that input."""
    if name not in cli_runs:
        pytest.skip(f"{name}: not made on this machine")
    return cli_runs[name]


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_input_and_the_fix(cli_runs, name):
    run = ran(cli_runs, name)
    stderr = run.result.stderr

    assert run.result.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for fragment in run.bad_input.fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("name", list(CONFIG_MISTAKES))
def test_config_mistakes_are_reported_before_tensorflow_loads(cli_runs, name):
    assert cli_runs[name].seconds < CONFIG_SECONDS, cli_runs[name].seconds


def test_unknown_dataset_fails_fast_offline(cli_runs):
    # TFDS is asked about the name; it must answer from what is installed, not the network.
    assert cli_runs["unknown_dataset"].seconds < FAST_SECONDS


@pytest.mark.parametrize("name", [name for name in BAD_INPUTS if name not in FLAG_MISTAKES])
def test_bad_input_is_left_unchanged(cli_runs, name):
    run = ran(cli_runs, name)

    assert fingerprint(run.bad_input.input_path) == run.before


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_writes_nothing_outside_the_workdir(cli_runs, name):
    # Not even the cache of decoded images, which lives outside it (SUPCON_CACHE_DIR); the
    # input's own folder is checked by test_bad_input_is_left_unchanged.
    assert not [files for _, _, files in os.walk(ran(cli_runs, name).cache) if files], name


def test_verbose_shows_the_traceback(cli_runs):
    stderr = cli_runs["verbose"].result.stderr

    assert cli_runs["verbose"].result.returncode != 0
    assert "Traceback (most recent call last)" in stderr
    assert "UserError" in stderr
    assert cli_runs["verbose"].bad_input.fragments[0] in stderr


def test_help_lists_every_stage(cli_runs):
    result = cli_runs["help"].result
    output = result.stdout + result.stderr

    assert "Traceback" not in output
    listed = re.search(r"--stage: <([^>]*)>", output)
    assert listed, output
    assert listed.group(1).split("|") == STAGES


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
