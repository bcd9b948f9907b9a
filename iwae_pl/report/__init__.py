"""Reproducing the papers: published numbers as data, experiment definitions and their runner, and
the report that puts measured runs next to the published numbers (``python -m iwae_pl report``)."""
