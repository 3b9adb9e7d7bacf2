"""Benchmarks for Huitou (issue 3, "Performance"): ``python -m bench`` (see bench/__main__.py).

Never part of ``make test``; results go to bench/RESULTS.md."""
