"""One run of a stage per workdir at a time: the workdir checked, and a stage's folder locked.

A command launched twice by mistake would otherwise train twice into the same folder:
both runs append to `history.csv` and the last to finish writes `model.keras`. So a
stage's process holds an exclusive `fcntl.flock` on `WORKDIR/STAGE/.lock` for the stage's
whole life, and a second process that asks for it is refused at once with one line
naming the holder (its pid, command and start, which the holder writes into the file).
The kernel drops a flock when its process ends, however it ends (exit, kill, crash), so
a lock left behind never blocks the resume that follows; the file itself stays, empty of
meaning, and is never deleted (deleting a lock file races with the next locker).

Processes that share a workdir by design (the workers of `--strategy=multi_worker`
beside their chief, the workers of a distributed tune search beside theirs) do not take
the lock: the caller decides who does, and `--stage all` holds every stage's lock at
once (`stages.pipeline_stages.run_locked`).

`check_workdir(path)` says in one line when `--workdir` cannot be written at all (it is a
file, or a folder this process may not write), before anything else runs.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
import time

from common.errors import UserError

LOCK_NAME = ".lock"


def check_workdir(path):
    """Raises UserError unless `path` is (or can be made) a folder this process can write in.

    Writes nothing but the folder itself (when missing) and a temporary file inside it,
    removed at once.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--workdir={path} is a file, not a folder; give a folder (it is created "
                        "if missing) where the stages can write.")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"--workdir={path}: cannot write there ({error.strerror or error}); give "
                        "a folder you can write to.") from None


def _holder(handle):
    """What the holder wrote about itself, as a phrase ("another process" before it has)."""
    try:
        handle.seek(0)
        record = json.loads(handle.read() or "{}")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started"]))
        return (f"process {record['pid']} on {record['host']} ({record['command']}), running "
                f"since {started}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def hold(folder, stage):
    """Holds the lock of a stage's `folder` while the block runs; UserError if another process has it.

    On a file system without locks (some network mounts) it says so on stdout and goes on
    unlocked.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        descriptor = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(f"{folder}: cannot write there ({error.strerror or error}); give a "
                        "--workdir you can write to.") from None
    with os.fdopen(descriptor, "r+") as handle:
        locked = True
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"{folder} is in use by {_holder(handle)}; wait for it to end or stop it "
                    f"(two runs of stage {stage} at once would mix their results), or give this "
                    "one another --workdir.") from None
            print(f"note: {folder} cannot be locked here ({error.strerror}); make sure no other "
                  "run uses this workdir.", flush=True)
            locked = False
        if locked:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "command": " ".join(sys.argv), "started": time.time()}))
            handle.flush()
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
