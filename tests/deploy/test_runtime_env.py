"""The Databricks runtime's library set (constraints/dbr-17.3-ml.txt), without building it: the pins file, its
agreement with the bundle and the README, the wheel's requirements against the pins, the transformers 4.x / 5.x
differences (hf_compat) and the summary-shape check. `.ci/runtime.sh` (make test-runtime) builds the environment
and runs the pipeline under it."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PINS = REPO / "constraints" / "dbr-17.3-ml.txt"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(PINS.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+-]*)", line)
        assert m, f"{PINS.name}:{n}: not an exact pin: {raw!r}"
        assert _norm(m[1]) not in out, f"{PINS.name}:{n}: {m[1]} pinned twice"
        out[_norm(m[1])] = m[2]
    return out


def _header() -> str:
    return PINS.read_text().splitlines()[0]


def _runtime_version() -> str:
    m = re.match(r"# runtime: Databricks Runtime (\d+\.\d+) LTS ML\b", _header())
    assert m, f"first line of {PINS.name} must name the runtime: {_header()!r}"
    return m[1]


def test_pins_parse_and_hold_the_libraries_that_must_not_move():
    pins = _pins()
    for name in (
        "pyspark",
        "mlflow-skinny",
        "torch",
        "transformers",
        "sentence-transformers",
        "numpy",
        "pandas",
        "pyarrow",
    ):
        assert name in pins, f"{PINS.name} does not pin {name}"
    # the header's Spark and MLflow versions are the pinned ones
    assert f"Spark {pins['pyspark']}" in _header() and f"MLflow {pins['mlflow-skinny']}" in _header()
    assert "Python 3.12" in _header()
    assert "https://docs.databricks.com/aws/en/release-notes/runtime/17.3lts-ml" in PINS.read_text()


def test_runtime_version_matches_the_bundle_and_the_readme():
    version = _runtime_version()
    variables = yaml.safe_load((REPO / "databricks.yml").read_text())["variables"]
    for var in ("gpu_spark_version", "cpu_spark_version"):
        value = variables[var]["default"]
        assert value.startswith(f"{version}.x-") and "-ml-" in value, (
            f"databricks.yml {var}={value!r} is not the runtime {PINS.name} reproduces ({version} LTS ML)"
        )
    assert f"{version}.x-gpu-ml-" in variables["gpu_spark_version"]["default"]
    assert f"{version} LTS ML" in (REPO / "README.md").read_text(), f"README does not name DBR {version} LTS ML"


def _setup_requirements() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    base = [Requirement(r) for r in ast.literal_eval(kw["install_requires"])]
    extras = {k: [Requirement(r) for r in v] for k, v in ast.literal_eval(kw["extras_require"]).items()}
    return base, extras


def test_the_wheels_requirements_accept_every_runtime_version_they_name():
    """A wheel task's pip keeps a runtime library only if the wheel's specifier admits the runtime's version."""
    pins = _pins()
    base, _ = _setup_requirements()
    named = [r for r in base if _norm(r.name) in pins]
    assert {_norm(r.name) for r in named} >= {"torch", "transformers", "mlflow-skinny", "numpy", "pandas"}
    refused = [
        f"{r} refuses the runtime's {pins[_norm(r.name)]}"
        for r in named
        if not r.specifier.contains(pins[_norm(r.name)], prereleases=True)
    ]
    assert not refused, refused


def test_the_wheel_requires_mlflow_skinny_and_only_the_local_extra_the_full_mlflow():
    """The runtime ships mlflow-skinny alone: a plain `mlflow` requirement would pull the newest mlflow and
    upgrade the runtime's mlflow-skinny with it."""
    base, extras = _setup_requirements()
    names = {_norm(r.name) for r in base}
    assert "mlflow-skinny" in names and "mlflow" not in names
    assert "mlflow" in {_norm(r.name) for r in extras["local"]}


