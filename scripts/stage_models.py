"""Copy pre-downloaded model checkpoints into the models Volume the bundle's job reads (storage.models_dir).

    python scripts/stage_models.py --source /local_disk0/ckpt --dry-run      # what would be copied / skipped
    python scripts/stage_models.py --source /local_disk0/ckpt                # -> /Volumes/<catalog>/<models_schema>/<models_volume>
    python scripts/stage_models.py --source ckpt --dest /Volumes/main/captionrec_models/models --only bge-large-en-v1.5

Run it where the Volume is a path (a Databricks web terminal, a `%sh` notebook cell, or a job), or stage into a
local folder (--dest) and upload that with `databricks fs cp -r <folder> dbfs:/Volumes/...`. The destination
defaults to the bundle's models Volume (databricks.yml: catalog, models_schema, models_volume; -t/--var as in
scripts/databricks_setup.py), which every target shares.

The checkpoints are the ones conf/databricks.yaml names under ${storage.models_dir}, each in --source/<name>/
(e.g. `huggingface-cli download Qwen/Qwen2.5-VL-3B-Instruct --local-dir <source>/Qwen2.5-VL-3B-Instruct`; Whisper
as CTranslate2: Systran/faster-whisper-large-v3). For each one:
- the source folder must be complete for its kind (config.json and safetensors weights, every shard a
  *.index.json names; CTranslate2 Whisper: model.bin, config.json, tokenizer.json, vocabulary, the preprocessor
  config; sentence-transformers: modules.json and each module's folder; tokenizer / processor files where the
  model needs them), with no partial downloads (*.incomplete, *.lock): an incomplete folder is refused, naming
  what is missing, and nothing of it is copied;
- a manifest (every file's size and sha256) is written to <dest>/<name>/captionrec_manifest.json after the files
  are copied and their sizes and hashes checked there (a folder without a manifest is a copy that did not finish);
- a folder already staged with the same manifest, whose files still have the manifest's sizes, is skipped;
- files in the destination that the new manifest does not list (an older revision's shards) are removed.
Tiny random test models (`captionrec tiny-models`, marked TINY_RANDOM_MODEL.json) are refused unless --allow-tiny.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "captionrec_manifest.json"
TINY_MARKER = "TINY_RANDOM_MODEL.json"
PARTIAL_SUFFIXES = (".incomplete", ".lock", ".part", ".tmp")
IGNORED_DIRS = {".cache", ".git", "__pycache__"}  # huggingface-cli's --local-dir bookkeeping, VCS

# The checkpoints conf/databricks.yaml names (basename of each model path under storage.models_dir): their kind
# (what a complete folder holds) and the Hugging Face repository to download them from.
MODELS: dict[str, tuple[str, str]] = {
    "Qwen2.5-VL-3B-Instruct": ("transformers-processor", "Qwen/Qwen2.5-VL-3B-Instruct"),
    "Qwen2.5-Omni-3B": ("transformers-processor", "Qwen/Qwen2.5-Omni-3B"),
    "Qwen2-Audio-7B-Instruct": ("transformers-processor", "Qwen/Qwen2-Audio-7B-Instruct"),
    "faster-whisper-large-v3": ("ctranslate2-whisper", "Systran/faster-whisper-large-v3"),
    "bge-large-en-v1.5": ("sentence-transformers", "BAAI/bge-large-en-v1.5"),
    "videomae-base": ("transformers-features", "MCG-NJU/videomae-base"),
    "ast-finetuned-audioset-10-10-0.4593": ("transformers-features", "MIT/ast-finetuned-audioset-10-10-0.4593"),
}


class StageError(Exception):
    """A folder that can't be staged (incomplete, tiny, unknown); the message says what to fix."""


# -- completeness per kind -------------------------------------------------------------------------------------


def _weights_problems(folder: Path) -> list[str]:
    """safetensors (or PyTorch .bin) weights, with every shard an index names present and non-empty."""
    problems = []
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as exc:
                return [f"{index_name} is not a weight index ({exc})"]
            missing = [s for s in shards if not (folder / s).is_file() or (folder / s).stat().st_size == 0]
            if missing:
                problems.append(f"{index_name} names {len(shards)} shard(s); missing or empty: {', '.join(missing)}")
            return problems
        if (folder / single).is_file():
            if (folder / single).stat().st_size == 0:
                return [f"{single} is empty"]
            return []
    return ["no weights: model.safetensors, or model.safetensors.index.json with its shards (or pytorch_model.bin)"]


