"""jueying: see, check, drain and drill a GPU compute cluster."""

__version__ = "0.1.0"
