"""What a pack file may be before anything opens it: a regular file, inside the pack's folder, of a sane size.

A pack folder someone else made can hold a symbolic link where a file should be (to ``/etc/passwd``, to another
model's files), a named pipe (opening it would block forever), a device (``/dev/zero`` never ends) or a file far
larger than any real pack file. Each is refused here, from ``os.stat`` alone, with an error that names the file.
Files in the Hugging Face Hub cache are links into its ``blobs/`` folder by design; they are checked for their kind
and size only (their content is checked against the Hub's ETag in ``downloads.py``).
"""

from __future__ import annotations

import os
import stat

from .constants import CONFIG_FILE, STEERING_FILE
from .errors import PackError, PackFileError

# A real config.json holds a few kilobytes, a few hundred with dozens of axes and their build reports.
MAX_CONFIG_BYTES = 16 * 2**20
# Directions are [rank, hidden] float32 per layer and axis: 10 axes of rank 8 on all 80 layers of a model with
# hidden size 8192 take 210 MB. 4 GiB leaves room for big bases and build statistics, and bounds what a hostile
# file can make the loader read into memory (the header check bounds it by the file's size, this by a constant).
MAX_STEERING_BYTES = 4 * 2**30
STEERING_CAP_ENV = "ALIGNEZ_MAX_STEERING_BYTES"
KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
AGAIN = "Get the pack again from its author, or rebuild it."
# The files a tokenizer load may read from a pack folder (or a bundled base), checked where present.
TOKENIZER_FILES = (
    "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
    "chat_template.json", "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model",
)  # fmt: skip


def size_cap(filename: str) -> int | None:
    """The most bytes ``filename`` of a pack may hold, or None for no cap."""
    if os.path.basename(filename) == CONFIG_FILE:  # a bundled base's too
        return MAX_CONFIG_BYTES
    if filename != STEERING_FILE:
        return None
    value = os.environ.get(STEERING_CAP_ENV)
    if value is None:
        return MAX_STEERING_BYTES
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{STEERING_CAP_ENV} must be a number of bytes, got {value!r}.") from None


def check_pack_file(path: str, filename: str, source: str, folder: str | os.PathLike | None = None) -> str:
    """``path`` (the pack's ``filename``), or a PackError/PackFileError saying why it is not read.

    ``folder`` is the pack folder for a local pack: the file, links followed, must then lie inside it (a link to
    another file of the folder is fine). Nothing is opened: a named pipe or a device is refused from its stat.
    """
    where = f"{filename} of the steering pack {source}"
    if folder is not None and not os.path.lexists(path):
        raise PackFileError(f"{folder} has no {filename}; it is not a complete steering pack.")
    real = os.path.realpath(path)
    link = f"a symbolic link to {real}" if os.path.islink(path) else ""
    if folder is not None:
        root = os.path.realpath(folder)
        if not inside_pack(real, folder):
            raise _refused(
                filename,
                f"{where} is {link or f'at {real}'}, outside the pack folder {root}; a pack's files must lie inside "
                f"its folder, so it is not read. If you trust the file, copy it into the folder in place of the link. "
                f"{AGAIN}",
            )
    try:
        info = os.stat(real)
    except OSError as err:
        raise PackFileError(f"{where} cannot be read ({link or path}: {err.strerror}). {AGAIN}") from err
    if not stat.S_ISREG(info.st_mode):
        kind = KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise _refused(
            filename,
            f"{where} is {link + ', ' if link else ''}{kind}, not a regular file, so it is not read. {AGAIN}",
        )
    cap = size_cap(filename)
    if cap is not None and info.st_size > cap:
        raise _refused(filename, f"{where} holds {info.st_size:,} bytes, more than {_too_big(filename, cap)}")
    return path


def check_present(folder: str | os.PathLike, names, source: str) -> None:
    """:func:`check_pack_file` for each of ``names`` that is present (a link counts) in the local pack ``folder``."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            check_pack_file(path, name, source, folder)


def check_bundled_base(folder: str | os.PathLike, name: str, source: str) -> None:
    """Refuse a bundled base (``folder/name``) that lies outside the pack folder, or whose files do.

    Its files are read by transformers: each must be a regular file (or a folder) inside the pack folder.
    A missing base is left to the loader, whose error says so.
    """
    path = os.path.join(folder, name)
    if not os.path.lexists(path):
        return
    check_folder_entry(path, name, source, folder)
    if not os.path.isdir(path):
        raise _refused(
            name,
            f"The steering pack {source} bundles its base model in {name} (bundled_base in its {CONFIG_FILE}), but "
            f"{name} is not a folder. {AGAIN}",
        )
    for entry in os.scandir(os.path.realpath(path)):
        if not entry.name.startswith("."):
            check_folder_entry(entry.path, f"{name}/{entry.name}", source, folder)


def check_folder_entry(path: str, name: str, source: str, folder: str | os.PathLike) -> None:
    """A folder (inside ``folder``, links followed) passes; anything else must pass :func:`check_pack_file`."""
    if not os.path.isdir(path):
        check_pack_file(path, name, source, folder)
        return
    real, root = os.path.realpath(path), os.path.realpath(folder)
    if not inside_pack(real, folder):
        raise _refused(
            name,
            f"The folder {name} of the steering pack {source} is a link to {real}, outside the pack folder {root}; "
            f"a pack's files must lie inside its folder, so it is not read. {AGAIN}",
        )


def inside_pack(real: str, folder: str | os.PathLike) -> bool:
    """Whether the resolved path ``real`` belongs to the pack folder ``folder``.

    That is: it lies inside the folder, or the folder is a snapshot of the Hugging Face cache
    (``models--org--name/snapshots/<commit>``, as ``snapshot_download`` returns) and it lies in that same repo's
    ``blobs/``, where the cache keeps the content its snapshot links point to.
    """
    root = os.path.realpath(folder)
    if _within(real, root):
        return True
    parts = root.split(os.sep)
    if "snapshots" not in parts:
        return False
    repo = os.sep.join(parts[: len(parts) - 1 - parts[::-1].index("snapshots")])
    return os.path.basename(repo).startswith(("models--", "datasets--", "spaces--")) and _within(
        real, os.path.join(repo, "blobs")
    )


def _within(real: str, root: str) -> bool:
    return os.path.commonpath([real, root]) == root


def _too_big(filename: str, cap: int) -> str:
    if filename == STEERING_FILE:
        return (
            f"the {cap:,} a steering file may hold, so it is not read. If the pack is really that large, set the "
            f"environment variable {STEERING_CAP_ENV} to a larger number of bytes."
        )
    return f"the {cap:,} a pack's {filename} may hold (a real one holds kilobytes), so it is not parsed. {AGAIN}"


def _refused(filename: str, message: str) -> PackError:
    err = PackError(message)
    err.file = filename
    return err
