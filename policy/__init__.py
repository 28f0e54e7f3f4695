"""The shared policy core: commands, rules, decisions, SQL analysis."""
