"""Tasks: what a model learns. One module per task, found by the spec's `task:` name in TASKS."""

from __future__ import annotations

from skylift.tasks._base import Task, TaskData
from skylift.tasks.classification import Classification
from skylift.tasks.language_modeling import LanguageModeling
from skylift.tasks.regression import Regression

TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Regression(), LanguageModeling())}

__all__ = ["TASKS", "Task", "TaskData", "task_of"]


def task_of(meta: dict[str, object]) -> Task:
    """The task a checkpoint's or registered version's metadata names (classification if none:
    models saved before tasks existed)."""
    return TASKS[str(meta.get("task", "classification"))]
