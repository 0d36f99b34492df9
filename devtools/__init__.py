"""Development tooling: a private MariaDB and `make run`. Not part of the shipped package.

The tests, the benchmarks and `make run` import it from the repository root; the wheel and the
image carry `service/` only.
"""
