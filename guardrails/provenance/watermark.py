"""Keyed invisible image watermark: a 48-bit payload plus a 32-bit content hash in a periodic spread-spectrum luminance tile, with a binomial detection test.

Design (written here rather than taken from ``invisible-watermark`` because that library's
dwtDct/dwtDctSvd do not survive resizing or cropping at all, see ``benchmarks/watermark.py``):

* A keyed 96x96 tile of 32x32 chips (3 px each, lightly smoothed). 3/8 of the chips carry 64 keyed
  *pilot* bits; the rest carry the 48-bit payload, a 32-bit content hash and a CRC-8, convolutionally
  encoded (rate 1/2, K=7) into 188 coded bits, each spread over ~3.4 chips per tile and over every tile,
  soft-decoded with Viterbi. Every chip has a keyed +/-1 spreading sign.
* The tile is repeated over the whole image and added to the luminance, scaled by a local-activity
  mask (stronger in texture, weaker in flat areas) and globally to a target PSNR (default 39 dB, so
  every image is at least 38.4 dB).
* Detection high-passes the luminance and divides by the local residual level, folds the image onto
  one tile (sum over all tile positions), and reads the fold in each of the 8 symmetries of the square
  (90-degree rotations, mirrors), each aligned by FFT cross-correlation with the pilot template (this
  undoes any crop or padding). When that fails, the geometry is re-synchronised from the mark itself:
  the repeated tile leaves a lattice of peaks in the autocorrelation of the whitened image, which a
  rotation, resize, aspect change or shear maps linearly; the lattice basis is fitted (least squares
  over every predicted peak) and reduced to the fundamental lattice (a pair of peaks may span only every
  second point) to give up to N_AFFINE_CANDIDATES linear maps, best first; only if none reads does a 1-D
  comb over the autocorrelation give isotropic-scale candidates. The image is resampled back through
  each and read again, stopping at the first that passes. Nothing but the keyed pilots says which candidate is right, so every one is paid for.
* Test: under "no watermark with this key" the 64 pilot-bit decisions at any one alignment are
  independent fair coins (the pilot bits are uniformly random key material, independent of the image),
  so the number of pilot errors is Binomial(64, 1/2). With M = M_ALIGNMENTS alignments that the search
  may examine (offsets x symmetries x candidates, fixed in advance), the union (Bonferroni) bound gives
  p = M * 2 * P[Binom(64, 1/2) <= errors] * (2**-8 if the decoded CRC-8 matches, else 1)
  (the CRC matches a uniformly random decoding with probability 2**-8, independently of the pilots;
  the factor 2 pays for using it). A watermark is declared when p <= 1e-6, which bounds the
  false-positive rate per image at 1e-6 by construction. The payload is reported only when the CRC matches.
* Content binding (against the copy attack: a mark estimated from one tagged image, e.g. as the image
  minus its median-filtered copy, and added to other content). The embedder carries a keyed 32-bit sign
  hash of the host (:meth:`ImageWatermark.content_features`: orthonormal keyed projections of the
  frequency-weighted low DCT of the central square, flat padding trimmed); the detector recomputes the
  soft values f on the image it sees, brought back into the mark's frame (map and symmetry undone), and
  tests the agreement S = sum (2 b_i - 1) f_i against its exact conditional null (:func:`binding_p_value`:
  independent fair signs on |f|), trying the squares that centred crops to 90/80/70 % of the side imply
  and paying 4x for them. The mark is *bound* when that p-value is at most BIND_P = 1e-6. A transplanted
  mark carries the victim's hash; if those bits are fair coins independent of the new content (measured
  on 2,000 unrelated crop pairs: the p-values are close to uniform), unrelated content binds with
  probability at most 1e-6. An off-centre crop to half the area loses the square the embedder hashed, so
  such a genuine image reads as unbound: the binding is fail-safe (it names no run), not proof.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterator

import numpy as np

TILE = 96
CHIP = 3
GRID = TILE // CHIP  # 32 chips a side
CHIP_BLUR = 0.6  # Gaussian smoothing of the chip pattern (px): takes the hard block edges off
N_PILOT = 64
N_PAYLOAD = 48
#: content-binding bits carried after the payload: a keyed sign hash of the coarse DCT of the image the
#: mark was embedded in, so a mark transplanted onto other content (the copy attack) no longer matches
N_BIND = 32
#: the binding test's level: a mark counts as bound to the content seen when the exact conditional
#: p-value of the agreement between its carried hash and the content's soft hash is at most this (see
#: binding_p_value); it is the chance that an unrelated image binds, if the victim's hash bits are fair coins
BIND_P = 1e-6
#: the content hash is taken on the central square of this share of the image's shorter side (in the
#: mark's frame): rotations up to 5 degrees and padding leave it inside the original content
BIND_REGION = 0.7
#: the low DCT block the hash projects (DC dropped), each coefficient weighted by its radial frequency
#: (natural images' amplitude spectra fall as 1/f, so this makes the coefficients comparable)
BIND_DCT = 6
#: side shares of the original a centred crop may have kept: the binding test tries the square each implies
#: and multiplies its best p-value by their number (a union bound, paid whether or not the image was cropped)
BIND_CROP_SHARES = (1.0, 0.9, 0.8, 0.7)
FPR = 1e-6
#: the 8 symmetries of the square tile (rotations by 90 degrees, with and without a transpose): the
#: detector reads the folded tile in each, so 90-degree rotations and flips cost 8 small FFTs
N_DIHEDRAL = 8
#: affine candidates (rotation, scale, aspect, shear) estimated from the lattice of autocorrelation
#: peaks that the repeated tile leaves in any linearly transformed copy; tried when the identity fails
N_AFFINE_CANDIDATES = 6
#: every alignment the detector may examine: TILE*TILE cyclic offsets x 8 tile symmetries at the
#: identity and at each of at most N_AFFINE_CANDIDATES estimated affine maps. The union bound over all
#: of them is paid on every image, found early or not.
#: isotropic-scale candidates from a 1-D comb over the autocorrelation (finer than the 2-D lattice fit
#: on small, heavily compressed images), each refined at 3 nearby scales and read in the identity
#: symmetry only
N_SCALE_CANDIDATES = 8
SCALE_REFINE = (1.0, 0.998, 1.002)
M_ALIGNMENTS = TILE * TILE * (N_DIHEDRAL * (1 + N_AFFINE_CANDIDATES) + N_SCALE_CANDIDATES * len(SCALE_REFINE))
# payload error correction: rate-1/2 convolutional code, constraint length 7 (generators 133, 171
# octal, the NASA/802.11 code), zero-terminated, soft-decision Viterbi decoding: ~5 dB coding gain
# over the plain repetition that spreading alone gives.
_K = 7
_G = (0o133, 0o171)
N_CRC = 8  # CRC-8 (polynomial 0x07) over the payload: says whether the decoded payload can be trusted
N_CODED = 2 * (N_PAYLOAD + N_BIND + N_CRC + _K - 1)  # 188 coded bits
PILOT_SHARE = 3 / 8  # of the chips; the rest carry the coded payload
#: Detection reads at most a central DETECT_MAX_SIDE x DETECT_MAX_SIDE crop. The tile repeats over the
#: whole image and the pilot correlation finds the crop's offset, so a crop carries the same watermark;
#: a 1024-px crop folds ~110 tiles (16x what the smallest watermarked image, 256 px, gives), and keeps
#: verify of a 4k image at 1.4 s and 240 MB (5.5 s and 780 MB with a 2048-px crop).
DETECT_MAX_SIDE = 1024
#: the lattice of autocorrelation peaks is estimated on at most a central AFFINE_CROP-px square (~28 tiles;
#: a larger crop buys little on the 300-1000 px photos where the lattice is hardest to see, and the
#: zero-padded autocorrelation costs 4 * AFFINE_CROP**2 points)
AFFINE_CROP = 512
#: informed embedding (see ImageWatermark.embed): the share of the linear response estimate that the
#: detector sees, and the largest amplitude gain given to a bit the host image works against
INFORMED_RESPONSE = 0.5
INFORMED_MAX_GAIN = 2.5
#: a bit is boosted only while host + mark stays under this share of its group's median response: the
#: bits the host works against most, no more than needed (see ImageWatermark.embed)
INFORMED_TARGET = 0.9


def crc8(bits: np.ndarray) -> np.ndarray:
    """CRC-8 (poly x^8+x^2+x+1) of a bit vector, as 8 bits."""
    reg = 0
    for b in np.asarray(bits, dtype=np.int64):
        fb = ((reg >> 7) & 1) ^ int(b)
        reg = ((reg << 1) & 0xFF) ^ (0x07 if fb else 0)
    return np.array([(reg >> (7 - i)) & 1 for i in range(8)], dtype=np.int64)


def _parity(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    for sh in (16, 8, 4, 2, 1):
        x ^= x >> sh
    return x & 1


_STATES = 1 << (_K - 1)
# for state s (the last K-1 input bits, newest in the high bit) and input u: next state and the 2 outputs
_S = np.arange(_STATES)
_NEXT = np.stack([(_S >> 1) | (u << (_K - 2)) for u in (0, 1)], axis=1)  # (64, 2)
_REG = np.stack([(u << (_K - 1)) | _S for u in (0, 1)], axis=1)  # full register, newest bit highest
_OUT = np.stack([_parity(_REG & _bitrev) for _bitrev in
                 [int(f"{g:07b}"[::-1], 2) for g in _G]], axis=-1)  # (64, 2, 2)


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Rate-1/2, K=7 convolutional encoding of ``bits`` followed by K-1 zero tail bits."""
    state = 0
    out = []
    for u in list(bits) + [0] * (_K - 1):
        out.extend(_OUT[state, int(u)])
        state = _NEXT[state, int(u)]
    return np.array(out, dtype=np.int64)


