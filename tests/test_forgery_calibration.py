"""Forgery scores calibrated on untouched photos: stated false-alarm rates, non-discriminating methods, legends."""
import html

import numpy as np
import pytest

from genguard.detectors import forgery as F
from genguard.detectors import forgery_sets as fs


def test_shipped_calibration_is_complete_and_consistent():
    cal = F.calibration()
    assert set(cal["methods"]) == set(F.METHODS)
    for name, c in cal["methods"].items():
        ref = np.asarray([-np.inf if x is None else x for x in c["untouched_raw_scores"]], float)
        assert c["n_untouched"] == ref.size >= 100, name  # enough for a 1% tail to mean something
        assert np.all(np.diff(ref[np.isfinite(ref)]) >= 0) and np.isfinite(ref).sum() >= 50, name
        # the flag follows the measured AUC, and a method that does not discriminate says why
        assert c["discriminates"] == (c["auc"] >= cal["min_auc"]), name
        if not c["discriminates"]:
            assert "AUC" in c["reason"], name


def test_false_alarm_rate_is_the_conservative_tail_share():
    ref = np.asarray(F.calibration()["methods"]["ela"]["untouched_raw_scores"], float)
    n = ref.size
    assert F.false_alarm_rate("ela", ref.min()) == pytest.approx(1.0)
    assert F.false_alarm_rate("ela", ref.max() + 1e-6) == pytest.approx(1 / (n + 1))  # never 0
    assert F.false_alarm_rate("ela", float("-inf")) == 1.0  # nothing analysed: no evidence
    mid = float(np.median(ref))
    assert 0.4 < F.false_alarm_rate("ela", mid) < 0.65
    grid = np.linspace(ref.min(), ref.max(), 21)
    fas = [F.false_alarm_rate("ela", g) for g in grid]
    assert all(a >= b for a, b in zip(fas, fas[1:]))  # higher raw score, rarer on untouched photos
    assert F.false_alarm_rate("ela", float("nan")) is None


def test_untouched_check_photos_are_rarely_flagged():
    """Photos never used for calibration (the check split): each method flags at most its stated 5%, give or
    take chance on 10 images (3 or more of 10 at a true 5% rate has probability 1.2%)."""
    flagged = {m: 0 for m in F.METHODS}
    n = 0
    for img, _ in fs.untouched("check", per_photo=2, sizes=(192, 256)):
        res = F.analyze(img)
        n += 1
        for m, r in res.items():
            assert r.details["false_alarm_rate"] is not None and 0 < r.details["false_alarm_rate"] <= 1
            assert r.score == pytest.approx(1 - r.details["false_alarm_rate"]) or not r.details["discriminates"]
            flagged[m] += bool(r.details["flagged"])
    assert n == 10
    assert all(v <= 2 for v in flagged.values()), flagged


def test_planted_copy_moves_on_check_photos_are_flagged():
    rng = np.random.default_rng(3)
    flagged, fas = 0, []
    for img in fs.photos("check")[:4]:
        crop = np.ascontiguousarray(img[:256, :256])
        forged, gt = fs.copy_move_block(crop, rng)
        r = F.analyze(forged, ("copy_move",))["copy_move"]
        flagged += r.details["flagged"]
        fas.append(r.details["false_alarm_rate"])
    assert flagged >= 3, fas
    assert min(fas) <= 0.02


def test_a_method_that_does_not_discriminate_says_so_and_paints_nothing(monkeypatch):
    cal = F.calibration()
    fake = {**cal, "methods": {**cal["methods"], "noise": {**cal["methods"]["noise"], "discriminates": False,
                                                            "reason": "AUC 0.51 on planted noise"}}}
    monkeypatch.setattr(F, "_CALIBRATION", fake)
    from skimage import data

    a = data.astronaut()[:256, :256].astype(np.float32)
    a[128:224, 32:128] += np.random.default_rng(1).normal(0, 25, (96, 96, 3))  # loud enough for a top raw score
    img = np.clip(a, 0, 255).astype(np.uint8)
    res = F.analyze(img, ("noise", "ela"))
    r = res["noise"]
    assert r.details["raw_score"] > 0.5 and r.map.max() > 0.5
    assert r.score == 0.0 and r.details["flagged"] is False and r.details["discriminates"] is False
    assert r.details["calibrated_score"] > 0.5
    assert "Not evidence" in r.details["legend"] and "AUC 0.51" in r.details["legend"]
    ev = F.evidence_map(res)
    assert ev.shape == r.map.shape
    # only ela can paint; the noise map's hot block is not in the evidence
    assert np.all(ev <= res["ela"].map + 1e-6)


def test_shipped_non_discriminating_methods_are_never_flagged():
    cal = F.calibration()["methods"]
    weak = [m for m, c in cal.items() if not c["discriminates"]]
    if not weak:
        pytest.skip("every shipped method discriminates")
    rng = np.random.default_rng(0)
    img = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    img[64:128, 64:128] = 128  # a flat block in noise: an outlier for the block statistics
    for m, r in F.analyze(img, tuple(weak)).items():
        assert r.score == 0.0 and not r.details["flagged"], m
        assert r.details["discriminates_reason"] == cal[m]["reason"]


