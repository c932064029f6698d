"""The FHIRPath abstract syntax tree produced by :mod:`.parser` and consumed by :mod:`.compiler`.

The node kinds follow the N1 grammar productions (http://hl7.org/fhirpath/N1/grammar.html):
``term`` (literal, external constant, invocation, parenthesized expression), the invocation
``expression '.' invocation``, the indexer ``expression '[' expression ']'``, the unary polarity
operator, the binary operators and the ``is``/``as`` type operators with a type specifier.
Every node records ``pos``, its character offset in the source text, for error messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Node:
    pos: int


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A literal; ``value`` is a System value (bool, str, int, Decimal, Date, DateTime, Time,
    Quantity), or ``None`` for the empty collection ``{}``."""
    value: Any


@dataclass(frozen=True, slots=True)
class Identifier(Node):
    """A member (or type name) invoked on the current focus."""
    name: str


@dataclass(frozen=True, slots=True)
class Function(Node):
    """A function invocation ``name(args)`` on the current focus."""
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Special(Node):
    """``$this``, ``$index`` or ``$total`` (``name`` without the ``$``)."""
    name: str


@dataclass(frozen=True, slots=True)
class External(Node):
    """An environment variable ``%name``."""
    name: str


@dataclass(frozen=True, slots=True)
class Invoke(Node):
    """``source.invocation``: the invocation evaluated with the source result as focus."""
    source: Node
    invocation: Node  # Identifier, Function or Special


@dataclass(frozen=True, slots=True)
class Indexer(Node):
    """``source[index]``."""
    source: Node
    index: Node


@dataclass(frozen=True, slots=True)
class Unary(Node):
    """Polarity ``+x`` / ``-x``."""
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    """A binary operator (``op`` is the symbol or keyword as written, e.g. ``'='``, ``'and'``)."""
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class TypeOp(Node):
    """``operand is Type`` or ``operand as Type``; ``type_name`` may be qualified
    (``FHIR.Patient``, ``System.String``)."""
    op: str
    operand: Node
    type_name: str


def walk(node: Node) -> Iterator[Node]:
    """``node`` and every node below it, parents before children."""
    yield node
    for f in fields(node):
        value = getattr(node, f.name)
        if isinstance(value, Node):
            yield from walk(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Node):
                    yield from walk(item)
