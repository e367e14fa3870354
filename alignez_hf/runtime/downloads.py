"""Pack files fetched from the Hub: clear errors for broken downloads, and a check of each file against its ETag.

huggingface_hub checks only a download's size. A body of the right length but the wrong bytes (a flaky proxy, a
bad disk) would sit in the cache as ``blobs/<etag>`` and be read by every later load, offline ones too. So every
pack file that comes out of the Hub cache is hashed and compared with the name of its blob: the git blob sha1 of a
regular file (40 hex), the sha256 of an LFS file (64 hex). A mismatch removes the blob and its snapshot link, so
the next load downloads the file again, and raises :class:`DownloadError`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import DownloadError

CHUNK = 1 << 20
_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Top-level modules of the HTTP stacks huggingface_hub has used; their errors are connections that broke off.
_HTTP_LIBRARIES = ("httpx", "httpx2", "httpcore", "httpcore2", "h11", "requests", "urllib3")
RETRY_ADVICE = "Load it again (online); if that keeps failing, pass force_download=True."


def blob_etag(path: str) -> str | None:
    """The ETag a Hub-cache file was stored under (its blob's name), or None for a file outside a Hub cache."""
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if os.path.basename(os.path.dirname(real)) != "blobs" or not _ETAG.fullmatch(name):
        return None
    return name


def content_etag(path: str, etag_length: int) -> str:
    """The ETag the Hub gives this content: git blob sha1 (40 hex) or sha256 (64 hex), hashed in 1 MiB chunks."""
    if etag_length == 40:
        digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    else:
        digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_cached(path: str, source: str, filename: str) -> None:
    """Raise :class:`DownloadError` (after removing the bad copy) if a Hub-cache file does not match its ETag.

    Files outside a Hub cache (a local folder, a cache without symlinks) carry no ETag and pass unchecked.
    """
    etag = blob_etag(path)
    if etag is None:
        return
    actual = content_etag(path, len(etag))
    if actual == etag:
        return
    blob = os.path.realpath(path)
    left = []
    for doomed in dict.fromkeys([path, blob]):  # the snapshot link, then the blob it points to
        try:
            os.remove(doomed)
        except FileNotFoundError:
            pass
        except OSError:
            left.append(doomed)
    cleanup = (
        f"Could not remove {', '.join(left)}: delete it by hand or pass force_download=True."
        if left
        else f"The bad copy was removed from the cache. {RETRY_ADVICE}"
    )
    raise download_error(
        filename,
        source,
        f"the downloaded file does not match its ETag (expected {etag}, got {actual}): it was corrupted on the way "
        f"or on disk. {cleanup}",
    )


@contextmanager
def download_errors(source: str, filename: str) -> Iterator[None]:
    """Turn a Hub server error (5xx) or a connection that broke off mid-download into :class:`DownloadError`.

    Other errors (a missing repo, revision or file, no connection at all, offline mode) pass through unchanged.
    """
    try:
        yield
    except DownloadError:
        raise
    except Exception as err:
        status = _server_status(err)
        if status is not None:
            problem = f"the Hub answered HTTP {status}, a server-side error that is usually temporary. {RETRY_ADVICE}"
        elif _is_transport_error(err):
            problem = f"the connection broke off ({type(err).__name__}: {err}). {RETRY_ADVICE}"
        else:
            raise
        raise download_error(filename, source, problem) from err


def download_error(filename: str, source: str, problem: str) -> DownloadError:
    """A :class:`DownloadError` naming the file and the pack, with ``file`` and ``source`` attributes."""
    err = DownloadError(f"Downloading {filename} of the steering pack {source} failed: {problem}")
    err.file, err.source = filename, source
    return err


def _server_status(err: BaseException) -> int | None:
    """The 5xx status behind an error (huggingface_hub's HfHubHTTPError, possibly wrapped by transformers)."""
    for e in (err, err.__cause__):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int) and 500 <= status <= 599:
            return status
    return None


def _is_transport_error(err: BaseException) -> bool:
    # The class's own module only: huggingface_hub's HTTP errors subclass the HTTP library's but are not transport.
    return type(err).__module__.split(".")[0] in _HTTP_LIBRARIES
