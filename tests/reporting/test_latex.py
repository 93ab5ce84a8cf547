"""The committed LaTeX leaderboard compiles with pdflatex (booktabs), and its first page renders
to PNG (Debian's texlive and poppler-utils, installed by ``make setup-tests`` / ``make test``)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from benchmark.reporting.table_formats import latex_document

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, (f"{name} is not installed: `make test` installs it (apt: texlive-latex-base, "
                   "texlive-latex-recommended, poppler-utils)")
    return found


def test_committed_leaderboard_compiles_and_renders(tmp_path):
    tables = (ROOT / "results" / "leaderboard.tex").read_text(encoding="utf-8")
    assert "\\begin{tabular}" in tables
    (tmp_path / "board.tex").write_text(latex_document(tables), encoding="utf-8")
    done = subprocess.run([_tool("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", "board.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Undefined control sequence" not in done.stdout and "Missing" not in done.stdout
    subprocess.run([_tool("pdftoppm"), "-png", "-r", "60", "-f", "1", "-l", "1", "board.pdf", "page"],
                   cwd=tmp_path, check=True, timeout=120)
    png = next(tmp_path.glob("page*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, ARTIFACTS / "leaderboard-page1.png")  # kept as a test artefact


def test_headline_and_appendix_tables_rendered_now_compile(tmp_path):
    """The LaTeX the current code writes (headline tables with captions full of TeX specials
    such as 2^n and <, and the appendix), not only the committed copy."""
    import pandas as pd

    from benchmark.reporting.headline import headline_sections
    from benchmark.reporting.leaderboards import normalise
    from benchmark.reporting.table_formats import write_leaderboards
    from tests.reporting.test_headline import _results, _spec

    df = _results()
    df.loc[df["metric"] == "extra0", "metric"] = "odd[wup<0.65 & 50%_#~^$]"  # every TeX special in a name
    df.loc[df["method"] == "lose", "method"] = "lose_{x}"
    df = normalise(df)
    write_leaderboards(df, tmp_path, preface=headline_sections(df, _spec(df)))
    tables = (tmp_path / "leaderboard.tex").read_text(encoding="utf-8")
    assert "tab:headline-layer" in tables and isinstance(df, pd.DataFrame)
    (tmp_path / "board.tex").write_text(latex_document(tables), encoding="utf-8")
    done = subprocess.run([_tool("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", "board.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
