"""Generated blocks in README.md: text between ``<!-- KIND:NAME -->`` and ``<!-- /KIND -->`` that a script writes.

A block is everything from its opening marker's line to the next closing marker's line (it may be empty). The
scripts that own a kind of block (``demo_results.py``: ``demo-results``; ``benchmark_results.py``:
``benchmark-results``) render their blocks from committed results, and their ``check`` fails when README.md holds
anything else, so a figure in a generated block is never typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _pattern(kind: str) -> re.Pattern:
    return re.compile(rf"(^<!-- {kind}:(\w+) -->\n)((?:(?!<!-- /?{kind}).*\n)*?)(^<!-- /{kind} -->$)", re.MULTILINE)


def rendered(text: str, kind: str, blocks: dict[str, str]) -> str:
    """``text`` with every ``kind`` block replaced by ``blocks[name]``."""
    return _pattern(kind).sub(lambda match: match[1] + blocks[match[2]] + "\n" + match[4], text)


def render(kind: str, blocks: Callable[[], dict[str, str]]) -> None:
    README.write_text(rendered(README.read_text(), kind, blocks()))


def check(kind: str, blocks: Callable[[], dict[str, str]], fix: str) -> int:
    """0 when README.md's ``kind`` blocks are exactly what rendering writes; else 1 with a line saying what to run."""
    text, generated = README.read_text(), blocks()
    names = {match[2] for match in _pattern(kind).finditer(text)}
    if names != set(generated):
        print(f"README.md has {kind} blocks {sorted(names)}, expected {sorted(generated)}")
        return 1
    if rendered(text, kind, generated) != text:
        print(f"README.md's {kind} blocks differ from the committed results: run `{fix}`")
        return 1
    return 0
