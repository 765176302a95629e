"""The run's memory across runs (SQLite): exactly once, resume, nightly runs; one run per journal."""
