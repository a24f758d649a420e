"""Benchmarks (not tests): `make bench-delivery`."""
