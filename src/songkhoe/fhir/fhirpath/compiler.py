"""FHIRPath compiler: a :mod:`.syntax` tree → nested Python closures, built once per expression.

Evaluation model: FHIRPath N1 §3 path selection (http://hl7.org/fhirpath/N1/#path-selection)
and §4 expressions (collections everywhere, empty propagation). A compiled expression is a
closure ``fn(scope, ctx) -> list`` where ``scope`` is the focus the expression starts from
(``[resource]`` at the top, ``[$this]`` inside a ``where()``/``select()`` argument) and ``ctx``
carries the environment (``%resource``, ``%context``, variables, ``$index``, ``$total``).

Member navigation follows FHIR JSON (http://hl7.org/fhir/R4/json.html): arrays are flattened;
a missing ``name`` falls back to the choice element ``name[x]`` (``valueQuantity`` → a
:class:`.model.Node` typed ``Quantity``) and to a primitive that has only a ``_name``
extension. A path that starts with a type name (``Patient.name``) filters the focus by that
resource type (N1 "Path selection": a path may start with a type name; ``Resource`` and
``DomainResource`` match every resource of that kind). Chains of member steps are fused into one
closure. The compile-time ("static") FHIR type of each sub-expression is tracked where a
:class:`.model.TypeModel` or the expression itself tells it, at no run-time cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import model as m
from . import operators as ops
from . import syntax as s
from .errors import FHIRPathError
from .model import CHOICE_SUFFIXES, Node

Fn = Callable[[list[Any], "Context"], list[Any]]
Inv = Callable[[list[Any], "Context", list[Any]], list[Any]]

BUILTIN_CONSTANTS = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}
# environment variables the engine itself supplies (N1 "Environment variables", R4 FHIRPath
# "Variables")
CONTEXT_VARIABLES = frozenset({"resource", "context", "rootResource"})


def is_builtin_variable(name: str) -> bool:
    """Whether ``%name`` is supplied by the engine (``%resource``, ``%ucum``, ``%vs-x``, …)
    rather than by the caller's ``variables``."""
    return name in CONTEXT_VARIABLES or name in BUILTIN_CONSTANTS or \
        name.startswith(("vs-", "ext-"))


class Context:
    """The evaluation environment of one call."""

    __slots__ = ("context", "index", "resolver", "resource", "root", "total", "variables")

    def __init__(self, resource: Any, variables: dict[str, Any] | None,
                 resolver: Callable[[str], Any] | None = None, context: Any = None,
                 root: Any = None) -> None:
        self.resource = resource
        self.root = resource if root is None else root
        self.context = resource if context is None else context
        self.variables = variables
        self.index: int | None = None
        self.total: list[Any] | None = None
        self.resolver = resolver


# -- member navigation ------------------------------------------------------------------------

def _missing(d: dict[str, Any], name: str, out: list[Any], choice: bool = True) -> None:
    """``name`` is not a key of ``d``: a primitive with only ``_name``, or (unless the model
    says ``name`` is no choice element) a choice element such as ``valueQuantity``."""
    ext = d.get("_" + name)
    if ext is not None:
        if type(ext) is list:
            out.extend(Node(None, None, e) for e in ext if e is not None)
        else:
            out.append(Node(None, None, ext))
        return
    if not choice:
        return
    n = len(name)
    for key, v in d.items():
        if len(key) > n and key.startswith(name):
            t = CHOICE_SUFFIXES.get(key[n:])
            if t is not None:
                out.append(Node(v, t, d.get("_" + key)))
                return
            if key[n] == "_":
                continue


def _primitive_list(values: list[Any], exts: Any, out: list[Any]) -> None:
    if type(exts) is not list:
        out.extend(v for v in values if v is not None)
        return
    for i, v in enumerate(values):
        e = exts[i] if i < len(exts) else None
        if e is None:
            if v is not None:
                out.append(v)
        else:
            out.append(Node(v, None, e))


