"""mscsim: an open, mechanistic, cited simulator of mesenchymal stromal cell (MSC) therapy.

A research tool, never medical advice.
"""

__version__ = "0.1.0"
