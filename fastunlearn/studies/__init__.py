"""Studies: the five research questions as runnable, resumable, multi-seed experiments.

``fu.studies.run("cost-quality", dataset="digits", epochs=1)`` or ``fastunlearn study
cost-quality``. Modules: :mod:`~fastunlearn.studies.config` (the shared options),
:mod:`~fastunlearn.studies.registry`
(the registry), :mod:`~fastunlearn.studies.base` (running a study, report helpers),
:mod:`~fastunlearn.studies.keys` (keyed runs and result files), :mod:`~fastunlearn.studies.pool`
(the original/retrained model pool), :mod:`~fastunlearn.studies.executors` (resumable execution
on local / process / Ray executors) and :mod:`~fastunlearn.studies.tables` (result rows,
confidence intervals).
"""

# The built-in studies register themselves on import (as timm registers its models): importing
# them here fills the registry whenever anything under fastunlearn.studies is imported.
from fastunlearn.studies import (  # noqa: F401 - registration
    collateral,
    cost_quality,
    cross_arch,
    forget_scaling,
    layer_sensitivity,
)
from fastunlearn.studies.base import StudyContext, StudyResult, run
from fastunlearn.studies.config import FAST_METHODS, StudyConfig, parse_forget
from fastunlearn.studies.executors import execute
from fastunlearn.studies.keys import make_run
from fastunlearn.studies.registry import get_study, list_studies, register_study
from fastunlearn.studies.tables import aggregate, mean_ci

__all__ = ["FAST_METHODS", "StudyConfig", "StudyContext", "StudyResult", "aggregate", "execute",
           "get_study", "list_studies", "make_run", "mean_ci", "parse_forget", "register_study",
           "run"]
