"""Forge webhook adapters: verify and parse a delivery into a RefUpdate."""
