"""The contract both sides of the fleet stream import: the wire messages (`fleet`) and canonical
JSON with the snapshot version (`canonical`). Pure; imports nothing of the project but
`proxy_runtime.errors`. See docs/fleet.md."""
