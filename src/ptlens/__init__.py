"""ptlens: what post-training did to a language model, in its weights and its behaviour.

The library is the product; the ``ptlens`` CLI is a thin layer over it::

    import ptlens
    res = ptlens.run(output_dir="out", limit=12, n_samples=4)   # weights, behaviour, mechanism, report
    ptlens.run_weights(["a=path/to/A", "b=path/to/B"], ptlens.ScanConfig(spectral="off"), "out")
    ptlens.run_report("out")

Steps: :func:`run_weights`, :func:`run_behavior`, :func:`run_mechanism`, :func:`run_report`
(:mod:`ptlens.pipeline`); stored results: :mod:`ptlens.results`.
"""

from ptlens.errors import PtlensError
from ptlens.pipeline import (Reporter, RunConfig, RunResult, WeightsResult, run, run_behavior, run_mechanism,
                             run_report, run_weights)
from ptlens.resolve import Checkpoint, Lineage, resolve_lineage

from ptlens.version import __version__

_CONFIGS = {"ScanConfig": "ptlens.weights", "BehaviorConfig": "ptlens.behavior.config",
            "MechanismConfig": "ptlens.mechanism.config"}


def __getattr__(name: str):
    """The step configs load their (torch-importing) modules on first use."""
    if name in _CONFIGS:
        import importlib

        return getattr(importlib.import_module(_CONFIGS[name]), name)
    raise AttributeError(f"module 'ptlens' has no attribute {name!r}")


__all__ = ["BehaviorConfig", "Checkpoint", "Lineage", "MechanismConfig", "PtlensError", "Reporter", "RunConfig",
           "RunResult", "ScanConfig", "WeightsResult", "__version__", "resolve_lineage", "run", "run_behavior",
           "run_mechanism", "run_report", "run_weights"]
