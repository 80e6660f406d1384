"""Benchmarks of flowserv-async against flowserv-core 0.9.4 (SPEC 11).

Run ``python -m benchmarks`` (or ``nox -s bench``); see ``benchmarks/README.md``.
"""