def _tokenizer_problems(folder: Path) -> list[str]:
    if (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    ):
        return []
    return ["no tokenizer: tokenizer.json (or vocab.json + merges.txt)"]


def _required(folder: Path, names: tuple[str, ...]) -> list[str]:
    return [f"missing {n}" for n in names if not (folder / n).is_file()]


def completeness_problems(folder: Path, kind: str) -> list[str]:
    """What a checkpoint folder of `kind` lacks to load offline; [] when complete."""
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = [
        f"partial download: {p.relative_to(folder)}" for p in _files(folder) if p.name.endswith(PARTIAL_SUFFIXES)
    ]
    if kind == "transformers-processor":  # vision/audio-language models: weights + tokenizer + processor
        problems += _required(folder, ("config.json", "tokenizer_config.json"))
        if not any((folder / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")):
            # transformers < 5 saves preprocessor_config.json, 5.x processor_config.json
            problems.append("missing preprocessor_config.json (or processor_config.json)")
        problems += _weights_problems(folder) + _tokenizer_problems(folder)
    elif kind == "transformers-features":  # VideoMAE, AST: weights + feature extractor
        problems += _required(folder, ("config.json", "preprocessor_config.json")) + _weights_problems(folder)
    elif kind == "ctranslate2-whisper":
        problems += _required(folder, ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"))
        if not any((folder / v).is_file() for v in ("vocabulary.json", "vocabulary.txt")):
            problems.append("missing vocabulary.json (or vocabulary.txt)")
        if (folder / "model.bin").is_file() and (folder / "model.bin").stat().st_size == 0:
            problems.append("model.bin is empty")
    elif kind == "sentence-transformers":
        problems += _required(folder, ("modules.json", "config.json"))
        problems += _weights_problems(folder) + _tokenizer_problems(folder)
        if (folder / "modules.json").is_file():
            try:
                modules = json.loads((folder / "modules.json").read_text())
            except ValueError as exc:
                return problems + [f"modules.json is not JSON ({exc})"]
            for m in modules:
                path, mtype = m.get("path", ""), m.get("type", "")
                # the transformer is the folder itself; Normalize has no files; Pooling / Dense / ... have a config
                if path and not mtype.endswith("Normalize") and not (folder / path / "config.json").is_file():
                    problems.append(
                        f"modules.json names {path}/ ({mtype.rsplit('.', 1)[-1]}): missing {path}/config.json"
                    )
    else:
        raise StageError(f"unknown model kind {kind!r}")
    return problems


# -- manifests -------------------------------------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        out += [Path(root) / f for f in sorted(files) if f != MANIFEST]
    return out


def sha256(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_manifest(folder: Path, name: str, kind: str) -> dict[str, Any]:
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256(p)} for p in _files(folder)}
    return {"name": name, "kind": kind, "files": files, "total_bytes": sum(f["size"] for f in files.values())}


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def manifest_problems(folder: Path, manifest: dict[str, Any], hashes: bool = False) -> list[str]:
    """Where `folder`'s files differ from `manifest` (sizes; with `hashes`, sha256 too); [] when they match."""
    problems = []
    for rel, meta in sorted(manifest["files"].items()):
        p = folder / rel
        if not p.is_file():
            problems.append(f"missing {rel}")
        elif p.stat().st_size != meta["size"]:
            problems.append(f"{rel}: {p.stat().st_size} bytes, manifest says {meta['size']}")
        elif hashes and sha256(p) != meta["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    return problems


# -- staging ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    action: str  # "copy", "skip", "refuse"
    detail: str = ""
    files: int = 0
    bytes: int = 0
    removed: list[str] = field(default_factory=list)


def stage_one(src: Path, dest: Path, name: str, kind: str, dry_run: bool = False, allow_tiny: bool = False) -> Outcome:
    """Check `src` (a checkpoint of `kind`), then copy it to `dest` unless already staged with the same manifest."""
    problems = completeness_problems(src, kind)
    if (src / TINY_MARKER).is_file() and not allow_tiny:
        problems.append(f"{TINY_MARKER}: a tiny random test model, not the checkpoint (pass --allow-tiny for tests)")
    if problems:
        return Outcome(name, "refuse", f"{src} is not a complete {kind} checkpoint: " + "; ".join(problems))
    manifest = build_manifest(src, name, kind)
    staged = read_manifest(dest)
    if staged is not None and staged.get("files") == manifest["files"] and not manifest_problems(dest, staged):
        return Outcome(
            name, "skip", "already staged with the same manifest", len(manifest["files"]), manifest["total_bytes"]
        )
    stale = (
        sorted(set(p.relative_to(dest).as_posix() for p in _files(dest)) - set(manifest["files"]))
        if dest.is_dir()
        else []
    )
    outcome = Outcome(
        name,
        "copy",
        "new" if staged is None else "manifest changed",
        len(manifest["files"]),
        manifest["total_bytes"],
        stale,
    )
    if dry_run:
        return outcome
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST).unlink(missing_ok=True)  # until the new manifest is written, the folder reads as unfinished
    for rel in manifest["files"]:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)  # no copystat: Volumes keep no modes / times
    for rel in stale:
        (dest / rel).unlink()
    copied = manifest_problems(dest, manifest, hashes=True)
    if copied:
        raise StageError(f"{dest}: the copy does not match the source's manifest: " + "; ".join(copied))
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return outcome


def model_names(profile: str = "databricks") -> list[str]:
    """The checkpoint folder names `profile` reads under storage.models_dir (their basenames)."""
    sys.path.insert(0, str(REPO / "lib"))
    from captionrec.config import load_config
    from captionrec.config.loader import flatten

    cfg = load_config(profile)
    root = cfg.storage.models_dir.rstrip("/") + "/"
    names = {v[len(root) :].split("/")[0] for v in flatten(cfg).values() if isinstance(v, str) and v.startswith(root)}
    names.discard("hf")
    return sorted(names)


def default_dest(target: str, overrides: dict[str, str]) -> str:
    spec = importlib.util.spec_from_file_location("databricks_setup", REPO / "scripts" / "databricks_setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    v = setup.bundle_variables(target, overrides=overrides)
    return f"/Volumes/{v['catalog']}/{v['models_schema']}/{v['models_volume']}"


def stage(
    source: Path, dest: Path, names: list[str], dry_run: bool = False, allow_tiny: bool = False, log=print
) -> list[Outcome]:
    """Stage every named checkpoint; raises StageError listing every refused folder (the others are staged)."""
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise StageError(f"no kind known for {unknown}: add them to MODELS in scripts/stage_models.py")
    outcomes = []
    for name in names:
        kind, repo = MODELS[name]
        src = source / name
        if not src.is_dir():
            outcomes.append(
                Outcome(
                    name,
                    "refuse",
                    f"{src} does not exist: download it first (huggingface-cli download {repo} --local-dir {src})",
                )
            )
        else:
            outcomes.append(stage_one(src, dest / name, name, kind, dry_run=dry_run, allow_tiny=allow_tiny))
        o = outcomes[-1]
        verb = {"copy": "would copy" if dry_run else "copied", "skip": "skipped", "refuse": "REFUSED"}[o.action]
        extra = f" ({o.files} files, {o.bytes / 1e9:.2f} GB; {o.detail})" if o.action != "refuse" else f": {o.detail}"
        if o.removed:
            extra += f"; {'would remove' if dry_run else 'removed'} {len(o.removed)} stale file(s)"
        log(f"{verb} {name} -> {dest / name}{extra}")
    refused = [o for o in outcomes if o.action == "refuse"]
    if refused:
        raise StageError(
            f"{len(refused)} checkpoint(s) not staged:\n" + "\n".join(f"  {o.name}: {o.detail}" for o in refused)
        )
    return outcomes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, type=Path, help="folder with one pre-downloaded checkpoint per name")
    ap.add_argument("--dest", help="models folder (default: the bundle's models Volume for -t)")
    ap.add_argument("-t", "--target", default="dev")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a bundle variable (as the CLI's)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="stage only these (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="check and report, copy nothing")
    ap.add_argument("--allow-tiny", action="store_true", help="accept tiny random test models (tests only)")
    args = ap.parse_args(argv)
    bad = [v for v in args.var if "=" not in v]
    if bad:
        ap.error(f"--var {bad[0]!r}: expected NAME=VALUE")
    overrides = dict(v.split("=", 1) for v in args.var)
    dest = Path(args.dest or default_dest(args.target, overrides))
    names = args.only or model_names()
    try:
        stage(args.source, dest, names, dry_run=args.dry_run, allow_tiny=args.allow_tiny)
    except StageError as exc:
        print(f"stage_models: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
