"""Detectors: synthetic-image detection, forgery analysis, calibration and robustness evaluation.

Imports nothing else of genguard.
"""


class DetectorError(ValueError):
    """Bad input to a detector: unreadable or oversized image, wrong shape, untrained detector."""

#: public names, imported lazily (torch and opencv are heavy)
_LAZY = {
    "Detector": "detectors.models", "SpectralDetector": "detectors.models", "DCTDetector": "detectors.models",
    "NoiseDetector": "detectors.models", "NPRDetector": "detectors.models", "EnsembleDetector": "detectors.models",
    "make_detector": "detectors.models", "load_detector": "detectors.models", "load_default": "detectors.models",
    "analyze": "detectors.forgery", "ForgeryResult": "detectors.forgery",
    "evaluate": "detectors.evaluate", "binary_metrics": "detectors.evaluate",
    "leave_one_generator_out": "detectors.evaluate", "read_image": "detectors._io",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")


__all__ = ["DetectorError", *_LAZY]
