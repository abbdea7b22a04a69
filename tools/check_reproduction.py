"""Compares a rerun's published results with the first run's, within the spread stated in advance.

    python tools/check_reproduction.py results/real_photos results/rerun

Reads results.json and verdict.json of both folders (as `tools/publish_results.py` wrote
them), writes reproduction.md and reproduction.json into the second folder and prints the
summary: how many accuracies lie within 2 pooled standard errors of the difference (see
`report.reproduction`), and how many of the verdict's calls come out the same.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import atomic_files  # noqa: E402
from report import reproduction  # noqa: E402


def _load(folder, name):
    path = os.path.join(folder, name)
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        raise SystemExit(f"error: {path} does not exist: publish the run first "
                         "(tools/publish_results.py, or make reproduce).")
    except ValueError as error:
        raise SystemExit(f"error: {path} is not JSON ({error}).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="folder of the published run (results/real_photos)")
    parser.add_argument("second", help="folder of the rerun (results/rerun); the report goes here")
    args = parser.parse_args(argv)
    first, second = _load(args.first, "results.json")["rows"], _load(args.second, "results.json")["rows"]
    compared = reproduction.compare_runs(first, second)
    if not compared:
        raise SystemExit(f"error: {args.first} and {args.second} share no measured accuracy.")
    verdicts = []
    if all(os.path.exists(os.path.join(folder, "verdict.json")) for folder in (args.first, args.second)):
        verdicts = reproduction.compare_verdicts(_load(args.first, "verdict.json"),
                                                 _load(args.second, "verdict.json"))
    missing = reproduction.missing_rows(first, second)
    names = os.path.basename(os.path.normpath(args.first)), os.path.basename(os.path.normpath(args.second))
    text = reproduction.markdown(compared, verdicts, *names, missing=missing)
    atomic_files.write_text(os.path.join(args.second, "reproduction.md"), text)
    atomic_files.write_json(os.path.join(args.second, "reproduction.json"),
                            {"first": args.first, "second": args.second,
                             "summary": reproduction.summary(compared, verdicts),
                             "accuracies": compared, "verdicts": verdicts,
                             "missing": [list(key) for key in missing]})
    print(text.split("\n## ")[0].strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
