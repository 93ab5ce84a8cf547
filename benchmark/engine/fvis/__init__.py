"""Feature-visualisation backends; each module registers one backend."""
