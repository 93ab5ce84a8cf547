"""``python -m benchmark.sources.world [OUT_DIR]``: train/load the world CNN and judge, write
``world_examples.png`` and ``world_summary.md`` to OUT_DIR (default ``results``) and
print the generation throughput."""
from __future__ import annotations

import sys
from pathlib import Path

from benchmark.sources.world.report import generation_throughput, world_summary, write_example_grid
from benchmark.storage.cache import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        print("usage: python -m benchmark.sources.world [OUT_DIR]", file=sys.stderr)
        return 2
    out = Path(args[0] if args else "results")
    print("wrote", write_example_grid(out / "world_examples.png"))
    summary = world_summary()
    print("wrote", atomic_write_text(out / "world_summary.md", summary))
    print(summary)
    generation_throughput()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
