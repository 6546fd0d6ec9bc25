"""What ptlens stores: file names (:mod:`.files`), typed records with load/save and schema versions
(:mod:`.store`), and the weight-metric registry (:mod:`.registry`). Pure Python: no numpy, torch or models."""

from ptlens.results import files, registry
from ptlens.results.store import (BEHAVIOR_SCHEMA, WEIGHTS_SCHEMA, BehaviorResults, SampleRecord, TensorRow,
                                  WeightSummary, load_behavior_results, load_samples, load_weight_summary,
                                  read_tensor_rows, save_behavior_results, save_weight_summary, write_samples,
                                  write_tensor_rows)

__all__ = ["BEHAVIOR_SCHEMA", "WEIGHTS_SCHEMA", "BehaviorResults", "SampleRecord", "TensorRow", "WeightSummary",
           "files", "load_behavior_results", "load_samples", "load_weight_summary", "read_tensor_rows", "registry",
           "save_behavior_results", "save_weight_summary", "write_samples", "write_tensor_rows"]
