"""Benchmarks of cm-api, run as `python -m bench` (see bench/README.md).

Each run creates its own database with generated rows, starts the service (and the limit
reference, a bare aiohttp app writing the same bytes from memory) as real processes pinned to
one CPU, drives them from the other CPU, reads the database server's counters around every
measured section, and prints and writes a results table and a PASS/FAIL line per claim.
Nothing is left behind: the database is dropped and every process stopped, on success, failure
or Ctrl-C.
"""
