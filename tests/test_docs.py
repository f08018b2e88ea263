"""The README is a map and docs/ holds the rest: the README's size, every docs page reachable from it, every relative
link (and #anchor) resolving, and every command the pages show being one that works: `captionrec <stage>
key=value ...` (and `jobs/<stage>.py ...`) parsed by the CLI's own parser and loaded by the config loader (nothing
runs), `make <target>` naming a Makefile target."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 160
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"<[^<>\n]*>")
COMMAND = re.compile(r"(^|[\s;&(])(\.venv/bin/)?captionrec\s|jobs/\w+\.py")
NOT_CONFIG_COMMANDS = ("sample", "tiny-models")  # helpers with options of their own


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """The text outside fenced code blocks (links in code are not links)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", _prose(path.read_text()), re.M)}


def _links(path: Path) -> list[str]:
    """Relative link targets outside code (a fenced block or an inline span renders no link)."""
    text = CODE_SPAN.sub("", _prose(path.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def _code_lines(text: str) -> list[str]:
    """Command-like lines: each fenced block's lines (backslash continuations joined), and inline code spans."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    lines += CODE_SPAN.findall(_prose(text))
    return [ln.strip() for ln in lines if ln.strip()]


def _argv(line: str) -> list[str] | None:
    """`captionrec <command> ...` or `... jobs/<stage>.py ...` as the CLI's argv (placeholders filled), else None."""
    if not COMMAND.search(line):
        return None
    words = shlex.split(PLACEHOLDER.sub("x", line), comments=True)
    for i, word in enumerate(words):
        if word in ("captionrec", ".venv/bin/captionrec"):
            return [w for w in words[i + 1 :] if w != "..."]  # "..." stands for any further arguments
        m = re.fullmatch(r"(?:local://)?(?:/opt/captionrec/)?jobs/(\w+)\.py", word)
        if m:
            return [m.group(1), *(w for w in words[i + 1 :] if w != "...")]
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    out = []
    for path in pages():
        for line in _code_lines(path.read_text()):
            argv = _argv(line)
            if argv and argv[0] not in (*NOT_CONFIG_COMMANDS, "x"):  # "x": a placeholder (`captionrec <stage>`)
                out.append((f"{path.relative_to(REPO)}: {line}", argv))
    return out


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    targets = set()
    for m in re.finditer(r"^([A-Za-z0-9_.\- ]+):(?!=)", text, re.M):
        targets.update(m.group(1).split())
    return targets


def documented_make_targets() -> list[tuple[str, str]]:
    out = []
    for path in pages():
        for line in _code_lines(path.read_text()):
            code = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]  # not the comment
            for m in re.finditer(r"(?:^|[;&|(]\s*)make ([^;&|)]*)", code):
                for word in m.group(1).split():
                    if "=" in word or word.startswith("-") or "<" in word:
                        continue
                    out.append((f"{path.relative_to(REPO)}: {line}", word))
    return out


def test_readme_is_a_map():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    headings = [ln for ln in lines if ln.startswith("## ")]
    assert headings[0].startswith("## Two commands") and "## Layout" in headings
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.split("#")[0]).resolve() for t in _links(README) if t.split("#")[0]}
    pages_ = sorted(DOCS.glob("*.md"))
    assert len(pages_) >= 6
    missing = [p.name for p in pages_ if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, broken


def test_the_link_checker_finds_broken_links(tmp_path):
    """The helpers the checks above use: a link inside a code block is no link, a heading's anchor is GitHub's."""
    page = tmp_path / "p.md"
    page.write_text(
        "# Run with spark-submit\n## Test against the runtime's libraries\n[a](x.md#y) `[b](c)`\n"
        "```\n[not](a-link.md)\n```\n[web](https://example.com)\n"
    )
    assert _links(page) == ["x.md#y"]
    assert _anchors(page) == {"run-with-spark-submit", "test-against-the-runtimes-libraries"}


def test_every_documented_captionrec_command_loads_its_config():
    """Each `captionrec <command> ...` / `jobs/<stage>.py ...` line in README and docs/ parses with the CLI's parser
    and its overrides load through the config loader (with its --profile; `--conf` files are examples, left out)."""
    from captionrec import cli
    from captionrec.config import ConfigError, load_config

    commands = documented_commands()
    assert len(commands) >= 20 and any(argv[0] == "train" for _, argv in commands)
    bad = []
    for where, argv in commands:
        try:
            args = cli._parser().parse_intermixed_args(argv)
        except SystemExit:
            bad.append(f"{where}: not a CLI command line")
            continue
        try:
            load_config(args.profile, args.overrides, stage=args.command if args.command in cli.STAGES else None)
        except ConfigError as exc:
            bad.append(f"{where}: {exc}")
    assert not bad, "\n".join(bad)


def test_a_wrong_documented_command_is_caught():
    from captionrec import cli
    from captionrec.config import ConfigError, load_config

    argv = _argv("captionrec train modle=sasrec   # a typo")
    assert argv == ["train", "modle=sasrec"]
    args = cli._parser().parse_intermixed_args(argv)
    with pytest.raises(ConfigError, match="modle"):
        load_config(args.profile, args.overrides, stage=args.command)
    assert _argv("spark-submit --master x jobs/embed.py --profile cluster a=<b c>") == [
        "embed",
        "--profile",
        "cluster",
        "a=x",
    ]


def test_every_documented_make_target_exists():
    targets = makefile_targets()
    assert {"demo", "test", "install"} <= targets
    named = documented_make_targets()
    assert {t for _, t in named} >= {"demo", "test"}
    missing = [f"{where}: make {t}" for where, t in named if t not in targets]
    assert not missing, "\n".join(missing)
