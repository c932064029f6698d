"""Compiled FHIRPath expressions: the public call interface, result conversion and the cache.

An :class:`Expression` is compiled once (FHIRPath N1 grammar → closures, see
:mod:`.compiler`) and cached by its text; calling it evaluates it on a resource (N1 §3: the
initial focus is the resource, ``%resource``/``%context``/``%rootResource`` per R4 FHIRPath
"Variables", http://hl7.org/fhir/R4/fhirpath.html#variables).

Three views of a result:

``expr(resource)``
    Python values: dicts for complex elements and resources (the very objects inside the
    resource: do not mutate them), and for primitives the FHIRPath System value — ``str``,
    ``bool``, ``int``, ``Decimal`` (JSON numbers with a fraction; never float), a
    :class:`~.temporal.Date` / :class:`~.temporal.DateTime` / :class:`~.temporal.Time` (with
    ``.text`` as written and ``.precision``) when the element's type is known to be
    date/dateTime/instant/time (from a choice suffix such as ``effectiveDateTime``, a type
    model, or the expression, e.g. ``toDate()``), and :class:`~.quantity.Quantity` for
    quantities the expression computed. Primitive elements whose value is absent (only a
    ``_name`` extension) are left out.
``expr.nodes(resource)``
    :class:`~.model.Node` items for indexing: ``.value`` is the raw JSON value as written
    (strings untouched, numbers as parsed, ``None`` for an extension-only primitive),
    ``.type`` the FHIR type name where known (``valueQuantity`` → ``'Quantity'``,
    ``Observation.effective`` → ``'dateTime'`` or ``'Period'``, a resource → its
    resourceType, computed values → their FHIR type) else None, ``.element`` the primitive's
    ``_name`` object (``id``/``extension``) or None.
``expr.raw(resource)``
    the engine's own items (raw JSON, Node, System values), suitable as ``focus=`` for a
    further evaluation (e.g. SQL-on-FHIR ``forEach``).

``expr.free_variables`` lists the environment variables (``%name``) the expression reads that
the engine does not supply itself, so a caller can reject an undefined one before evaluating.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from . import model as m
from . import syntax as s
from . import temporal as tm
from .compiler import Compiler, Context, is_builtin_variable
from .errors import FHIRPathError
from .model import Node
from .parser import parse
from .quantity import Quantity


class Expression:
    """A compiled FHIRPath expression. Thread-safe: calls share no mutable state."""

    __slots__ = ("_fn", "_plain", "base_type", "free_variables", "static_type", "text")

    def __init__(self, text: str, base_type: str | None = None) -> None:
        self.text = text
        self.base_type = base_type
        tree = parse(text)
        self._fn, self.static_type = Compiler(text).expr(tree, base_type)
        #: the ``%names`` the caller must supply in ``variables`` (those the engine does not)
        self.free_variables = frozenset(
            n.name for n in s.walk(tree)
            if type(n) is s.External and not is_builtin_variable(n.name))
        # results need no conversion unless they hold nodes, floats, or typed strings
        self._plain = self.static_type not in m.TEMPORAL_FHIR_TYPES and \
            self.static_type != "decimal"

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def raw(self, resource: Any, variables: dict[str, Any] | None = None, *,
            focus: Any = None, resolver: Callable[[str], Any] | None = None,
            root: Any = None) -> list[Any]:
        """The result items as the engine holds them. ``focus``: start from this item (or list of
        items) instead of the resource (``%resource`` stays ``resource``); ``resolver``:
        ``resolver(reference) -> resource dict | None`` consulted by ``resolve()``; ``root``:
        the ``%rootResource`` (e.g. the Bundle a resource sits in)."""
        ctx = Context(resource, variables, resolver, None, root)
        if focus is None:
            start = [resource]
        elif type(focus) is list:
            start = focus
        else:
            start = [focus]
        try:
            return self._fn(start, ctx)
        except FHIRPathError as exc:
            if exc.expression is None:  # say which expression failed
                raise FHIRPathError(exc.message, self.text, exc.position) from None
            raise

    def __call__(self, resource: Any, variables: dict[str, Any] | None = None, *,
                 focus: Any = None, resolver: Callable[[str], Any] | None = None,
                 root: Any = None) -> list[Any]:
        """The result as Python values (see the module docstring)."""
        if focus is None and resolver is None and root is None:  # the hot path, inlined
            try:
                items = self._fn([resource], Context(resource, variables))
            except FHIRPathError as exc:
                if exc.expression is None:
                    raise FHIRPathError(exc.message, self.text, exc.position) from None
                raise
        else:
            items = self.raw(resource, variables, focus=focus, resolver=resolver, root=root)
        if self._plain:
            for it in items:
                tp = type(it)
                if tp is Node or tp is float:
                    break
            else:
                return items
        st = self.static_type
        convert = st in m.TEMPORAL_FHIR_TYPES or st == "decimal"
        out: list[Any] = []
        for it in items:
            tp = type(it)
            if tp is Node:
                if it.value is None:
                    continue
                out.append(m.primitive_value(it.value, it.type or st))
            elif tp is float:
                out.append(Decimal(repr(it)))
            elif convert and (tp is str or tp is int):
                out.append(m.primitive_value(it, st))
            else:
                out.append(it)
        return out

    def nodes(self, resource: Any, variables: dict[str, Any] | None = None, *,
              focus: Any = None, resolver: Callable[[str], Any] | None = None,
              root: Any = None) -> list[Node]:
        """The result as :class:`Node` items carrying the raw JSON value and FHIR type."""
        items = self.raw(resource, variables, focus=focus, resolver=resolver, root=root)
        st = self.static_type
        return [to_node(it, st) for it in items]


def to_node(item: Any, static: str | None = None) -> Node:
    """An engine item as a public :class:`Node`."""
    tp = type(item)
    if tp is Node:
        if item.type is None and static is not None:
            return Node(item.value, static, item.element)
        return item
    if tp is dict:
        rt = item.get("resourceType")
        return Node(item, rt if isinstance(rt, str) else static)
    if tp is str:
        return Node(item, static)
    if tp is bool:
        return Node(item, "boolean")
    if tp is int:
        return Node(item, static or "integer")
    if tp is float or tp is Decimal:
        return Node(item, "decimal")
    if isinstance(item, tm.Temporal):
        return Node(item.text, static if static in m.TEMPORAL_FHIR_TYPES else item.kind)
    if tp is Quantity:
        return Node(m.json_value(item), "Quantity")
    return Node(item, static)


_CACHE: dict[tuple[str, str | None], Expression] = {}
_CACHE_LIMIT = 4096


def _clear_cache() -> None:
    _CACHE.clear()


m.on_model_change(_clear_cache)


def compile(text: str, base_type: str | None = None) -> Expression:
    """The compiled expression for ``text`` (cached by text and ``base_type``).

    ``base_type``: the FHIR type of the focus the expression will start from (e.g.
    ``'Patient'`` for a SQL-on-FHIR column path ``name.given``), used only for static typing
    with a type model. Raises FHIRPathError (with the position) on a syntax error or an unknown
    function.
    """
    if not isinstance(text, str):
        raise FHIRPathError(f"a FHIRPath expression must be a string, not {type(text).__name__}")
    key = (text, base_type)
    expr = _CACHE.get(key)
    if expr is None:
        expr = Expression(text, base_type)
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = expr
    return expr


def evaluate(resource: Any, text: str, variables: dict[str, Any] | None = None,
             **kwargs: Any) -> list[Any]:
    """``compile(text)(resource, variables, **kwargs)``."""
    return compile(text)(resource, variables, **kwargs)
