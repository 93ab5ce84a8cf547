"""core: the vocabulary every other stage speaks.

Types (Target, Split, Context, PlantedTruth, Column), the plug-in base classes (Method,
Metric), the run configuration, the registries, the error base class (PolysemyError),
stage timings, the progress switch and the non-finite checks.

May import: nothing of polysemy-bench (only the standard library, torch and numpy).
"""
