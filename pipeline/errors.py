"""The one error type for mistakes a user can make and fix (bad paths, bad files, bad flags).

`run.py` catches `UserError` once and prints its message as a single line with
exit status 2; anything else is a bug in this project and keeps its traceback.
"""


class UserError(ValueError):
    """An input the user can fix; the message names the input and the fix."""
