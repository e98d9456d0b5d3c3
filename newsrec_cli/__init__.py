"""newsrec: news recommendation on MIND-format data, from raw files to honest metrics."""

__version__ = "0.1.0"
