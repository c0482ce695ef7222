"""Speed benchmarks: ``python -m benchmarks.<name> --help``. Each prints a table and writes
JSON under ``bench_results/``; none is part of the test suite's pass/fail."""
