"""Benchmarks of the `nulog` package: speed on the HDFS sample and accuracy on four LogHub samples."""
