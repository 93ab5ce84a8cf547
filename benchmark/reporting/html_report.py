"""``polysemy report RUN_DIR``: a static, offline HTML report of a run (split cards).

Written to ``RUN_DIR/report/``: ``index.html`` (the run's verdicts, each track's headline
table with its CIs and bold/underline marks, sortable by column; per headline column a
per-target table whose cells open the split cards; the run's provenance) and
``cards/<track>-<target>-<method>.html``, one split card per (track, target, method) unit:
the original channel's top references with their receptive-field crops, each virtual neuron's
references and feature visualisations, the planted part behind each reference where the
channel is planted, every metric value of the unit with its meaning and status, and the
method's parameters, with links to the neighbouring targets and the other methods.

Everything is local: pages are rendered with Jinja2 templates (``templates/``), the style
sheet and the sorting script are copied beside them, and images are the run's thumbnails
(``RUN_DIR/thumbs/``, written once per image by the run's units, :mod:`benchmark.engine.cards`)
referenced by relative paths. No page loads anything from the network (a Content-Security-
Policy forbids it), so the report opens from the file system and works offline; share the
run folder, not the report folder alone. The numbers are read from ``results.csv`` and the
headline rule from ``headline_eligibility.csv``; nothing is recomputed.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.core.errors import InputError, MissingFileError
from benchmark.engine.cards import load_card
from benchmark.reporting.headline import HeadlineSpec, headline_table, spec_from_registry, verdict
from benchmark.reporting.leaderboards import load_results, normalise
from benchmark.reporting.table_formats import fmt_number
from benchmark.storage.cache import canonical_json

TEMPLATES = Path(__file__).with_name("templates")
ASSETS = ("report.css", "report.js")
TRACK_ORDER = ("planted", "planted_within", "pairs", "layer", "detection")
PART_CLASSES = ("part0", "part1", "part2", "part3")


@dataclass(frozen=True)
class CardRef:
    """Where a card's page is, and what it shows (for links and navigation)."""

    track: str
    target: str
    method: str
    params: str
    file: str


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_") or "x"


