"""Keyed zero-bit watermark for images too small for the payload watermark (under 256 px a side): presence only, exact binomial test.

Why a separate mark: the payload watermark (:mod:`.watermark`) folds a 96-px tile over the image and
pays a union bound over ~700,000 alignments; a 32x32 image holds a ninth of one tile, far too little
evidence to decode 48 payload bits *and* pass a 1e-6 test. What such an image can carry is one bit of
information -- "marked with this key" -- which is what this mark claims, and nothing more: it names no
run, carries no content hash, and ``verify`` reports it as presence only.

Design: a keyed grid of +/-1 chips (CHIP x CHIP px each, anchored at the top-left pixel and repeated
every PERIOD px) is added to the luminance, scaled by the same kind of local-activity mask as the
payload mark, globally to the target PSNR (default 39 dB). Detection high-passes the luminance, sums
it over each chip, and counts the chips whose sign agrees with the key's chip sign, in each of the 8
symmetries of the image (so 90-degree rotations and flips are undone).

Test: under "no mark with this key" the chip signs are uniformly random key material, independent of
the image, so each chip agrees with probability exactly 1/2 and independently of the others (a zero
sum counts as a disagreement, which only makes the test conservative): the agreements are
Binomial(n, 1/2) for the n chips read. With the 8 symmetries, p = 8 * P[Binom(n, 1/2) >= agreements],
and the mark is declared when p <= 1e-6 -- the false-positive rate per image is at most 1e-6 by
construction, whatever the image. No geometric search beyond the 8 symmetries: a resize or a crop by
a few pixels moves the chip grid, and the mark is then not found (said in the README).
"""
from __future__ import annotations

import hashlib
from math import log
from typing import Any

import numpy as np

#: chip side (px): single pixels survive JPEG 90 and PNG re-encoding on 32x32 samples (2-px chips measured worse)
CHIP = 1
#: the keyed chip grid repeats every PERIOD px (larger images than this reuse it; they carry the payload
#: mark anyway from MIN_SIDE up)
PERIOD = 256
FPR = 1e-6
N_SYMMETRIES = 8
#: smallest side read: below it there are too few chips for any image to pass the test
MIN_SIDE = 16


def _log_binom_sf_half(k: int, n: int) -> float:
    """log P[Binom(n, 1/2) >= k] (the regularised incomplete beta function: exact to double precision)."""
    if k <= 0:
        return 0.0
    if k > n:
        return -np.inf
    from scipy.stats import binom

    return float(binom.logsf(k - 1, n, 0.5))


def _luma(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        return a.astype(np.float32)
    return (a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))


