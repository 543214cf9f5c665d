"""What a path on disk is, found before anything opens it, and one reason when it cannot be used.

Opening a FIFO for reading waits for a writer forever, and a socket or device is no data file either,
so data is opened through :func:`open_regular`: it opens without blocking and checks, on the open
handle, that it holds a regular file. :func:`problem` says why a path cannot be read as a data file
(a special file, a dangling symbolic link, a name beyond the system's limits, no permission), and
:func:`explain` turns an ``OSError`` raised anywhere about such a path into that one line, for the CLI.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from metacompare.errors import DataError

NAME_MAX = 255    # bytes in one name (Linux, macOS, Windows' NTFS); pathconf gives the folder's own
PATH_MAX = 4096   # bytes in a whole path, the terminating NUL included (Linux)
NOTHING = "does not exist"
NUL = "holds a NUL character, which no path may"
KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
         stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


class SpecialFile(OSError):
    """A path that exists but is no regular file; ``str()`` says what it is."""


def kind(mode: int) -> str:
    return KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _limits(path: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the nearest existing folder above ``path`` (defaults where unknown)."""
    for folder in (path.parent, *path.parent.parents):
        try:
            return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
        except (OSError, ValueError):
            continue
    return NAME_MAX, PATH_MAX


def too_long(path: str | Path) -> str | None:
    """Why ``path`` is beyond the system's limits (a name over NAME_MAX bytes, a path over PATH_MAX), or None."""
    path = Path(path)
    name_max, path_max = _limits(Path(os.path.abspath(path)))
    raw = os.fsencode(path)
    if len(raw) >= path_max:
        return f"the path is {len(raw):,} bytes long, over the system's limit of {path_max - 1:,}"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > name_max:
        start = os.fsdecode(longest[:40])
        return (f"the name '{start}...' is {len(longest):,} bytes long, over the system's limit of "
                f"{name_max} bytes per name")
    return None


def shown(path: str | Path, width: int = 80) -> str:
    """``path`` for a message: cut in the middle when longer than ``width`` characters."""
    text = str(path)
    return text if len(text) <= width else f"{text[:width // 2]}...{text[-(width // 2 - 3):]}"


def dangling(path: str | Path) -> str | None:
    """'is a symbolic link to X, which does not exist' for ``path`` or the first folder above it that
    is such a link; None when no link on the way is broken."""
    path = Path(path)
    for place in (path, *path.parents):
        if os.path.islink(place) and not os.path.exists(place):
            where = "is" if place == path else f"lies under {place}, which is"
            return f"{where} a symbolic link to {os.readlink(place)}, which does not exist"
    return None


def absent(path: str | Path) -> str | None:
    """Why ``path`` cannot be found (too long, a dangling link, a link loop, nothing there), or None
    when it exists (following symbolic links)."""
    try:
        os.stat(path)
    except OSError as err:
        return _stat_error(path, err)
    except ValueError:  # "embedded null byte"
        return NUL
    return None


def require_present(path: str | Path, nothing: str, fix: str) -> None:
    """A DataError ``PATH: why it is absent; fix`` (``nothing`` when simply nothing is there) unless
    ``path`` exists."""
    reason = absent(path)
    if reason:
        raise DataError(f"{shown(path)}: {nothing if reason == NOTHING else reason}; {fix}")


def folder_problem(path: str | Path) -> str | None:
    """Why a folder cannot be made (or used) at ``path``: too long, a dangling link on the way, or
    something other than a folder standing there; None when it can."""
    reason = too_long(path) or dangling(path)
    if reason:
        return reason
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # nothing there yet (or a loop, found when it is made)
    return None if stat.S_ISDIR(mode) else f"is {kind(mode)}, not a folder"


def problem(path: str | Path, st: os.stat_result | None = None) -> str | None:
    """Why ``path`` cannot be read as a data file, or None when it is a readable regular file.
    ``st``: its ``os.stat`` when the caller has it (a folder listing)."""
    if st is None:
        try:
            st = os.stat(path)  # follows symbolic links, as opening does
        except OSError as err:
            return _stat_error(path, err)
        except ValueError:
            return NUL
    if not stat.S_ISREG(st.st_mode):
        return f"is {kind(st.st_mode)}, not a regular file"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied: chmod u+r makes it readable)"
    return None


def _stat_error(path: str | Path, err: OSError) -> str:
    if err.errno == errno.ENOENT:
        return dangling(path) or NOTHING
    if err.errno == errno.ELOOP:
        return "is a loop of symbolic links"
    if err.errno == errno.ENAMETOOLONG:
        return too_long(path) or "is longer than the system allows"
    if err.errno == errno.ENOTDIR:
        return "does not exist (a file stands where its path needs a folder)"
    return f"cannot be read ({err.strerror or err})"


def require_file(path: str | Path, fix: str, st: os.stat_result | None = None) -> None:
    """A DataError ``PATH: what it is; fix`` unless ``path`` is a readable regular file."""
    reason = problem(path, st)
    if reason:
        raise DataError(f"{path}: {reason}; {fix}")


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for binary reading, never blocking: opened with O_NONBLOCK (a FIFO opens at
    once instead of waiting for a writer), checked on the handle to be a regular file, then blocking
    again. Raises :class:`SpecialFile` (an OSError) for anything else, and OSError as ``open`` does.
    The path is looked at first, so a socket or device is never opened at all."""
    _regular(os.stat(path).st_mode, path)
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX; elsewhere the stat above is the check
    fd = os.open(path, os.O_RDONLY | nonblocking | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        _regular(os.fstat(fd).st_mode, path)
        if nonblocking:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _regular(mode: int, path: str | Path) -> None:
    if not stat.S_ISREG(mode):
        raise SpecialFile(errno.EINVAL, f"is {kind(mode)}, not a regular file", str(path))


def read_bytes(path: str | Path) -> bytes:
    """The whole of a regular file (see :func:`open_regular`)."""
    with open_regular(path) as handle:
        return handle.read()


def open_data(path: str | Path, fix: str) -> BinaryIO:
    """:func:`open_regular` for data: any failure is a DataError ``PATH: what it is; fix``."""
    try:
        return open_regular(path)
    except OSError as err:
        raise DataError(f"{path}: {problem(path) or err.strerror or err}; {fix}") from None


def explain(err: OSError) -> str | None:
    """One line for an OSError about a path that is too long, a dangling link or a special file;
    None for any other error (the caller re-raises it)."""
    name = err.filename
    if name is None:
        return None
    if isinstance(err, SpecialFile):
        return f"{shown(name)}: {err.strerror}; remove it or give a regular file"
    if err.errno == errno.ENAMETOOLONG:
        return f"{shown(name)}: {too_long(name) or 'longer than the system allows'}; choose a shorter path or name"
    reason = dangling(name) if err.errno in (errno.ENOENT, errno.EEXIST, errno.EACCES) else None
    if reason:
        return f"{shown(name)}: {reason}; create the target or remove the link"
    if err.errno == errno.ELOOP:
        return f"{shown(name)}: is a loop of symbolic links; remove one of them"
    return None
