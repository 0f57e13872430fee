"""The label-efficiency study: a resumable grid of fine-tuning cells, then a table, plots and a report."""

from medssl.study.runner import Cell, grid, run_grid, run_study

__all__ = ["Cell", "grid", "run_grid", "run_study"]
