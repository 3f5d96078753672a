"""The embedded demo (`training-controller demo`) and the sample logs it, the tests and the benchmarks use."""

from __future__ import annotations
