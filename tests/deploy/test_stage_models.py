"""scripts/stage_models.py against a local folder standing in for the models Volume, with real checkpoint folders
(the tiny random models of `captionrec tiny-models`, which have the real checkpoints' layout) renamed to the
names conf/databricks.yaml reads."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# conf/databricks.yaml's checkpoint name -> the tiny model with the same layout
TINY = {
    "Qwen2.5-VL-3B-Instruct": "qwen2_5_vl",
    "Qwen2.5-Omni-3B": "qwen2_5_omni",
    "Qwen2-Audio-7B-Instruct": "qwen2_audio",
    "faster-whisper-large-v3": "whisper-ct2",
    "bge-large-en-v1.5": "text",
    "videomae-base": "videomae",
    "ast-finetuned-audioset-10-10-0.4593": "ast",
}


@pytest.fixture(scope="module")
def sm():
    spec = importlib.util.spec_from_file_location("stage_models", REPO / "scripts" / "stage_models.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def source(tiny_dir, tmp_path) -> Path:
    src = tmp_path / "downloads"
    for name, tiny in TINY.items():
        shutil.copytree(tiny_dir / tiny, src / name)
    return src


def _stage(sm, source, dest, *extra):
    return sm.main(["--source", str(source), "--dest", str(dest), "--allow-tiny", *extra])


def test_every_checkpoint_the_profile_reads_has_a_kind(sm):
    names = sm.model_names("databricks")
    assert set(names) == set(sm.MODELS) == set(TINY)


def test_stages_every_checkpoint_with_a_manifest_then_skips_them(sm, source, tmp_path, capsys):
    volume = tmp_path / "Volumes" / "main" / "captionrec_models" / "models"
    assert _stage(sm, source, volume) == 0
    out = capsys.readouterr().out
    assert out.count("copied ") == len(TINY)
    for name in TINY:
        manifest = json.loads((volume / name / sm.MANIFEST).read_text())
        src_files = sorted(p.relative_to(source / name).as_posix() for p in (source / name).rglob("*") if p.is_file())
        assert sorted(manifest["files"]) == src_files and manifest["kind"] == sm.MODELS[name][0]
        for rel, meta in manifest["files"].items():
            data = (volume / name / rel).read_bytes()
            assert len(data) == meta["size"] and sm.hashlib.sha256(data).hexdigest() == meta["sha256"]
    # the staged folders load as the stages load them
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(volume / "bge-large-en-v1.5"), device="cpu").encode(["a title"]).shape[0] == 1
    # a second run: nothing to copy
    mtime = (volume / "videomae-base" / "model.safetensors").stat().st_mtime_ns
    assert _stage(sm, source, volume) == 0
    out = capsys.readouterr().out
    assert out.count("skipped ") == len(TINY) and "copied" not in out
    assert (volume / "videomae-base" / "model.safetensors").stat().st_mtime_ns == mtime


def test_a_changed_checkpoint_is_copied_again_and_stale_files_removed(sm, source, tmp_path, capsys):
    volume = tmp_path / "models"
    assert _stage(sm, source, volume, "--only", "videomae-base") == 0
    (volume / "videomae-base" / "old-shard.safetensors").write_bytes(b"x")  # an older revision's leftover
    (source / "videomae-base" / "config.json").write_text(
        (source / "videomae-base" / "config.json").read_text().replace("{", '{"note": "revised",', 1)
    )
    capsys.readouterr()
    assert _stage(sm, source, volume, "--only", "videomae-base", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would copy videomae-base" in out and "manifest changed" in out and "would remove 1 stale" in out
    assert (volume / "videomae-base" / "old-shard.safetensors").exists()  # dry run: untouched
    assert _stage(sm, source, volume, "--only", "videomae-base") == 0
    assert not (volume / "videomae-base" / "old-shard.safetensors").exists()
    assert '"revised"' in (volume / "videomae-base" / "config.json").read_text()
    # a damaged staged copy (a file shorter than its manifest says) is copied again, not skipped
    (volume / "videomae-base" / "model.safetensors").write_bytes(b"")
    capsys.readouterr()
    assert _stage(sm, source, volume, "--only", "videomae-base") == 0
    assert "copied videomae-base" in capsys.readouterr().out
    assert (volume / "videomae-base" / "model.safetensors").stat().st_size > 0


def test_dry_run_writes_nothing(sm, source, tmp_path, capsys):
    volume = tmp_path / "models"
    assert _stage(sm, source, volume, "--dry-run") == 0
    assert capsys.readouterr().out.count("would copy ") == len(TINY)
    assert not volume.exists()


@pytest.mark.parametrize(
    "name, damage, message",
    [
        (
            "Qwen2.5-VL-3B-Instruct",
            lambda d: (d / "model.safetensors").unlink(),
            "no weights: model.safetensors, or model.safetensors.index.json with its shards",
        ),
        ("Qwen2.5-VL-3B-Instruct", lambda d: (d / "tokenizer.json").unlink(), "no tokenizer: tokenizer.json"),
        (
            "Qwen2-Audio-7B-Instruct",
            lambda d: [(d / n).unlink(missing_ok=True) for n in ("preprocessor_config.json", "processor_config.json")],
            "missing preprocessor_config.json (or processor_config.json)",
        ),
        (
            "faster-whisper-large-v3",
            lambda d: (d / "vocabulary.json").unlink(),
            "missing vocabulary.json (or vocabulary.txt)",
        ),
        ("faster-whisper-large-v3", lambda d: (d / "model.bin").unlink(), "missing model.bin"),
        (
            "bge-large-en-v1.5",
            lambda d: shutil.rmtree(d / "1_Pooling"),
            "modules.json names 1_Pooling/ (Pooling): missing 1_Pooling/config.json",
        ),
        ("bge-large-en-v1.5", lambda d: (d / "modules.json").unlink(), "missing modules.json"),
        ("videomae-base", lambda d: (d / "config.json").unlink(), "missing config.json"),
        (
            "ast-finetuned-audioset-10-10-0.4593",
            lambda d: (d / "model.safetensors.incomplete").write_bytes(b"x"),
            "partial download: model.safetensors.incomplete",
        ),
    ],
)
def test_an_incomplete_folder_is_refused_with_what_is_missing(sm, source, tmp_path, capsys, name, damage, message):
    damage(source / name)
    volume = tmp_path / "models"
    assert _stage(sm, source, volume) == 1
    err = capsys.readouterr().err
    assert "1 checkpoint(s) not staged" in err and f"{name}: " in err and message in err, err
    assert not (volume / name).exists()  # nothing of it copied
    assert all((volume / other / sm.MANIFEST).is_file() for other in TINY if other != name)  # the others are


def test_sharded_weights_need_every_shard_the_index_names(sm, source, tmp_path, capsys):
    d = source / "Qwen2.5-Omni-3B"
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").unlink()
    half = len(weights) // 2
    (d / "model-00001-of-00002.safetensors").write_bytes(weights[:half])
    (d / "model-00002-of-00002.safetensors").write_bytes(weights[half:])
    index = {
        "metadata": {},
        "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"},
    }
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert sm.completeness_problems(d, "transformers-processor") == []
    (d / "model-00002-of-00002.safetensors").unlink()
    assert _stage(sm, source, tmp_path / "models", "--only", "Qwen2.5-Omni-3B") == 1
    assert (
        "model.safetensors.index.json names 2 shard(s); missing or empty: model-00002-of-00002.safetensors"
        in capsys.readouterr().err
    )


def test_missing_download_and_tiny_models_are_refused(sm, source, tmp_path, capsys):
    shutil.rmtree(source / "bge-large-en-v1.5")
    assert _stage(sm, source, tmp_path / "models", "--only", "bge-large-en-v1.5") == 1
    assert "huggingface-cli download BAAI/bge-large-en-v1.5 --local-dir" in capsys.readouterr().err
    # without --allow-tiny, the tiny random stand-ins are not mistaken for checkpoints
    rc = sm.main(["--source", str(source), "--dest", str(tmp_path / "models"), "--only", "videomae-base"])
    assert rc == 1 and "a tiny random test model" in capsys.readouterr().err


def test_default_destination_is_the_bundles_shared_models_volume(sm):
    assert sm.default_dest("dev", {}) == sm.default_dest("prod", {}) == "/Volumes/main/captionrec_models/models"
    assert sm.default_dest("prod", {"catalog": "ml"}) == "/Volumes/ml/captionrec_models/models"
