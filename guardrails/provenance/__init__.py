"""Provenance: C2PA manifests, invisible watermarks, text watermarks and signed records; verification."""


class ProvenanceError(ValueError):
    """Bad input to tagging or verification: unreadable file, unusable keys, unsupported format."""
