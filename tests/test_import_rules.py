"""The library's layering rules, read from the source (no mocks: the files as they are)."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tokenize
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "captionrec"
HELPERS = ("captionrec.testing", "captionrec.sample")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 80


def _modules():
    for path in sorted(LIB.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _imports(tree: ast.AST, package: str = ""):
    """(module name, enclosing function or None) of every import, at any depth. `from a import b` gives `a` and
    `a.b` (b may be a module); a relative import is resolved against `package` (the importing file's package)."""

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def walk(node, func):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Import):
                yield from ((a.name, func) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = resolve(child)
                if module:
                    yield module, func
                yield from ((f"{module}.{a.name}".lstrip("."), func) for a in child.names if a.name != "*")
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
    offenders = [
        f"{path.relative_to(LIB)}: {name}"
        for path, tree in _modules()
        if path.relative_to(LIB).parts[0] in ("captioning", "features", "media", "models")
        for name, _ in _imports(tree)
        if name.split(".")[0] == "pyspark"
    ]
    assert offenders == []


def test_stages_load_without_test_helpers():
    code = (
        "import sys, json, captionrec.cli, captionrec.pipeline.caption, captionrec.pipeline.embed; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('captionrec.testing', "
        "'captionrec.sample', 'pyspark.sql.session')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []  # no helper, and no SparkSession at import time


def test_report_and_analysis_use_evaluation_without_torch():
    """evaluation's numpy half (metrics, bootstrap) loads without its torch half (ranking): the report stage never
    imports torch."""
    code = (
        "import sys, captionrec.report.build, captionrec.analysis.core, captionrec.evaluation as e; "
        "e.cluster_bootstrap, e.summarize_ranks, e.mean_std; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def code_lines(source: str, tree: ast.AST) -> set[int]:
    """The lines that hold code: not blank, not only a comment, not a docstring, not only closing brackets.

    What the formatter adds when it lays a long call out one argument per line is its closing-bracket lines; those,
    like comments and docstrings, don't make code harder to read, so they don't count toward the limits.
    """
    docs = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docs.update(range(first.lineno, first.end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip or (tok.type == tokenize.OP and tok.string in ")]},"):
            continue
        lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return lines


def test_code_lines_count_code_only():
    src = 'def f(a):\n    """Doc\n    string."""\n    # a comment\n\n    return g(\n        a,\n    )\n'
    assert sorted(code_lines(src, ast.parse(src))) == [1, 6, 7]


def test_files_and_functions_stay_readable():
    """No file under lib/ over 500 code lines (the sample generator and its topic tables excepted), no function over
    80 (code lines: `code_lines`)."""
    long_files, long_functions = [], []
    for path, tree in _modules():
        rel = path.relative_to(LIB).as_posix()
        lines = code_lines(path.read_text(), tree)
        if len(lines) > MAX_FILE_LINES and rel not in ("sample/generate.py", "sample/topics.py"):
            long_files.append(f"{rel}: {len(lines)}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = sum(node.lineno <= n <= node.end_lineno for n in lines)
                if size > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {size}")
    assert long_files == [] and long_functions == []


# ------------------------------------------------------------------------------------ the package graph
# Nodes: captionrec's first-level packages and top-level modules (contracts.py, cli.py, paths.py); an edge
# a -> b: a file of a imports something of b, at module level or inside a function.

# The layering, top to bottom: a package imports only packages of the layers below its own (never one of its
# own layer, never one above). Every package and top-level module must be listed.
LAYERS = (
    ("cli",),  # the console script: argv -> config -> pipeline.<stage>.run (and the sample / tiny-models tools)
    ("sample", "testing"),  # repo tools: only cli.main imports them (test_production_code_never_imports...)
    ("pipeline",),  # one recipe per stage
    ("report",),  # the report stage's library: shows the analysis' sections
    ("analysis",),  # caption-quality numbers (the report's sections)
    ("transforms",),  # every stage's Spark transforms (train inputs use training's windows and loaders)
    ("serving",),  # the recommend stage's item index and MLflow pyfunc model
    ("ingest", "training"),  # sources and probing (Spark UDFs); the pure-torch loop (its launch checks spark.cluster)
    ("features",),  # embed rows and encoders (encoders load through inference's refs, models and shims)
    ("captioning", "spark", "tables", "tracking", "models", "evaluation"),  # kinds; Spark plumbing; Delta; MLflow;
    # recommenders; ranking metrics and the bootstrap
    ("inference", "media"),  # model references and batching; PyAV decoding
    ("config", "paths"),
    ("contracts",),  # names, schemas and vocabularies every layer shares
)


def _node(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _nodes() -> set[str]:
    """captionrec's first-level packages and top-level modules (the root __init__ is not one)."""
    return {
        _node(p.relative_to(LIB))
        for p in LIB.glob("*")
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()
    }


def _package_graph() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> the imports that make the edge ('file: module (in function)')."""
    nodes = _nodes()
    edges: dict[tuple[str, str], list[str]] = {}
    for path, tree in _modules():
        rel = path.relative_to(LIB)
        src = _node(rel)
        if src == "__init__":  # the root package imports nothing of its own
            continue
        package = ".".join(("captionrec", *rel.parts[:-1]))
        for name, func in _imports(tree, package):
            parts = name.split(".")
            if parts[0] != "captionrec" or len(parts) < 2 or parts[1] not in nodes or parts[1] == src:
                continue
            edges.setdefault((src, parts[1]), []).append(f"{rel.as_posix()}: {name} (in {func or 'module'})")
    return edges


def _cycles(edges) -> list[list[str]]:
    """One cycle (a, b, ..., a) per strongly connected component of more than one node (Tarjan)."""
    succ: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        succ.setdefault(a, []).append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in succ.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return [_cycle_in(sorted(c)[0], c, succ) for c in comps]


def _cycle_in(start: str, comp: set[str], succ: dict[str, list[str]]) -> list[str]:
    """The shortest cycle through `start` within its component (breadth first)."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in succ.get(v, []):
            if w == start:
                return paths[v] + [start]
            if w in comp and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def test_cycle_finder_names_a_cycle():
    edges = {("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): [], ("d", "e"): [], ("e", "d"): []}
    assert sorted(_cycles(edges)) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    assert _cycles({("a", "b"): [], ("b", "c"): [], ("a", "c"): []}) == []


def test_no_import_cycle_between_packages():
    """Issue 23: packages import each other in one direction only, imports inside functions included."""
    edges = _package_graph()
    found = []
    for cycle in _cycles(edges):
        hops = [f"  {a} -> {b}: " + "; ".join(edges[(a, b)][:2]) for a, b in zip(cycle, cycle[1:])]
        found.append(" -> ".join(cycle) + "\n" + "\n".join(hops))
    assert not found, "import cycles between packages:\n" + "\n".join(found)


def test_imports_point_downwards_only():
    """The README's rule: a package imports only packages of the layers below its own (LAYERS)."""
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    assert sorted(_nodes() - set(layer)) == [], "a package missing from LAYERS: place it in a layer"
    upward = [
        f"{a} -> {b}: {'; '.join(where[:2])}"
        for (a, b), where in sorted(_package_graph().items())
        if layer[b] <= layer[a]
    ]
    assert upward == [], "imports that do not point downwards:\n" + "\n".join(upward)


def test_test_file_names_are_unique():
    """pytest imports tests/<package>/test_x.py as the top-level module test_x (no __init__.py): two files of one
    name in two folders break collection of the whole suite."""
    import collections

    names = collections.Counter(p.name for p in (LIB.parents[1] / "tests").rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], names.most_common(3)
