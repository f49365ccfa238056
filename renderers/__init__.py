"""Pure functions from the spec model to per-proxy native config, plus exporters."""
