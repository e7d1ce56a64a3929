"""CareCoord: care coordination on FHIR R4."""

__version__ = "0.1.0"

__all__ = ["__version__"]
