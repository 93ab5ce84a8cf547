"""Models and datasets available by name; each module registers its entries on import."""
