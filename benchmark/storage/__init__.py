"""storage: files on disk that outlive a process.

The content-addressed tensor cache (atomic writes, checksums, code fingerprints of the
modules that compute an entry), its administration (ls / clear / verify) and loading of
weight checkpoints with errors that name the mismatch.

May import: core.
"""
