"""Each semantic check fires on a minimal bad repo, at the offending field, and stays quiet on
the fixed one. Repos are built in memory and go through the whole pipeline (loader, schema,
model, checks), so the YAML here is also valid per the schema."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from reconciler.language.checks import run_checks
from reconciler.language.findings import Finding, Severity
from reconciler.language.model import ConfigModel
from reconciler.language.sources import SourceFile, blob_id
from reconciler.language.validate import validate

H = "apiVersion: meshcd.dev/v1alpha1\n"


class MemorySource:
    """A repo held in a dict: path -> YAML text."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files_ = files

    def describe(self) -> str:
        return "memory"

    def files(self, max_file_size: int = 1 << 20) -> Iterator[SourceFile]:
        for path in sorted(self.files_):
            data = self.files_[path].encode()
            yield SourceFile(path, blob_id(data), data)


def doc(kind: str, body: str) -> str:
    return H + f"kind: {kind}\n" + textwrap.dedent(body)


def mesh(extra: str = "", mode: str = "STRICT", default: str = "allow") -> str:
    return doc("Mesh", f"""\
        metadata: {{name: mesh}}
        spec:
          trustDomain: corp.example
          mtls: {{mode: {mode}}}
          authorization: {{default: {default}}}
        """) + extra


WEB = doc("Service", """\
    metadata: {name: web, namespace: prod}
    spec:
      ports:
        - {name: http, number: 8080, protocol: http}
      subsets:
        - name: v1
          labels: {version: v1}
        - name: v2
          labels: {version: v2}
    """)
DB = doc("Service", """\
    metadata: {name: db, namespace: prod}
    spec:
      ports:
        - {name: http, number: 8080, protocol: http}
        - {name: sql, number: 5432, protocol: tcp}
    """)


def route(rules: str, host: str = "web", name: str = "web") -> str:
    return doc("Route", f"""\
        metadata: {{name: {name}, namespace: prod}}
        spec:
          host: {host}
          rules:
        """) + textwrap.indent(textwrap.dedent(rules), "    ")


def policy(spec: str, name: str = "p", ns: str = "prod") -> str:
    return doc("AuthorizationPolicy", f"""\
        metadata: {{name: {name}, namespace: {ns}}}
        spec:
        """) + textwrap.indent(textwrap.dedent(spec), "  ")


def findings_of(files: dict[str, str]) -> tuple[Finding, ...]:
    result = validate(MemorySource(files))
    schema = [f for f in result.findings if f.code < "MCD100"]
    assert not schema, f"test repo is not schema-valid: {[str(f) for f in schema]}"
    return result.findings


@dataclass
class Case:
    code: str
    bad: dict[str, str]
    fixed: dict[str, str]
    where: str  # "file:line:col" of the finding in `bad`
    count: int = 1


def base(**files: str) -> dict[str, str]:
    out = {"mesh.yaml": mesh(), "web.yaml": WEB}
    out.update({k.replace("_", ".", 1) if k.endswith("_yaml") else k: v for k, v in files.items()})
    return out


