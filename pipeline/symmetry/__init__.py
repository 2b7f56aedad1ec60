"""Symmetry stage: check that a dataset and its simulator respect a symmetry spec (``symgate symmetry check``)."""

from pipeline.symmetry.check import (
    CheckTolerances,
    FieldResidual,
    SymmetryCheckReport,
    check_symmetry,
    load_symmetry_spec,
    report_table,
)

__all__ = [
    "CheckTolerances",
    "FieldResidual",
    "SymmetryCheckReport",
    "check_symmetry",
    "load_symmetry_spec",
    "report_table",
]
