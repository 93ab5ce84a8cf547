"""The HTML report of a run, read as files: one card page per (track, target, method) unit,
every link and image resolves inside the run folder, nothing points at the network, the
headline cells are the leaderboard's, and bad folders are refused before anything is written."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark.core.errors import InputError, MissingFileError
from benchmark.reporting.headline import render_headline, spec_from_registry
from benchmark.reporting.html_report import write_report
from benchmark.reporting.leaderboards import load_results, normalise

LINK = re.compile(r'(?:src|href)="([^"#]*)(?:#[^"]*)?"')


def _split_units(run: Path) -> set[tuple[str, str, str]]:
    results = pd.read_csv(run / "results.csv")
    split = results[results["target"] != "*"]
    return set(zip(split["track"], split["target"], split["method"]))


def test_the_run_writes_one_card_page_per_unit(tiny_run):
    pages = sorted((tiny_run / "report" / "cards").glob("*.html"))
    units = _split_units(tiny_run)
    assert len(pages) == len(units) == len(list((tiny_run / "cards").glob("*.json")))
    index = (tiny_run / "report" / "index.html").read_text()
    linked = set(re.findall(r'href="cards/([^"]+\.html)"', index))
    assert linked == {p.name for p in pages}  # every card is reachable from the index
    titles = {re.search(r"<title>(.*?)</title>", p.read_text()).group(1) for p in pages}
    assert titles == {f"{m} on {t} ({tr})".replace("|", "|") for tr, t, m in units}


def test_every_link_and_image_resolves_in_the_run_folder_and_nothing_is_remote(tiny_run):
    report = tiny_run / "report"
    pages = [report / "index.html", *sorted((report / "cards").glob("*.html"))]
    images = 0
    for page in pages:
        html = page.read_text()
        assert "Content-Security-Policy" in html and "default-src 'none'" in html
        assert not re.search(r'(?:src|href)="(?:https?:)?//', html), page.name
        for link in LINK.findall(html):
            if link:
                assert (page.parent / link).resolve().is_file(), f"{page.name}: {link}"
                images += link.endswith(".webp")
    assert images > 0


def test_headline_cells_are_the_leaderboards(tiny_run):
    df = normalise(load_results(tiny_run))
    spec = spec_from_registry(pd.read_csv(tiny_run / "headline_eligibility.csv"))
    board = render_headline(df[df["track"] == "planted"], "planted", spec)
    cells = [c.strip().strip("*").replace("<u>", "").replace("</u>", "") for line in board.splitlines()
             if line.startswith("| ") and "Method" not in line for c in line.strip("|").split("|")[1:]]
    index = (tiny_run / "report" / "index.html").read_text()
    section = index[index.index('id="track-planted"'):index.index('id="track-pairs"')]
    shown = re.findall(r'data-method="[^"]*">([^<]*)</a>', section)
    assert cells and shown == cells


def test_a_folder_that_is_not_a_run_or_holds_a_foreign_report_is_refused(tmp_path, tiny_run):
    with pytest.raises(MissingFileError, match="not a finished run folder"):
        write_report(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    shutil.rmtree(copy / "report")
    (copy / "report").mkdir()
    (copy / "report" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a polysemy-bench report"):
        write_report(copy)
    assert (copy / "report" / "notes.txt").read_text() == "mine" and not (copy / ".report.staging").exists()


def test_strings_from_data_are_escaped(tmp_path, tiny_run):
    import json

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    attack = "<script>alert(1)</script>"
    path = next(p for p in sorted((copy / "cards").glob("*.json")) if json.loads(p.read_text()).get("original"))
    card = json.loads(path.read_text())
    card["original"][0]["class"] = attack
    card["method_params"]["note"] = attack
    card["parts"] = [attack, "b"]
    path.write_text(json.dumps(card))
    write_report(copy)
    pages = [p.read_text() for p in (copy / "report" / "cards").glob("*.html")]
    assert not any(attack in page for page in pages)
    assert sum("&lt;script&gt;alert(1)&lt;/script&gt;" in page for page in pages) == 1
