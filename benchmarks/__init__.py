"""Benchmarks of airflow-provider-wavespeed (not tests): ``python -m benchmarks [--smoke]``."""