CASES: dict[str, Case] = {
    "MCD100-none": Case("MCD100", {"web.yaml": WEB}, base(), "."),
    "MCD100-two": Case(
        "MCD100",
        base(**{"z.yaml": mesh().replace("{name: mesh}", "{name: other}")}),
        base(),
        "z.yaml:1:1",
    ),
    "MCD101-destination": Case(
        "MCD101",
        base(**{"r.yaml": route("- destinations: [{service: api}]\n")}),
        base(**{"r.yaml": route("- destinations: [{service: web}]\n")}),
        "r.yaml:7:23",
    ),
    "MCD101-host": Case(
        "MCD101",
        base(**{"r.yaml": route("- destinations: [{service: web}]\n", host="api")}),
        base(**{"r.yaml": route("- destinations: [{service: web}]\n", host="web")}),
        "r.yaml:5:3",
    ),
    "MCD101-rollout": Case(
        "MCD101",
        base(**{"ro.yaml": doc("RolloutPolicy", """\
            metadata: {name: r, namespace: prod}
            spec:
              services: [web.prod, web.dev]
              stages: [{percent: 100, bake: 1s}]
            """)}),
        base(**{"ro.yaml": doc("RolloutPolicy", """\
            metadata: {name: r, namespace: prod}
            spec:
              services: [web.prod]
              stages: [{percent: 100, bake: 1s}]
            """)}),
        "ro.yaml:5:24",
    ),
    "MCD102": Case(
        "MCD102",
        base(**{"r.yaml": route("- destinations: [{service: web, subset: v3}]\n")}),
        base(**{"r.yaml": route("- destinations: [{service: web, subset: v2}]\n")}),
        "r.yaml:7:37",
    ),
    "MCD103": Case(
        "MCD103",
        base(**{"r.yaml": route("- destinations: [{service: web, port: 80}]\n")}),
        base(**{"r.yaml": route("- destinations: [{service: web, port: 8080}]\n")}),
        "r.yaml:7:37",
    ),
    "MCD104": Case(
        "MCD104",
        base(**{"r.yaml": route("""\
            - destinations:
                - {service: web, subset: v1, weight: 90}
                - {service: web, subset: v2, weight: 5}
            """)}),
        base(**{"r.yaml": route("""\
            - destinations:
                - {service: web, subset: v1, weight: 95}
                - {service: web, subset: v2, weight: 5}
            """)}),
        "r.yaml:7:7",
    ),
    "MCD105": Case(
        "MCD105",
        base(**{"web2.yaml": WEB}),
        base(**{"web2.yaml": WEB.replace("namespace: prod", "namespace: dev")}),
        "web2.yaml:3:12",
    ),
    "MCD106": Case(
        "MCD106",
        base(**{"r.yaml": route("- destinations: [{service: web}]\n"),
                "r2.yaml": route("- destinations: [{service: web}]\n", name="web2")}),
        base(**{"r.yaml": route("- destinations: [{service: web}]\n")}),
        "r2.yaml:5:3",
    ),
    "MCD107-catch-all": Case(
        "MCD107",
        base(**{"r.yaml": route("""\
            - destinations: [{service: web}]
            - matches: [{path: {prefix: /api}}]
              destinations: [{service: web}]
            """)}),
        base(**{"r.yaml": route("""\
            - matches: [{path: {prefix: /api}}]
              destinations: [{service: web}]
            - destinations: [{service: web}]
            """)}),
        "r.yaml:8:7",
    ),
    "MCD107-shadowed": Case(
        "MCD107",
        base(**{"r.yaml": route("""\
            - matches: [{path: {prefix: /api}, headers: [{name: a, exact: "1"}, {name: b, present: true}]}]
              destinations: [{service: web, subset: v1}]
            - matches: [{path: {prefix: /api}, headers: [{name: b, present: true}, {name: a, exact: "1"}]}]
              destinations: [{service: web, subset: v2}]
            """)}),
        base(**{"r.yaml": route("""\
            - matches: [{path: {prefix: /api}, headers: [{name: a, exact: "1"}, {name: b, present: true}]}]
              destinations: [{service: web, subset: v1}]
            - matches: [{path: {prefix: /api}, headers: [{name: b, present: true}]}]
              destinations: [{service: web, subset: v2}]
            """)}),
        "r.yaml:9:17",
    ),
    "MCD107-broader": Case(
        "MCD107",
        base(**{"r.yaml": route("""\
            - matches: [{path: {prefix: /api}}]
              destinations: [{service: web, subset: v1}]
            - matches: [{path: {exact: /api/users}, methods: [GET]}]
              destinations: [{service: web, subset: v2}]
            """)}),
        base(**{"r.yaml": route("""\
            - matches: [{path: {exact: /api/users}, methods: [GET]}]
              destinations: [{service: web, subset: v2}]
            - matches: [{path: {prefix: /api}}]
              destinations: [{service: web, subset: v1}]
            """)}),
        "r.yaml:9:17",
    ),
    "MCD108": Case(
        "MCD108",
        base(**{"r.yaml": route("""\
            - matches: [{path: {regex: "^/(?<=a)x"}}]
              destinations: [{service: web}]
            """)}),
        base(**{"r.yaml": route("""\
            - matches: [{path: {regex: "^/(?:a)x"}}]
              destinations: [{service: web}]
            """)}),
        "r.yaml:7:32",
    ),
    "MCD109": Case(
        "MCD109",
        base(**{"r.yaml": route("""\
            - matches: [{queryParams: [{name: q, regex: "^(\\\\w+\\\\s?)+$"}]}]
              destinations: [{service: web}]
            """)}),
        base(**{"r.yaml": route("""\
            - matches: [{queryParams: [{name: q, regex: "^\\\\w+(\\\\s\\\\w+)*$"}]}]
              destinations: [{service: web}]
            """)}),
        "r.yaml:7:49",
    ),
    "MCD110": Case(
        "MCD110",
        base(**{"r.yaml": route("""\
            - destinations: [{service: web}]
              timeout: 1s
              retries: {attempts: 2, perTryTimeout: 500ms}
            """)}),
        base(**{"r.yaml": route("""\
            - destinations: [{service: web}]
              timeout: 1.5s
              retries: {attempts: 2, perTryTimeout: 500ms}
            """)}),
        "r.yaml:8:7",
    ),
    "MCD111": Case(
        "MCD111",
        base(**{"r.yaml": route("""\
            - matches: [{methods: [POST]}]
              destinations: [{service: web}]
              retries: {attempts: 2}
            """)}),
        base(**{"r.yaml": route("""\
            - matches: [{methods: [PUT]}]
              destinations: [{service: web}]
              retries: {attempts: 2}
            """)}),
        "r.yaml:9:7",
    ),
    "MCD112": Case(
        "MCD112",
        base(**{"web.yaml": WEB + "  endpoints:\n    - {address: 127.0.0.1:9001, labels: {version: v1}}\n"}),
        base(**{"web.yaml": WEB + "  endpoints:\n    - {address: 127.0.0.1:9001, labels: {version: v1}}\n"
                "    - {address: 127.0.0.1:9002, labels: {version: v2}}\n"}),
        "web.yaml:11:7",
    ),
    "MCD113": Case(
        "MCD113",
        base(**{"p.yaml": policy("selector: {services: [api]}\nrules: [{}]\n")}),
        base(**{"p.yaml": policy("selector: {services: [web]}\nrules: [{}]\n")}),
        "p.yaml:5:25",
    ),
    "MCD114": Case(
        "MCD114",
        base(**{"p.yaml": policy("rules: [{from: [{source: {namespaces: [dev]}}]}]\n")}),
        base(**{"p.yaml": policy("rules: [{from: [{source: {namespaces: [prod]}}]}]\n")}),
        "p.yaml:5:42",
    ),
    "MCD115": Case(
        "MCD115",
        {"mesh.yaml": mesh(mode="PERMISSIVE"), "web.yaml": WEB,
         "p.yaml": policy("rules: [{from: [{source: {principals: [corp.example/ns/prod/sa/web]}}]}]\n")},
        {"mesh.yaml": mesh(mode="STRICT"), "web.yaml": WEB,
         "p.yaml": policy("rules: [{from: [{source: {principals: [corp.example/ns/prod/sa/web]}}]}]\n")},
        "p.yaml:5:29",
    ),
    "MCD115-trafficpolicy": Case(
        "MCD115",
        base(**{"tp.yaml": doc("TrafficPolicy", """\
                    metadata: {name: web, namespace: prod}
                    spec: {service: web, mtls: {mode: PERMISSIVE}}
                    """),
                "p.yaml": policy("rules: [{when: [{key: source.principal, values: [x]}]}]\n")}),
        base(**{"p.yaml": policy("rules: [{when: [{key: source.principal, values: [x]}]}]\n")}),
        "p.yaml:5:20",
        count=1,
    ),
    "MCD116": Case(
        "MCD116",
        base(**{"db.yaml": DB, "p.yaml": policy("action: DENY\nrules: [{to: [{operation: {paths: [/x]}}]}]\n")}),
        base(**{"db.yaml": DB, "p.yaml": policy("action: DENY\nrules: [{to: [{operation: {ports: ['8080'], paths: [/x]}}]}]\n")}),
        "p.yaml:6:30",
    ),
    "MCD117": Case(
        "MCD117",
        base(**{"p.yaml": policy("selector: {services: [web]}\naction: ALLOW\n")}),
        base(**{"p.yaml": policy("selector: {services: [web]}\naction: ALLOW\nrules: [{}]\n")}),
        "p.yaml:4:1",
    ),
    "MCD118": Case(
        "MCD118",
        {"mesh.yaml": mesh(default="deny"), "web.yaml": WEB},
        {"mesh.yaml": mesh(default="deny"), "web.yaml": WEB,
         "p.yaml": policy("rules: [{to: [{operation: {methods: [GET]}}]}]\n")},
        "web.yaml:3:12",
    ),
    "MCD119": Case(
        "MCD119",
        base(**{"tp.yaml": doc("TrafficPolicy", "metadata: {name: web, namespace: prod}\nspec: {service: web, mtls: {mode: DISABLE}}\n")}),
        base(**{"tp.yaml": doc("TrafficPolicy", "metadata: {name: web, namespace: prod}\nspec: {service: web, mtls: {mode: STRICT}}\n")}),
        "tp.yaml:4:29",
    ),
    "MCD120": Case(
        "MCD120",
        base(**{"ro.yaml": doc("RolloutPolicy", "metadata: {name: r}\nspec:\n  stages: [{percent: 50, bake: 1s}, {percent: 20, bake: 1s}]\n")}),
        base(**{"ro.yaml": doc("RolloutPolicy", "metadata: {name: r}\nspec:\n  stages: [{percent: 20, bake: 1s}, {percent: 100, bake: 1s}]\n")}),
        "ro.yaml:5:37",
        count=2,  # 20 after 50, and the last is not 100
    ),
    "MCD121": Case(
        "MCD121",
        base(**{"web.yaml": WEB.replace("protocol: http}", "protocol: http}\n    - {name: http, number: 8081}")}),
        base(**{"web.yaml": WEB.replace("protocol: http}", "protocol: http}\n    - {name: admin, number: 8081}")}),
        "web.yaml:7:8",
    ),
    "MCD122": Case(
        "MCD122",
        {"mesh.yaml": mesh(extra="  defaultRolloutPolicy: std\n"), "web.yaml": WEB},
        {"mesh.yaml": mesh(extra="  defaultRolloutPolicy: std\n"), "web.yaml": WEB,
         "ro.yaml": doc("RolloutPolicy", "metadata: {name: std}\nspec: {stages: [{percent: 100, bake: 1s}]}\n")},
        "mesh.yaml:8:3",
    ),
    "MCD123": Case(
        "MCD123",
        base(**{"ro.yaml": doc("RolloutPolicy", "metadata: {name: a}\nspec: {services: [web.prod], stages: [{percent: 100, bake: 1s}]}\n")
                + "---\n" + doc("RolloutPolicy", "metadata: {name: b}\nspec: {services: [web.prod], stages: [{percent: 100, bake: 1s}]}\n")}),
        base(**{"ro.yaml": doc("RolloutPolicy", "metadata: {name: a}\nspec: {services: [web.prod], stages: [{percent: 100, bake: 1s}]}\n")
                + "---\n" + doc("RolloutPolicy", "metadata: {name: b}\nspec: {services: [], stages: [{percent: 100, bake: 1s}]}\n")}),
        "ro.yaml:9:19",
    ),
    "MCD124": Case(
        "MCD124",
        base(**{"tp.yaml": doc("TrafficPolicy", "metadata: {name: a, namespace: prod}\nspec: {service: web}\n")
                + "---\n" + doc("TrafficPolicy", "metadata: {name: b, namespace: prod}\nspec: {service: web}\n")}),
        base(**{"tp.yaml": doc("TrafficPolicy", "metadata: {name: a, namespace: prod}\nspec: {service: web}\n")}),
        "tp.yaml:9:8",
    ),
    "MCD125": Case(
        "MCD125",
        base(**{"db.yaml": DB, "p.yaml": policy("selector: {services: [db]}\nrules: [{to: [{operation: {methods: [GET]}}]}]\n")}),
        base(**{"db.yaml": DB, "p.yaml": policy("selector: {services: [db]}\nrules: [{to: [{operation: {methods: [GET], ports: ['8080']}}]}]\n")}),
        "p.yaml:6:30",
    ),
    "MCD126": Case(
        "MCD126",
        base(**{"p.yaml": policy("rules: [{when: [{key: request.headers, values: [x]}]}]\n")}),
        base(**{"p.yaml": policy("rules: [{when: [{key: 'request.headers[x-a]', values: [x]}]}]\n")}),
        "p.yaml:5:20",
    ),
    "MCD127": Case(
        "MCD127",
        base(**{"p.yaml": policy("rules: [{from: [{source: {notIpBlocks: [10.0.0/8]}}]}]\n")}),
        base(**{"p.yaml": policy("rules: [{from: [{source: {notIpBlocks: [10.0.0.0/8]}}]}]\n")}),
        "p.yaml:5:43",
    ),
    "MCD128": Case(
        "MCD128",
        base(**{"web.yaml": WEB + "  egress: [web.prod]\n"}),
        base(**{"web.yaml": WEB + "  egress: []\n"}),
        "web.yaml:12:12",
    ),
    "MCD129": Case(
        "MCD129",
        base(**{"web.yaml": WEB + "  endpoints: [{address: 'localhost:0', labels: {version: v1}}]\n"}),
        base(**{"web.yaml": WEB + "  endpoints: [{address: 'localhost:1', labels: {version: v1}}, {address: '[::1]:2', labels: {version: v2}}]\n"}),
        "web.yaml:12:16",
    ),
    "MCD130": Case(
        "MCD130",
        base(**{"db.yaml": DB.replace("protocol: http}", "protocol: tcp}"),
                "r.yaml": route("- destinations: [{service: db}]\n", host="db", name="db")}),
        base(**{"db.yaml": DB, "r.yaml": route("- destinations: [{service: db}]\n", host="db", name="db")}),
        "r.yaml:5:3",
    ),
    "MCD131-crlf-value": Case(
        "MCD131",
        base(**{"r.yaml": route('- destinations: [{service: web}]\n  headers: {request: {set: {x-probe: "a\\r\\nx-injected: 1"}}}\n')}),
        base(**{"r.yaml": route('- destinations: [{service: web}]\n  headers: {request: {set: {x-probe: "a\\tx-injected: 1"}}}\n')}),
        "r.yaml:8:42",
    ),
    "MCD131-name": Case(
        "MCD131",
        base(**{"r.yaml": route("- destinations: [{service: web}]\n  headers: {response: {add: {'x probe': a}, remove: ['x:y']}}\n")}),
        base(**{"r.yaml": route("- destinations: [{service: web}]\n  headers: {response: {add: {x-probe: a}, remove: [x-y]}}\n")}),
        "r.yaml:8:34",
        count=2,
    ),
    "MCD132-overlap": Case(
        "MCD132",
        base(**{"db.yaml": DB + "  endpoints: [{address: '127.0.0.1:9001'}]\n",
                "web.yaml": WEB + "  endpoints: [{address: '127.0.0.1:9002', labels: {version: v1}}, {address: '10.0.0.9:9002', labels: {version: v2}}]\n"}),
        base(**{"db.yaml": DB + "  endpoints: [{address: '127.0.0.1:9001'}]\n",
                "web.yaml": WEB + "  endpoints: [{address: '127.0.0.1:9003', labels: {version: v1}}, {address: '10.0.0.9:9002', labels: {version: v2}}]\n"}),
        "web.yaml:12:16",
    ),
    "MCD132-own-outbound": Case(
        "MCD132",
        base(**{"web.yaml": WEB + "  endpoints: [{address: '127.0.0.1:20000', labels: {version: v1}}, {address: '10.0.0.9:9002', labels: {version: v2}}]\n"}),
        base(**{"web.yaml": WEB + "  endpoints: [{address: '127.0.0.1:20001', labels: {version: v1}}, {address: '10.0.0.9:9002', labels: {version: v2}}]\n"}),
        "web.yaml:12:16",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_fires_on_bad_and_is_quiet_on_fixed(name: str) -> None:
    case = CASES[name]
    bad = findings_of(case.bad)
    hits = [f for f in bad if f.code == case.code]
    assert len(hits) == case.count, [str(f) for f in bad]
    assert str(hits[0].location) == case.where, [str(f) for f in bad]
    fixed = findings_of(case.fixed)
    assert fixed == (), [str(f) for f in fixed]


def test_severities_follow_the_catalogue() -> None:
    f = findings_of(CASES["MCD117"].bad)
    assert [x.severity for x in f] == [Severity.INFO]
    f = findings_of(CASES["MCD104"].bad)
    assert [x.severity for x in f] == [Severity.ERROR]


def test_empty_model_only_lacks_a_mesh() -> None:
    assert [f.code for f in run_checks(ConfigModel())] == ["MCD100"]


def test_example_shape_mesh_wide_allow_satisfies_default_deny() -> None:
    files = {
        "mesh.yaml": mesh(default="deny"),
        "web.yaml": WEB,
        "p.yaml": policy("rules: [{from: [{source: {namespaces: [prod]}}]}]\n", ns="meshcd-system"),
    }
    assert findings_of(files) == ()


def test_namespace_wide_allow_satisfies_default_deny_but_not_for_other_namespaces() -> None:
    other = WEB.replace("namespace: prod", "namespace: dev")
    files = {
        "mesh.yaml": mesh(default="deny"),
        "web.yaml": WEB,
        "dev.yaml": other,
        "p.yaml": policy("rules: [{}]\n"),
    }
    found = findings_of(files)
    assert [(f.code, f.location.file) for f in found] == [("MCD118", "dev.yaml")]


def test_deny_on_tcp_limited_to_not_ports_is_quiet() -> None:
    files = base(**{"db.yaml": DB, "p.yaml": policy(
        "action: DENY\nrules: [{to: [{operation: {notPorts: ['5432'], methods: [DELETE]}}]}]\n"
    )})
    assert findings_of(files) == ()


def test_audit_policies_are_not_judged_for_tcp() -> None:
    files = base(**{"db.yaml": DB, "p.yaml": policy(
        "action: AUDIT\nrules: [{to: [{operation: {methods: [DELETE]}}]}]\n"
    )})
    assert findings_of(files) == ()


def test_weights_default_to_100_for_a_single_destination() -> None:
    assert findings_of(base(**{"r.yaml": route("- destinations: [{service: web, subset: v1}]\n")})) == ()


def test_checks_are_deterministic_and_sorted() -> None:
    files = dict(CASES["MCD107-catch-all"].bad)
    files.update(CASES["MCD121"].bad)
    a = findings_of(files)
    b = findings_of(dict(reversed(list(files.items()))))
    assert a == b
    assert list(a) == sorted(a, key=Finding.sort_key)


def test_memo_reuses_unchanged_resources_but_follows_their_context() -> None:
    """With a warm ValidationCache, unchanged files give back the same Resource objects and the
    check memo skips their local checks; findings that depend on other resources (or on the
    set of namespaces) must still follow a change elsewhere."""
    from reconciler.language.checks import LocalMemo
    from reconciler.language.validate import ValidationCache

    v1 = base(**{
        "r.yaml": route("- destinations: [{service: web, weight: 50}]\n"),
        "p.yaml": policy("rules: [{from: [{source: {namespaces: [prod]}}]}]\n"),
    })
    v2 = dict(v1, **{"web.yaml": WEB.replace("namespace: prod", "namespace: dev")})
    cache = ValidationCache()
    first = validate(MemorySource(v1), cache=cache)
    second = validate(MemorySource(v2), cache=cache)
    assert cache.parsed == len(v1) + 1  # only web.yaml was parsed again
    fresh = validate(MemorySource(v2))
    assert second.findings == fresh.findings
    codes = sorted(f.code for f in second.findings)
    assert codes == ["MCD101", "MCD101", "MCD104", "MCD114", "MCD114"], [str(f) for f in second.findings]
    assert [f.code for f in first.findings] == ["MCD104"]
    # And back: the memo does not keep stale findings either.
    third = validate(MemorySource(v1), cache=cache)
    assert third.findings == first.findings
    # An explicit memo gives the same answer as the process-wide one and as none at all.
    memo = LocalMemo()
    assert run_checks(second.model, memo) == run_checks(second.model, memo) == list(fresh.findings)
    assert len(memo) > 0
