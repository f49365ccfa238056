"""SPIFFE IDs: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

Validation follows the SPIFFE ID standard: scheme `spiffe`, a trust domain of lowercase
letters, digits, `.`, `-` and `_`; path segments of letters, digits, `.`, `-` and `_`, none
empty, `.` or `..`; no query, fragment, port or user info; at most 2048 bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.ca.errors import InvalidSpiffeId

SCHEME = "spiffe://"
MAX_ID_BYTES = 2048
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# Kubernetes names (DNS-1123 labels/subdomains) are what namespaces and service accounts are.
_K8S_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    path: str  # "" or "/seg/seg..."

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"

    @property
    def workload(self) -> tuple[str, str] | None:
        """(namespace, service account) for `/ns/<ns>/sa/<sa>` paths, else None."""
        parts = self.path.split("/")[1:]
        if len(parts) == 4 and parts[0] == "ns" and parts[2] == "sa":
            return parts[1], parts[3]
        return None


def validate_trust_domain(trust_domain: str) -> str:
    if not isinstance(trust_domain, str) or not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise InvalidSpiffeId(
            f"trust domain {trust_domain!r} must be lowercase letters, digits, '.', '-', '_'"
        )
    if len(trust_domain) > 255:
        raise InvalidSpiffeId("trust domain is longer than 255 characters")
    return trust_domain


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse and validate; raises `InvalidSpiffeId` saying what is wrong."""
    if not isinstance(text, str) or not text.startswith(SCHEME):
        raise InvalidSpiffeId(f"{text!r} is not a SPIFFE ID (must start with {SCHEME})")
    if len(text.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
    rest = text[len(SCHEME) :]
    trust_domain, slash, path = rest.partition("/")
    if any(c in rest for c in "?#"):
        raise InvalidSpiffeId(f"{text!r}: SPIFFE IDs carry no query or fragment")
    if any(c in trust_domain for c in "@:"):
        raise InvalidSpiffeId(f"{text!r}: SPIFFE IDs carry no user info or port")
    validate_trust_domain(trust_domain)
    if not slash:
        return SpiffeId(trust_domain, "")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidSpiffeId(f"{text!r}: empty, '.' or '..' path segment")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidSpiffeId(f"{text!r}: path segment {segment!r} has characters not allowed")
    return SpiffeId(trust_domain, "/" + path)


def validate_name(label: str, value: str) -> str:
    """A namespace or service(-account) name: lowercase DNS-style, as in Kubernetes."""
    if not isinstance(value, str) or not _K8S_NAME.fullmatch(value):
        raise InvalidSpiffeId(
            f"{label} {value!r} must be a lowercase DNS-style name "
            "(letters, digits, '-', '.'; starting and ending alphanumeric; <= 253)"
        )
    return value


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """`spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`, validated."""
    validate_trust_domain(trust_domain)
    validate_name("namespace", namespace)
    validate_name("service account", service_account)
    return str(parse_spiffe_id(f"{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"))
