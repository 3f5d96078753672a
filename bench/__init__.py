"""Benchmarks of the `nulog` package: speed beside Drain3, accuracy on four LogHub samples, the export rate."""
