"""Image embedders for embedding-distance metrics; each module registers one embedder."""
