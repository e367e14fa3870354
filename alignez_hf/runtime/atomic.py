"""Writing a pack folder so that nothing is lost: one writer at a time, staged beside the target, swapped in at once.

A process killed at any moment (SIGKILL included) leaves the target folder holding the old pack or the new one:

- the new pack is written into a hidden staging folder next to the target (same file system);
- files of the old folder that the new pack does not write (a build's ``self_generated.jsonl``, a user's notes)
  are hard-linked into the staging folder, so they are in both until the swap;
- on Linux the two folders are exchanged in one step (``renameat2(RENAME_EXCHANGE)``); elsewhere the old folder is
  renamed aside and the new one into place, and the next writer puts the old one back if it finds the target gone;
- the next writer of the same folder removes what a killed one left behind (hidden ``.NAME.tmp-*`` and
  ``.NAME.old-*`` folders beside it).

A lock file (``.NAME.lock`` beside the folder, held with ``flock`` and removed on release) keeps two processes
from writing one folder at once: the second is refused with :class:`~.errors.FolderLockedError`. It is re-entrant
within one thread, so a build that holds it can save its pack.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from .errors import FolderLockedError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; saves stay atomic, concurrent writers are not detected
    fcntl = None

_held: dict[str, list] = {}  # resolved target -> [file descriptor, depth, owning thread id]
_held_guard = threading.Lock()


def umask() -> int:
    """The process's file-creation mask (read without changing it for longer than a moment)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a sibling temporary file, then move it into place: readers never see half a file.

    A sibling (not ``mkstemp``, whose files are private) keeps the usual permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def writer_lock(target: str | os.PathLike):
    """Hold the writer lock of the folder ``target`` (which may not exist yet) for the ``with`` block.

    Raises :class:`FolderLockedError` at once when another process or thread holds it.
    """
    target = Path(target)
    key = str(target.resolve())
    me = threading.get_ident()
    with _held_guard:
        entry = _held.get(key)
        if entry is not None and entry[2] != me:
            raise FolderLockedError(f"{target} is being written by another thread of this process; wait for it.")
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield
        finally:
            with _held_guard:
                entry[1] -= 1
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    fd = _acquire(lock_path, target)
    with _held_guard:
        _held[key] = [fd, 1, me]
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        if fcntl is not None:
            lock_path.unlink(missing_ok=True)  # while still locked: a waiting writer then sees a new file
        os.close(fd)  # closing the descriptor releases the flock


def _acquire(lock_path: Path, target: Path) -> int:
    """Open and flock ``lock_path``, retrying when the file was removed by the previous holder meanwhile."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(
                f"{target} is being written by another process (pid {holder}): two writers would mix two packs. "
                f"Wait for it to finish, or write to another folder (lock file: {lock_path})."
            ) from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # locked a file its holder had just removed: take the new one


def save_atomically(target: Path, write) -> None:
    """Call ``write(staging_folder)``, then swap the folder into place: a crash leaves the old pack or the new one."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder.")
    with writer_lock(target):
        clean_leftovers(target)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        staging.chmod(0o777 & ~umask())  # mkdtemp makes it private; a saved pack is an ordinary folder
        try:
            write(staging)
            if target.exists():
                _carry_over(target, staging)
            _publish(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def clean_leftovers(target: Path) -> None:
    """Remove what a killed writer of ``target`` left beside it; put the old folder back if it was left aside.

    Call with the writer lock held: then no leftover belongs to a live writer.
    """
    for item in sorted(target.parent.iterdir()) if target.parent.is_dir() else []:
        if item.name.startswith(f".{target.name}.old-") and not target.exists():
            os.replace(item, target)  # killed between the two renames of the fallback swap
        elif item.name.startswith((f".{target.name}.old-", f".{target.name}.tmp-")) and item.is_dir():
            shutil.rmtree(item, ignore_errors=True)


def _carry_over(old: Path, staging: Path) -> None:
    """Hard-link (or copy) into ``staging`` every entry of ``old`` that the new pack does not write."""
    for item in old.iterdir():
        dest = staging / item.name
        if dest.exists() or dest.is_symlink():
            continue
        if item.is_symlink():
            os.symlink(os.readlink(item), dest)
        elif item.is_dir():
            shutil.copytree(item, dest, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(item, dest)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _publish(staging: Path, target: Path) -> None:
    """Move a fully written folder into place, in one step where the system can."""
    if not target.exists():
        os.replace(staging, target)
    elif not _exchange(staging, target):
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    # After an exchange the staging path holds the old folder; the caller removes it.


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where that is unavailable."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # old kernel or file system
        return False
    raise OSError(err, os.strerror(err), str(b))


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
