"""ptlens: what post-training did to a language model, in its weights and its behaviour.

The library is the product; the ``ptlens`` CLI is a thin layer over it.
"""

from ptlens.errors import PtlensError
from ptlens.resolve import Checkpoint, Lineage, resolve_lineage

__version__ = "0.1.0"

__all__ = ["Checkpoint", "Lineage", "PtlensError", "resolve_lineage", "__version__"]
