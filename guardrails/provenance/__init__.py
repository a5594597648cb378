"""Provenance: C2PA manifests, invisible watermarks, text watermarks and signed records; verification."""


class ProvenanceError(ValueError):
    """Bad input to tagging or verification: unreadable file, unusable keys, unsupported format."""


from genguard.guardrails.provenance.keys import KeyStore, default_key_dir  # noqa: E402
from genguard.guardrails.provenance.tagging import MIN_WATERMARK_SIDE, tag_file, verify_file, watermark_id_for  # noqa: E402
from genguard.guardrails.provenance.text import TextWatermark  # noqa: E402
from genguard.guardrails.provenance.watermark import ImageWatermark  # noqa: E402

__all__ = ["ProvenanceError", "KeyStore", "default_key_dir", "tag_file", "verify_file", "watermark_id_for",
           "MIN_WATERMARK_SIDE", "ImageWatermark", "TextWatermark"]
