"""README and docs say only what exists: every local link (file and #anchor) resolves, and every
`rftt` subcommand and flag they show is one that the command line accepts."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from rftt_plugin.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").rglob("*.md")])
GLOBAL_FLAGS = {"--help", "-h", "--version", "-V", "--debug"}

LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE_RE = re.compile(r"^\s*(```|~~~)")


def _prose_and_code(text: str) -> tuple[list[str], list[str]]:
    """(lines outside fenced code, lines inside), with backslash continuations of code joined."""
    prose, code, inside, pending = [], [], False, ""
    for line in text.splitlines():
        if FENCE_RE.match(line):
            inside = not inside
            continue
        if not inside:
            prose.append(line)
        elif line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            code.append(pending + line)
            pending = ""
    return prose, code


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    prose, _ = _prose_and_code(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path):
    prose, _ = _prose_and_code(path.read_text(encoding="utf-8"))
    for line in prose:
        for target in LINK_RE.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            yield target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_local_links_resolve(page):
    broken = []
    for target in _links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


# ----------------------------------------------------------------------------------------------
# rftt subcommands and flags
# ----------------------------------------------------------------------------------------------

def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}  # noqa: SLF001 - argparse has no public list


def _parsers() -> dict[str, set[str]]:
    """``{"eval": {...flags}, "data rl": {...}, ...}`` from the real argument definitions."""
    out: dict[str, set[str]] = {}
    for name, (module, _help) in COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"rftt {name}")
        importlib.import_module(f"rftt_plugin.commands.{module}").add_arguments(parser)
        out[name] = _options(parser)
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001 - `rftt data rl`
                for sub_name, sub in action.choices.items():
                    out[f"{name} {sub_name}"] = _options(sub) | out[name]
    return out


# `rftt` as a command word: not rftt-plugin, rftt_plugin, rftt.search, +recipe=rftt, $RFTT, ...
COMMAND_RE = re.compile(r"(?<![\w.=+/$-])rftt((?:\s+-[-\w]+)*)\s+([a-z][a-z-]*)((?:\s+[^\s`|;&]+)*)")


def _command_uses(page: Path):
    """(subcommand, flags) for every `rftt ...` in code: fenced blocks and inline code spans."""
    prose, code = _prose_and_code(page.read_text(encoding="utf-8"))
    snippets = list(code) + [span for line in prose for span in re.findall(r"`([^`]+)`", line)]
    for snippet in snippets:
        snippet = snippet.split("#", 1)[0] if "rftt" in snippet.split("#", 1)[0] else snippet
        for m in COMMAND_RE.finditer(snippet):
            pre_flags = m.group(1).split()
            name = m.group(2)
            rest = m.group(3).split()
            if rest and f"{name} {rest[0]}" in PARSERS:
                name = f"{name} {rest[0]}"
            flags = {t.split("=", 1)[0] for t in rest if re.match(r"^--?[a-zA-Z]", t)}
            yield name, set(pre_flags), flags, snippet.strip()


PARSERS = _parsers()


def test_parsers_are_read():
    assert {"eval", "search", "gen-sft", "data rl", "show", "doctor"} <= set(PARSERS)
    assert "--source" in PARSERS["eval"] and "--iterations" in PARSERS["eval"] and "--out" in PARSERS["data rl"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_rftt_commands_and_flags_exist(page):
    problems = []
    for name, pre_flags, flags, snippet in _command_uses(page):
        if not pre_flags <= GLOBAL_FLAGS:
            problems.append(f"{snippet!r}: unknown global flag(s) {sorted(pre_flags - GLOBAL_FLAGS)}")
        if name.split()[0] not in COMMANDS:
            problems.append(f"{snippet!r}: no subcommand `rftt {name}`")
            continue
        unknown = flags - PARSERS[name] - GLOBAL_FLAGS
        if unknown:
            problems.append(f"{snippet!r}: `rftt {name}` has no {', '.join(sorted(unknown))}")
    assert not problems, f"{page.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_check_catches_what_it_should(tmp_path):
    """The two checks above fail on a broken link, a missing anchor, a made-up flag or command."""
    page = tmp_path / "p.md"
    page.write_text("# Top\n\n[a](nope.md) [b](#top) [c](#gone)\n\n```bash\nrftt eval --model m --made-up 1\n"
                    "rftt frobnicate --x\n```\n`rftt search --quiet`\n", encoding="utf-8")
    targets = list(_links(page))
    assert targets == ["nope.md", "#top", "#gone"] and _anchors(page) == {"top"}
    uses = {(name, frozenset(flags)) for name, _pre, flags, _s in _command_uses(page)}
    assert ("eval", frozenset({"--model", "--made-up"})) in uses
    assert ("frobnicate", frozenset({"--x"})) in uses and ("search", frozenset({"--quiet"})) in uses
    assert "--made-up" not in PARSERS["eval"] and "frobnicate" not in COMMANDS
