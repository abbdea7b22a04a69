"""The error types `run.py` turns into one line and an exit status.

- `UserError`: an input the user can fix (a path, a file, a flag, a config field); exit 2.
- `Diverged`: training produced a non-finite loss; the last good checkpoint is kept; exit 3.
- `WorkerLost`: under several workers, another worker stopped answering; exit 4.

Anything else is a bug in this project and keeps its traceback (exit 1).
"""

USER_ERROR_STATUS = 2
DIVERGED_STATUS = 3
WORKER_LOST_STATUS = 4


class UserError(ValueError):
    """An input the user can fix; the message names the input and the fix."""


class Diverged(RuntimeError):
    """A training stage stopped at its first non-finite loss; the message says where and what to do."""


class WorkerLost(RuntimeError):
    """Training under several workers stopped because one of them is gone; rerun them all to resume."""