def test_evidence_map_weights_by_rarity():
    m = np.ones((4, 4), np.float32)
    common = F.ForgeryResult(0.4, m, {"false_alarm_rate": 0.6, "discriminates": True})
    rare = F.ForgeryResult(0.99, m * 0.5, {"false_alarm_rate": 0.01, "discriminates": True})
    ev = F.evidence_map({"a": common, "b": rare})
    assert np.allclose(ev, 0.5 * 0.98)  # the common one (60% of untouched photos) paints nothing


def test_raw_scores_on_request():
    img = fs.photo("coffee")[:128, :128]
    raw = F.analyze(img, ("ela",), calibrated=False)["ela"]
    cal = F.analyze(img, ("ela",))["ela"]
    assert "false_alarm_rate" not in raw.details
    assert cal.details["raw_score"] == pytest.approx(raw.score)


def test_review_page_shows_legend_rate_and_not_evidence(tmp_path):
    from PIL import Image

    from genguard.review import render

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "overlay.png")
    entry = {"path": str(tmp_path / "x.png"), "overlay": str(tmp_path / "overlay.png"), "verdict": "inconclusive", "synthetic_probability": 0.5, "provenance": {},
             "forgery": {
                 "copy_move": {"score": 0.99, "details": {"false_alarm_rate": 0.0098, "flagged": True,
                                                          "discriminates": True,
                                                          "legend": "white = a region <b>copied</b>"}},
                 "noise": {"score": 0.0, "details": {"false_alarm_rate": 0.02, "flagged": False,
                                                     "discriminates": False, "legend": "Not evidence: AUC 0.5"}}}}
    page = render([entry])
    assert "1.0%" in page and "flagged" in page and "not evidence" in page
    assert html.escape("white = a region <b>copied</b>") in page and "<b>copied</b>" not in page
    assert 'class="ramp"' in page  # the overlay colour scale


@pytest.mark.parametrize("bad", [10 ** 400, float("nan"), -0.5, "0.01", True, None, {"x": 1}, "<script>x</script>"])
def test_review_forgery_table_survives_hostile_details(bad):
    from genguard.review import render

    entry = {"path": "x.png", "forgery": {"<script>x</script>": {"score": bad, "details": {
        "false_alarm_rate": bad, "flagged": bad, "discriminates": bad, "legend": bad}}, "ela": bad}}
    page = render([entry])
    assert "<script>x" not in page and "forgery method" in page


def _two_methods(top_a, top_b, n=100):
    """A calibration of two discriminating methods over n untouched photos, each method scoring the given photos
    highest (in that order) and the rest alike."""
    def scores(top):
        s = [0.0] * n
        for rank, i in enumerate(top):
            s[i] = 10.0 - rank
        return s

    return {"methods": {"a": {"discriminates": True, "untouched_raw_scores": scores(top_a)},
                        "b": {"discriminates": True, "untouched_raw_scores": scores(top_b)},
                        "c": {"discriminates": False, "untouched_raw_scores": scores(range(50))}}}


def test_family_threshold_keeps_all_flags_together_within_the_target(monkeypatch):
    """Two methods whose rarest photos differ: at 2% each they would flag 4 photos of 100 between them, so each
    counts only at its top rank, the rate 1/101 a new photo there gets (2 photos in all); where their rarest
    photos coincide, 2% each flags the same 2 photos, and 2% holds (never more than the target, however many
    ranks below flag nothing new). The method that does not discriminate never counts, whatever it scores."""
    monkeypatch.setattr(F, "_CALIBRATION", _two_methods([0, 1], [2, 3]))
    assert F.family_threshold(0.02) == pytest.approx((1 / 101, 0.02))
    monkeypatch.setattr(F, "_CALIBRATION", _two_methods([0, 1], [1, 0]))
    assert F.family_threshold(0.02) == pytest.approx((0.02, 0.02))
    assert F.family_threshold(0.005) == (0.0, 0.0)  # no rank keeps under half a photo in a hundred: nothing counts


def test_fused_verdict_counts_a_forgery_flag_only_within_the_family_rate(monkeypatch):
    from genguard.examine import fuse

    monkeypatch.setattr(F, "_CALIBRATION", _two_methods([0, 1], [2, 3]))

    def entry(rate):
        return {"forgery": {"a": {"details": {"flagged": True, "discriminates": True, "false_alarm_rate": rate}}}}

    verdict, reasons, _ = fuse(entry(1 / 101))
    assert verdict == "edited" and "together call 2.0%" in reasons[-1]["says"]
    verdict, reasons, _ = fuse(entry(2 / 101))  # within 2% alone, not with the other method's flags beside it
    assert verdict != "edited" and reasons[-1]["finding"] == "claim"
