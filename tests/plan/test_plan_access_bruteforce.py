"""The grouped access-matrix diff equals a brute-force one: every identity, port, method class
and path class evaluated one by one at both revisions (small random repos)."""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy_runtime.config import compile_policies
from reconciler.language import model as sm
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from reconciler.plan import access as A
from reconciler.plan import access_diff

ROOT = Path(__file__).resolve().parents[2]


def _synth() -> Any:
    spec = importlib.util.spec_from_file_location("bench_synth", ROOT / "bench" / "synth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_synth"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> sm.ConfigModel:
    root = tmp_path_factory.mktemp("small")
    _synth().generate(root, services=12, routes=36, policies=30, seed=7)
    result = validate(DirectorySource(root))
    assert result.ok
    return result.model


def _principal(model: sm.ConfigModel, s: sm.Service) -> str:
    assert model.mesh is not None
    return model.mesh.principal(s.namespace, s.service_account)


def mutate(model: sm.ConfigModel, rng: random.Random) -> sm.ConfigModel:
    pols = list(model.authorization_policies)
    tps = list(model.traffic_policies)
    meshes = list(model.meshes)
    svcs = list(model.services)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["action", "principal", "path", "wildcard", "drop", "mtls", "tp", "method"])
        i = rng.randrange(len(pols))
        p = pols[i]
        rule = p.rules[0] if p.rules else sm.AuthorizationRule()
        src = rule.from_[0].source if rule.from_ else sm.RuleSource()
        op = rule.to[0].operation if rule.to else sm.RuleOperation()
        if kind == "action":
            pols[i] = dataclasses.replace(p, action=rng.choice(["ALLOW", "DENY", "AUDIT"]))
            continue
        if kind == "drop":
            pols.pop(i)
            continue
        if kind == "mtls":
            meshes[0] = dataclasses.replace(meshes[0], mtls=sm.MtlsSettings(rng.choice(["PERMISSIVE", "STRICT"])))
            continue
        if kind == "tp":
            s = rng.choice(svcs)
            tps.append(sm.TrafficPolicy(name=f"tp{rng.randrange(999)}", namespace=s.namespace, service=s.ref,
                                        mtls=sm.MtlsSettings(rng.choice(["DISABLE", "PERMISSIVE"]))))
            continue
        if kind == "principal":
            src = dataclasses.replace(src, principals=(*src.principals, _principal(model, rng.choice(svcs))))
        elif kind == "wildcard":
            src = dataclasses.replace(src, namespaces=(rng.choice(["*", f"{svcs[0].namespace[:2]}*"]),),
                                      principals=())
        elif kind == "path":
            op = dataclasses.replace(op, paths=(*op.paths, rng.choice(["/api/v1/*", "/beta*", "*.js", "/x"])))
        elif kind == "method":
            op = dataclasses.replace(op, not_methods=("PATCH",), methods=())
        new_rule = dataclasses.replace(rule, from_=(sm.RuleFrom(src),), to=(sm.RuleTo(op),))
        pols[i] = dataclasses.replace(p, rules=(new_rule, *p.rules[1:]))
    return dataclasses.replace(model, authorization_policies=tuple(pols), traffic_policies=tuple(tps),
                               meshes=tuple(meshes))


def brute_force(old: sm.ConfigModel, new: sm.ConfigModel) -> set[tuple[Any, ...]]:
    ev = A._Evaluator()
    idents = A.identities([old, new])
    out: set[tuple[Any, ...]] = set()
    refs = sorted({s.ref for m in (old, new) for s in m.services_by_key.values()})
    for ref in refs:
        a, b = A.profile(old, ref), A.profile(new, ref)
        pols = a.policies + b.policies
        mp = A._uses(pols, "methods", "not_methods")
        methods = A._pattern_classes(mp, ("other", "(OTHER)")) if mp else [("*", "GET")]
        pp = A._uses(pols, "paths", "not_paths")
        routes = [p for m in (old, new) for p in A._route_paths(m, ref)]
        paths = A._pattern_classes(pp + routes, ("other", "/(other)")) if pp else [("*", "/")]
        who = list(idents)
        if any(p.exists and p.mtls != "STRICT" for p in (a, b)):
            who.append(A.Identity(A.PLAINTEXT, None, None))
        ca = compile_policies(a.policies, a.default_deny)
        cb = compile_policies(b.policies, b.default_deny)
        for port in sorted({n for p in (a, b) for n, _ in p.ports}):
            http = a.port(port) is False or b.port(port) is False
            for ident in who:
                for ml, mr in methods if http else [("*", "GET")]:
                    for pl, pr in paths if http else [("*", "/")]:
                        x = ev.decide(a, ca, ident, port, mr, pr, str(ref))
                        y = ev.decide(b, cb, ident, port, mr, pr, str(ref))
                        if x.allowed != y.allowed:
                            out.add((str(ref), port, ident.label, ml, pl, y.allowed))
    return out


def expanded(old: sm.ConfigModel, new: sm.ConfigModel) -> set[tuple[Any, ...]]:
    diff = access_diff(old, new)
    out: set[tuple[Any, ...]] = set()
    for f in diff.flips:
        assert f.source_count == len(f.sources)  # small repos: every source is listed
        ref = sm.ServiceRef(*f.destination.split("."))
        a, b = A.profile(old, ref), A.profile(new, ref)
        pols = a.policies + b.policies
        pp = A._uses(pols, "paths", "not_paths")
        routes = [p for m in (old, new) for p in A._route_paths(m, ref)]
        all_paths = [label for label, _ in A._pattern_classes(pp + routes, ("other", "/(other)"))]
        tcp_only = not (a.port(f.port) is False or b.port(f.port) is False)
        paths = all_paths if f.path == "*" and pp and not tcp_only else [f.path]
        for src in f.sources:
            for pl in paths:
                out.add((f.destination, f.port, src, f.method, pl, f.granted))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_grouped_matrix_equals_brute_force(base: sm.ConfigModel, seed: int) -> None:
    rng = random.Random(seed)
    new = mutate(base, rng)
    want = brute_force(base, new)
    assert want  # every seed's edits flip something: the comparison is not vacuous
    got = expanded(base, new)
    assert got == want
    back = brute_force(new, base)
    assert expanded(new, base) == back


def test_against_nothing_equals_brute_force(base: sm.ConfigModel) -> None:
    empty = sm.ConfigModel()
    assert expanded(empty, base) == brute_force(empty, base)
    assert expanded(empty, base)  # something is granted
