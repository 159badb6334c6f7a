"""Reproducing the paper and measuring the tool: the evaluation protocols (Tables 1-2),
the check against the authors' golden numbers, and the benchmarks."""
