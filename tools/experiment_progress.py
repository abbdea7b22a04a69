"""Carries a long experiment's progress across machines: save it into the repository, restore it.

    python tools/experiment_progress.py save    runs/real_photos results/real_photos/progress
    python tools/experiment_progress.py restore results/real_photos/progress runs/real_photos

The experiment on real photos needs more hours than one working session on the 2-core
build machine has, and a later session may get a fresh machine. `save` copies what
`--stage compare` needs to resume (each arm's finished model and records, the `backup/`
of the epoch in progress, the attack records of finished evaluations, compare.json) into
a folder that can be committed; `restore` copies it back into a workdir, file by file,
never overwriting a file the workdir already has. Then `make reproduce` carries on where
the saved run stopped: a finished arm is skipped (its inputs match), a cut one resumes
from its last finished epoch, a finished attack evaluation is reused.

TensorBoard logs are left out (they are the bulk and nothing resumes from them), and so are
the tune search's copies of its trials' weights.
"""

import argparse
import os
import shutil
import sys

# Folders never carried: TensorBoard event files, and temporary folders.
SKIPPED_DIRS = ("logs",)
# Files never carried: Keras Tuner's copy of each trial's best weights (stage tune), which
# nothing resumes from (a search resumes from its trials' records, a trial from its backup).
SKIPPED_FILES = ("checkpoint.weights.h5",)


def carried_files(root):
    """Paths (relative to `root`) of every file worth carrying, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name not in SKIPPED_FILES:
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return found


def save(workdir, destination):
    """Makes `destination` an exact copy of `workdir`'s carried files (its own folder only)."""
    if not os.path.isdir(workdir):
        raise SystemExit(f"error: {workdir} does not exist: nothing to save.")
    files = carried_files(workdir)
    marker = os.path.join(destination, "PROGRESS.md")
    if os.path.isdir(destination) and os.listdir(destination) and not os.path.exists(marker):
        raise SystemExit(f"error: {destination} exists and was not written by this tool; "
                         "choose another destination.")
    temporary = destination.rstrip("/") + ".saving"
    shutil.rmtree(temporary, ignore_errors=True)
    for relative in files:
        target = os.path.join(temporary, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(workdir, relative), target)
    with open(os.path.join(temporary, "PROGRESS.md"), "w") as f:
        f.write("# Progress of an experiment, carried across machines\n\n"
                f"Saved from `{workdir}` by `tools/experiment_progress.py save`; "
                f"`make reproduce` restores it (never over existing files) and resumes.\n")
    # Replace the old copy only once the new one is complete.
    if os.path.isdir(destination):
        shutil.rmtree(destination)
    os.replace(temporary, destination)
    size = sum(os.path.getsize(os.path.join(destination, r)) for r in files)
    print(f"saved {len(files)} files ({size / 1e6:.1f} MB) from {workdir} to {destination}")


def restore(source, workdir):
    """Copies `source`'s files into `workdir` where the workdir has no file of that name."""
    if not os.path.isdir(source):
        print(f"no saved progress in {source}: starting from the workdir as it is")
        return
    copied = kept = 0
    for relative in carried_files(source):
        if relative == "PROGRESS.md":
            continue
        target = os.path.join(workdir, relative)
        if os.path.exists(target):
            kept += 1
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(source, relative), target)
        copied += 1
    print(f"restored {copied} files from {source} into {workdir} ({kept} already there, kept)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("source")
    parser.add_argument("destination")
    args = parser.parse_args(argv)
    if args.action == "save":
        save(args.source, args.destination)
    else:
        restore(args.source, args.destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
