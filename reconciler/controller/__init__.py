"""The controller process behind `meshcd serve`: settings, the JSON API, /metrics, and the
wiring of source, pipeline, fleet and CA. See docs/controller.md."""

from __future__ import annotations

from reconciler.controller.settings import (
    Bind,
    Settings,
    SettingsError,
    build_settings,
    load_settings,
)

__all__ = ["Bind", "Settings", "SettingsError", "build_settings", "load_settings"]
