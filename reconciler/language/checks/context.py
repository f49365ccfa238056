"""What every check pass shares: the model, indexes built once, and the findings list."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reconciler.language import codes
from reconciler.language.findings import Finding, Location
from reconciler.language.model import ConfigModel, Resource, Service, ServiceRef

STRICT = "STRICT"


class LocalMemo:
    """Findings of the parts of each resource's checks that depend only on the resource (and
    on a small token of context, such as the set of namespaces), by resource identity.

    The validation cache hands back the very same Resource objects for files that did not
    change, so on the next commit only new or changed resources are checked again (checks
    that depend on other resources in detail always run). Entries hold their resource, so an
    id is never reused while its entry lives; like the validation cache, entries touched in
    the last two runs are kept. Concurrent runs are safe: an entry is used only for the
    identical object and an equal token.
    """

    def __init__(self) -> None:
        self._current: dict[tuple[int, str], _Entry] = {}
        self._previous: dict[tuple[int, str], _Entry] = {}

    def get(self, resource: Resource, tag: str, token: object = None) -> tuple[Finding, ...] | None:
        key = (id(resource), tag)
        hit = self._current.get(key) or self._previous.get(key)
        if hit is None or hit[0] is not resource or hit[1] != token:
            return None
        self._current[key] = hit
        return hit[2]

    def put(self, resource: Resource, tag: str, token: object, findings: tuple[Finding, ...]) -> None:
        self._current[(id(resource), tag)] = (resource, token, findings)

    def end_run(self) -> None:
        self._previous, self._current = self._current, {}

    def __len__(self) -> int:
        return len(self._current.keys() | self._previous.keys())


_Entry = tuple[Resource, object, tuple[Finding, ...]]
MEMO = LocalMemo()


class CheckContext:
    """Indexes over one model. Built in one pass; every lookup afterwards is a dict hit."""

    def __init__(
        self,
        model: ConfigModel,
        memo: LocalMemo | None = None,
        *,
        rejected_kinds: frozenset[str] = frozenset(),
    ) -> None:
        self.model = model
        self.rejected_kinds = rejected_kinds
        self.memo = memo if memo is not None else LocalMemo()
        self.findings: list[Finding] = []
        self.mesh = model.mesh
        self.mesh_mtls = self.mesh.mtls.mode if self.mesh else STRICT
        self.root_namespace = self.mesh.root_namespace if self.mesh else "meshcd-system"
        self.default_deny = bool(self.mesh and self.mesh.default_deny)
        # (namespace, name) -> the set of port numbers / subset names (first Service wins).
        self.port_numbers: dict[tuple[str, str], frozenset[int]] = {}
        self.subset_names: dict[tuple[str, str], frozenset[str]] = {}
        self.services_in_ns: dict[str, list[Service]] = {}
        for key, svc in model.services_by_key.items():
            self.port_numbers[key] = frozenset(p.number for p in svc.ports)
            self.subset_names[key] = frozenset(s.name for s in svc.subsets)
            self.services_in_ns.setdefault(svc.namespace, []).append(svc)
        # Effective inbound mTLS mode of each service: the service's TrafficPolicy overrides
        # the Mesh; `weakest_mtls` also considers per-subset overrides (a subset that accepts
        # plaintext makes principal matching meaningless for that subset's endpoints).
        self.mtls_mode: dict[tuple[str, str], str] = {}
        self.weakest_mtls: dict[tuple[str, str], str] = {}
        for key, tps in model.traffic_policies_by_service.items():
            tp = tps[0]
            mode = tp.mtls.mode if tp.mtls else self.mesh_mtls
            self.mtls_mode[key] = mode
            weakest = mode
            for sp in tp.subsets:
                if sp.mtls and sp.mtls.mode != STRICT:
                    weakest = sp.mtls.mode
            self.weakest_mtls[key] = weakest

    def add(self, code: str, message: str, location: Location) -> None:
        self.findings.append(codes.finding(code, message, location))

    def local(
        self, resource: Resource, run: Callable[[], None], tag: str = "", token: object = None
    ) -> None:
        """Run `run` (checks of `resource` that depend on nothing else but `token`) unless the
        memo already has its findings for this very object and an equal token."""
        hit = self.memo.get(resource, tag, token)
        if hit is None:
            start = len(self.findings)
            run()
            self.memo.put(resource, tag, token, tuple(self.findings[start:]))
        else:
            self.findings.extend(hit)

    def at(self, resource: Resource, *path: str | int) -> Location:
        """The location of `spec.<path>` in `resource` (nearest ancestor that has one)."""
        return resource.loc(("spec", *path))

    def service(self, ref: ServiceRef) -> Service | None:
        return self.model.services_by_key.get(ref.key)

    def effective_mtls(self, key: tuple[str, str]) -> str:
        """The weakest inbound mTLS mode anywhere on this service."""
        return self.weakest_mtls.get(key, self.mesh_mtls)


def where(loc: Location) -> str:
    """`file:line` for messages that point at another place."""
    return f"{loc.file}:{loc.line}" if loc.line else loc.file


def names(items: Sequence[object], limit: int = 3) -> str:
    """`a, b, c and 4 more`: short lists in messages."""
    shown = ", ".join(str(i) for i in items[:limit])
    more = len(items) - limit
    return f"{shown} and {more} more" if more > 0 else shown
