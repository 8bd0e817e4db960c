"""Active-learning tile selection: diversity, rare-cell enrichment and uncertainty arms.

Pure functions and scikit-learn style estimators over arrays and tables; the workspace
I/O is in `histocurate.selection.run`, the CLI in `histocurate.cli.select`, the Prefect
flow in `flows/select.py`.
"""

from histocurate.selection.cv import CVResult, PresenceData, choose_models, nested_summary
from histocurate.selection.diversity import diversity_pool
from histocurate.selection.pipeline import SelectionResult, run_selection
from histocurate.selection.presence import Candidate, PresenceMLP, make_candidates, presence_labels
from histocurate.selection.scalers import GroupMoments, ZScaler
from histocurate.selection.sources import ArrayFeatures, FeatureSource, WorkspaceFeatures
from histocurate.selection.uncertainty import ensemble_stats

__all__ = [
    "ArrayFeatures",
    "CVResult",
    "Candidate",
    "FeatureSource",
    "GroupMoments",
    "PresenceData",
    "PresenceMLP",
    "SelectionResult",
    "WorkspaceFeatures",
    "ZScaler",
    "choose_models",
    "diversity_pool",
    "ensemble_stats",
    "make_candidates",
    "nested_summary",
    "presence_labels",
    "run_selection",
]
