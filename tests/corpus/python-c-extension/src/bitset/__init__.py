"""Population count and Hamming distance over bytes-like objects."""

from ._speedups import hamming, popcount

__all__ = ["hamming", "popcount", "similarity"]


def similarity(a, b) -> float:
    """1.0 for identical inputs, 0.0 when every bit differs."""
    if len(a) == 0:
        return 1.0
    return 1.0 - hamming(a, b) / (8 * len(a))
