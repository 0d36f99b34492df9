"""Fault tests: the real cm-api process against a private MariaDB that is stopped, slowed,
black-holed and reset under it (through tests/faults/proxy.py), with what clients got, what
/metrics says and what MariaDB itself shows checked against each other."""
