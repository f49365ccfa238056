"""The catalogue of finding codes. Codes are stable: never renumber, only add.

MCD0xx: reading and parsing (the loader) and schema validation.
MCD1xx: semantic checks over the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.language.findings import Finding, Location, Severity


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    severity: Severity
    summary: str  # the one-line doc shown in README and `meshcd validate --explain`


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO

CATALOGUE: dict[str, Code] = {
    c.code: c
    for c in [
        # --- loader ---
        Code("MCD001", _E, "YAML syntax error (bad indentation, unclosed quote, tab indent...)"),
        Code("MCD002", _E, "duplicate key in a mapping (an error, never last-wins)"),
        Code("MCD003", _E, "alias/anchor expansion exceeds the node budget (billion-laughs guard)"),
        Code("MCD004", _E, "file is not valid UTF-8"),
        Code("MCD005", _E, "file looks binary (contains NUL bytes)"),
        Code("MCD006", _E, "file larger than the size limit (default 1 MiB)"),
        Code("MCD007", _E, "symlink in the config tree (never followed)"),
        Code("MCD008", _E, "more documents than the limit (per file or per repo)"),
        Code("MCD009", _E, "path outside the configured root"),
        Code("MCD010", _E, "a document is not a mapping"),
        Code("MCD011", _E, "unknown or missing apiVersion (expected meshcd.dev/v1alpha1)"),
        Code("MCD012", _E, "unknown or missing kind"),
        Code("MCD013", _E, "missing metadata or metadata.name"),
        Code("MCD014", _E, "name or namespace is not a DNS-1123 label"),
        Code("MCD015", _E, "YAML value of a type JSON cannot hold (binary, timestamp key, set...)"),
        Code("MCD020", _E, "schema violation (unknown field, wrong type, missing required field...)"),
        # --- semantic checks ---
        Code("MCD100", _E, "no Mesh document, or more than one"),
        Code("MCD101", _E, "reference to an unknown service"),
        Code("MCD102", _E, "reference to an unknown subset of a service"),
        Code("MCD103", _E, "reference to a port the service does not expose"),
        Code("MCD104", _E, "weights in a rule do not sum to 100"),
        Code("MCD105", _E, "duplicate name for a kind in a namespace"),
        Code("MCD106", _E, "two Routes for one host"),
        Code("MCD107", _W, "unreachable rule: after a catch-all, or shadowed by an identical earlier match"),
        Code("MCD108", _E, "regex does not compile (RE2 syntax: no backreferences or lookaround)"),
        Code("MCD109", _W, "regex can backtrack catastrophically in backtracking engines (nested quantifiers)"),
        Code("MCD110", _W, "route timeout shorter than (attempts + 1) x perTryTimeout"),
        Code("MCD111", _W, "retries on a rule that matches non-idempotent methods (POST, PATCH)"),
        Code("MCD112", _W, "a subset whose labels select no static endpoint"),
        Code("MCD113", _E, "authorization policy names an unknown service"),
        Code("MCD114", _W, "authorization policy names a namespace that has no services"),
        Code("MCD115", _W, "principal or namespace matching while mTLS is not STRICT for the target"),
        Code("MCD116", _W, "DENY rule uses HTTP-only fields on a TCP port: the deny widens to the whole port"),
        Code("MCD117", _I, "ALLOW policy with no rules: default-deny for the services it selects"),
        Code("MCD118", _W, "a service nothing may call under default-deny"),
        Code("MCD119", _W, "mTLS mode conflict between Mesh and TrafficPolicy"),
        Code("MCD120", _E, "rollout stages do not strictly increase or do not end at 100%"),
        Code("MCD121", _E, "duplicate port name or number, or duplicate subset name, in a Service"),
        Code("MCD122", _E, "unknown RolloutPolicy referenced by the Mesh"),
        Code("MCD123", _W, "a service covered by more than one RolloutPolicy"),
        Code("MCD124", _E, "more than one TrafficPolicy for one service (or subset)"),
        Code("MCD125", _W, "ALLOW rule uses HTTP-only fields on a TCP port: the rule is dropped"),
        Code("MCD126", _E, "unsupported authorization condition key"),
        Code("MCD127", _E, "invalid IP address or CIDR block"),
        Code("MCD128", _W, "egress names the service itself or an unknown service"),
        Code("MCD129", _E, "invalid endpoint address (want host:port)"),
        Code("MCD130", _W, "Route host has no http port"),
        # --- added later (loader); kept at the end so nothing is renumbered ---
        Code("MCD016", _E, "mappings and lists nested deeper than the limit (default 200)"),
        # --- added later (checks) ---
        Code("MCD131", _E, "header name not an RFC 9110 token, or header value with CR, LF, NUL or another control character"),
        Code("MCD132", _E, "two proxy listeners on one port (static endpoint layout), or a listener port past 65535"),
    ]
}


def finding(code: str, message: str, location: Location) -> Finding:
    """A finding with the catalogue's severity for its code."""
    return Finding(code, CATALOGUE[code].severity, message, location)


