"""The errors of alignez-hf: one small hierarchy, each also a built-in error so existing ``except`` clauses hold.

- :class:`AlignEZError`: the base of every error below.
- :class:`PackError` (a ``ValueError``): a pack's ``config.json`` or ``steering.safetensors`` is malformed or
  inconsistent; the message names the file, what is wrong and what to do.
- :class:`NotAPackError` (also a ``TypeError``): a folder or config that is not a steering pack at all.
- :class:`PackFileError` (a ``FileNotFoundError``): a file a pack needs is missing.
- :class:`DownloadError` (an ``OSError``): a pack file's download from the Hub failed (a server error, a connection
  that broke off) or gave bytes that do not match the file's ETag; the message names the file and says to retry.
- :class:`BaseModelError` (an ``OSError``): the base model a pack names cannot be loaded.
- :class:`SteeringError` (a ``ValueError``): a bad ``steering=`` argument of ``forward``/``generate``;
  :class:`UnknownAxisError` (also a ``KeyError``) names an axis the model does not have, and
  :class:`SteeringTypeError` (also a ``TypeError``) is a value of the wrong kind.
- :class:`GateError` (a ``ValueError``): a malformed gate dict.
- :class:`FolderLockedError` (a ``BlockingIOError``): another process is writing the same pack folder.
"""

from __future__ import annotations

# What a message about a corrupt pack tells the user to do.
PACK_ADVICE = (
    "Re-download the pack (from_pretrained(..., force_download=True)) or rebuild it; if a newer alignez-hf saved "
    "it, upgrade (pip install -U alignez-hf)."
)


class AlignEZError(Exception):
    """Base class of the errors alignez-hf raises on purpose."""


class PackError(AlignEZError, ValueError):
    """A steering pack's ``config.json`` or ``steering.safetensors`` is malformed or inconsistent."""


class NotAPackError(PackError, TypeError):
    """A folder or config that is not an AlignEZ steering pack."""


class PackFileError(AlignEZError, FileNotFoundError):
    """A file that a steering pack needs is missing."""


class DownloadError(AlignEZError, OSError):
    """Downloading a pack file from the Hub failed, or the file in the cache does not match its ETag."""


class BaseModelError(AlignEZError, OSError):
    """The base model that a steering pack names cannot be loaded."""


class SteeringError(AlignEZError, ValueError):
    """A ``steering=`` argument (of ``forward``/``generate``) or a strength that cannot be used."""


class UnknownAxisError(SteeringError, KeyError):
    """An axis name the model does not have."""

    def __str__(self) -> str:  # the message itself, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""


class SteeringTypeError(SteeringError, TypeError):
    """A ``steering=`` value of the wrong kind (not a dict, or a list of dicts)."""


class GateError(AlignEZError, ValueError):
    """A malformed self-judged gate dict."""


class FolderLockedError(AlignEZError, BlockingIOError):
    """Another process (or thread) holds the writer lock of the pack folder being saved or built into."""


def reason(err: BaseException) -> str:
    """``err`` as the reason in another message: its text, after its type unless it is one of ours or a ValueError."""
    return str(err) if isinstance(err, AlignEZError) or type(err) is ValueError else f"{type(err).__name__}: {err}"


def pack_error(file: str, source: str | None, problem: str, advice: str = PACK_ADVICE) -> PackError:
    """A :class:`PackError` saying which file of which pack is wrong, what is wrong, and what to do."""
    where = f"{file} of the steering pack {source}" if source else file
    err = PackError(f"{where} is malformed: {problem.rstrip('.')}. {advice}")
    err.file, err.problem = file, problem
    return err
