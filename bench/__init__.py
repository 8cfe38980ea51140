"""The reproducible benchmark of SPEC §8: ``python bench/run.py --help``."""
