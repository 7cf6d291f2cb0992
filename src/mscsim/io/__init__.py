"""Input and output: scenario schema, result stores."""

from .scenario import Scenario, load_scenario, scenario_from_dict

__all__ = ["Scenario", "load_scenario", "scenario_from_dict"]
