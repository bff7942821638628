"""Validation against published measurements: the reference figures, the runner, the report and plot."""

from fabricsim.validation.report import plot_validation, write_markdown
from fabricsim.validation.validation import (GROUPS, REFERENCE_PATH, GroupSummary, ReferenceRow, RowResult,
                                             ValidationReport, fitted_parameters, geomean_abs_error,
                                             load_reference, training_step_function, validate)

__all__ = ["GROUPS", "REFERENCE_PATH", "GroupSummary", "ReferenceRow", "RowResult", "ValidationReport",
           "fitted_parameters", "geomean_abs_error", "load_reference", "training_step_function", "validate",
           "plot_validation", "write_markdown"]
