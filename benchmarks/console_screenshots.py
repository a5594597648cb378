"""Screenshots of the review console (queue, item, study) for the README, taken with Playwright and Debian's chromium.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/console_screenshots.py [--out docs]

Builds a throw-away genguard home, examines a folder the way `genguard console` does on import (scikit-image
photos; one tagged by `genguard tag` as AI-generated, one tagged then altered so its manifest no longer
matches, one with a copy-moved patch for the forgery overlay), records two decisions, makes a 2AFC study
(photos stand in for a run's samples: this shows the page, not a result) and saves
OUT/console-queue.png, OUT/console-item.png and OUT/console-study.png.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _png_chunks import replace_pixels  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from skimage import data

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["GENGUARD_HOME"] = str(tmp / "home")
        src, tagged = tmp / "incoming", tmp / "tagged"
        src.mkdir()
        photos = {"astronaut.png": data.astronaut(), "coffee.png": data.coffee(), "chelsea.png": data.chelsea(),
                  "rocket.png": data.rocket(), "camera.png": np.stack([data.camera()] * 3, -1)}
        for name, arr in photos.items():
            Image.fromarray(arr[:256, :256]).save(src / name)
        spliced = data.coffee()[:256, :256].copy()
        spliced[150:214, 150:214] = spliced[20:84, 20:84]  # copy-move
        Image.fromarray(spliced).save(src / "coffee-spliced.png")
        env = dict(os.environ, GENGUARD_NO_PROGRESS="1")
        subprocess.run([sys.executable, "-m", "genguard", "tag", str(src / "astronaut.png"), str(src / "rocket.png"),
                        "--out", str(tagged), "--generator", "demo-diffusion"], check=True, env=env,
                       capture_output=True)
        (src / "astronaut.png").unlink()
        (tagged / "astronaut.png").rename(src / "astronaut-tagged.png")
        # the rocket keeps its signed manifest but gets other pixels: the manifest no longer matches (tampered)
        im = np.array(Image.open(tagged / "rocket.png"))
        im[40:90, 40:90] = 255 - im[40:90, 40:90]
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "PNG")
        (src / "rocket-edited.png").write_bytes(replace_pixels((tagged / "rocket.png").read_bytes(), buf.getvalue()))
        from genguard.console import create_app, create_user, studies
        from genguard.console.importer import import_source
        from genguard.console.models import Item
        from genguard.console.server import BackgroundServer

        app = create_app(None, tmp / "home")
        with app.state.sessions() as s:
            create_user(s, "alice", "admin", "alice-password")
            create_user(s, "bob", "reviewer", "bob-password")
            q = import_source(s, src, "incoming uploads", 1, tmp / "home" / "console-maps")
            items = s.query(Item).filter_by(queue_id=q.id).order_by(Item.suspicion.desc()).all()
            items[0].decision, items[0].decided_by, items[0].note = "edited", 1, "pixels changed after signing"
            s.commit()
            real, gen = tmp / "real", tmp / "gen"
            real.mkdir()
            gen.mkdir()
            for i, (name, arr) in enumerate(photos.items()):
                Image.fromarray(arr[:128, :128]).save((real if i % 2 else gen) / name)
            Image.fromarray(data.immunohistochemistry()[:128, :128]).save(real / "ihc.png")
            st = studies.create_study(s, "2AFC demo: photos stand in for a run's samples", "2afc", real, gen, 1,
                                      tmp / "home", trials_per_rater=6, attention_checks=1)
            item_id = next(i.id for i in items if i.overlay_path and "spliced" in i.name)
            qid, sid = q.id, st.id
        args.out.mkdir(parents=True, exist_ok=True)
        with BackgroundServer(app) as url, sync_playwright() as p:
            b = p.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
            page = b.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url + "/login")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "alice-password")
            page.click("#login")
            page.goto(f"{url}/queues/{qid}")
            page.screenshot(path=str(args.out / "console-queue.png"), full_page=True)
            page.goto(f"{url}/items/{item_id}")
            page.screenshot(path=str(args.out / "console-item.png"), full_page=True)
            page.goto(f"{url}/studies/{sid}")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / "console-study.png"), full_page=True)
            b.close()
    for n in ("queue", "item", "study"):
        print(f"wrote {args.out / f'console-{n}.png'}")


if __name__ == "__main__":
    main()
