"""Assemble a report: sections -> report.md, report.html (self-contained), <table>.csv, plots/*.png."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionrec import contracts as C
from captionrec.report.cold import cold_section  # noqa: F401 - registers the "cold" section
from captionrec.report.cost import cost_section  # noqa: F401 - registers the "cost" section
from captionrec.report.render import esc, page
from captionrec.report.runs import RunSet, read_runs
from captionrec.report.sections import ReportContext, Section, build_sections
from captionrec.report.served import served_section  # noqa: F401 - registers the "served" section
from captionrec.report.tuning import tuning_section  # noqa: F401 - registers the "tuning" section

GALLERY_FILE = "gallery.html"


@dataclass
class ReportFiles:
    out_dir: Path
    markdown: Path
    html: Path
    csv: Path
    tables: dict[str, Path] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    gallery: Path | None = None

    def all(self) -> list[Path]:
        files = [self.markdown, self.html, *self.tables.values(), *self.plots.values()]
        return files + ([self.gallery] if self.gallery else [])


def feature_order(runset: RunSet) -> list[str]:
    """Feature sets in the grid's order (its plan), then the contract's order, then the rest."""
    planned = [c["features"] for c in runset.plan.get("children", [])]
    known = [*planned, *C.TRAIN_FEATURE_SETS, *sorted(set(runset.runs["features"]))]
    return list(dict.fromkeys(known))


def load(tracking: Any, rc: Any) -> RunSet:
    """The runs a report config points at (tracking: TrackingConfig, rc: ReportConfig)."""
    return read_runs(tracking.tracking_uri, tracking.experiment, tuple(rc.metrics), rc.parent_run_id, rc.filter)


def context(runset: RunSet, rc: Any, **extras: Any) -> ReportContext:
    return ReportContext(config=rc, runset=runset, order=feature_order(runset), extras=extras)


def out_folder(root: str | Path, runset: RunSet, rc: Any) -> Path:
    if runset.parent:
        name = runset.parent["run_id"]
    else:
        name = "filter-" + hashlib.sha256(str(rc.filter).encode()).hexdigest()[:10]
    return Path(root) / name


def write_report(ctx: ReportContext, out_dir: Path, gallery_html: str | None = None, title: str = "") -> ReportFiles:
    """Build the configured sections and write every file; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = build_sections(ctx, tuple(ctx.config.sections))
    rs = ctx.runset
    title = title or ("captionrec report: " + (rs.parent["name"] if rs.parent else "runs matching a filter"))
    files = ReportFiles(out_dir, out_dir / "report.md", out_dir / "report.html", out_dir / "report.csv")
    for s in sections:
        for name, frame in s.tables.items():
            path = out_dir / f"{name}.csv"
            frame.to_csv(path, index=False)
            files.tables[name] = path
        for name, png in s.figures.items():
            path = out_dir / "plots" / f"{name}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(png)
            files.plots[name] = path
    if "report" not in files.tables:  # the table section is off or empty: still write the table file
        ctx.table.to_csv(files.csv, index=False)
        files.tables["report"] = files.csv
    links_md, links_html = "", ""
    if gallery_html is not None:
        files.gallery = out_dir / GALLERY_FILE
        files.gallery.write_text(gallery_html, encoding="utf-8")
        links_md = f"Caption gallery: [{GALLERY_FILE}]({GALLERY_FILE})\n\n"
        links_html = f'<p>Caption gallery: <a href="{GALLERY_FILE}">{GALLERY_FILE}</a></p>'
    md = f"# {title}\n\n{links_md}" + "".join(f"## {s.title}\n\n{s.markdown}\n" for s in sections)
    files.markdown.write_text(md, encoding="utf-8")
    body = links_html + "".join(
        f'<section id="{esc(s.key)}"><h2>{esc(s.title)}</h2>\n{s.html}</section>\n' for s in sections
    )
    files.html.write_text(page(title, body), encoding="utf-8")
    return files


def update_latest(out_dir: Path) -> Path:
    """<out_dir's parent>/latest -> out_dir (a relative symlink), so the newest report has a stable path."""
    link = out_dir.parent / "latest"
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a symlink; remove it or pick another report.out_dir")
        link.unlink()
    link.symlink_to(out_dir.name, target_is_directory=True)
    return link


def log_to_parent(runset: RunSet, files: ReportFiles) -> str | None:
    """Log the report's files as artifacts of the grid run (under `report/`); returns the artifact URI."""
    if not runset.parent:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(runset.tracking_uri)
    run_id = runset.parent["run_id"]
    for path in files.all():
        rel = path.relative_to(files.out_dir).parent
        dest = C.REPORT_ARTIFACTS if str(rel) == "." else f"{C.REPORT_ARTIFACTS}/{rel.as_posix()}"
        client.log_artifact(run_id, str(path), dest)
    return f"{client.get_run(run_id).info.artifact_uri}/{C.REPORT_ARTIFACTS}"
