"""One error root per shipped part, one retry flag, one name per error.

- every exception class of `reconciler` derives from `reconciler.errors.MeshcdError`, every
  one of `proxy_runtime` from `proxy_runtime.errors.ProxyRuntimeError`, every refusal of
  `webhooks` from `Rejection`; each answers `temporary` with a bool (no `permanent`);
- no two exception classes share a name;
- nobody reads `temporary` by duck typing (`getattr(exc, "temporary", ...)`).
Private classes (a leading `_`) are control flow inside one module, not errors: exempt."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from proxy_runtime.errors import ProxyRuntimeError
from reconciler.errors import MeshcdError
from webhooks.errors import Rejection

ROOT = Path(__file__).resolve().parents[2]

# Deliberate separate roots, each a plain ValueError about one input: they never cross a
# retry decision or the HTTP mapping.
SEPARATE = {
    "webhooks.settings.ReceiverSettingsError",
    "webhooks.repo_url.InvalidRepoUrl",
}


def _modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue  # runs a CLI on import
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _exception_classes(package: str) -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules(package):
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == name and not obj.__name__.startswith("_")):
                found[f"{name}.{obj.__qualname__}"] = obj
    return [cls for qualname, cls in sorted(found.items()) if qualname not in SEPARATE]


def test_every_controller_error_derives_from_meshcd_error() -> None:
    strays = [f"{c.__module__}.{c.__qualname__}" for c in _exception_classes("reconciler")
              if not issubclass(c, MeshcdError)]
    assert not strays, strays


def test_every_proxy_runtime_error_derives_from_its_root() -> None:
    strays = [f"{c.__module__}.{c.__qualname__}" for c in _exception_classes("proxy_runtime")
              if not issubclass(c, ProxyRuntimeError)]
    assert not strays, strays


def test_every_webhook_error_is_a_rejection_with_temporary() -> None:
    classes = _exception_classes("webhooks")
    strays = [c.__qualname__ for c in classes if not issubclass(c, Rejection)]
    assert not strays, strays
    assert all(isinstance(c.temporary, bool) for c in classes)  # type: ignore[attr-defined]
    assert not [c.__qualname__ for c in classes if hasattr(c, "permanent")]


def test_temporary_is_a_bool_everywhere() -> None:
    for package in ("reconciler", "proxy_runtime"):
        for cls in _exception_classes(package):
            assert isinstance(getattr(cls, "temporary", None), bool), cls


def test_no_two_exception_classes_share_a_name() -> None:
    seen: dict[str, str] = {}
    clashes = []
    for package in ("reconciler", "proxy_runtime", "webhooks"):
        for cls in _exception_classes(package):
            where = f"{cls.__module__}.{cls.__qualname__}"
            if cls.__name__ in seen:
                clashes.append((seen[cls.__name__], where))
            seen.setdefault(cls.__name__, where)
    assert not clashes, clashes


def test_nobody_reads_temporary_by_duck_typing() -> None:
    pattern = re.compile(r"getattr\([^)]*[\"']temporary[\"']")
    readers = []
    for package in ("reconciler", "proxy_runtime", "webhooks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if pattern.search(path.read_text()):
                readers.append(rel)
    assert not readers, readers


def test_webhook_refusals_keep_their_retry_meaning() -> None:
    # was `permanent = False` on exactly these three: a retry of the same request may pass
    classes = _exception_classes("webhooks")
    temporary = sorted(c.__name__ for c in classes if c.temporary)  # type: ignore[attr-defined]
    assert temporary == ["BodyTimeout", "ClientGone", "NotConfigured"]