def test_runtime_script_and_make_target():
    script = (REPO / ".ci" / "runtime.sh").read_text()
    pipeline = (REPO / ".ci" / "pipeline.sh").read_text()  # the run both runtime.sh and summary_shape.sh source
    assert "constraints/dbr-17.3-ml.txt" in script and "pip check" in script and "--dry-run" in script
    assert 'source "$REPO/.ci/pipeline.sh"' in script and "--golden" in script
    for stage_arg in ('captionrec" all', "tiny-models"):
        assert stage_arg in pipeline
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^test-runtime:.*\n\tbash \.ci/runtime\.sh", make, re.M), "Makefile: no test-runtime target"
    assert re.search(r"^summary-shape:.*\n\tbash \.ci/summary_shape\.sh", make, re.M), "Makefile: no summary-shape"
    phony = " ".join(line for line in make.splitlines() if line.startswith(".PHONY"))
    assert {"test-runtime", "summary-shape", "lint"} <= set(phony.split())
    for sh in ("runtime.sh", "pipeline.sh", "summary_shape.sh"):
        bash = subprocess.run(["bash", "-n", str(REPO / ".ci" / sh)], capture_output=True, text=True)
        assert bash.returncode == 0, (sh, bash.stderr)


# -- transformers 4.x / 5.x (captionrec.inference.hf_compat) --------------------------------------------------------


def test_audio_lm_class_resolves_qwen2_audio_in_this_environment():
    transformers = pytest.importorskip("transformers")
    from captionrec.inference.hf_compat import audio_lm_class

    assert audio_lm_class(transformers.Qwen2AudioConfig()) is transformers.Qwen2AudioForConditionalGeneration


def test_audio_lm_class_without_the_5x_auto_class_takes_the_4x_mapping():
    """The 4.5x layout (no AutoModelForMultimodalLM; qwen2_audio in AutoModelForSeq2SeqLM) gives the same class."""
    transformers = pytest.importorskip("transformers")
    from captionrec.inference.hf_compat import audio_lm_class

    seq2seq = transformers.AutoModelForSeq2SeqLM
    if transformers.Qwen2AudioConfig not in seq2seq._model_mapping:
        pytest.skip("this transformers maps qwen2_audio only in AutoModelForMultimodalLM")
    v4 = types.SimpleNamespace(__version__="4.51.3", AutoModelForSeq2SeqLM=seq2seq)
    assert audio_lm_class(transformers.Qwen2AudioConfig(), v4) is transformers.Qwen2AudioForConditionalGeneration


def test_audio_lm_class_refuses_a_model_that_is_no_audio_lm_and_says_why():
    transformers = pytest.importorskip("transformers")
    from captionrec.inference.hf_compat import audio_lm_class

    with pytest.raises(
        ValueError, match=r"model_type 'videomae'.*AutoModelForMultimodalLM.*caption.audio.fusion=template"
    ):
        audio_lm_class(transformers.VideoMAEConfig())
    empty = types.SimpleNamespace(__version__="4.40.0")
    with pytest.raises(ValueError, match=r"4\.40\.0.*AutoModelForMultimodalLM: not in this transformers"):
        audio_lm_class(transformers.Qwen2AudioConfig(), empty)


def test_dtype_keyword_follows_the_transformers_version():
    from captionrec.inference.hf_compat import dtype_kwargs, is_v5

    assert dtype_kwargs("bf16", "4.51.3") == {"torch_dtype": "bf16"}
    assert dtype_kwargs("bf16", "4.56.0") == {"dtype": "bf16"}
    assert dtype_kwargs("bf16", "5.24.0") == {"dtype": "bf16"}
    assert is_v5("5.0.0") and not is_v5("4.51.3")


def test_omni_needs_452_and_the_error_says_what_to_do():
    from captionrec.inference.hf_compat import has_omni, require_omni

    old = types.SimpleNamespace(__version__="4.51.3")
    assert not has_omni(old)
    with pytest.raises(ImportError, match=r"transformers >= 4\.52.*4\.51\.3.*leave av out of caption.kinds"):
        require_omni(old)


