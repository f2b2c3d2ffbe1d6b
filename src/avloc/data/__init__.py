"""Datasets, the synthetic benchmark, the feature cache and training samplers."""
