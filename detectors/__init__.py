"""Detectors: synthetic-image detection, forgery analysis, calibration and robustness evaluation.

Imports nothing else of genguard.
"""


class DetectorError(ValueError):
    """Bad input to a detector: unreadable or oversized image, wrong shape, untrained detector."""

#: public names, imported lazily (torch and opencv are heavy)
_LAZY = {
    "Detector": "genguard.detectors.models", "SpectralDetector": "genguard.detectors.models", "DCTDetector": "genguard.detectors.models",
    "NoiseDetector": "genguard.detectors.models", "NPRDetector": "genguard.detectors.models", "EnsembleDetector": "genguard.detectors.models",
    "make_detector": "genguard.detectors.models", "load_detector": "genguard.detectors.models", "load_default": "genguard.detectors.models",
    "analyze": "genguard.detectors.forgery", "ForgeryResult": "genguard.detectors.forgery",
    "evaluate": "genguard.detectors.evaluate", "binary_metrics": "genguard.detectors.evaluate",
    "leave_one_generator_out": "genguard.detectors.evaluate", "read_image": "genguard.detectors._io",
    "PretrainedDetector": "genguard.detectors.pretrained", "load_pretrained": "genguard.detectors.pretrained",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")


__all__ = ["DetectorError", *_LAZY]
