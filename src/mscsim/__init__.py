"""mscsim: an open, mechanistic, cited simulator of mesenchymal stromal cell (MSC) therapy.

scenario -> product, regimen, patients -> model -> solver -> labelled results. A research tool,
never medical advice.
"""

__version__ = "0.1.0"

from .analysis.validation import run_validation  # noqa: E402
from .errors import ConservationError, DataError, InputError, MscsimError  # noqa: E402
from .io.scenario import Scenario, load_scenario, scenario_from_dict  # noqa: E402
from .model.compile import CompiledModel, compile_model  # noqa: E402
from .model.core import Mechanism, Model, Process, State  # noqa: E402
from .model.parameters import Parameter, ParameterSet, load_parameter_sets  # noqa: E402
from .model.references import bibliography  # noqa: E402
from .product.product import Product, potency_factors  # noqa: E402
from .simulation import resolve_setup, simulate  # noqa: E402
from .solvers.batched import solve_batched  # noqa: E402
from .solvers.problem import Bolus, Infusion, Problem  # noqa: E402
from .solvers.reference import solve_reference  # noqa: E402

__all__ = [
    "__version__", "MscsimError", "InputError", "DataError", "ConservationError",
    "Scenario", "load_scenario", "scenario_from_dict", "simulate", "resolve_setup",
    "Model", "Mechanism", "Process", "State", "CompiledModel", "compile_model",
    "Parameter", "ParameterSet", "load_parameter_sets", "bibliography",
    "Product", "potency_factors", "Problem", "Bolus", "Infusion", "solve_batched", "solve_reference",
    "run_validation",
]
