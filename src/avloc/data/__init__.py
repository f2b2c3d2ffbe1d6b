"""Data: the native dataset format (``manifest``), opening datasets and feature files by layout
(``sources``), the feature cache (``cache``) and training samples (``windows``); the benchmark
generators in ``benchmarks``, the field's dataset formats in ``formats``."""
