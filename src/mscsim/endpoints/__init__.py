"""Clinical endpoints from tissue state: cited, documented maps kept as data (data/endpoints/<disease>.yaml)."""

from .definitions import Endpoint, EndpointSet, Response, load_endpoints
from .evaluate import RESPONSE_CODES, add_endpoints, best_stage_response, endpoint_values, response_codes, \
    stage_response

__all__ = ["Endpoint", "EndpointSet", "Response", "load_endpoints", "RESPONSE_CODES", "add_endpoints",
           "best_stage_response", "endpoint_values", "response_codes", "stage_response"]
