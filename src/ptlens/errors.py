"""User-facing errors: the CLI turns these into one line on stderr and exit code 2."""


class PtlensError(Exception):
    """Bad input from the user (a path, a model, a file, a flag): never a bug in ptlens."""


class ArchitectureMismatch(PtlensError):
    """Checkpoints of a lineage whose tensors cannot be paired."""
