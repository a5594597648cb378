"""Detectors: synthetic-image detection, forgery analysis, calibration and robustness evaluation.

Imports nothing else of genguard.
"""


class DetectorError(ValueError):
    """Bad input to a detector: unreadable or oversized image, wrong shape, untrained detector."""
