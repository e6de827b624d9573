"""Benchmarks that print tables of side-by-side ratios (`make bench`, or `python -m bench`).

Every figure is compared with a baseline measured in the same run, and repeated: the tables
show min / median / max over the repeats, because the machines we run on are small and noisy.
"""
