"""Benchmarks of the kit. Each prints ratios of two ways of doing the same work, measured
side by side in one run (alternating, so machine noise hits both alike). Run: ``make bench``."""
