"""Rewrite tests/golden/*/expected/ from what meshcd renders now (`make golden`).

Run it on purpose, after a change in output you mean to make; then read the diff
(`git diff tests/golden`) - the expected files are the spec. With case names as arguments
only those cases are rewritten.
"""

from __future__ import annotations

import shutil
import sys

from golden_cases import FORMATS, HERE, cases, rendered


def main(argv: list[str]) -> int:
    names = argv or cases()
    unknown = sorted(set(names) - set(cases()))
    if unknown:
        print(f"regenerate: no such case: {', '.join(unknown)}", file=sys.stderr)
        return 2
    for case in names:
        for fmt in FORMATS:
            base = HERE / case / "expected" / fmt
            if base.exists():
                shutil.rmtree(base)
            for rel, text in rendered(case, fmt).items():
                target = base / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        print(f"regenerate: {case}: {', '.join(FORMATS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
