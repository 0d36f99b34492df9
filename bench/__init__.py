"""Benchmarks of cm-api's response cache, run as `python -m bench.cache` (see bench/README.md).

Each run creates its own database with generated rows, starts the service (and, for comparison,
a bare aiohttp app) as real processes pinned to one CPU, drives them from the other CPU, counts
the service's SELECTs on its own database connections, and prints medians, ratios and a
PASS/FAIL line per claim. Nothing is left behind: the database is
dropped and every process stopped, on success, failure or Ctrl-C.
"""
