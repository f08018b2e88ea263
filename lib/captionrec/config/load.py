"""Profile resolution: defaults < conf/<profile>.yaml < --conf files < key=value overrides."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from captionrec.config.loader import ConfigError, deep_merge, from_dict, parse_overrides, read_yaml
from captionrec.config.schema import Config


def conf_dir() -> Path:
    """The folder holding profile YAMLs: $CAPTIONREC_CONF_DIR, the repo's conf/, or the copy in the wheel."""
    env = os.environ.get("CAPTIONREC_CONF_DIR")
    if env:
        return Path(env)
    repo_conf = Path(__file__).resolve().parents[3] / "conf"
    if repo_conf.is_dir():
        return repo_conf
    from importlib.resources import files

    return Path(str(files("captionrec") / "_conf"))


def load_config(
    profile: str = "local",
    overrides: Sequence[str] = (),
    extra_files: Sequence[str | Path] = (),
    stage: Optional[str] = None,
    conf_path: Optional[Path] = None,
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
    return from_dict(Config, tree)
