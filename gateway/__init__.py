"""wiregate application wiring: config, CLI, listeners, identity."""
