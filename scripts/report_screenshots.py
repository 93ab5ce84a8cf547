"""Screenshots of a run's HTML report for the README (maintainer tool; needs Chromium and
chromedriver, which `make test` installs):

    python scripts/report_screenshots.py results [--card planted-...-pure.html]

writes RUN_DIR/report_index.png and RUN_DIR/split_card.png (the first between-class planted card of the
method given by --method, default pure, unless --card names one).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def _driver(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--card", help="file name of the card in report/cards/")
    parser.add_argument("--method", default="pure")
    args = parser.parse_args(argv)
    run = Path(args.run_dir)
    cards = sorted((run / "report" / "cards").glob("planted_blocks*.html"))
    card = run / "report" / "cards" / args.card if args.card else \
        next((c for c in cards if c.stem.endswith("_" + args.method)), cards[0] if cards else None)
    if card is None or not card.is_file():
        raise SystemExit(f"no card to show in {run / 'report' / 'cards'}; run `polysemy report {run}` first")
    driver = _driver(1400, 1500)
    try:
        driver.get((run / "report" / "index.html").resolve().as_uri())
        driver.save_screenshot(str(run / "report_index.png"))
        driver.get(card.resolve().as_uri())
        driver.save_screenshot(str(run / "split_card.png"))
    finally:
        driver.quit()
    print(f"wrote {run / 'report_index.png'} and {run / 'split_card.png'} ({card.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
