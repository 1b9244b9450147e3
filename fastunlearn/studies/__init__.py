"""Studies: the five research questions as runnable, resumable, multi-seed experiments.

``fu.studies.run("cost-quality", dataset="digits", epochs=1)`` or ``fastunlearn study
cost-quality``; see :mod:`fastunlearn.studies.base` (options, registry) and
:mod:`fastunlearn.studies.keys` (keyed runs and result files), :mod:`~fastunlearn.studies.pool`
(the original/retrained model pool), :mod:`~fastunlearn.studies.executors` (resumable execution
on local / process / Ray executors) and :mod:`~fastunlearn.studies.tables` (result rows,
confidence intervals).
"""

from fastunlearn.studies.base import (
    FAST_METHODS,
    StudyConfig,
    StudyContext,
    StudyResult,
    get_study,
    list_studies,
    parse_forget,
    register_study,
    run,
)
from fastunlearn.studies.executors import execute
from fastunlearn.studies.keys import make_run
from fastunlearn.studies.tables import aggregate, mean_ci

__all__ = ["FAST_METHODS", "StudyConfig", "StudyContext", "StudyResult", "aggregate", "execute",
           "get_study", "list_studies", "make_run", "mean_ci", "parse_forget", "register_study",
           "run"]
