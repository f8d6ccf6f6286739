"""DAVIS-style evaluation: J, F and J&F metrics (`metrics`) and a folder runner (`davis`)."""

from maskvos.eval.davis import EvalReport, EvalSummary, ObjectScores, evaluate_folders
from maskvos.eval.metrics import EvalError, boundary_measure, region_similarity, statistics

__all__ = [
    "EvalError",
    "EvalReport",
    "EvalSummary",
    "ObjectScores",
    "boundary_measure",
    "evaluate_folders",
    "region_similarity",
    "statistics",
]
