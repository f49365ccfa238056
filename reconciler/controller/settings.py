"""`meshcd serve` settings: a YAML file (`--config`), then MESHCD_* environment variables
over it. Pure: reading the file and the environment is the caller's (`load_settings`).

```yaml
data_dir: ./.meshcd                      # default
store_url: postgresql+psycopg://meshcd@db/meshcd   # default: sqlite in the data dir
source:
  url: https://git.example.com/platform/mesh.git
  branch: main
  credentials: {token_file: /run/secrets/git-token}
  poll_interval: 60                      # seconds; jitter defaults to a tenth of it
  poll_jitter: 6
  signature: {mode: require, allowed_signers: /etc/meshcd/allowed_signers, openpgp_keyring: null}
api: {host: 127.0.0.1, port: 8080}       # + the limits below (docs/controller.md)
fleet: {host: 127.0.0.1, port: 15012}
bootstrap: {host: 127.0.0.1, port: 15013}
# each listener also takes max_connections and max_per_address (0: no cap); the API also
# header_timeout_s (a request head must be complete within it; default 10) and
# idle_timeout_s (keep-alive; default 5). Defaults: API_LIMITS, FLEET_LIMITS, BOOTSTRAP_LIMITS.
trust_domain: null                       # default: the Mesh's, at the first good revision
webhooks:
  secrets: {github: "file:/etc/meshcd/github.secret", generic: "env:MESHCD_GENERIC_SECRET"}
  max_body_bytes: 1048576
  body_timeout_s: 10
  rejected_summary_s: 60                 # refused deliveries: one webhook.rejected record per
  rejected_samples: 5                    #   interval with counts, + this many kept in full
deploy:
  strategy: canary                       # canary (default) | all-at-once
  preset: default                        # default | fast (1 proxy, 50%, 100%, 3 s bakes)
  timeout_s: 60                          # how long a proxy may take to ACK
analysis:                                # what the canary judge reads (docs/rollout.md)
  source: fleet                          # fleet (default: the proxies' stats stream) | prometheus
  prometheus:
    url: http://prometheus:9090          # required with source: prometheus
    interval_s: 5                        # how often to read
    lag_s: 10                            # read up to now - lag_s (> scrape interval + delays)
    direction: null                      # null (both) | inbound | outbound
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import ConfigError
from reconciler.net.limits import API_LIMITS, BOOTSTRAP_LIMITS, FLEET_LIMITS, ListenerLimits

DEFAULT_DATA_DIR = ".meshcd"
DEFAULT_API_PORT = 8080
DEFAULT_FLEET_PORT = 15012
DEFAULT_BOOTSTRAP_PORT = 15013
FORGES = ("github", "gitlab", "gitea", "forgejo", "bitbucket", "generic")


class SettingsError(ConfigError):
    """Bad settings: permanent, the controller does not start."""


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    repo_url: str
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    store_url: str | None = None
    branch: str = "main"
    credentials: Mapping[str, Any] = field(default_factory=dict)
    poll_interval: float = 60.0
    poll_jitter: float | None = None
    signature_mode: str = "off"
    allowed_signers: Path | None = None
    openpgp_keyring: Path | None = None
    api: Bind = Bind("127.0.0.1", DEFAULT_API_PORT)
    fleet: Bind = Bind("127.0.0.1", DEFAULT_FLEET_PORT)
    bootstrap: Bind = Bind("127.0.0.1", DEFAULT_BOOTSTRAP_PORT)
    advertise_host: str | None = None  # the name proxies dial (default: the bind host)
    api_limits: ListenerLimits = API_LIMITS
    fleet_limits: ListenerLimits = FLEET_LIMITS
    bootstrap_limits: ListenerLimits = BOOTSTRAP_LIMITS
    trust_domain: str | None = None
    webhook_secrets: Mapping[str, str] = field(default_factory=dict)
    webhook_max_body_bytes: int = 1024 * 1024
    webhook_body_timeout_s: float = 10.0
    webhook_rejected_summary_s: float = 60.0
    webhook_rejected_samples: int = 5
    deploy_timeout_s: float = 60.0
    deploy_strategy: str = "canary"
    rollout_preset: str = "default"
    analysis_source: str = "fleet"  # fleet | prometheus
    prometheus_url: str | None = None
    prometheus_interval_s: float = 5.0
    prometheus_lag_s: float = 10.0
    prometheus_direction: str | None = None  # None: inbound and outbound
    base_dir: Path = Path(".")  # relative paths in the file are relative to it


_TOP = {"data_dir", "store_url", "source", "api", "fleet", "bootstrap", "trust_domain",
        "webhooks", "deploy", "advertise_host", "analysis"}
_SOURCE = {"url", "branch", "credentials", "poll_interval", "poll_jitter", "signature"}
_SIGNATURE = {"mode", "allowed_signers", "openpgp_keyring"}
_WEBHOOKS = {"secrets", "max_body_bytes", "body_timeout_s", "rejected_summary_s",
             "rejected_samples"}
_BIND = {"host", "port"}
_CAPS = {"max_connections", "max_per_address"}
_TIMEOUTS = {"header_timeout_s", "idle_timeout_s"}
_DEPLOY = {"timeout_s", "strategy", "preset"}
_ANALYSIS = {"source", "prometheus"}
_PROMETHEUS = {"url", "interval_s", "lag_s", "direction"}
ANALYSIS_SOURCES = ("fleet", "prometheus")
DIRECTIONS = ("inbound", "outbound")
STRATEGIES = ("canary", "all-at-once")
PRESETS = ("default", "fast")


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(map(str, unknown))}")
    return dict(value)


def _number(value: Any, where: str, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SettingsError(f"{where}: expected a number")
    try:
        n = float(value)
    except ValueError:
        raise SettingsError(f"{where}: {value!r} is not a number") from None
    if not low <= n <= high:
        raise SettingsError(f"{where}: {n:g} is outside [{low:g}, {high:g}]")
    return n


def parse_limits(value: Any, where: str, default: ListenerLimits, *,
                 timeouts: bool = False) -> ListenerLimits:
    """The caps (and, for an HTTP listener, timeouts) in a listener's mapping."""
    if not isinstance(value, Mapping):
        return default
    m = _mapping(value, where, _BIND | _CAPS | (_TIMEOUTS if timeouts else set()))
    caps = {k: int(_number(m.get(k, getattr(default, k)), f"{where}.{k}", low=0, high=10**6))
            for k in _CAPS}
    times: dict[str, float | None] = {}
    for k in _TIMEOUTS:
        v = m.get(k, getattr(default, k))
        times[k] = None if v is None else _number(v, f"{where}.{k}", low=0.01, high=3600)
    return ListenerLimits(caps["max_connections"], caps["max_per_address"],
                          times["header_timeout_s"], times["idle_timeout_s"])


