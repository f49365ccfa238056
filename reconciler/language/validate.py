"""The validation pipeline: source -> loader -> envelope -> schema -> model -> semantic checks.

    result = validate(DirectorySource("repo"))  # or reconciler.source.GitTreeSource(repo, "main")
    result.findings   # sorted by file, line, column, code
    result.model      # ConfigModel of every document that passed all per-file stages

Per-file work (parse, envelope, schema, build) is cached by (path, blob id, limits) in a
`ValidationCache`, so validating the next commit re-parses only the blobs that changed; the
model and the semantic checks are redone over the whole repo each time.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass, field

from reconciler.language.build import build_resource
from reconciler.language.codes import finding
from reconciler.language.findings import Finding, Location, Severity
from reconciler.language.loader import LoadLimits, load_yaml
from reconciler.language.model import ConfigModel, Resource
from reconciler.language.schema import check_envelope, check_schema
from reconciler.language.sources import Source, SourceFile

ValidateOptions = LoadLimits  # the knobs of a run: size, document and node limits
FREEZE_AFTER_FILES = 200  # see validate(): a load this big is frozen out of the cyclic GC


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one file yields, independent of every other file (so it can be cached)."""

    path: str
    key: str
    documents: int  # documents loaded (for the per-repo limit)
    resources: tuple[Resource, ...]
    findings: tuple[Finding, ...]
    # Kinds of documents that failed the per-file stages: a check must not report such a
    # resource as missing (a Mesh with a bad field is not "no Mesh").
    rejected_kinds: frozenset[str] = frozenset()


def process_file(sf: SourceFile, limits: LoadLimits) -> FileResult:
    """Load one file and run the per-document stages on it."""
    size = sf.size
    if size > limits.max_file_size:
        return FileResult(sf.path, sf.key, 0, (), (finding(
            "MCD006",
            f"file is {size} bytes, more than the limit of {limits.max_file_size} bytes; not read",
            Location(sf.path),
        ),))
    docs, found = load_yaml(sf.path, sf.data, limits)
    resources: list[Resource] = []
    rejected: set[str] = set()
    for doc in docs:
        kind, env = check_envelope(doc)
        schema_errors = check_schema(doc, kind) if kind is not None else []
        found.extend(env)
        found.extend(schema_errors)
        if not env and not schema_errors:
            resources.append(build_resource(doc.data, doc.positions, doc.index))
        elif kind is not None:
            rejected.add(kind)
    return FileResult(
        sf.path, sf.key, len(docs), tuple(resources), tuple(found), frozenset(rejected)
    )


class ValidationCache:
    """Per-file results by (path, blob id, limits).

    An entry survives while it was used by one of the last two runs, so alternating between
    two revisions (a plan compares old and new) stays warm and memory stays bounded.
    `parsed` counts files actually processed (cache misses), for tests and benchmarks.
    Not thread-safe: give each thread its own, or validate from one thread."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, LoadLimits], tuple[FileResult, int]] = {}
        self._run = 0
        self.parsed = 0
        self.hits = 0

    def get(self, sf: SourceFile, limits: LoadLimits) -> FileResult:
        key = (sf.path, sf.key, limits)
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            result = entry[0]
        else:
            self.parsed += 1
            result = process_file(sf, limits)
        self._entries[key] = (result, self._run)
        return result

    def end_run(self) -> None:
        keep_from = self._run - 1
        self._entries = {k: v for k, v in self._entries.items() if v[1] >= keep_from}
        self._run += 1

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class ValidationResult:
    """`model` holds every resource whose document passed the per-file stages (even when
    other documents failed), so a summary can still be shown; act on it only when `ok`."""

    model: ConfigModel
    findings: tuple[Finding, ...]
    files: int = 0
    documents: int = 0
    source: str = ""
    file_results: tuple[FileResult, ...] = field(default=(), repr=False)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not any(f.severity is Severity.ERROR for f in self.findings)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(set(findings), key=lambda f: (*f.sort_key(), f.message))


def validate(
    source: Source,
    cache: ValidationCache | None = None,
    options: LoadLimits | None = None,
) -> ValidationResult:
    """Validate everything `source` holds. Raises `ConfigReadError` only when the source as a
    whole cannot be read; every problem inside it is a finding."""
    limits = options or LoadLimits()
    cache = cache if cache is not None else ValidationCache()
    findings: list[Finding] = []
    resources: list[Resource] = []
    results: list[FileResult] = []
    documents = 0
    rejected_kinds: set[str] = set()
    over_limit = False
    parsed_before = cache.parsed
    # A cold load builds millions of long-lived objects. Python's cyclic GC would re-scan them
    # again and again while they pile up (half the CPU time of a cold run), and the checks'
    # allocations would trigger full collections over all of them. So the GC is paused for
    # the run, and after a big load the survivors are moved to the permanent generation
    # (gc.freeze): they are data without reference cycles, freed by reference counting when
    # the cache drops them, and no later collection needs to scan them.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for item in source.files(limits.max_file_size):
            if isinstance(item, Finding):
                findings.append(item)
                continue
            fr = cache.get(item, limits)
            results.append(fr)
            findings.extend(fr.findings)
            if over_limit:
                continue
            documents += fr.documents
            if documents > limits.max_documents_per_repo:
                over_limit = True
                findings.append(finding(
                    "MCD008",
                    f"more than {limits.max_documents_per_repo} documents in the repo; this file "
                    "and the rest are not loaded",
                    Location(item.path),
                ))
                continue
            resources.extend(fr.resources)
            rejected_kinds |= fr.rejected_kinds
        model = ConfigModel.from_resources(resources)
        from reconciler.language.checks import run_checks  # here: the checks import the model

        findings.extend(run_checks(model, rejected_kinds=frozenset(rejected_kinds)))
    finally:
        cache.end_run()
        if gc_was_enabled:
            if cache.parsed - parsed_before >= FREEZE_AFTER_FILES:
                gc.freeze()
            gc.enable()
    return ValidationResult(
        model=model,
        findings=tuple(sort_findings(findings)),
        files=len(results),
        documents=documents,
        source=source.describe(),
        file_results=tuple(results),
    )
