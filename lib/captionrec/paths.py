"""Path/URI helpers shared by stages (no Spark, no models)."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse


def to_local_path(uri: str) -> str:
    """A path PyAV can open: `file:` URIs -> local paths, `dbfs:/x` -> `/dbfs/x` (the Databricks FUSE mount).

    Other schemes (s3a://, abfss://, gs://) are returned unchanged; readers open them through fsspec.
    """
    if uri.startswith("dbfs:/"):
        return "/dbfs/" + uri[len("dbfs:/") :].lstrip("/")
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return uri


def is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file") or uri.startswith("/dbfs/") or os.path.isabs(uri)


def join(root: str, *parts: str) -> str:
    """Join onto a local path or a URI without mangling `scheme://`."""
    out = root.rstrip("/")
    for p in parts:
        if p:
            out = f"{out}/{p.strip('/')}"
    return out


def has_scheme(uri: str) -> bool:
    """True for `scheme:/...` URIs (s3a://b/x, dbfs:/x, file:/x), False for plain paths (Windows drives aside)."""
    scheme = urlparse(uri).scheme
    return len(scheme) > 1


def resolve(root: str, path: str) -> str:
    """`path` as given when it is absolute or a URI, else joined onto `root`."""
    if has_scheme(path) or os.path.isabs(path):
        return path
    return join(root, path)


def is_local_or_fuse(uri: str) -> bool:
    """A path the local filesystem can open: local paths, `file:` URIs, and `dbfs:/` where /dbfs is mounted."""
    if uri.startswith("dbfs:/"):
        return os.path.isdir("/dbfs")
    return urlparse(uri).scheme in ("", "file")
