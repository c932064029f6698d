"""FHIR R4 (4.0.1) facts, validation, FHIRPath, and text handling. Imports only stdlib and small libs."""
