"""Weight analysis: index and reader, pure metrics, the streaming scan, aggregates and outputs."""

from ptlens.weights.outputs import load_summary, write_outputs
from ptlens.weights.scan import ScanConfig, ScanResult, TensorRecord, Transition, scan_lineage

__all__ = ["ScanConfig", "ScanResult", "TensorRecord", "Transition", "load_summary", "scan_lineage", "write_outputs"]