def member_step(name: str, choice: bool = True) -> Callable[[list[Any]], list[Any]]:
    """Navigate ``name`` on every item of a collection (FHIR JSON rules). ``choice=False``:
    the type model knows ``name`` is not a choice element, so absent keys need no scan."""
    uname = "_" + name

    def step(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for it in items:
            if type(it) is not dict:
                if type(it) is Node:
                    it = it.value if type(it.value) is dict else it.element
                    if type(it) is not dict:
                        continue
                else:
                    continue
            v = it.get(name)
            if v is None:
                _missing(it, name, out, choice)
                continue
            tv = type(v)
            if tv is list:
                if v and type(v[0]) is dict:
                    out.extend(v)
                else:
                    _primitive_list(v, it.get(uname), out)
            elif tv is dict:
                out.append(v)
            else:
                e = it.get(uname)
                out.append(v if e is None else Node(v, None, e))
        return out
    return step


def choice_step(name: str, type_codes: tuple[str, ...]) -> Callable[[list[Any]], list[Any]]:
    """``name as T`` on a choice element: read ``nameT`` (``valueQuantity``) — and the keys of
    T's subtypes among the choice's types (``canonical`` for ``as uri``) — directly instead of
    scanning every key for the element and then testing its type."""
    keys = [(name + t[0].upper() + t[1:], t) for t in type_codes]

    def step(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for it in items:
            if type(it) is Node:
                it = it.value if type(it.value) is dict else it.element
            if type(it) is not dict:
                continue
            for key, type_code in keys:
                v = it.get(key)
                if v is not None:
                    out.append(Node(v, type_code, it.get("_" + key)))
        return out
    return step


def type_filter_step(name: str) -> Callable[[list[Any]], list[Any]]:
    """A leading type name: keep the resources of that type (or a subtype)."""
    def step(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for it in items:
            if type(it) is dict:
                rt = it.get("resourceType")
                if rt == name or (rt is not None and m.is_subtype(rt, name)):
                    out.append(it)
        return out
    return step


def _path_names(node: s.Node) -> list[s.Identifier] | None:
    """The identifiers of a pure member chain ``a.b.c``, else None."""
    names: list[s.Identifier] = []
    while isinstance(node, s.Invoke) and isinstance(node.invocation, s.Identifier):
        names.append(node.invocation)
        node = node.source
    if not isinstance(node, s.Identifier):
        return None
    names.append(node)
    names.reverse()
    return names


# -- the compiler ------------------------------------------------------------------------------

class Compiler:
    """Compiles one expression; ``text`` is kept for error positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.model = m.type_model()

    def error(self, message: str, node: s.Node) -> FHIRPathError:
        return FHIRPathError(message, self.text, node.pos)

    def child_static(self, parent: str | None, name: str) -> str | None:
        if parent is None or self.model is None:
            return None
        try:
            return self.model.child_type(parent, name)
        except (KeyError, ValueError, TypeError, AttributeError, LookupError):
            # a model that cannot answer is no model for this step
            return None

    def may_be_choice(self, parent: str | None, name: str) -> bool:
        """False only when the model knows ``parent.name`` and it is not a choice element."""
        if parent is None or self.model is None or not hasattr(self.model, "is_choice"):
            return True
        return self.model.is_choice(parent, name) is not False

    # each method returns (closure, static FHIR type of the result or None)
    def expr(self, node: s.Node, static: str | None) -> tuple[Fn, str | None]:
        method = getattr(self, "c_" + type(node).__name__)
        result: tuple[Fn, str | None] = method(node, static)
        return result

    def steps_for(self, idents: list[s.Identifier], static: str | None,
                  first: bool) -> tuple[list[Callable[[list[Any]], list[Any]]], str | None]:
        steps = []
        for i, ident in enumerate(idents):
            name = ident.name
            if name[:1].isupper() and (first and i == 0) and (
                    m.is_resource_type(name) or name in ("Resource", "DomainResource")):
                steps.append(type_filter_step(name))
                static = name
            else:
                steps.append(member_step(name, self.may_be_choice(static, name)))
                static = self.child_static(static, name)
        return steps, static

    def c_Identifier(self, node: s.Identifier, static: str | None) -> tuple[Fn, str | None]:
        steps, st = self.steps_for([node], static, True)
        step = steps[0]
        return (lambda scope, ctx: step(scope)), st

    def c_Invoke(self, node: s.Invoke, static: str | None) -> tuple[Fn, str | None]:
        idents = _path_names(node)
        if idents is not None:
            steps, st = self.steps_for(idents, static, True)
            return _chain(steps), st
        src, src_static = self.expr(node.source, static)
        inv_node = node.invocation
        if isinstance(inv_node, s.Identifier):
            steps, st = self.steps_for([inv_node], src_static, False)
            step = steps[0]
            return (lambda scope, ctx: step(src(scope, ctx))), st
        inv, st = self.invocation(inv_node, src_static, static)
        return (lambda scope, ctx: inv(src(scope, ctx), ctx, scope)), st

    def invocation(self, node: s.Node, input_static: str | None,
                   scope_static: str | None) -> tuple[Inv, str | None]:
        if isinstance(node, s.Function):
            from .functions import compile_function
            return compile_function(self, node, input_static, scope_static)
        if isinstance(node, s.Special):
            fn, st = self.c_Special(node, input_static)
            return (lambda items, ctx, scope: fn(items, ctx)), st
        raise self.error("invalid invocation", node)  # pragma: no cover

    def c_Function(self, node: s.Function, static: str | None) -> tuple[Fn, str | None]:
        inv, st = self.invocation(node, static, static)
        return (lambda scope, ctx: inv(scope, ctx, scope)), st

    def c_Special(self, node: s.Special, static: str | None) -> tuple[Fn, str | None]:
        if node.name == "this":
            return (lambda scope, ctx: scope), static
        if node.name == "index":
            return (lambda scope, ctx: [] if ctx.index is None else [ctx.index]), "integer"

        def total(scope: list[Any], ctx: Context) -> list[Any]:
            return ctx.total if ctx.total is not None else []
        return total, None

    def c_Literal(self, node: s.Literal, static: str | None) -> tuple[Fn, str | None]:
        v = node.value
        if v is None:
            return (lambda scope, ctx: []), None
        # a literal is a System value: no FHIR static type (its Python type says what it is)
        return (lambda scope, ctx: [v]), None

    def c_External(self, node: s.External, static: str | None) -> tuple[Fn, str | None]:
        name = node.name
        pos = node.pos
        text = self.text
        if name.startswith("vs-"):
            builtin: str | None = "http://hl7.org/fhir/ValueSet/" + name[3:]
        elif name.startswith("ext-"):
            builtin = "http://hl7.org/fhir/StructureDefinition/" + name[4:]
        else:
            builtin = BUILTIN_CONSTANTS.get(name)

        def external(scope: list[Any], ctx: Context) -> list[Any]:
            variables = ctx.variables
            if variables is not None and name in variables:
                v = variables[name]
                if v is None:
                    return []
                return list(v) if type(v) is list else [v]
            if name == "resource":
                return [ctx.resource]
            if name == "context":
                return [ctx.context]
            if name == "rootResource":
                return [ctx.root]
            if builtin is not None:
                return [builtin]
            raise FHIRPathError(f"undefined environment variable %{name}", text, pos)
        return external, ("string" if builtin is not None else None)

    def c_Indexer(self, node: s.Indexer, static: str | None) -> tuple[Fn, str | None]:
        src, st = self.expr(node.source, static)
        idx, _ = self.expr(node.index, static)
        text, pos = self.text, node.pos

        def indexer(scope: list[Any], ctx: Context) -> list[Any]:
            items = src(scope, ctx)
            i = ops.singleton(idx(scope, ctx), "[]")
            if i is None:
                return []
            if type(i) is Node:
                i = i.value
            if type(i) is not int:
                raise FHIRPathError("an index must be an Integer", text, pos)
            return [items[i]] if 0 <= i < len(items) else []
        return indexer, st

    def c_Unary(self, node: s.Unary, static: str | None) -> tuple[Fn, str | None]:
        operand, st = self.expr(node.operand, static)
        if node.op == "+":
            return operand, st

        def minus(scope: list[Any], ctx: Context) -> list[Any]:
            v = ops.singleton(operand(scope, ctx), "unary -")
            if v is None:
                return []
            v = ops.value(v, st)
            return [] if v is None else [ops.negate(v)]
        return minus, st

    def c_TypeOp(self, node: s.TypeOp, static: str | None) -> tuple[Fn, str | None]:
        if node.op == "as":
            direct = self.choice_cast(node.operand, node.type_name, static)
            if direct is not None:
                return direct
        operand, st = self.expr(node.operand, static)
        return self.type_op(node.op, node.type_name, operand, st, node)

    def choice_cast(self, operand: s.Node, type_name: str,
                    static: str | None) -> tuple[Fn, str | None] | None:
        """``path.elem as T`` where the model says ``elem`` is a choice element with T among its
        types (``Observation.value as Quantity``): compiled to a direct key lookup. None when
        that is not known, and the general ``as`` applies."""
        idents = _path_names(operand)
        ns, name = m.split_type(type_name)
        if not idents or ns == "System" or not hasattr(self.model, "choice_types"):
            return None
        head = idents[:-1]
        steps, parent = self.steps_for(head, static, True) if head else ([], static)
        if parent is None:
            return None
        types = self.model.choice_types(parent, idents[-1].name)  # type: ignore[union-attr]
        matching = tuple(t for t in types or () if t == name or m.is_subtype(t, name))
        if not matching:
            return None
        steps.append(choice_step(idents[-1].name, matching))
        return _chain(steps), (name if name not in m.SYSTEM_TYPES else None)

    def type_op(self, op: str, type_name: str, operand: Fn, st: str | None,
                node: s.Node) -> tuple[Fn, str | None]:
        test = m.make_type_test(type_name)
        text, pos = self.text, node.pos
        _, result_type = m.split_type(type_name)
        if op == "is":
            def is_(scope: list[Any], ctx: Context) -> list[Any]:
                items = operand(scope, ctx)
                if not items:
                    return []
                if len(items) > 1:
                    raise FHIRPathError(f"'is' expects a single item, found {len(items)}",
                                        text, pos)
                return [test(items[0], st)]
            return is_, "boolean"

        # 'as': N1 asks for a single item; FHIR search expressions apply it to collections
        # (e.g. Observation.component.value as Quantity), so it filters like ofType().
        def as_(scope: list[Any], ctx: Context) -> list[Any]:
            return [it for it in operand(scope, ctx) if test(it, st)]
        return as_, (result_type if result_type not in m.SYSTEM_TYPES else None)

    def c_Binary(self, node: s.Binary, static: str | None) -> tuple[Fn, str | None]:
        left, ls = self.expr(node.left, static)
        right, rs = self.expr(node.right, static)
        op = node.op
        builder = _BINARY_BUILDERS.get(op)
        if builder is None:  # pragma: no cover - the parser only makes known operators
            raise self.error(f"unknown operator {op}", node)
        return builder(left, right, ls, rs, node)


def _chain(steps: list[Callable[[list[Any]], list[Any]]]) -> Fn:
    if len(steps) == 1:
        a = steps[0]
        return lambda scope, ctx: a(scope)
    if len(steps) == 2:
        a, b = steps
        return lambda scope, ctx: b(a(scope))
    if len(steps) == 3:
        a, b, c = steps
        return lambda scope, ctx: c(b(a(scope)))

    def chain(scope: list[Any], ctx: Context) -> list[Any]:
        items = scope
        for step in steps:
            items = step(items)
            if not items:
                return items
        return items
    return chain


# -- binary operators -----------------------------------------------------------------------

Builder = Callable[[Fn, Fn, "str | None", "str | None", s.Binary], "tuple[Fn, str | None]"]


def _b_equal(negate: bool) -> Builder:
    def build(left: Fn, right: Fn, ls: str | None, rs: str | None,
              node: s.Binary) -> tuple[Fn, str | None]:
        # fast path: comparing with a string literal (where(system = 'phone'))
        lit = node.right.value if isinstance(node.right, s.Literal) else None
        if type(lit) is str and ls not in m.TEMPORAL_FHIR_TYPES:
            def eq_str(scope: list[Any], ctx: Context) -> list[Any]:
                items = left(scope, ctx)
                if len(items) == 1 and type(items[0]) is str:
                    return [(items[0] == lit) is not negate]
                r = ops.equal(items, [lit], ls, rs)
                return [] if r is None else [r is not negate]
            return eq_str, "boolean"

        def eq(scope: list[Any], ctx: Context) -> list[Any]:
            a = left(scope, ctx)
            if not a:
                return []
            b = right(scope, ctx)
            r = ops.equal(a, b, ls, rs)
            return [] if r is None else [r is not negate]
        return eq, "boolean"
    return build


def _b_equiv(negate: bool) -> Builder:
    def build(left: Fn, right: Fn, ls: str | None, rs: str | None,
              node: s.Binary) -> tuple[Fn, str | None]:
        def equiv(scope: list[Any], ctx: Context) -> list[Any]:
            return [ops.equivalent(left(scope, ctx), right(scope, ctx), ls, rs) is not negate]
        return equiv, "boolean"
    return build


def _b_compare(left: Fn, right: Fn, ls: str | None, rs: str | None,
               node: s.Binary) -> tuple[Fn, str | None]:
    op = node.op

    def cmp(scope: list[Any], ctx: Context) -> list[Any]:
        a = left(scope, ctx)
        if not a:
            return []
        r = ops.compare(a, right(scope, ctx), op, ls, rs)
        return [] if r is None else [r]
    return cmp, "boolean"


def _b_and(left: Fn, right: Fn, ls: str | None, rs: str | None,
           node: s.Binary) -> tuple[Fn, str | None]:
    def and_(scope: list[Any], ctx: Context) -> list[Any]:
        a = ops.to_bool(left(scope, ctx), "and")
        if a is False:
            return [False]
        b = ops.to_bool(right(scope, ctx), "and")
        if b is False:
            return [False]
        if a is None or b is None:
            return []
        return [True]
    return and_, "boolean"


def _b_or(left: Fn, right: Fn, ls: str | None, rs: str | None,
          node: s.Binary) -> tuple[Fn, str | None]:
    def or_(scope: list[Any], ctx: Context) -> list[Any]:
        a = ops.to_bool(left(scope, ctx), "or")
        if a is True:
            return [True]
        b = ops.to_bool(right(scope, ctx), "or")
        if b is True:
            return [True]
        if a is None or b is None:
            return []
        return [False]
    return or_, "boolean"


def _b_xor(left: Fn, right: Fn, ls: str | None, rs: str | None,
           node: s.Binary) -> tuple[Fn, str | None]:
    def xor(scope: list[Any], ctx: Context) -> list[Any]:
        a = ops.to_bool(left(scope, ctx), "xor")
        b = ops.to_bool(right(scope, ctx), "xor")
        if a is None or b is None:
            return []
        return [a != b]
    return xor, "boolean"


def _b_implies(left: Fn, right: Fn, ls: str | None, rs: str | None,
               node: s.Binary) -> tuple[Fn, str | None]:
    def implies(scope: list[Any], ctx: Context) -> list[Any]:
        a = ops.to_bool(left(scope, ctx), "implies")
        if a is False:
            return [True]
        b = ops.to_bool(right(scope, ctx), "implies")
        if a is True:
            return [] if b is None else [b]
        return [True] if b is True else []
    return implies, "boolean"


def _b_union(left: Fn, right: Fn, ls: str | None, rs: str | None,
             node: s.Binary) -> tuple[Fn, str | None]:
    def union(scope: list[Any], ctx: Context) -> list[Any]:
        a = left(scope, ctx)
        b = right(scope, ctx)
        if not b:
            return ops.distinct(a)
        if not a:
            return ops.distinct(b)
        return ops.distinct(a + b)
    return union, (ls if ls == rs else None)


def _b_in(reverse: bool) -> Builder:
    def build(left: Fn, right: Fn, ls: str | None, rs: str | None,
              node: s.Binary) -> tuple[Fn, str | None]:
        what = "contains" if reverse else "in"

        def membership(scope: list[Any], ctx: Context) -> list[Any]:
            a, b = left(scope, ctx), right(scope, ctx)
            if reverse:
                a, b = b, a
            item = ops.singleton(a, what)
            if item is None:
                return []
            return [ops.contains_item(b, item)]
        return membership, "boolean"
    return build


def _b_math(left: Fn, right: Fn, ls: str | None, rs: str | None,
            node: s.Binary) -> tuple[Fn, str | None]:
    op = node.op

    def math(scope: list[Any], ctx: Context) -> list[Any]:
        a = ops.singleton(left(scope, ctx), op)
        b = ops.singleton(right(scope, ctx), op)
        if op == "&":
            a = "" if a is None else ops.value(a, ls)
            b = "" if b is None else ops.value(b, rs)
            if type(a) is not str or type(b) is not str:
                raise FHIRPathError("& expects strings")
            return [a + b]
        if a is None or b is None:
            return []
        a, b = ops.value(a, ls), ops.value(b, rs)
        if a is None or b is None:
            return []
        r = ops.arithmetic(op, a, b)
        return [] if r is None else [r]
    static = "string" if op == "&" else None
    return math, static


_BINARY_BUILDERS: dict[str, Builder] = {
    "=": _b_equal(False), "!=": _b_equal(True), "~": _b_equiv(False), "!~": _b_equiv(True),
    "<": _b_compare, "<=": _b_compare, ">": _b_compare, ">=": _b_compare,
    "and": _b_and, "or": _b_or, "xor": _b_xor, "implies": _b_implies,
    "|": _b_union, "in": _b_in(False), "contains": _b_in(True),
    "+": _b_math, "-": _b_math, "*": _b_math, "/": _b_math, "div": _b_math, "mod": _b_math,
    "&": _b_math,
}
