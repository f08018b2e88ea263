"""The library's layering rules, read from the source (no mocks: the files as they are)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "captionrec"
HELPERS = ("captionrec.testing", "captionrec.sample")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 80


def _modules():
    for path in sorted(LIB.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _imports(tree: ast.AST):
    """(module name, enclosing function or None) of every import, at any depth."""
    def walk(node, func):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Import):
                yield from ((a.name, func) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                yield child.module, func
            yield from walk(child, inner)

    yield from walk(tree, None)


def test_production_code_never_imports_test_helpers_or_the_sample_generator():
    """Only testing/ and sample/ themselves, and the `tiny-models` / `sample` commands of cli.main, may."""
    offenders = []
    for path, tree in _modules():
        rel = path.relative_to(LIB).as_posix()
        if rel.startswith(("testing/", "sample/")):
            continue
        for name, func in _imports(tree):
            if name.startswith(HELPERS) and not (rel == "cli.py" and func == "main"):
                offenders.append(f"{rel}: {name} (in {func or 'module'})")
    assert offenders == []


def test_model_wrappers_and_media_never_import_spark():
    offenders = [f"{path.relative_to(LIB)}: {name}" for path, tree in _modules()
                 if path.relative_to(LIB).parts[0] in ("captioning", "features", "media", "models")
                 for name, _ in _imports(tree) if name.split(".")[0] == "pyspark"]
    assert offenders == []


def test_stages_load_without_test_helpers():
    code = ("import sys, json, captionrec.cli, captionrec.pipeline.caption, captionrec.pipeline.embed; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('captionrec.testing', "
            "'captionrec.sample', 'pyspark.sql.session')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []  # no helper, and no SparkSession at import time


def test_files_and_functions_stay_readable():
    """No file under lib/ over 500 lines (the sample generator excepted), no function over 80 lines."""
    long_files, long_functions = [], []
    for path, tree in _modules():
        rel = path.relative_to(LIB).as_posix()
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES and rel != "sample/generate.py":
            long_files.append(f"{rel}: {n}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {size}")
    assert long_files == [] and long_functions == []
