"""Writes that either happen whole or not at all, so a crash never leaves a half file.

Each writes to a temporary name in the destination's directory and renames it into
place (`os.replace` is atomic on POSIX within one file system).
"""

import json
import os
import shutil
import tempfile

import numpy as np


def _temporary_path(path, suffix=""):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix,
                                         dir=directory)
    os.close(handle)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return temporary


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_text(path, text):
    temporary = _temporary_path(path)
    try:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_json(path):
    """The JSON value in `path`, or None where it is missing or not whole JSON (a file these
    writes never leave half-written, but one a user may have edited)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def save_model(model, path):
    """`model.save(path)` through a temporary `.keras` file renamed into place."""
    temporary = _temporary_path(path, suffix=".keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def link_or_copy(source, path):
    """`path` becomes a hard link to `source` (a copy where links are not possible), through a
    temporary name renamed into place."""
    temporary = _temporary_path(path, suffix=os.path.splitext(path)[1])
    try:
        try:
            os.remove(temporary)  # mkstemp made it; the link takes its (unique) name.
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_figure(figure, path):
    """`figure.savefig` through a temporary file renamed into place."""
    temporary = _temporary_path(path, suffix=os.path.splitext(path)[1])
    try:
        figure.savefig(temporary, dpi=120, bbox_inches="tight")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
