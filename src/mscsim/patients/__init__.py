"""Patients: virtual populations with seeded, per-patient parameter draws."""

from .population import draw_parameters, patient_rng

__all__ = ["draw_parameters", "patient_rng"]
