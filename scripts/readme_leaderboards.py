"""Copy the committed leaderboards into README.md (maintainer tool; run after regenerating results/).

Each block ``<!-- leaderboard:PATH[#track] -->`` ... ``<!-- /leaderboard -->`` of the README
is replaced by the leaderboard file PATH (headings one level down), by one track's section
of it, or (``#headline``) by its verdicts and headline tables, so the numbers in the README
are those of the committed runs:

    polysemy run --output results --overwrite
    polysemy run real --output results/real --overwrite
    python scripts/readme_leaderboards.py   # also the meta-evaluation block
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- leaderboard:(?P<path>[^#\s]+)(?:#(?P<track>\w+))? -->\n.*?<!-- /leaderboard -->", re.S)


def section(text: str, track: str | None) -> str:
    body = text.split("\n", 1)[1].strip() if text.startswith("# ") else text.strip()  # drop the title
    if track is None:
        return re.sub(r"^## ", "### ", body, flags=re.M)
    if track == "headline":  # the verdicts and headline tables, without the appendix
        head = body.split("## Appendix", 1)[0].strip()
        return re.sub(r"^(#{2,3}) ", lambda m: "#" + m.group(1) + " ", head, flags=re.M)
    appendix = body.split("## Appendix", 1)[-1]  # a track's full table (the headline has its own block)
    parts = re.split(r"^#{2,3} Track: ", appendix, flags=re.M)
    for part in parts[1:]:
        name, rest = part.split("\n", 1)
        if name.strip() == track:
            return rest.strip()
    raise SystemExit(f"no track {track!r} in the leaderboard")


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()

    def fill(match: re.Match) -> str:
        board = (ROOT / match["path"]).read_text()
        head = f"<!-- leaderboard:{match['path']}{'#' + match['track'] if match['track'] else ''} -->"
        return f"{head}\n{section(board, match['track'])}\n<!-- /leaderboard -->"

    new, count = BLOCK.subn(fill, text)
    readme.write_text(new)
    print(f"README.md: {count} leaderboard block(s) refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