def _markdown_inline(text: str) -> str:
    """The verdicts' Markdown (bold, underline tags) as HTML, everything else escaped."""
    from markupsafe import Markup, escape

    html = str(escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    return Markup(html.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>"))


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["num"] = lambda x: "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) \
        else fmt_number(float(x))
    env.filters["md"] = _markdown_inline
    return env


def _cards(run: Path) -> list[dict]:
    folder = run / "cards"
    if not folder.is_dir():
        return []
    cards = [load_card(p) for p in sorted(folder.glob("*.json"))]
    order = {t: i for i, t in enumerate(TRACK_ORDER)}
    return sorted(cards, key=lambda c: (order.get(c["track"], 99), c["track"], c["target"], c["method"],
                                        canonical_json(c.get("method_params", {}))))


def _references(cards: list[dict]) -> dict[str, CardRef]:
    """unit key -> CardRef, with file names unique within the report."""
    refs, used = {}, set()
    for c in cards:
        params = canonical_json(c.get("method_params", {}))
        name = _slug(f"{c['track']}-{c['target']}-{c['method']}")
        if name in used:
            name += "-" + c["unit"][:8]
        used.add(name)
        refs[c["unit"]] = CardRef(c["track"], c["target"], c["method"], params, f"{name}.html")
    return refs


def _values(df: pd.DataFrame) -> dict[tuple, list[dict]]:
    """(track, target, method, params) -> the unit's metric rows (main columns first)."""
    out: dict[tuple, list[dict]] = {}
    for row in df.itertuples(index=False):
        out.setdefault((row.track, row.target, row.method, row.method_params), []).append(
            dict(metric=row.metric, column=row.column, value=row.value, status=row.status, reason=row.reason,
                 main=bool(row.main), higher=row.higher_is_better))
    for rows in out.values():
        rows.sort(key=lambda r: (not r["main"], r["metric"], r["column"]))
    return out


def _meanings() -> dict[str, str]:
    from benchmark.core.registry import METRICS, load_plugins

    load_plugins()
    return {name: METRICS.describe(name) for name in METRICS.names()}


def _metric_name(label: str) -> str:
    return label.split("[", 1)[0]


def _track_section(part: pd.DataFrame, track: str, spec: HeadlineSpec, cards: list[dict],
                   refs: dict[str, CardRef], seed: int) -> dict:
    table = headline_table(part, track, spec, seed)
    order = [r.label for r in table.rows] if table is not None else []
    track_cards = [c for c in cards if c["track"] == track]
    by_cell = {(c["target"], c["method"], canonical_json(c.get("method_params", {}))): refs[c["unit"]]
               for c in track_cards}
    labels = part.drop_duplicates(["method", "method_params"])[["label", "method", "method_params"]]
    methods = sorted(labels.itertuples(index=False), key=lambda r: (order.index(r.label) if r.label in order
                                                                     else len(order), r.label))
    targets = list(dict.fromkeys(c["target"] for c in track_cards))
    keys = list(table.keys) if table is not None else []
    grids = []
    for i, key in enumerate(keys or [None]):
        values = part if key is None else part[(part["metric"] == key[0]) & (part["column"] == key[1])
                                                & part["main"].astype(bool)]
        lookup = {(r.target, r.method, r.method_params): r.value for r in values.itertuples(index=False)
                  if r.status == "ok"}
        rows = []
        for target in targets:
            cells = []
            for m in methods:
                ref = by_cell.get((target, m.method, m.method_params))
                value = lookup.get((target, m.method, m.method_params)) if key is not None else None
                cells.append(dict(ref=ref, value=value, label=m.label))
            rows.append(dict(target=target, cells=cells))
        grids.append(dict(id=f"grid-{_slug(track)}-{i}", title=table.heads[i] if key is not None else "Split cards",
                          key=key, rows=rows))
    return dict(track=track, id=f"track-{_slug(track)}", table=table, grids=grids,
                columns=[m.label for m in methods], verdict=verdict(part, track, spec, seed),
                n_cards=len(track_cards), n_targets=len(targets))


def _card_context(card: dict, ref: CardRef, refs: dict[str, CardRef], cards: list[dict], values: dict,
                  meanings: dict, titles) -> dict:
    same_method = [c for c in cards if c["track"] == card["track"] and c["method"] == card["method"]
                   and canonical_json(c.get("method_params", {})) == ref.params]
    position = next(i for i, c in enumerate(same_method) if c["unit"] == card["unit"])
    neighbours = {"previous": same_method[position - 1] if position > 0 else None,
                  "next": same_method[position + 1] if position + 1 < len(same_method) else None}
    others = [c for c in cards if c["track"] == card["track"] and c["target"] == card["target"]]
    rows = values.get((card["track"], card["target"], card["method"], ref.params), [])
    for r in rows:
        r["title"] = titles.get((_metric_name(r["metric"]), r["column"]), "")
        r["meaning"] = meanings.get(_metric_name(r["metric"]), "")
    return dict(card=card, ref=ref, rows=rows,
                neighbours={k: (refs[c["unit"]].file, c["target"]) if c else None for k, c in neighbours.items()},
                others=[(refs[c["unit"]].file, c["method"], c["unit"] == card["unit"]) for c in others],
                part_classes=PART_CLASSES, position=position + 1, count=len(same_method))


def _provenance(run: Path) -> dict:
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    config = info.get("config", {})
    timings = {k: round(v, 1) for k, v in sorted(info.get("timings", {}).items()) if k.endswith("_s")}
    return dict(name=config.get("name", run.name), dataset=config.get("data", {}).get("dataset", ""),
                model=config.get("model", {}).get("name", ""), commit=info.get("git_commit", "unknown"),
                finished=info.get("finished", ""), seeds=info.get("seeds", {}), timings=timings,
                packages=info.get("packages", {}), device=info.get("device", ""),
                identity=info.get("identity", {}).get("id", ""), tracks={k: v.get("targets") for k, v in
                                                                          info.get("tracks", {}).items()})


def write_report(run_dir: str | Path, seed: int = 0) -> Path:
    """Write ``RUN_DIR/report/`` (see the module docstring); returns the path of index.html.

    Raises:
        MissingFileError: ``run_dir`` is not a finished run folder (no results.csv).
        InputError: a card file is not a split card of this version.
    """
    run = Path(run_dir)
    if not (run / "results.csv").is_file():
        raise MissingFileError(f"{run} is not a finished run folder (no results.csv); run `polysemy run` first")
    out = run / "report"
    if out.exists() and not (out / "index.html").is_file() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not a polysemy-bench report (no index.html); move it away first")
    df = normalise(load_results(run))
    eligibility = run / "headline_eligibility.csv"
    spec = spec_from_registry(pd.read_csv(eligibility) if eligibility.is_file() else None)
    cards = _cards(run)
    refs = _references(cards)
    tracks = sorted(dict.fromkeys(df["track"]), key=lambda t: (TRACK_ORDER.index(t) if t in TRACK_ORDER else 99, t))
    sections = [_track_section(df[df["track"] == t], t, spec, cards, refs, seed) for t in tracks]
    staging = run / ".report.staging"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        _write_pages(staging, run, df, spec, cards, refs, sections)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # no half-written report is left behind
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out / "index.html"


def _write_pages(staging: Path, run: Path, df: pd.DataFrame, spec: HeadlineSpec, cards: list[dict],
                 refs: dict[str, CardRef], sections: list[dict]) -> None:
    env = _environment()
    (staging / "cards").mkdir(parents=True)
    for name in ASSETS:
        shutil.copyfile(TEMPLATES / name, staging / name)
    values, meanings, provenance = _values(df), _meanings(), _provenance(run)
    card_page = env.get_template("card.html.j2")
    for card in cards:
        ref = refs[card["unit"]]
        if "unavailable" in card:  # the method did not apply: the card says why
            for field, empty in (("neurons", []), ("original", []), ("parts", None), ("target_concepts", None),
                                 ("pool", 0)):
                card.setdefault(field, empty)
        page = card_page.render(**_card_context(card, ref, refs, cards, values, meanings, spec.titles),
                                root="..", thumbs="../../thumbs", run=provenance)
        (staging / "cards" / ref.file).write_text(page)
    index = env.get_template("index.html.j2").render(sections=sections, run=provenance, root=".",
                                                     n_cards=len(cards))
    (staging / "index.html").write_text(index)


def report_size(run_dir: str | Path) -> int:
    """Bytes of the report and the thumbnails it shows."""
    run = Path(run_dir)
    return sum(p.stat().st_size for folder in (run / "report", run / "thumbs") if folder.is_dir()
               for p in folder.rglob("*") if p.is_file())

