"""Weight analysis: index and reader, pure metrics, the scan's plan, records and streaming per-tensor pass, aggregates and outputs.

The names below load their modules (torch, numba) on first use, so that a process needing one
submodule, e.g. a figure worker importing :mod:`ptlens.weights.figures`, does not pay for the rest.
"""

_EXPORTS = {"ScanConfig": "config", "ScanResult": "records", "TensorRecord": "records", "Transition": "plan",
            "scan_lineage": "driver", "write_outputs": "outputs"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"ptlens.weights.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ptlens.weights' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
