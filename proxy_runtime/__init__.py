"""The managed proxy: data plane, admin, agent. Imports nothing from the controller side."""
