"""Benchmarks: `python -m bench [--quick]`. Each one runs jackfield and its alternative side by
side in the same process run, and reports percentiles and ratios (docs/BENCHMARKS.md)."""