def parse_bind(value: Any, where: str, default: Bind) -> Bind:
    """`{host, port}` or `"host:port"` (IPv6 as `[::1]:8080`); port 0 = any free port."""
    if value is None:
        return default
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise SettingsError(f"{where}: expected host:port, got {value!r}")
        host = host.strip("[]")
        return Bind(host, int(_number(port, where, low=0, high=65535)))
    m = _mapping(value, where, _BIND | _CAPS | _TIMEOUTS)
    host = m.get("host", default.host)
    if not isinstance(host, str) or not host:
        raise SettingsError(f"{where}.host: expected a host name or address")
    return Bind(host, int(_number(m.get("port", default.port), f"{where}.port", low=0,
                                  high=65535)))


def build_settings(file_data: Any, environ: Mapping[str, str], *,
                   base_dir: Path = Path(".")) -> Settings:
    """Settings from the parsed YAML file (None: no file) and the environment."""
    top = _mapping(file_data, "settings", _TOP)
    source = _mapping(top.get("source"), "source", _SOURCE)
    sig = _mapping(source.get("signature"), "source.signature", _SIGNATURE)
    hooks = _mapping(top.get("webhooks"), "webhooks", _WEBHOOKS)
    deploy = _mapping(top.get("deploy"), "deploy", _DEPLOY)
    env = environ

    def pick(env_name: str, value: Any) -> Any:
        return env[env_name] if env.get(env_name) else value

    repo_url = pick("MESHCD_REPO_URL", source.get("url"))
    if not isinstance(repo_url, str) or not repo_url.strip():
        raise SettingsError("the config repo URL is required (source.url or MESHCD_REPO_URL)")
    branch = str(pick("MESHCD_BRANCH", source.get("branch", "main")))
    data_dir = Path(str(pick("MESHCD_DATA_DIR", top.get("data_dir", DEFAULT_DATA_DIR))))
    if not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    mode = str(pick("MESHCD_SIGNATURE_MODE", sig.get("mode", "off")))
    if mode not in ("off", "record", "require"):
        raise SettingsError(f"source.signature.mode: {mode!r} is not off, record or require")

    def path(v: Any) -> Path | None:
        if v is None:
            return None
        p = Path(str(v))
        return p if p.is_absolute() else base_dir / p

    secrets = dict(_mapping(hooks.get("secrets"), "webhooks.secrets", set(FORGES)))
    for forge in FORGES:
        from_env = env.get(f"MESHCD_WEBHOOK_SECRET_{forge.upper()}")
        if from_env:
            secrets[forge] = from_env
    for forge, src in secrets.items():
        if not isinstance(src, str) or not src.startswith(("file:", "env:")):
            raise SettingsError(f"webhooks.secrets.{forge}: expected file:PATH or env:NAME "
                                "(never the secret itself)")
        if src.startswith("file:") and not Path(src[5:]).is_absolute():
            secrets[forge] = f"file:{base_dir / src[5:]}"
    jitter = pick("MESHCD_POLL_JITTER", source.get("poll_jitter"))
    credentials = source.get("credentials") or {}
    if not isinstance(credentials, Mapping):
        raise SettingsError("source.credentials: expected a mapping")
    analysis = _analysis(top.get("analysis"), pick)
    return Settings(
        repo_url=repo_url.strip(),
        data_dir=data_dir,
        store_url=pick("MESHCD_STORE_URL", top.get("store_url")),
        branch=branch,
        credentials=dict(credentials),
        poll_interval=_number(pick("MESHCD_POLL_INTERVAL", source.get("poll_interval", 60)),
                              "source.poll_interval", low=0.1, high=86400),
        poll_jitter=None if jitter is None else _number(jitter, "source.poll_jitter", low=0,
                                                        high=3600),
        signature_mode=mode,
        allowed_signers=path(pick("MESHCD_ALLOWED_SIGNERS", sig.get("allowed_signers"))),
        openpgp_keyring=path(sig.get("openpgp_keyring")),
        api=parse_bind(pick("MESHCD_API_BIND", top.get("api")), "api",
                       Bind("127.0.0.1", DEFAULT_API_PORT)),
        fleet=parse_bind(pick("MESHCD_FLEET_BIND", top.get("fleet")), "fleet",
                         Bind("127.0.0.1", DEFAULT_FLEET_PORT)),
        bootstrap=parse_bind(pick("MESHCD_BOOTSTRAP_BIND", top.get("bootstrap")), "bootstrap",
                             Bind("127.0.0.1", DEFAULT_BOOTSTRAP_PORT)),
        advertise_host=pick("MESHCD_ADVERTISE_HOST", top.get("advertise_host")),
        api_limits=parse_limits(top.get("api"), "api", API_LIMITS, timeouts=True),
        fleet_limits=parse_limits(top.get("fleet"), "fleet", FLEET_LIMITS),
        bootstrap_limits=parse_limits(top.get("bootstrap"), "bootstrap", BOOTSTRAP_LIMITS),
        trust_domain=pick("MESHCD_TRUST_DOMAIN", top.get("trust_domain")),
        webhook_secrets=secrets,
        webhook_max_body_bytes=int(_number(hooks.get("max_body_bytes", 1024 * 1024),
                                           "webhooks.max_body_bytes", low=1,
                                           high=25 * 1024 * 1024)),
        webhook_body_timeout_s=_number(hooks.get("body_timeout_s", 10), "webhooks.body_timeout_s",
                                       low=0.01, high=300),
        webhook_rejected_summary_s=_number(hooks.get("rejected_summary_s", 60),
                                           "webhooks.rejected_summary_s", low=0.1, high=86400),
        webhook_rejected_samples=int(_number(hooks.get("rejected_samples", 5),
                                             "webhooks.rejected_samples", low=0, high=1000)),
        deploy_timeout_s=_number(pick("MESHCD_DEPLOY_TIMEOUT", deploy.get("timeout_s", 60)),
                                 "deploy.timeout_s", low=0.1, high=3600),
        deploy_strategy=_choice(pick("MESHCD_DEPLOY_STRATEGY", deploy.get("strategy", "canary")),
                                "deploy.strategy", STRATEGIES),
        rollout_preset=_choice(pick("MESHCD_ROLLOUT_PRESET", deploy.get("preset", "default")),
                               "deploy.preset", PRESETS),
        **analysis,
        base_dir=base_dir,
    )