class SmallImageMark:
    """Embed / detect a keyed zero-bit mark with a secret ``key`` (bytes); ``psnr`` in dB."""

    false_positive_rate = FPR
    kind = "zero-bit"

    def __init__(self, key: bytes, psnr: float = 39.0) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("watermark key must be at least 16 bytes")
        self.psnr = float(psnr)
        seed = np.frombuffer(hashlib.sha256(b"genguard-wm-small-v1" + bytes(key)).digest(), dtype=np.uint32)
        g = PERIOD // CHIP
        self.chips_ = np.random.default_rng(seed).choice(np.array([-1.0, 1.0], np.float32), size=(g, g))

    def _chip_signs(self, h: int, w: int) -> np.ndarray:
        gh, gw = -(-h // CHIP), -(-w // CHIP)
        g = self.chips_.shape[0]
        return np.tile(self.chips_, (-(-gh // g), -(-gw // g)))[:gh, :gw]

    def _pattern(self, h: int, w: int) -> np.ndarray:
        return np.kron(self._chip_signs(h, w), np.ones((CHIP, CHIP), np.float32))[:h, :w]

    def embed(self, img: np.ndarray) -> np.ndarray:
        """Return a marked copy of ``img`` (uint8 HxW, HxWx3 or HxWx4; alpha untouched)."""
        import cv2

        a = np.asarray(img)
        if a.dtype != np.uint8 or a.ndim not in (2, 3):
            raise ValueError("image must be uint8 HxW or HxWxC")
        h, w = a.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise ValueError(f"image {w}x{h} is too small for the zero-bit mark (needs {MIN_SIDE} px a side)")
        y = _luma(a)
        act = cv2.GaussianBlur(np.abs(y - cv2.GaussianBlur(y, (0, 0), 1.0)), (0, 0), 2.0)
        # flat areas (a digit's black background) still carry the mark: the floor is higher than the payload
        # mark's, because a small image has no texture to spare
        mask = np.clip(act / (float(np.mean(act)) + 1e-6), 0.6, 2.0) ** 0.5
        delta = (self._pattern(h, w) * mask)[..., None]
        base = (a[..., :3] if a.ndim == 3 else a[..., None]).astype(np.float32)
        target = 255.0 ** 2 / 10 ** (self.psnr / 10)
        scale = np.sqrt(max(target - 1 / 12, 1e-3) / float(np.mean(delta ** 2)))
        for _ in range(6):  # clipping at 0 and 255 (black backgrounds) loses energy: rescale, never above target
            out = np.clip(np.rint(base + scale * delta), 0, 255)
            mse = float(np.mean((out - base) ** 2))
            if target * 0.9 <= mse <= target * 1.02 or mse == 0:
                break
            scale *= np.sqrt(target / mse) * (0.98 if mse > target else 1.0)
        if mse > target * 1.02:  # keep the PSNR promise: fall back to the last scale that met it
            out = np.clip(np.rint(base + scale * 0.9 * delta), 0, 255)
        from genguard.guardrails.provenance.watermark import with_channels

        return with_channels(a, out)

    @staticmethod
    def _residual(y: np.ndarray) -> np.ndarray:
        """Each chip's mean minus the median of its 8 neighbouring chips' means (edges replicated): robust to
        the hard, blocky edges of small synthetic images, where a linear high-pass is dominated by the image.
        The neighbourhood is symmetric, so the residual of a rotated or mirrored image is the rotated or
        mirrored residual (detect computes it once)."""
        h, w = y.shape
        gh, gw = h // CHIP, w // CHIP  # whole chips only
        m = y[:gh * CHIP, :gw * CHIP].reshape(gh, CHIP, gw, CHIP).mean(axis=(1, 3))
        p = np.pad(m, 1, mode="edge")
        nb = np.stack([p[1 + dy:1 + dy + gh, 1 + dx:1 + dx + gw] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                       if dy or dx])
        r = m - np.median(nb, axis=0)
        r[np.abs(r) < 1e-3] = 0.0
        return r

    def _agreements(self, y: np.ndarray, r: np.ndarray | None = None) -> tuple[int, int]:
        """(chips whose residual sign agrees with the key, chips with a non-zero residual). A zero residual (a
        flat or clipped area: a black background where the negative chips were clipped to 0) is left out:
        which chips are zero depends on the image alone, not on this key, so under the null the remaining
        chips still agree independently with probability exactly 1/2."""
        if r is None:
            r = self._residual(y)
        sig = self._chip_signs(r.shape[0] * CHIP, r.shape[1] * CHIP)[:r.shape[0], :r.shape[1]]
        return int(np.sum(r * sig > 0)), int(np.count_nonzero(r))

    def detect(self, img: np.ndarray) -> dict[str, Any]:
        """Look for this key's zero-bit mark. JSON-able dict: ``found``, ``p_value``, ``chips``, ``agreements``,
        ``symmetry``, ``kind`` ("zero-bit"), ``payload`` (always None: the mark carries none)."""
        a = np.asarray(img)
        h, w = a.shape[:2]
        if min(h, w) < MIN_SIDE:
            return {"applicable": False, "found": False, "kind": self.kind,
                    "reason": f"image {w}x{h} is too small for the zero-bit mark (needs {MIN_SIDE} px a side)"}
        r0 = self._residual(_luma(a))
        best = None
        for k in range(N_SYMMETRIES):
            # undo symmetry k: the mark was embedded in the original orientation
            g = np.rot90(r0, -(k % 4))
            agree, n = self._agreements(None, np.ascontiguousarray(g.T if k >= 4 else g))
            lp = _log_binom_sf_half(agree, n)
            if best is None or lp < best[0]:
                best = (lp, agree, n, k)
        lp, agree, n, k = best
        log_p = lp + log(N_SYMMETRIES)
        found = bool(log_p <= log(FPR))
        return {"applicable": True, "found": found, "kind": self.kind, "p_value": float(min(1.0, np.exp(log_p))),
                "chips": n, "agreements": agree, "symmetry": k, "alignments_tested": N_SYMMETRIES,
                "false_positive_rate": FPR, "payload": None,
                "note": "zero-bit mark for small images: it shows this key marked the image, and names no run"}
