"""The FHIR R4 REST API (http://hl7.org/fhir/R4/http.html) at ``/fhir``: ``create_app(store)``."""

from songkhoe.rest.app import create_app

__all__ = ["create_app"]
