"""Side-by-side measurements: wiregate vs direct PostgreSQL vs PgBouncer (`python -m benchmarks.run`)."""
