"""Virtual trials: designs (arms, cohorts, visits, endpoints), chunked execution, statistics and reports."""

from .design import ArmSpec, DesignSpec, bundled_designs, design_from_dict, load_design
from .trial import TrialResult, run_trial

__all__ = ["ArmSpec", "DesignSpec", "TrialResult", "bundled_designs", "design_from_dict", "load_design",
           "run_trial"]