def _analysis(value: Any, pick: Callable[[str, Any], Any]) -> dict[str, Any]:
    """`analysis:` -> the Settings fields analysis_source and prometheus_*; `pick(env name,
    value)` is build_settings' environment override."""
    analysis = _mapping(value, "analysis", _ANALYSIS)
    prom = _mapping(analysis.get("prometheus"), "analysis.prometheus", _PROMETHEUS)
    source = _choice(pick("MESHCD_ANALYSIS_SOURCE", analysis.get("source", "fleet")),
                     "analysis.source", ANALYSIS_SOURCES)
    url = pick("MESHCD_PROMETHEUS_URL", prom.get("url"))
    if url is not None:
        if not isinstance(url, str) or not url.strip().startswith(("http://", "https://")):
            raise SettingsError("analysis.prometheus.url: expected an http:// or https:// URL")
        url = url.strip()
    if source == "prometheus" and not url:
        raise SettingsError("analysis.source is prometheus but analysis.prometheus.url (or "
                            "MESHCD_PROMETHEUS_URL) is not set")
    direction = pick("MESHCD_PROMETHEUS_DIRECTION", prom.get("direction"))
    if direction is not None:
        direction = _choice(direction, "analysis.prometheus.direction", DIRECTIONS)
    return {
        "analysis_source": source,
        "prometheus_url": url,
        "prometheus_interval_s": _number(pick("MESHCD_PROMETHEUS_INTERVAL_S",
                                              prom.get("interval_s", 5)),
                                         "analysis.prometheus.interval_s", low=0.1, high=300),
        "prometheus_lag_s": _number(pick("MESHCD_PROMETHEUS_LAG_S", prom.get("lag_s", 10)),
                                    "analysis.prometheus.lag_s", low=0, high=600),
        "prometheus_direction": direction,
    }


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SettingsError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def load_settings(config_file: Path | None, environ: Mapping[str, str]) -> Settings:
    """Read the YAML file (if any) and build the settings."""
    import yaml

    data: Any = None
    base = Path(".")
    if config_file is not None:
        try:
            data = yaml.safe_load(config_file.read_text("utf-8"))
        except OSError as exc:
            raise SettingsError(f"cannot read {config_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{config_file} is not valid YAML: {exc}") from None
        base = config_file.resolve().parent
    return build_settings(data, environ, base_dir=base)
