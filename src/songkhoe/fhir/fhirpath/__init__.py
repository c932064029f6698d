"""FHIRPath for FHIR R4: FHIRPath Normative Release N1 (http://hl7.org/fhirpath/N1/) with the
FHIR R4 additions (http://hl7.org/fhir/R4/fhirpath.html) and the FHIRPath 2.0 functions that
SQL-on-FHIR v2 requires.

    from songkhoe.fhir.fhirpath import compile, evaluate, FHIRPathError
    expr = compile("Patient.name.given")       # cached; FHIRPathError (with position) if bad
    expr(resource)                             # -> Python values (see .expression)
    expr(resource, variables={"x": 1})         # %x
    expr.nodes(resource)                       # -> [Node(.value raw JSON, .type FHIR type)]
    expr.free_variables                        # -> frozenset({"x"}): %names to supply
    evaluate(resource, "Patient.name.given")

Resources are plain dicts as parsed from FHIR JSON. Modules: :mod:`.lexer`, :mod:`.parser`
(text → :mod:`.syntax` tree), :mod:`.compiler` (tree → closures), :mod:`.operators`,
:mod:`.functions`, :mod:`.model` (FHIR types, optional type model hook), :mod:`.temporal`,
:mod:`.quantity`, :mod:`.expression` (public call interface and cache).
"""

from __future__ import annotations

from .errors import FHIRPathError
from .expression import Expression, compile, evaluate
from .model import Node, TypeModel, set_type_model
from .quantity import Quantity
from .temporal import Date, DateTime, Time

__all__ = [
           "Date",
           "DateTime",
           "Expression",
           "FHIRPathError",
           "Node",
           "Quantity",
           "Time",
           "TypeModel",
           "compile",
           "evaluate",
           "set_type_model",
]
