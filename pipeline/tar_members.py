"""Reading a user's tar archive without trusting its headers, and saying in one line why one fails.

A tar member's header states its size, and `tarfile`'s `extractfile(member).read()` asks
the underlying file for that many bytes at once, which allocates them first: a header
that claims 10 TiB is a MemoryError (or a machine brought to its knees) before a single
byte is read. `read(tar, member)` reads in blocks, so memory follows the bytes really
there, and refuses at once a member larger than `limit`. `open_error(error)` turns
tarfile's several-line "could not be opened" message into a phrase.
"""

import tarfile

_BLOCK = 1 << 20


class TooLarge(Exception):
    """A member whose header claims more bytes than the caller allows."""


def read(tar, member, limit=None):
    """The bytes of `member`, read in blocks; TooLarge when its header claims more than `limit`.

    A member whose data end before its stated size raises tarfile.ReadError, as a whole
    read does.
    """
    if limit is not None and member.size > limit:
        raise TooLarge(f"{member.name} claims {member.size:,} bytes, more than the {limit:,} "
                       "it can hold")
    handle = tar.extractfile(member)
    blocks = []
    for block in iter(lambda: handle.read(_BLOCK), b""):
        blocks.append(block)
    data = b"".join(blocks)
    if len(data) != member.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def open_error(error):
    """One line for a tarfile error (its message for "r:*" lists every method it tried)."""
    text = str(error)
    if "could not be opened successfully" in text:
        return "not a tar archive (plain, or compressed with gzip, bzip2 or xz)"
    return " ".join(text.split())
