"""HJ 212 (2017 / 2025) for the upload to environmental monitoring platforms."""
