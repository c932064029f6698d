"""The one exception the FHIRPath engine raises.

FHIRPath N1 §3 (http://hl7.org/fhirpath/N1/#path-selection) and §4.5 (singleton evaluation) say
where evaluation "signals an error to the calling environment"; syntax errors (N1 grammar,
http://hl7.org/fhirpath/N1/grammar.html) are raised by the lexer and parser. Both kinds are a
:class:`FHIRPathError` carrying the expression text and the 0-based character position at
fault, when known.
"""

from __future__ import annotations


class FHIRPathError(ValueError):
    """A syntax or evaluation error in a FHIRPath expression.

    ``position`` is the 0-based character offset in ``expression`` where the problem was found
    (``None`` when the error is not tied to one place, e.g. a singleton violation at run time).
    """

    def __init__(self, message: str, expression: str | None = None,
                 position: int | None = None) -> None:
        self.message = message
        self.expression = expression
        self.position = position
        text = message
        if expression is not None and position is not None:
            text = f"{message} at position {position} in {expression!r}"
        elif expression is not None:
            text = f"{message} in {expression!r}"
        super().__init__(text)