# Longer help for `meshcd validate --explain CODE`: what triggers the code and how to fix it.
# Codes without an entry print their summary only.
DETAILS: dict[str, str] = {
    "MCD001": "The file is not valid YAML. The position is where the parser gave up; for an\n"
              "unclosed quote or bracket it is where it opened. Indent with spaces, never tabs.",
    "MCD002": "A mapping names the same key twice. YAML parsers disagree on which one wins, so\n"
              "meshcd refuses both: delete one. The finding points at the second key.",
    "MCD003": "Anchors and aliases (&a / *a) expand to more nodes than the budget (400,000 per\n"
              "file). Real config never comes close; this stops 'billion laughs' bombs.",
    "MCD004": "The file is not UTF-8 (the byte is named). Save it as UTF-8.",
    "MCD005": "The file contains NUL bytes: it is binary, or UTF-16. Save it as UTF-8.",
    "MCD006": "The file is larger than the limit (default 1 MiB, --max-file-size) and was not\n"
              "read. Split it into several files.",
    "MCD007": "A symlink in the config tree. Symlinks are never followed, so that a config repo\n"
              "cannot make meshcd read files outside it. Replace it with the file itself.",
    "MCD008": "More documents than the limit: 1,000 per file, 200,000 per repo\n"
              "(--max-documents). The documents past the limit were not read.",
    "MCD009": "A path that resolves outside the configured root, or that cannot be read.",
    "MCD010": "A YAML document (between --- lines) that is a list or a plain value. Every\n"
              "document must be a mapping with apiVersion, kind, metadata and spec.",
    "MCD011": "apiVersion is missing or not meshcd.dev/v1alpha1.",
    "MCD012": "kind is missing or not one of Mesh, Service, Route, TrafficPolicy,\n"
              "AuthorizationPolicy, RolloutPolicy (spelled exactly so).",
    "MCD013": "metadata or metadata.name is missing.",
    "MCD014": "A name or namespace that is not a DNS-1123 label: lowercase letters, digits and\n"
              "'-', starting and ending with a letter or digit, at most 63 characters.",
    "MCD015": "A value JSON cannot hold. Common causes: an unquoted date (2024-01-01 is a\n"
              "timestamp: quote it), a key YAML 1.1 reads as a boolean (on, off, yes, no: quote\n"
              "it), a number used as a key, .inf/.nan, or a tag such as !!binary or !Ref.",
    "MCD016": "Mappings and lists nested deeper than 200 levels.",
    "MCD020": "The document does not match its kind's JSON Schema: an unknown field (often a\n"
              "typo), a wrong type, a missing required field, or a value out of range. The\n"
              "message names the field path; the schemas are in reconciler/language/schemas/.",
    "MCD131": "A header a Route adds, sets or removes (or matches, or a TrafficPolicy hashes on)\n"
              "has a name that is not an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~),\n"
              "or a value with CR, LF, NUL or another control character (tabs are fine). A CR\n"
              "or LF in a value would start a new header on the wire: header injection.",
    "MCD132": "Every static endpoint gets a proxy on the endpoint's host (docs/plan.md): the\n"
              "proxy of host:p listens on p, p+1, ... (one port per Service port; its app\n"
              "1000 higher) and takes outbound HTTP on 20000 + its index among all static\n"
              "endpoints (services by namespace and name, endpoints in order). Two of these\n"
              "on one port of one host: the proxy refuses its snapshot (NACK) or cannot bind;\n"
              "a port past 65535: the proxy refuses its snapshot. Space the endpoints' ports\n"
              "by at least the number of Service ports, and keep them off 20000 and up.",
}
