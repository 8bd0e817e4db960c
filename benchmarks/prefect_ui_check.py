"""Look at histocurate's runs in a real Prefect UI, in headless Chromium, and say what shows.

    python benchmarks/prefect_ui_check.py [--out prefect-ui-check] [--port 4270]

Starts `prefect server start` (its own PREFECT_HOME, analytics off), runs `histocurate demo
--prefect` on a small synthetic cohort (one parent run, its stages as subflows) and one
tile run with a broken slide, then screenshots with Debian's `chromium` (apt-get install
chromium) the artifact pages of the reports, the demo's parent run and the failed run.
Prints one row per page: its file, the share of H&E-coloured pixels (the inlined tile
thumbnails, mosaics and overlays are pink and purple; the UI is grey), the share of chart
pixels (the training curves are a white figure; the UI is dark) and whether the pictures a
report should show do show. Takes ~6 min on 2 cores; not part of the test suite. The PNGs
stay in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL_COHORT = {
    'indications = ["LUAD", "LUSC", "COAD", "MESO", "BLCA", "PAAD", "OV", "BRCA"]':
        'indications = ["LUAD", "COAD"]',
    "width_px = 4096": "width_px = 2560",
    "height_px = 4096": "height_px = 2560",
}  # fmt: skip
PICTURE_REPORTS = {
    "tile-report": "he",  # tiling overlays
    "select-luad-report": "he",  # the selection mosaic
    "segment-report": "he",  # mask overlays
    "consensus-report": "he",  # consensus overlays
    "train-report": "chart",  # the training curves (white matplotlib figure)
}
"""Reports with pictures inline, and how their pictures are recognised in a screenshot."""


def _api(base: str, path: str, body: dict[str, object]) -> list[dict[str, object]]:
    request = urllib.request.Request(f"{base}/api/{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        return list(json.loads(answer.read()))


def start_server(port: int, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}  # fmt: skip
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                return server
        except OSError:
            time.sleep(1)
    server.terminate()
    raise SystemExit("the Prefect server did not start in 120 s")


def screenshot(url: str, path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install chromium")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={path}", "--window-size=1400,2600",
                    "--virtual-time-budget=20000", url],
                   check=True, capture_output=True, timeout=120)  # fmt: skip


def he_share(path: Path) -> float:
    """Share of pixels coloured like H&E (pink eosin, purple haematoxylin)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float(((r > 120) & (b > 110) & (g < r - 35) & (g < b - 10)).mean())


def chart_share(path: Path, run: int = 100) -> float:
    """Share of pixels in horizontal runs of ``run`` near-white pixels: a chart's white
    background (the UI is dark; its white text never makes such runs)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    white = (rgb.min(axis=2) > 235).astype(np.int32)
    sums = np.concatenate([np.zeros((len(white), 1), np.int32), white.cumsum(axis=1)], axis=1)
    return float(((sums[:, run:] - sums[:, :-run]) == run).mean())


def run_pipeline(work: Path) -> None:
    """The demo under Prefect on a small cohort, and one tile run with a broken slide."""
    from histocurate.cli.app import main

    ws = work / "demo"
    if main(["init", str(ws)]) != 0:
        raise SystemExit("init failed")
    text = (ws / "histocurate.toml").read_text()
    for default, small in SMALL_COHORT.items():
        text = text.replace(default, small)
    (ws / "histocurate.toml").write_text(text)
    code = main(["demo", str(ws), "--prefect", "--n-tiles", "4", "--n-uncertain", "4"])
    print(f"histocurate demo --prefect: exit code {code}")
    broken = work / "broken"
    main(["init", str(broken)])
    shutil.copy(next((ws / "synthetic" / "slides").glob("*.tiff")), broken / "a.tiff")
    (broken / "bad.svs").write_text("not a slide")
    (broken / "slides.csv").write_text(
        "slide_id,path,indication\na,a.tiff,LUAD\nbad,bad.svs,LUAD\n"
    )
    print(f"histocurate tile (a broken slide): exit code {main(['tile', '-w', str(broken)])}")


def _latest(base: str, what: str, where: dict[str, object]) -> dict[str, object] | None:
    found = _api(base, f"{what}/filter", {**where, "limit": 1, "sort": (
        "CREATED_DESC" if what == "artifacts" else "START_TIME_DESC")})  # fmt: skip
    return found[0] if found else None


def pages_to_check(base: str) -> list[tuple[str, str, bool]]:
    """(name, UI path, pictures expected) of the pages to look at."""
    pages: list[tuple[str, str, bool]] = []
    for key in [*PICTURE_REPORTS, "evaluation-report", "demo-summary"]:
        artifact = _latest(base, "artifacts", {"artifacts": {"key": {"any_": [key]}}})
        if artifact:
            pages.append((key, f"artifacts/artifact/{artifact['id']}", key in PICTURE_REPORTS))
        elif key in PICTURE_REPORTS:
            print(f"no {key} artifact: its stage did not run or published nothing")
    demo = _latest(base, "flow_runs", {"flows": {"name": {"any_": ["demo"]}}})
    if demo:
        pages.append(("demo parent run", f"runs/flow-run/{demo['id']}", False))
    failed = {"state": {"type": {"any_": ["FAILED"]}}}
    run = _latest(base, "flow_runs", {"flow_runs": failed, "flows": {"name": {"any_": ["tile"]}}})
    if run:
        pages.append(("failed tile run", f"runs/flow-run/{run['id']}", False))
    return pages


def print_groups(base: str) -> None:
    """The runs sharing the demo's group tag (the parent and its stages)."""
    demo = _latest(base, "flow_runs", {"flows": {"name": {"any_": ["demo"]}}})
    if not demo:
        return
    tags = [str(t) for t in demo["tags"] if str(t).startswith("group:")]  # type: ignore[attr-defined]
    grouped = _api(base, "flow_runs/filter", {"flow_runs": {"tags": {"all_": tags}}})
    names = sorted(str(r["name"]).split(" · ")[0] for r in grouped)
    print(f"\nruns under the demo's {tags[0]}: {len(grouped)} ({', '.join(names)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("prefect-ui-check"))
    parser.add_argument("--port", type=int, default=4270)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="prefect-ui-home-"))
    base = f"http://127.0.0.1:{args.port}"
    server = start_server(args.port, home)
    os.environ.update(PREFECT_API_URL=f"{base}/api", PREFECT_HOME=str(home))
    try:
        started = time.perf_counter()
        run_pipeline(Path(tempfile.mkdtemp(prefix="prefect-ui-ws-")))
        print(f"pipeline: {time.perf_counter() - started:.0f} s")
        print("\n| page | screenshot | H&E-coloured pixels | chart pixels | pictures |")
        print("|---|---|---|---|---|")
        for name, path, expect_pictures in pages_to_check(base):
            png = out / f"{name.replace(' ', '-')}.png"
            screenshot(f"{base}/{path}", png)
            he, chart = he_share(png), chart_share(png)
            kind = PICTURE_REPORTS.get(name)
            shown = (he if kind == "he" else chart if kind == "chart" else max(he, chart)) > 0.005
            verdict = "shown" if shown else ("MISSING" if expect_pictures else "-")
            print(f"| {name} | {png.name} | {he:.1%} | {chart:.1%} | {verdict} |")
        print_groups(base)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
