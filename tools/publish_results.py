"""Copies an experiment's report from its workdir into results/<name>/, for committing.

    python tools/publish_results.py runs/real_photos results/real_photos

Copies what `--stage compare` wrote (attack/results.json, results.md, robustness.png,
embeddings.png, verdict.md/.json/.png, compare.json: commit, machine, data sha256, seed, configs, times;
validation.png, training.md, robustbench.json and the tune search's summary where they exist) and
refuses to overwrite a folder that holds results of another commit unless --replace. Where
that folder already holds the same accuracies (what `make reproduce` gives after restoring
the committed progress: the report written again from the same models and records), it is
left as it is, with its provenance, and the command succeeds.
"""

import argparse
import json
import os
import shutil
import sys

FILES = {"attack/results.json": "results.json", "attack/results.md": "results.md",
         "attack/robustness.png": "robustness.png", "attack/embeddings.png": "embeddings.png",
         "attack/verdict.md": "verdict.md", "attack/verdict.json": "verdict.json",
         "attack/verdict.png": "verdict.png",
         "compare.json": "provenance.json"}
# Copied where the experiment has them: the robust validation picture, the tune search's report.
OPTIONAL = {"attack/validation.png": "validation.png", "attack/robustbench.json": "robustbench.json",
            "attack/training.md": "training.md",
            "tune/summary.md": "tune/summary.md", "tune/summary.json": "tune/summary.json",
            "tune/objective.png": "tune/objective.png"}


def _rows(path):
    """The accuracies of a results.json (model, attack, epsilon, accuracy, images), or None."""
    try:
        with open(path) as f:
            return json.load(f)["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("destination")
    parser.add_argument("--replace", action="store_true",
                        help="replace results of another commit already in the destination")
    args = parser.parse_args(argv)
    missing = [name for name in FILES if not os.path.exists(os.path.join(args.workdir, name))]
    if missing:
        print(f"error: {os.path.join(args.workdir, missing[0])} does not exist: run the experiment "
              "first (make reproduce).", file=sys.stderr)
        return 2
    with open(os.path.join(args.workdir, "compare.json")) as f:
        commit = json.load(f).get("commit")
    old = os.path.join(args.destination, "provenance.json")
    if os.path.exists(old) and not args.replace:
        with open(old) as f:
            published_commit = json.load(f).get("commit")
        if published_commit != commit:
            if _rows(os.path.join(args.destination, "results.json")) == _rows(
                    os.path.join(args.workdir, "attack", "results.json")):
                print(f"{args.destination} already holds these accuracies (published at commit "
                      f"{published_commit}); left as it is")
                return 0
            print(f"error: {args.destination} holds other results, of commit {published_commit}; "
                  "pass --replace to overwrite them.", file=sys.stderr)
            return 2
    os.makedirs(args.destination, exist_ok=True)
    copied = 0
    for source, name in {**FILES, **OPTIONAL}.items():
        if source in FILES or os.path.exists(os.path.join(args.workdir, source)):
            os.makedirs(os.path.dirname(os.path.join(args.destination, name)), exist_ok=True)
            shutil.copyfile(os.path.join(args.workdir, source), os.path.join(args.destination, name))
            copied += 1
    print(f"copied {copied} files to {args.destination} (commit {commit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
