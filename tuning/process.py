"""One process's share of a search, for stage `tune` when each trial gets a fresh process.

Keras and TensorFlow keep memory across models in one process despite `clear_session()`
(keras-tuner#873, #1031), so by default every trial runs in a process of its own:

    python -m tuning.process WORKDIR TRIALS  < resolved config as JSON

runs at most TRIALS trials of the search in WORKDIR/tune (resuming it) and exits with
status 0 when the search is over, MORE_TRIALS when another process should carry on, or
2 after a mistake the user can fix (shown as one `error:` line). It dies with the stage
that started it (Linux), so a killed search leaves no orphan training on.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys

import ml_collections

from common import errors

MORE_TRIALS = 10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _die_with_parent():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # Not Linux: a killed stage may leave this process to finish its trial.


def run_in_processes(config, workdir, search_key, trials_per_process):
    """Runs the search in successive fresh processes until it is over."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p])
    text = json.dumps({"config": json.loads(config.to_json_best_effort()),
                       "search_key": search_key})
    while True:
        status = subprocess.run(
            [sys.executable, "-m", "tuning.process", workdir, str(trials_per_process)],
            input=text, text=True, cwd=ROOT, env=environment).returncode
        if status == 0:
            return
        if status != MORE_TRIALS:
            raise errors.UserError(
                f"a search process ended with exit status {status}"
                + (" (the error is above)" if status == errors.USER_ERROR_STATUS else
                   " (killed? out of memory?)")
                + "; rerun the same command to resume the search.")


def main(argv):
    _die_with_parent()
    workdir, trials = argv[1], int(argv[2])
    request = json.load(sys.stdin)
    from common import startup

    startup.import_tensorflow()
    from tuning import tuner

    try:
        over = tuner.search(ml_collections.ConfigDict(request["config"]), workdir,
                            request["search_key"], trial_quota=trials)
    except errors.UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return errors.USER_ERROR_STATUS
    return 0 if over else MORE_TRIALS


if __name__ == "__main__":
    sys.exit(main(sys.argv))
