"""mscsim: an open, mechanistic, cited simulator of mesenchymal stromal cell (MSC) therapy.

scenario -> product, regimen, patients -> model -> solver -> labelled results. A research tool,
never medical advice. Start with ``mscsim.load("knee_oa_ia_5e7").run()`` (see ``mscsim.api``). The public API
below is imported lazily, so the command line starts quickly.
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "load": "api", "Simulation": "api", "presets": "api", "sweep": "api", "trial": "api", "load_trial": "api",
    "TrialRun": "api", "logspace": "api", "scenario_fields": "api",
    "Results": "results", "SweepResult": "analysis.sweep", "bands": "analysis.bands", "display": "display",
    "MscsimError": "errors", "InputError": "errors", "DataError": "errors", "ConservationError": "errors",
    "Scenario": "io.scenario", "load_scenario": "io.scenario", "scenario_from_dict": "io.scenario",
    "simulate": "simulation", "simulate_chunk": "simulation", "resolve_setup": "simulation",
    "environment_parameters": "simulation", "COVARIATES": "simulation",
    "Model": "model.core", "Mechanism": "model.core", "Process": "model.core", "State": "model.core",
    "CompiledModel": "model.compile", "compile_model": "model.compile",
    "Parameter": "model.parameters", "ParameterSet": "model.parameters", "load_parameter_sets": "model.parameters",
    "bibliography": "model.references",
    "Product": "product.product", "potency_factors": "product.product",
    "Problem": "solvers.problem", "Bolus": "solvers.problem", "Infusion": "solvers.problem",
    "solve_batched": "solvers.batched", "solve_reference": "solvers.reference",
    "run_validation": "analysis.validation",
    "run_coculture": "coculture", "load_coculture": "coculture",
    "calibrate": "api", "CalibrationProblem": "calibration.problem", "build_problem": "calibration.problem",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mscsim' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