def viterbi_decode(soft: np.ndarray, n_bits: int = N_PAYLOAD) -> np.ndarray:
    """Soft-decision Viterbi: ``soft`` > 0 means coded bit 1; returns the most likely ``n_bits`` input bits."""
    soft = np.asarray(soft, dtype=np.float64).reshape(-1, 2)
    steps = soft.shape[0]
    metric = np.full(_STATES, -np.inf)
    metric[0] = 0.0
    back = np.zeros((steps, _STATES), dtype=np.int64)  # predecessor state
    bitin = np.zeros((steps, _STATES), dtype=np.int64)
    sign = 2.0 * _OUT - 1.0  # (64, 2, 2)
    nxt = np.arange(_STATES)
    u_in = nxt >> (_K - 2)  # the input bit that leads into each state
    preds = np.stack([((nxt & (_STATES // 2 - 1)) << 1) | b for b in (0, 1)], axis=1)  # (64, 2)
    for t in range(steps):
        branch = sign @ soft[t]  # (64, 2): correlation of each branch's output with the received soft pair
        cand = metric[preds] + branch[preds, u_in[:, None]]  # (64 next states, 2 predecessors)
        pick = np.argmax(cand, axis=1)
        metric = cand[nxt, pick]
        back[t] = preds[nxt, pick]
        bitin[t] = u_in
    state = 0  # zero-terminated
    bits = np.zeros(steps, dtype=np.int64)
    for t in range(steps - 1, -1, -1):
        bits[t] = bitin[t, state]
        state = back[t, state]
    return bits[:n_bits]


def _gauss(img: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    k = int(2 * round(3 * sigma) + 1)
    return cv2.GaussianBlur(img, (k, k), sigma, borderType=cv2.BORDER_REFLECT)


def _luma(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        return a.astype(np.float32)
    h, w = a.shape[:2]
    rgb = np.ascontiguousarray(a[..., :3]).reshape(-1, 3).astype(np.float32)
    return (rgb @ _LUMA_WEIGHTS).reshape(h, w)  # one BLAS matrix-vector product, ~5x the per-channel sum


_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _log_binom_cdf_half(k: int, n: int) -> float:
    """log P[Binom(n, 1/2) <= k], exactly (n is small)."""
    from math import comb, log

    return log(sum(comb(n, i) for i in range(k + 1))) - n * log(2.0)


def _signed_sums(a: np.ndarray) -> np.ndarray:
    """All 2**len(a) sums of +-a_i, sorted: doubled one weight at a time, each step a merge of two sorted
    runs (the stable sort finds the runs), so linear per step."""
    out = np.zeros(1)
    for v in np.asarray(a, dtype=np.float64):
        out = np.sort(np.concatenate([out - v, out + v]), kind="stable")
    return out


def binding_p_value(features: np.ndarray, carried: np.ndarray) -> float:
    """Exact p-value of the agreement between a content's soft hash ``features`` and the hash bits a mark
    ``carried``: P[sum_i eps_i |f_i| >= sum_i (2 b_i - 1) f_i] for independent fair signs eps_i.

    If the carried bits are independent fair coins, independent of the content seen (a mark lifted from
    unrelated content), the signs (2 b_i - 1) sign(f_i) are exactly such eps, whatever the content: the
    test is conditional on |f|, so a genuine hash that flips only its weakest bits still binds, while the
    chance that unrelated content binds at level t is at most t. Ties count against binding. Computed by
    meeting in the middle (two halves of 2**16 sums each)."""
    f = np.abs(np.asarray(features, dtype=np.float64))
    obs = float(np.sum((2.0 * np.asarray(carried, dtype=np.float64) - 1.0) * np.sign(features) * f))
    h = len(f) // 2
    lo, hi = _signed_sums(f[:h]), _signed_sums(f[h:])
    tol = 1e-9 * (float(f.sum()) + 1.0)
    count = int(np.sum(len(hi) - np.searchsorted(hi, obs - lo - tol, side="left")))
    return count / float(len(lo) * len(hi))


def content_box(y: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a luminance image without its flat borders (screenshot-style padding:
    rows and columns at the edges whose smoothed values span at most 3 grey levels); the whole image when
    nothing is flat or too little would remain. The test runs on a 4x area-reduced, smoothed copy (cheap,
    and the mark averages out of it), so the embedder (unmarked) and the detector (marked) trim alike."""
    import cv2

    y = np.asarray(y, np.float32)
    h, w = y.shape
    sb = _gauss(cv2.resize(y, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA), 1.0)

    def busy(spread: np.ndarray, n: int) -> np.ndarray:
        full = np.repeat(spread > 3.0, 4)
        return np.pad(full, (0, max(0, n - len(full))), mode="edge")[:n]

    rows, cols = busy(np.ptp(sb, axis=1), h), busy(np.ptp(sb, axis=0), w)
    if not rows.any() or not cols.any():
        return 0, h, 0, w
    t, bt = int(np.argmax(rows)), h - int(np.argmax(rows[::-1]))
    lf, rt = int(np.argmax(cols)), w - int(np.argmax(cols[::-1]))
    if (bt - t) < 0.5 * h or (rt - lf) < 0.5 * w:
        return 0, h, 0, w
    return t, bt, lf, rt


def with_channels(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """A copy of the uint8 image ``a`` whose colour (or grey) channels are the marked (H, W, 3|1) ``out``;
    an alpha channel is kept as it was."""
    res = a.copy()
    if a.ndim == 3:
        res[..., :3] = out.astype(np.uint8)
    else:
        res[...] = out[..., 0].astype(np.uint8)
    return res


class ImageWatermark:
    """Embed / detect a 48-bit payload with a secret ``key`` (bytes).

    ``psnr`` is the target peak signal-to-noise ratio of the embedding (dB). ``informed``: informed
    embedding (see :meth:`embed`; on by default: it keeps the payload of 99 keys in 100 through JPEG 75 on a
    288-px photo, against 67 without).
    """

    false_positive_rate = FPR

    def __init__(self, key: bytes, psnr: float = 39.0, informed: bool = True) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("watermark key must be at least 16 bytes")
        self.psnr = float(psnr)
        self.informed = bool(informed)
        seed = np.frombuffer(hashlib.sha256(b"genguard-wm-v1" + bytes(key)).digest(), dtype=np.uint32)
        rng = np.random.default_rng(seed)
        n = GRID * GRID
        self.sign_ = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=n)
        perm = rng.permutation(n)
        self.role_ = np.empty(n, dtype=np.int64)  # 0..63 pilot bit, 64..187 coded payload bit
        half = int(round(n * PILOT_SHARE))
        self.role_[perm[:half]] = np.arange(half) % N_PILOT
        self.role_[perm[half:]] = N_PILOT + np.arange(n - half) % N_CODED
        self.pilot_ = rng.integers(0, 2, size=N_PILOT)
        # keyed orthonormal projections of the whitened low DCT block: for isotropic features the N_BIND
        # projections are independent, so the hash bits of unrelated images behave as independent coins
        q, _ = np.linalg.qr(rng.standard_normal((BIND_DCT * BIND_DCT - 1, N_BIND)))
        self.bind_proj_ = q.T.astype(np.float64)
        pilot_chips = self.role_ < N_PILOT
        chip_pilot = np.where(pilot_chips, self.sign_ * (2.0 * self.pilot_[np.minimum(self.role_, N_PILOT - 1)] - 1), 0.0)
        self.pilot_template_ = self._render(chip_pilot.astype(np.float32))
        self._pilot_fft = np.conj(np.fft.rfft2(self.pilot_template_))

    # ------------------------------------------------------------------ pattern
    @staticmethod
    def _render(chips: np.ndarray) -> np.ndarray:
        """A TILE x TILE smooth pattern from GRID x GRID chip values (periodic smoothing)."""
        import cv2

        t = np.kron(chips.reshape(GRID, GRID), np.ones((CHIP, CHIP), dtype=np.float32))
        big = np.tile(t, (3, 3))
        big = cv2.GaussianBlur(big, (5, 5), CHIP_BLUR)
        return big[TILE:2 * TILE, TILE:2 * TILE].copy()

    def content_features(self, y: np.ndarray, side: float | None = None) -> np.ndarray:
        """N_BIND keyed soft values of a luminance image (their signs are the content hash): keyed
        orthonormal projections of the BIND_DCT x BIND_DCT lowest DCT coefficients (DC dropped, each times
        its radial frequency, the vector scaled to unit RMS) of the central square of side
        BIND_REGION * ``side`` (default the shorter side), shrunk to 32x32. Stable under compression, blur,
        noise, brightness, resizing and (in the mark's frame) rotation; a crop or other content changes it."""
        import cv2

        y = np.asarray(y, np.float32)
        h, w = y.shape
        c = max(8, int(round(BIND_REGION * (min(h, w) if side is None else side))))
        c = min(c, h, w)
        y0, x0 = (h - c) // 2, (w - c) // 2
        small = cv2.resize(np.ascontiguousarray(y[y0:y0 + c, x0:x0 + c]), (32, 32), interpolation=cv2.INTER_AREA)
        u = np.arange(BIND_DCT)
        d = (cv2.dct(small)[:BIND_DCT, :BIND_DCT] * np.hypot(u[:, None], u[None, :])).ravel()[1:]
        d = d / (np.sqrt(np.mean(d.astype(np.float64) ** 2)) + 1e-6)
        return self.bind_proj_ @ d

    def content_hash(self, y: np.ndarray, side: float | None = None) -> np.ndarray:
        """The N_BIND-bit content hash the mark carries: signs of :meth:`content_features`."""
        return (self.content_features(y, side) > 0).astype(np.int64)

    def _all_bits(self, payload_bits: np.ndarray, bind_bits: np.ndarray | None = None) -> np.ndarray:
        """The N_PILOT pilot bits followed by the N_CODED coded bits (payload, content hash, CRC-8)."""
        if bind_bits is None:
            bind_bits = np.zeros(N_BIND, dtype=np.int64)
        data = np.concatenate([payload_bits, bind_bits])
        return np.concatenate([self.pilot_, conv_encode(np.concatenate([data, crc8(data)]))])

    def _tile(self, payload_bits: np.ndarray, bind_bits: np.ndarray | None = None,
              weights: np.ndarray | None = None) -> np.ndarray:
        bits = self._all_bits(payload_bits, bind_bits)
        chips = self.sign_ * (2.0 * bits[self.role_] - 1.0)
        if weights is not None:  # per-bit amplitude (informed embedding, see embed)
            chips = chips * weights[self.role_]
        pat = self._render(chips.astype(np.float32))
        return pat / pat.std()

    @staticmethod
    def _bits(payload: bytes) -> np.ndarray:
        if len(payload) != N_PAYLOAD // 8:
            raise ValueError(f"payload must be {N_PAYLOAD // 8} bytes, got {len(payload)}")
        return np.unpackbits(np.frombuffer(bytes(payload), dtype=np.uint8)).astype(np.int64)

    # ------------------------------------------------------------------ embed
    def embed(self, img: np.ndarray, payload: bytes) -> np.ndarray:
        """Return a watermarked copy of ``img`` (uint8 HxW, HxWx3 or HxWx4; alpha untouched)."""
        a = np.asarray(img)
        if a.dtype != np.uint8 or a.ndim not in (2, 3):
            raise ValueError("image must be uint8 HxW or HxWxC")
        import cv2

        h, w = a.shape[:2]
        y = _luma(a)
        # the hash is taken where the detector will take it: on the central DETECT_MAX_SIDE crop it reads
        ch, cw = min(h, DETECT_MAX_SIDE), min(w, DETECT_MAX_SIDE)
        yc = y[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        t, b, lf, rt = content_box(yc)
        pay, bind = self._bits(payload), self.content_hash(yc[t:b, lf:rt])
        reps = (-(-h // TILE), -(-w // TILE))
        pat = self._tile(pay, bind)
        hp = y - _gauss(y, 1.5)
        act = _gauss(np.abs(hp), 4.0)
        mask = cv2.pow(np.clip(act * np.float32(1.0 / (np.mean(act) + 1e-6)), 0.35, 2.5), 0.7)
        if self.informed:
            # Informed embedding: the host image itself projects onto each bit's chips, and for some key and
            # image pairs that interference opposes a few pilot bits in every tile (measured on a 288-px photo
            # under JPEG 75: the same keys lose the mark whatever the payload, and the soft pilot values after
            # JPEG correlate 0.93-0.97 with the host's own). The detector's view of the host and of the mark is
            # estimated at the embedding alignment (the same high-pass and local level as the detector, up to
            # the blur width), and the bits the host works against get up to INFORMED_MAX_GAIN x the amplitude,
            # so that host + mark reaches the typical mark response of their group; the PSNR scaling below
            # pays for it out of every bit. The false-positive test is untouched: it concerns unmarked images.
            # Only bits below INFORMED_TARGET of their group's typical response are boosted, by at most
            # INFORMED_MAX_GAIN: boosting exactly the bits the host opposes anti-correlates the mark with the
            # host, and that inner product is subtracted from the autocorrelation peaks the geometric
            # resynchronisation looks for (measured on a 320x400 crop over 30 keys, rotated 3 degrees + JPEG
            # 75: found 29/30 with these limits, 21/30 when every bit is raised to the median by up to 3x).
            loc = act + 1.0
            d = 2.0 * self._all_bits(pay, bind) - 1.0
            host = self._chips(self._fold(np.clip(hp / loc, -3.0, 3.0))) * d
            # the field is periodic, so the fold of mask * field / loc is the fold of mask / loc times the tile
            resp = self._chips(self._fold(mask / loc) * pat) * d
            # in the units of the host's whitened soft values at the embedding strength (the pattern has unit
            # variance); the detector sees about half of this linear estimate (measured: 0.48, sd 0.05 over
            # keys, on the 288-px photo) because its local level includes the mark itself
            s0 = np.sqrt(255.0 ** 2 / 10 ** (self.psnr / 10) / (float(np.vdot(mask, mask)) / mask.size + 1e-12))
            resp = resp * s0 * INFORMED_RESPONSE
            # each group of bits (pilots, coded bits: different numbers of chips) towards its own typical response
            tau = np.where(np.arange(resp.size) < N_PILOT, np.median(resp[:N_PILOT]), np.median(resp[N_PILOT:]))
            gain = np.clip((INFORMED_TARGET * tau - host) / np.maximum(resp, 1e-9), 1.0, INFORMED_MAX_GAIN)
            pat = self._tile(pay, bind, gain)
        delta = mask * np.tile(pat, reps)[:h, :w]
        base = (a[..., :3] if a.ndim == 3 else a[..., None]).astype(np.float32)
        d3 = delta[..., None]  # broadcast over the colour channels
        # scale so that the rounded, clipped result meets the target PSNR (up to three passes)
        target_mse = 255.0 ** 2 / 10 ** (self.psnr / 10)
        scale = np.sqrt(max(target_mse - 1 / 12, 1e-3) / float(np.mean(np.square(delta, dtype=np.float64))))
        out = np.empty_like(base)
        for _ in range(3):
            np.multiply(d3, np.float32(scale), out=out)
            out += base
            np.rint(out, out=out)
            np.clip(out, 0, 255, out=out)
            diff = (out - base).ravel()
            mse = float(diff @ diff) / diff.size
            if mse <= target_mse * 1.02:
                break
            scale *= np.sqrt(target_mse / mse) * 0.98
        return with_channels(a, out)

    # ------------------------------------------------------------------ detect
    @staticmethod
    def _whiten(y: np.ndarray) -> np.ndarray:
        # high-pass, then divide by the local residual level: texture carries more watermark but far
        # more image "noise", so normalising gives every region a comparable weight (measured: the
        # pilot z-score roughly triples against a plain clipped difference of Gaussians)
        r = y - _gauss(y, 2.0)
        loc = _gauss(np.abs(r), 4.0) + 1.0
        return np.clip(r / loc, -3.0, 3.0).astype(np.float32)

    def _fold(self, r: np.ndarray) -> np.ndarray:
        h, w = r.shape
        H, W = -(-h // TILE) * TILE, -(-w // TILE) * TILE
        p = np.zeros((H, W), dtype=np.float32)
        p[:h, :w] = r
        return p.reshape(H // TILE, TILE, W // TILE, TILE).sum(axis=(0, 2))

    def _read_fold(self, f: np.ndarray, symmetries: int = N_DIHEDRAL) -> dict[str, Any]:
        """Best of the 8 tile symmetries of the fold ``f``: each is aligned by FFT cross-correlation with the
        pilot template, then its chips are read.

        The payload (Viterbi) is decoded only where it can change the answer: a symmetry's p-value is at
        least its pilot term times 2**-8 (a matching CRC), so symmetries are decoded in order of pilot errors
        and the rest skipped once that bound cannot beat the best so far or cannot reach the detection
        threshold at all. The verdict is the same as decoding all 8."""
        gs = [np.rot90(f.T if k >= 4 else f, k % 4) for k in range(symmetries)]
        F = np.fft.rfft2(np.stack(gs)) * self._pilot_fft  # one batched FFT for every symmetry
        corr = np.fft.irfft2(F, s=f.shape)
        reads = []
        for k in range(symmetries):
            c = corr[k]
            dy, dx = np.unravel_index(int(np.argmax(c)), c.shape)
            chips = self._chips(np.roll(gs[k], (-dy, -dx), axis=(0, 1)))
            reads.append((self._pilot_errors(chips), k, chips, (int(dy), int(dx)), float(c.max() / (c.std() + 1e-9))))
        reads.sort(key=lambda t: (t[0], t[1]))
        best = None
        for errors, k, chips, offset, peak in reads:
            floor = np.log(2.0) + _log_binom_cdf_half(errors, N_PILOT) - 8 * np.log(2.0)
            if best is not None and (floor >= best[0] or floor + np.log(M_ALIGNMENTS) > np.log(FPR)):
                # sorted by errors: no later symmetry can beat the best, or none can pass the test even
                # with a matching CRC (then the fewest pilot errors is the reported read)
                break
            res = self._decode(chips, errors)
            res.update(offset=offset, symmetry=k, peak=peak)
            lp = self._log_p_alignment(res)
            if best is None or lp < best[0]:
                best = (lp, res)
        return best[1]

    def _chips(self, aligned: np.ndarray) -> np.ndarray:
        """Soft value of every pilot and coded bit: block sums of the aligned fold (close to a matched filter
        for the lightly smoothed chips), despread by the keyed signs and summed per bit."""
        chips = aligned.reshape(GRID, CHIP, GRID, CHIP).sum(axis=(1, 3)).ravel() * self.sign_
        return np.bincount(self.role_, weights=chips, minlength=N_PILOT + N_CODED)

    def _pilot_errors(self, soft: np.ndarray) -> int:
        # a zero soft value (e.g. a flat image) counts as an error, which keeps the test conservative
        return int(np.sum(soft[:N_PILOT] * (2.0 * self.pilot_ - 1.0) <= 0))

    def _decode(self, soft: np.ndarray, errors: int) -> dict[str, Any]:
        pay_soft = soft[N_PILOT:]
        nd = N_PAYLOAD + N_BIND
        dec = viterbi_decode(pay_soft, nd + N_CRC)
        bits = dec[:N_PAYLOAD].astype(np.uint8)
        crc_ok = bool(np.array_equal(crc8(dec[:nd]), dec[nd:]) and np.all(pay_soft != 0))
        return {"errors": errors, "bits": bits, "bind": dec[N_PAYLOAD:nd], "crc_ok": crc_ok,
                "coded_bit_errors": int(np.sum((pay_soft > 0).astype(int) != conv_encode(dec)))}

    def _tile_frame(self, y: np.ndarray, A: np.ndarray, whitened: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(image resampled into the tile's frame through ``A``, mask of the pixels that come from inside the
        image, 2 px in from its edge); output capped in size. ``whitened``: ``y`` is already whitened (zero
        outside, no anti-aliasing)."""
        import cv2

        h, w = y.shape
        Ai = np.linalg.inv(A)
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64) @ Ai.T
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        size = np.minimum(np.ceil(hi - lo), DETECT_MAX_SIDE).astype(int)
        lo = (lo + hi) / 2 - size / 2  # a capped output keeps the centre
        M = np.hstack([A, (A @ lo)[:, None]])  # dst (tile frame) -> src (image)
        shrink = float(np.sqrt(abs(np.linalg.det(A))))
        src = _gauss(y, 0.45 * shrink) if shrink > 1.3 and not whitened else y  # anti-alias when the warp minifies
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        yt = cv2.warpAffine(src, M, (int(size[0]), int(size[1])), flags=flags,
                            borderMode=cv2.BORDER_CONSTANT if whitened else cv2.BORDER_REPLICATE)
        # the image's outline in the output is a convex quadrilateral: drawn, not resampled
        valid = np.zeros((int(size[1]), int(size[0])), np.uint8)
        cv2.fillConvexPoly(valid, np.rint((corners - lo) * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
        return yt, cv2.erode(valid, np.ones((5, 5), np.uint8))

    def _read_affine(self, y: np.ndarray, A: np.ndarray, symmetries: int = N_DIHEDRAL,
                     r: np.ndarray | None = None) -> dict[str, Any]:
        """Resample into the tile's frame through the linear map ``A`` (tile frame -> image, 2x2 in (x, y)),
        fold and read; only the image's own pixels are folded. Near unit scale (rotations, mild aspect
        changes) the already whitened image ``r`` is resampled, which saves whitening it again; far from it
        the luminance is resampled and whitened in the tile's frame, where the high-pass matches the chips."""
        near_unit = r is not None and 0.8 <= float(np.sqrt(abs(np.linalg.det(A)))) <= 1.25
        if near_unit:
            rt, valid = self._tile_frame(r, A, whitened=True)
            rt *= valid
        else:
            yt, valid = self._tile_frame(y, A)
            rt = self._whiten(yt) * valid
        res = self._read_fold(self._fold(rt), symmetries)
        res["affine"] = A
        return res

    def _affine_candidates(self, r: np.ndarray, k: int = N_AFFINE_CANDIDATES) -> Iterator[np.ndarray]:
        """Up to ``k`` linear maps (tile frame -> image) from the lattice of autocorrelation peaks.

        The tile repeats on a square lattice of period TILE; any linear transform of the image (rotation,
        scale, aspect change, shear) maps it to the lattice spanned by the transformed basis vectors, and
        the autocorrelation of the whitened image peaks there. The strongest local maxima (after removing
        the smooth background) give candidate basis pairs, scored by the mean autocorrelation over the
        lattice points they predict; the best are refined by least squares over every predicted peak
        (sub-pixel, parabolic), which divides the error by the lattice index. A pair of peaks may span a
        sublattice (every second point, e.g. the diagonals): its predicted points are all true peaks, so it
        scores as well as the lattice itself. Each candidate is therefore made finer while the half-way points
        of one of its three index-2 superlattices are peaks too, and reduced to its shortest basis. The
        basis is taken nearest the axes; the remaining 90-degree and mirror ambiguity is what the 8 tile
        symmetries resolve. A generator, best first: the caller stops at the first that reads.
        """
        import cv2

        h, w = r.shape
        c = min(h, w, AFFINE_CROP)
        y0, x0 = (h - c) // 2, (w - c) // 2
        win = np.outer(np.hanning(c), np.hanning(c)).astype(np.float32)
        rc = (r[y0:y0 + c, x0:x0 + c] - r[y0:y0 + c, x0:x0 + c].mean()) * win
        n = 2 * c
        from scipy import fft as sfft  # single-precision transforms, ~3x numpy's here

        F = sfft.rfft2(rc, s=(n, n), workers=1)
        S = (F.real ** 2 + F.imag ** 2).astype(np.float32)
        S = S / (cv2.GaussianBlur(S, (0, 0), 3.0) + 1e-9)  # spectral whitening: the lattice's lines stand out
        # notch JPEG's 8-px block grid (spectral lines at multiples of 1/8 cycle/px), whose autocorrelation
        # peaks on the axes would otherwise outrank the tile's lattice
        for q in range(1, 5):
            i = q * n // 8
            S[max(0, i - 1):i + 2, :] = 0
            S[n - i - 1:n - i + 2, :] = 0
            if i + 2 <= S.shape[1]:
                S[:, max(0, i - 1):i + 2] = 0
        acf = np.fft.fftshift(sfft.irfft2(S, s=(n, n), workers=1)).astype(np.float32)
        acf -= cv2.GaussianBlur(acf, (0, 0), 4.0)
        acf /= acf.std() + 1e-9
        ctr = n // 2
        rmax = min(0.5 * c, 2.2 * 1.3 * TILE)
        rmin = 0.35 * TILE * 0.75
        dil = cv2.dilate(acf, np.ones((5, 5), np.uint8))
        # local maxima in the half plane, within the ring of plausible periods (only that window is searched)
        R = int(np.ceil(rmax)) + 1
        sub = acf[ctr:ctr + R, ctr - R:ctr + R]
        yy, xx = np.mgrid[0:sub.shape[0], -R:sub.shape[1] - R]
        rad = np.hypot(yy, xx)
        ok = (sub >= dil[ctr:ctr + R, ctr - R:ctr + R]) & (rad >= rmin) & (rad <= rmax) & ((yy > 0) | (xx > 0))
        ring = (rad >= rmin) & (rad <= rmax)
        floor = float(np.median(dil[ctr:ctr + R, ctr - R:ctr + R][ring])) if ring.any() else 0.0
        idx = np.flatnonzero(ok)
        idx = idx[np.argsort(sub.ravel()[idx])[::-1][:24]]
        peaks = np.stack([xx.ravel()[idx], yy.ravel()[idx]], axis=1).astype(np.float64) if len(idx) else np.zeros((0, 2))

        def lattice_mean(B1, B2, off=None, reach=3, radius=0.5 * c):
            """Mean dilated autocorrelation over the lattice points i*b1 + j*b2 (|i|, |j| <= reach, origin
            excluded unless ``off`` shifts it) inside the analysed radius, for m bases at once; mean, not sum:
            a spurious short basis predicts many points where there is no peak, so a sum would favour it."""
            g = np.arange(-reach, reach + 1, dtype=np.float64)
            I, J = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
            if off is None:
                keep = (I != 0) | (J != 0)
                I, J = I[keep], J[keep]
            pts = I[None, :, None] * B1[:, None, :] + J[None, :, None] * B2[:, None, :]
            if off is not None:
                pts = pts + off[:, None, :]
            q = np.rint(pts).astype(np.int64) + ctr
            good = (q >= 1).all(-1) & (q < n - 1).all(-1) & (np.hypot(pts[..., 0], pts[..., 1]) <= min(radius, 0.5 * c))
            q = np.clip(q, 0, n - 1)
            v = np.where(good, dil[q[..., 1], q[..., 0]], 0.0)
            cnt = good.sum(axis=1)
            return np.where(cnt >= 4, v.sum(axis=1) / np.maximum(cnt, 1), -np.inf)

        def refine(b1, b2):
            rows, rhs = [], []
            for i in range(-4, 5):
                for j in range(-4, 5):
                    if i == 0 and j == 0:
                        continue
                    p = i * b1 + j * b2
                    if np.hypot(*p) > 0.5 * c:
                        continue
                    q = np.rint(p).astype(int) + ctr
                    if np.any(q < 3) or np.any(q >= n - 3):
                        continue
                    win3 = acf[q[1] - 2:q[1] + 3, q[0] - 2:q[0] + 3]
                    my, mx = np.unravel_index(int(np.argmax(win3)), win3.shape)
                    qy, qx = q[1] - 2 + my, q[0] - 2 + mx
                    if acf[qy, qx] < 2.0:
                        continue

                    def par(a, b0, cc):
                        d = a - 2 * b0 + cc
                        return 0.0 if d >= 0 else 0.5 * (a - cc) / d
                    sx = qx + par(acf[qy, qx - 1], acf[qy, qx], acf[qy, qx + 1]) - ctr
                    sy = qy + par(acf[qy - 1, qx], acf[qy, qx], acf[qy + 1, qx]) - ctr
                    rows.append([i, j])
                    rhs.append([sx, sy])
            if len(rows) < 3:
                return b1, b2
            sol, *_ = np.linalg.lstsq(np.array(rows, float), np.array(rhs, float), rcond=None)
            return sol[0], sol[1]

        def reduce(b1, b2):
            # Lagrange-Gauss reduction: the shortest, most nearly orthogonal basis of the same lattice
            for _ in range(16):
                if b1 @ b1 > b2 @ b2:
                    b1, b2 = b2, b1
                mu = round(float(b1 @ b2) / float(b1 @ b1))
                if mu == 0:
                    break
                b2 = b2 - mu * b1
            return b1, b2

        def finer(b1, b2):
            for _ in range(2):  # index 2, then 4 (a pair along the diagonals of a doubled lattice)
                # peak heights fall with the lag (the analysis window), so the lattice and the half-way points
                # are compared over the same disc, each above the level of the dilated background
                disc = 1.6 * max(np.hypot(*b1), np.hypot(*b2))
                base = lattice_mean(b1[None], b2[None], radius=disc)[0] - floor
                opts = [(b1 / 2, b2), (b1, b2 / 2), ((b1 + b2) / 2, b2)]
                offs = np.array([o[0] if j != 1 else o[1] for j, o in enumerate(opts)])
                coset = lattice_mean(np.array([b1] * 3), np.array([b2] * 3), off=offs, reach=2, radius=disc) - floor
                j = int(np.argmax(coset))
                if not (coset[j] >= 0.4 * base and coset[j] > 1.0):
                    break
                n1, n2 = reduce(*opts[j])
                if min(np.hypot(*n1), np.hypot(*n2)) < 0.35 * TILE:
                    break
                b1, b2 = refine(n1, n2)
            return reduce(b1, b2)

        if len(peaks) < 2:
            return
        a_i, b_i = np.triu_indices(len(peaks), 1)
        P1, P2 = peaks[a_i], peaks[b_i]
        n1, n2 = np.hypot(P1[:, 0], P1[:, 1]), np.hypot(P2[:, 0], P2[:, 1])
        cosang = np.abs(np.sum(P1 * P2, axis=1)) / (n1 * n2)
        keep = ((cosang <= 0.35) & (n1 / n2 > 0.6) & (n1 / n2 < 1.67)
                & (np.minimum(n1, n2) >= 0.35 * TILE) & (np.maximum(n1, n2) <= 2.6 * TILE))
        P1, P2 = P1[keep], P2[keep]
        if not len(P1):
            return
        sc = lattice_mean(P1, P2)
        order = np.argsort(-sc, kind="stable")
        out: list[np.ndarray] = []
        for t in order[:4 * k]:
            if not np.isfinite(sc[t]):
                break
            b1, b2 = finer(*refine(P1[t], P2[t]))
            # canonical basis: b1 nearest the +x axis, b2 nearest +y
            cand = [b1, -b1, b2, -b2]
            e1 = max(cand, key=lambda v: v[0] / (np.hypot(*v) + 1e-9))
            e2 = max(cand, key=lambda v: v[1] / (np.hypot(*v) + 1e-9))
            A = np.column_stack([e1, e2]) / TILE
            if abs(np.linalg.det(A)) < 1e-3:
                continue
            if np.allclose(A, np.eye(2), atol=0.004):
                continue  # the identity was read already
            if all(np.abs(A - B).max() > 0.004 for B in out):
                out.append(A)
                yield A
            if len(out) >= k:
                break

    def _candidate_scales(self, r: np.ndarray, k: int = 4) -> list[float]:
        """Up to 2k candidate scales: k from the plain and k from the spectrally whitened autocorrelation
        (the latter finds the lattice under strong texture, the former under heavy compression)."""
        a = self._acf_candidates(r, k, whiten=False)
        b = self._acf_candidates(r, k, whiten=True)
        out: list[float] = []
        for c in [x for pair in zip(a, b) for x in pair] + a[len(b):] + b[len(a):]:
            if all(abs(c - q) * TILE > 1.0 for q in out):
                out.append(c)
        return out

    def _acf_candidates(self, r: np.ndarray, k: int, whiten: bool) -> list[float]:
        """Tile-period estimates (as scales) from the autocorrelation of the whitened image.

        The repeated tile puts autocorrelation peaks on a lattice of period P = TILE * scale. Each
        candidate P (quarter-pixel grid, 32-300 px) is scored by the autocorrelation, interpolated, at
        (P,0), (0,P), the diagonals (P,+-P) and the second harmonics, minus a running median that removes
        the smooth decay of the image's own autocorrelation; the k best separated peaks are returned.
        """
        from scipy.ndimage import map_coordinates, median_filter

        h, w = r.shape
        H, W = 2 * h, 2 * w
        import cv2

        F = np.fft.rfft2(r - r.mean(), s=(H, W))
        S = (np.abs(F) ** 2).astype(np.float32)
        if whiten:  # divide by the smoothed power spectrum: the lattice's sharp lines stand out
            S = S / (cv2.GaussianBlur(S, (0, 0), 4.0) + 1e-9)
        acf = np.fft.irfft2(S, s=(H, W)).astype(np.float32)
        acf /= acf[0, 0] + 1e-9
        lo, hi = 32.0, float(min(300, h // 2, w // 2))
        if hi <= lo + 4:
            return []
        P = np.arange(lo, hi, 0.1)
        z = np.zeros_like(P)

        def at(dy, dx):
            return map_coordinates(acf, [np.mod(dy, H), np.mod(dx, W)], order=1, mode="grid-wrap")

        comb = at(P, z) + at(z, P) + 0.5 * (at(P, P) + at(P, -P))
        two = 2 * P < min(h, w)
        comb = comb + np.where(two, 0.5 * (at(2 * P, z) + at(z, 2 * P)), 0.0)
        score = comb - median_filter(comb, size=121, mode="nearest")  # +-6 px window
        cands: list[float] = []
        for i in np.argsort(score)[::-1]:
            if score[i] <= 0:
                break
            if all(abs(P[i] - q * TILE) > 1.5 for q in cands):
                cands.append(float(P[i]) / TILE)
            if len(cands) >= k:
                break
        return cands

    @staticmethod
    def _log_p_alignment(res: dict[str, Any]) -> float:
        """log p-value of one alignment: 2 * P[Binom(64, 1/2) <= pilot errors] * (2**-8 if the CRC matched).

        Under "no watermark" the decoded 56 bits are uniform (the coded-bit signs are randomised by the
        key's chip signs, independently of the pilot chips), so the CRC-8 matches with probability 2**-8
        independently of the pilot errors; then P[p <= t] <= t, and the factor 2 pays for the two branches.
        """
        lp = np.log(2.0) + _log_binom_cdf_half(res["errors"], N_PILOT)
        return float(lp - 8 * np.log(2.0) if res["crc_ok"] else lp)

    def detect(self, img: np.ndarray, search: bool = True) -> dict[str, Any]:
        """Look for this key's watermark. Returns a JSON-able dict: ``found``, ``payload`` (hex, when
        found), ``p_value``, ``bit_errors`` (pilot-bit errors), ``pilot_bits``, ``alignments_tested``,
        ``false_positive_rate``, ``scale``, ``offset``, ``payload_crc_ok``."""
        img = np.asarray(img)
        h0, w0 = img.shape[:2]
        cropped = h0 > DETECT_MAX_SIDE or w0 > DETECT_MAX_SIDE
        if cropped:
            ch, cw = min(h0, DETECT_MAX_SIDE), min(w0, DETECT_MAX_SIDE)
            y0, x0 = (h0 - ch) // 2, (w0 - cw) // 2
            img = img[y0:y0 + ch, x0:x0 + cw]
        y = _luma(img)
        if min(y.shape) < 64:
            return {"applicable": False, "found": False, "reason": f"image {y.shape[1]}x{y.shape[0]} is too small"}
        r = self._whiten(y)
        best = self._read_fold(self._fold(r))
        best["affine"] = np.eye(2)
        best_lp = self._log_p_alignment(best)
        if search and best_lp + np.log(M_ALIGNMENTS) > np.log(FPR):
            # M_ALIGNMENTS is fixed in advance, so stopping at the first success does not bias the test
            def cands():
                # the lattice fit first; the isotropic-scale comb (costlier) only when no lattice candidate passes
                for A in self._affine_candidates(r):
                    yield A, N_DIHEDRAL
                scales = [c * d for c in self._candidate_scales(r, k=N_SCALE_CANDIDATES // 2) for d in SCALE_REFINE]
                for c in scales[:N_SCALE_CANDIDATES * len(SCALE_REFINE)]:
                    if abs(c - 1) > 0.002:
                        yield np.eye(2) * c, 1

            for A, sym in cands():
                res = self._read_affine(y, A, sym, r=r)
                lp = self._log_p_alignment(res)
                if lp < best_lp:
                    best, best_lp = res, lp
                if best_lp + np.log(M_ALIGNMENTS) <= np.log(FPR):
                    break
        log_p = best_lp + np.log(M_ALIGNMENTS)
        binding = None
        if log_p <= np.log(FPR) and best["crc_ok"]:
            # the content hash is taken in the mark's own frame: resample back through the estimated map
            # and undo the tile symmetry, so rotations, flips and resizes keep the binding
            A = best["affine"]
            yt = y if np.allclose(A, np.eye(2)) else self._tile_frame(y, A)[0]
            # the content's sides (flat padding trimmed) measured in the mark's frame: the region the
            # embedder hashed, up to a crop; its centre mapped into the frame (whose centre is the image's)
            t, b, lf, rt = content_box(y)
            Ai = np.linalg.inv(A)
            side = min(np.hypot(*(Ai @ [rt - lf, 0.0])), np.hypot(*(Ai @ [0.0, b - t])))
            shift = Ai @ [(lf + rt - y.shape[1]) / 2.0, (t + b - y.shape[0]) / 2.0]
            h2, w2 = yt.shape
            k = best["symmetry"]
            bp, feats = np.inf, None
            # a centred crop keeps the embedder's square but shrinks the sides it was measured from: each
            # hypothesis "the content seen is share r of the original's side" is tested, and paid for
            for r_share in BIND_CROP_SHARES:
                c = min(int(round(BIND_REGION * side / r_share)), h2, w2)
                cy = int(np.clip(round((h2 - c) / 2 + shift[1]), 0, h2 - c))
                cx = int(np.clip(round((w2 - c) / 2 + shift[0]), 0, w2 - c))
                sq = yt[cy:cy + c, cx:cx + c]
                f = self.content_features(np.rot90(sq.T if k >= 4 else sq, k % 4), side=c / BIND_REGION)
                p_r = binding_p_value(f, best["bind"])
                if p_r < bp:
                    bp, feats = p_r, f
                if bp * len(BIND_CROP_SHARES) <= BIND_P or c >= min(h2, w2):
                    # bound already (the reported p stays an upper bound), or larger hypotheses give this square
                    break
            bp = min(1.0, bp * len(BIND_CROP_SHARES))
            binding = {"bound": bool(bp <= BIND_P), "p_value": bp, "level": BIND_P, "bits": N_BIND,
                       "mismatches": int(np.sum((feats > 0).astype(np.int64) != best["bind"])),
                       "chance_if_unrelated": BIND_P}
        p = float(min(1.0, np.exp(log_p)))
        found = bool(log_p <= np.log(FPR))
        tried = M_ALIGNMENTS
        out = {"applicable": True, "found": found, "p_value": p, "bit_errors": best["errors"],
               "pilot_bits": N_PILOT, "alignments_tested": tried, "false_positive_rate": FPR,
               "scale": round(float(np.sqrt(abs(np.linalg.det(best["affine"])))), 4), "offset": list(best["offset"]),
               "affine": [[round(float(v), 4) for v in row] for row in best["affine"]],
               "symmetry": int(best["symmetry"]),
               "payload_crc_ok": bool(found and best["crc_ok"]),
               # the payload is reported only when the watermark is detected and its CRC-8 checks out;
               # a detected watermark with a failed CRC is present but unreadable (too damaged)
               "payload": np.packbits(best["bits"]).tobytes().hex() if found and best["crc_ok"] else None,
               "content_binding": binding}
        if cropped:
            out["analysed"] = {"image_size": [int(w0), int(h0)], "analysed_size": [int(img.shape[1]), int(img.shape[0])],
                               "note": f"read from the central {img.shape[1]}x{img.shape[0]} crop (bounded memory; "
                                       "the watermark tile repeats over the whole image)"}
        out["_bits"] = best["bits"]
        return out
