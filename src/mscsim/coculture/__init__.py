"""In vitro co-culture: MSCs with stimulated PBMC/T cells or macrophages in a well, run with the model's own
tissue mechanisms, so the immune mechanism is checked against published co-culture data (issue 3)."""

from .spec import CocultureSpec, coculture_from_dict, load_coculture
from .well import CocultureResult, msc_alone_readout, run_coculture

__all__ = ["CocultureSpec", "CocultureResult", "coculture_from_dict", "load_coculture", "msc_alone_readout",
           "run_coculture"]
