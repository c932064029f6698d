"""songkhoe: a FHIR R4 (4.0.1) platform for Viet Nam's yearly health check for every citizen."""

__version__ = "0.1.0"