# -- .ci/summary_shape.py ---------------------------------------------------------------------------------------------


def _shape_module():
    spec = importlib.util.spec_from_file_location("summary_shape", REPO / ".ci" / "summary_shape.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_shape_compares_keys_recursively_not_values():
    shape = _shape_module()
    a = shape.load_summaries(
        '{"stage": "ingest", "rows": 3, "tables": {"items": {"rows": 3}}}\n'
        '{"stage": "report", "runs": [{"id": "a", "status": "FINISHED"}]}'
    )
    same = [
        {"stage": "ingest", "rows": 9, "tables": {"items": {"rows": 1}}},
        {"stage": "report", "runs": [{"id": "b", "status": "FAILED"}, {"id": "c", "status": "FINISHED"}]},
    ]
    assert shape.compare(a, same) == []
    nested = [{"stage": "ingest", "rows": 9, "tables": {"items": {}}}, same[1]]
    assert shape.compare(a, nested) == ["ingest: only in main: tables/items/rows"]
    listed = [same[0], {"stage": "report", "runs": [{"id": "b", "status": "x", "error": "boom"}]}]
    assert shape.compare(a, listed) == ["report: only in other: runs[]/error"]
    assert shape.compare(a, same[:1])[0].startswith("stages differ")


def test_summary_shape_cli_exit_codes(tmp_path):
    (tmp_path / "a.json").write_text('{"stage": "embed", "n": 1}')
    (tmp_path / "b.json").write_text('{"stage": "embed", "n": 2}')
    (tmp_path / "c.json").write_text('{"stage": "embed", "m": 2}')

    def run(*f):
        return subprocess.run(
            [sys.executable, str(REPO / ".ci" / "summary_shape.py"), *map(str, f)], capture_output=True, text=True
        )

    assert run(tmp_path / "a.json", tmp_path / "b.json").returncode == 0
    bad = run(tmp_path / "a.json", tmp_path / "c.json")
    assert bad.returncode == 1 and "only in main: n" in bad.stderr and "only in other: m" in bad.stderr


def test_summary_shape_written_reference_round_trips_and_catches_a_changed_summary(tmp_path):
    """`make summary-shape` writes the main run's shape; `make test-runtime` checks the runtime's run against it."""
    (tmp_path / "main.json").write_text(
        '{"stage": "embed", "n": 1, "kinds": [{"k": "a", "ok": 1}]}\n{"stage": "report", "rows": 3}'
    )
    (tmp_path / "same.json").write_text(
        '{"stage": "embed", "n": 7, "kinds": [{"k": "b", "ok": 0}]}\n{"stage": "report", "rows": 9}'
    )
    (tmp_path / "lost.json").write_text(
        '{"stage": "embed", "n": 7, "kinds": [{"k": "b"}]}\n{"stage": "report", "rows": 9}'
    )

    def run(*f):
        return subprocess.run(
            [sys.executable, str(REPO / ".ci" / "summary_shape.py"), *map(str, f)], capture_output=True, text=True
        )

    ref = tmp_path / "shape.json"
    assert run("--write", ref, tmp_path / "main.json").returncode == 0
    assert json.loads(ref.read_text())[0] == {
        "stage": "embed",
        "paths": ["kinds", "kinds[]/k", "kinds[]/ok", "n", "stage"],
    }
    assert run("--golden", ref, tmp_path / "same.json").returncode == 0
    bad = run("--golden", ref, tmp_path / "lost.json")
    assert bad.returncode == 1 and "embed: only in main: kinds[]/ok" in bad.stderr


def test_the_committed_summary_shape_covers_the_pipeline_stages_in_order():
    ref = json.loads((REPO / ".ci" / "summary_shape.json").read_text())
    stages = [entry["stage"] for entry in ref]
    assert stages == ["ingest", "caption", "embed", "experiment", "recommend", "report"]  # cli.PIPELINE["all"]
    assert all("stage" in entry["paths"] and len(entry["paths"]) > 3 for entry in ref)
