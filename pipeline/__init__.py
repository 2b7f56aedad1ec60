"""symgate's pipeline stages (fleet → ingest → train → export → gate) and their command line."""

__version__ = "0.1.0"
