"""Profile resolution: defaults < conf/<profile>.yaml < --conf files < key=value overrides."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captionrec.config.loader import (
    ConfigError,
    deep_merge,
    from_dict,
    interpolate,
    parse_overrides,
    read_yaml,
    to_plain,
)
from captionrec.config.schema import Config

log = logging.getLogger(__name__)


def _repo_conf() -> Path | None:
    """<repo>/conf when this module runs from a source checkout (lib/captionrec/config/load.py)."""
    here = Path(__file__).resolve()
    if here.parents[2].name != "lib":
        return None
    conf = here.parents[3] / "conf"
    return conf if (conf / "local.yaml").is_file() and (here.parents[3] / "setup.py").is_file() else None


def _walk(node: Any, prefix: str = "") -> list[tuple[str, bytes]]:
    """(relative path, bytes) of every file under an importlib.resources Traversable."""
    out = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            out.extend(_walk(child, rel + "/"))
        elif child.is_file() and not child.name.endswith((".py", ".pyc")):
            out.append((rel, child.read_bytes()))
    return out


@functools.cache
def _packaged_conf() -> Path:
    """The conf folder shipped in the package (`captionrec/_conf`), always as a real directory.

    Installed packages (site-packages, a packed venv) have it on disk. A package imported from a zip
    (`--py-files captionrec.zip`) does not: its files are copied once to a folder named by their content
    hash under the temp dir, so YAML and prompt files are always read from plain paths.
    """
    from importlib.resources import files

    root = files("captionrec") / "_conf"
    if isinstance(root, Path):
        if not root.is_dir():
            raise ConfigError(f"captionrec's packaged config folder is missing: {root} (a broken install?)")
        return root
    if not root.is_dir():
        raise ConfigError(f"captionrec's packaged config folder is missing from {root} (a broken install?)")
    content = _walk(root)
    digest = hashlib.sha256(b"".join(rel.encode() + b"\0" + data for rel, data in content)).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"captionrec-conf-{digest}"
    if not (target / "local.yaml").is_file():
        staging = Path(tempfile.mkdtemp(prefix="captionrec-conf-", dir=tempfile.gettempdir()))
        for rel, data in content:
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        try:
            os.replace(staging, target)  # atomic; a concurrent process may have won: its copy is identical
        except OSError:
            if not (target / "local.yaml").is_file():
                raise
    log.info("captionrec is imported from an archive (%s); its config files are read from %s", root, target)
    return target


def conf_dir() -> Path:
    """The folder holding profile YAMLs and prompts, always a real directory: $CAPTIONREC_CONF_DIR, the
    source checkout's conf/, or the copy shipped in the package (extracted when imported from a zip)."""
    env = os.environ.get("CAPTIONREC_CONF_DIR")
    if env:
        return Path(env)
    return _repo_conf() or _packaged_conf()


def load_config(
    profile: str = "local",
    overrides: Sequence[str] = (),
    extra_files: Sequence[str | Path] = (),
    stage: str | None = None,
    conf_path: Path | None = None,
) -> Config:
    root = conf_path or conf_dir()
    profile_file = root / f"{profile}.yaml"
    if not profile_file.is_file():
        known = sorted(p.stem for p in root.glob("*.yaml"))
        raise ConfigError(f"unknown profile '{profile}' (no {profile_file}); known profiles: {', '.join(known)}")
    tree = read_yaml(profile_file)
    for extra in extra_files:
        tree = deep_merge(tree, read_yaml(extra))
    tree = deep_merge(tree, parse_overrides(overrides, Config, stage))
    tree["profile"] = profile
    return from_dict(Config, interpolate(tree, _defaults()))


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    """The dataclass defaults as a plain tree: what a `${...}` reference sees for a key no layer sets."""
    return to_plain(Config())
