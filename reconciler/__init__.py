"""meshcd's controller side: config language, source, plan, rollout, fleet, audit, API, CLI."""
