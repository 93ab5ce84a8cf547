"""Real labelled photos: Tux Paint photo stamps mapped to WordNet, composited on backgrounds."""
