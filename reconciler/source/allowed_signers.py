"""git's allowed-signers file (`gpg.ssh.allowedSignersFile`, ssh-keygen's ALLOWED SIGNERS). Pure.

One signer per line, `#` comments and blank lines ignored:

  principal[,principal...] [options] keytype base64-key [comment]

Options (comma-separated, values in double quotes):
  namespaces="git,file"   the key may sign only in these namespaces (patterns allowed)
  valid-after="YYYYMMDD[HHMM[SS]][Z]"   key accepted only for signatures made at/after
  valid-before="YYYYMMDD[HHMM[SS]][Z]"  ... and at/before this time
  cert-authority          parsed and kept, but certificate signatures are not supported

Times are UTC (ssh-keygen reads a time without `Z` as local time; a server has no useful
local time, so we say UTC and document it). A malformed line fails the whole file, with
its line number: a policy that silently drops a signer is worse than one that says why.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.errors import ConfigError

from .sshsig import SshSigError, fingerprint, key_type_of

_KEY_TYPE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)(@openssh\.com)?$")
_TIME = re.compile(r"^(\d{8})(\d{4}(\d{2})?)?(Z)?$", re.IGNORECASE)


class AllowedSignersError(ConfigError):
    """The file is malformed; the message names the line."""


@dataclass(frozen=True)
class AllowedSigner:
    principals: tuple[str, ...]
    key_type: str
    public_key: bytes  # SSH wire form, compared byte for byte with the signature's key
    namespaces: tuple[str, ...] | None = None  # None: any namespace
    valid_after: int | None = None  # unix seconds
    valid_before: int | None = None
    cert_authority: bool = False
    comment: str = ""
    line: int = 0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def allows_namespace(self, namespace: str) -> bool:
        if self.namespaces is None:
            return True
        return any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    def why_not_valid_at(self, when: int) -> str | None:
        """None if the key is valid at `when` (unix seconds), else the reason."""
        if self.valid_after is not None and when < self.valid_after:
            return f"key not valid before {_fmt(self.valid_after)} (line {self.line})"
        if self.valid_before is not None and when > self.valid_before:
            return f"key expired at {_fmt(self.valid_before)} (line {self.line})"
        return None


@dataclass(frozen=True)
class AllowedSigners:
    entries: tuple[AllowedSigner, ...] = ()

    def for_key(self, public_key: bytes) -> tuple[AllowedSigner, ...]:
        """The entries (non-CA) whose key is exactly `public_key`."""
        return tuple(e for e in self.entries if not e.cert_authority and e.public_key == public_key)

    def __len__(self) -> int:
        return len(self.entries)


def parse_allowed_signers(text: str) -> AllowedSigners:
    entries: list[AllowedSigner] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(_parse_line(line, number))
        except AllowedSignersError as exc:
            raise AllowedSignersError(f"allowed signers line {number}: {exc}") from None
    return AllowedSigners(tuple(entries))


def _parse_line(line: str, number: int) -> AllowedSigner:
    tokens = _split(line)
    if len(tokens) < 3:
        raise AllowedSignersError("expected: principals [options] keytype key")
    principals = tuple(p for p in _unquote(tokens[0]).split(",") if p)
    if not principals:
        raise AllowedSignersError("no principal")
    rest = tokens[1:]
    options: dict[str, str | None] = {}
    if not _KEY_TYPE.match(rest[0]):
        options = _parse_options(rest[0])
        rest = rest[1:]
    if len(rest) < 2:
        raise AllowedSignersError("missing key type or key")
    key_type, key_b64, comment = rest[0], rest[1], " ".join(rest[2:])
    if not _KEY_TYPE.match(key_type):
        raise AllowedSignersError(f"not a key type: {key_type!r}")
    try:
        blob = base64.b64decode(key_b64, validate=True)
        embedded = key_type_of(blob)
    except (binascii.Error, ValueError, SshSigError):
        raise AllowedSignersError("key is not valid base64 SSH public key data") from None
    if embedded != key_type:
        raise AllowedSignersError(f"key says it is {embedded!r}, line says {key_type!r}")

    namespaces = None
    if "namespaces" in options:
        value = options.pop("namespaces")
        if not value:
            raise AllowedSignersError('namespaces needs a value: namespaces="git"')
        namespaces = tuple(n.strip() for n in value.split(",") if n.strip())
    valid_after = _time_option(options, "valid-after")
    valid_before = _time_option(options, "valid-before")
    cert_authority = "cert-authority" in options
    if cert_authority and options.pop("cert-authority") is not None:
        raise AllowedSignersError("cert-authority takes no value")
    if options:
        raise AllowedSignersError(f"unknown option(s): {', '.join(sorted(options))}")
    return AllowedSigner(
        principals,
        key_type,
        blob,
        namespaces,
        valid_after,
        valid_before,
        cert_authority,
        comment,
        number,
    )


def _split(line: str) -> list[str]:
    """Split on whitespace outside double quotes (quotes are kept in the token)."""
    tokens: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(ch)
    if quoted:
        raise AllowedSignersError("unterminated quote")
    if current:
        tokens.append("".join(current))
    return tokens


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1]
    return token


def _parse_options(field: str) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', field):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            raise AllowedSignersError("empty option")
        if eq and not (len(value) >= 2 and value[0] == value[-1] == '"'):
            raise AllowedSignersError(f'option {name} needs a quoted value: {name}="..."')
        if name in options:
            raise AllowedSignersError(f"option {name} given twice")
        options[name] = value[1:-1] if eq else None
    return options


def _time_option(options: dict[str, str | None], name: str) -> int | None:
    if name not in options:
        return None
    value = options.pop(name)
    if value is None:
        raise AllowedSignersError(f'{name} needs a value: {name}="YYYYMMDD"')
    return parse_time(value, name)


def parse_time(value: str, name: str = "time") -> int:
    """YYYYMMDD[HHMM[SS]][Z] as UTC unix seconds."""
    m = _TIME.match(value.strip())
    if not m:
        raise AllowedSignersError(f"{name}: expected YYYYMMDD[HHMM[SS]][Z], got {value!r}")
    d = (m.group(1) + (m.group(2) or "")).ljust(14, "0")
    try:
        when = datetime(
            int(d[0:4]),
            int(d[4:6]),
            int(d[6:8]),
            int(d[8:10]),
            int(d[10:12]),
            int(d[12:14]),
            tzinfo=UTC,
        )
    except ValueError:
        raise AllowedSignersError(f"{name}: not a real date/time: {value!r}") from None
    return int(when.timestamp())


def _fmt(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
