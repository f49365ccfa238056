"""Rewrite the golden files from what meshcd renders now (`make golden`).

Run it on purpose, after a change in output you mean to make; then read the diff
(`git diff tests/golden`) - the expected files are the spec. It rewrites every case's
expected/<format>/ (the exports) and every suite folder (golden_cases.suites(): each case's
expected/plan/, validate/, rollout/, audit/). With names as arguments only those are
rewritten: a case name rewrites its exports and its plan, a suite folder just that folder.

It imports tests/support's helpers (the rollout playbook): `make golden` puts tests/support
on PYTHONPATH, as pytest's `pythonpath` does for the test.
"""

from __future__ import annotations

import shutil
import sys

from golden_cases import FORMATS, HERE, cases, rendered, suites


def _write(folder: str, files: dict[str, str]) -> None:
    base = HERE / folder
    if base.exists():
        shutil.rmtree(base)
    for rel, text in files.items():
        target = base / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def main(argv: list[str]) -> int:
    all_suites = suites()
    known = set(cases()) | set(all_suites)
    names = argv or [*cases(), *(s for s in all_suites if s.split("/")[0] not in cases())]
    unknown = sorted(set(names) - known)
    if unknown:
        print(f"regenerate: no such case or suite: {', '.join(unknown)}", file=sys.stderr)
        return 2
    for name in names:
        if name in all_suites:
            _write(name, all_suites[name]())
            print(f"regenerate: {name}")
            continue
        for fmt in FORMATS:
            _write(f"{name}/expected/{fmt}", rendered(name, fmt))
        plan_suite = f"{name}/expected/plan"
        if plan_suite in all_suites:
            _write(plan_suite, all_suites[plan_suite]())
        print(f"regenerate: {name}: {', '.join(FORMATS)}" + (", plan" if plan_suite in all_suites else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
