"""FHIRPath parser: text → :mod:`.syntax` tree, by precedence climbing.

Grammar: FHIRPath N1 grammar (http://hl7.org/fhirpath/N1/grammar.html); operator precedence: N1
"Operator precedence" (http://hl7.org/fhirpath/N1/#operator-precedence), highest first:

    . (invocation) and [] (indexer) · unary + - · * / div mod · + - & · is as · | ·
    > < >= <= · = ~ != !~ · in contains · and · xor or · implies

All binary operators are left-associative. Literals (N1 "Literals"): ``{}``, ``true``/``false``,
strings, numbers (integer or decimal), ``@`` date/dateTime/time, quantities (``4 'mg'``,
``3 days``). Keywords usable as identifiers after '.' (N1 grammar ``identifier``): any name.
"""

from __future__ import annotations

from decimal import Decimal

from . import syntax as s
from .errors import FHIRPathError
from .lexer import DATETIME, EOF, EXTERNAL, IDENT, NUMBER, OP, SPECIAL, STRING, Token, tokenize
from .quantity import CALENDAR_UNITS, Quantity
from .temporal import parse_literal

# binding power of each binary operator (higher binds tighter)
_BINARY: dict[str, int] = {
    "implies": 1,
    "or": 2, "xor": 2,
    "and": 3,
    "in": 4, "contains": 4,
    "=": 5, "~": 5, "!=": 5, "!~": 5,
    "<": 6, ">": 6, "<=": 6, ">=": 6,
    "|": 7,
    "is": 8, "as": 8,
    "+": 9, "-": 9, "&": 9,
    "*": 10, "/": 10, "div": 10, "mod": 10,
}
_UNARY_BP = 11
_KEYWORD_OPS = {"implies", "or", "xor", "and", "in", "contains", "is", "as", "div", "mod"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # -- token helpers -------------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> FHIRPathError:
        tok = tok or self.peek()
        return FHIRPathError(message, self.text, tok.pos)

    def expect_op(self, op: str) -> Token:
        tok = self.next()
        if tok.kind != OP or tok.value != op:
            found = "end of expression" if tok.kind == EOF else repr(tok.value)
            raise self.error(f"expected {op!r}, found {found}", tok)
        return tok

    def _binary_op(self, tok: Token) -> str | None:
        if tok.kind == OP and tok.value in _BINARY:
            return tok.value
        if tok.kind == IDENT and not tok.quoted and tok.value in _KEYWORD_OPS:
            return tok.value
        return None

    # -- grammar ---------------------------------------------------------------------------------
    def parse(self) -> s.Node:
        if self.peek().kind == EOF:
            raise self.error("empty expression")
        node = self.expression(0)
        tok = self.peek()
        if tok.kind != EOF:
            raise self.error(f"unexpected {tok.value!r}", tok)
        return node

    def expression(self, min_bp: int) -> s.Node:
        left = self.unary()
        while True:
            tok = self.peek()
            op = self._binary_op(tok)
            if op is None:
                return left
            bp = _BINARY[op]
            if bp <= min_bp:
                return left
            self.next()
            if op in ("is", "as"):
                left = s.TypeOp(tok.pos, op, left, self.type_specifier())
            else:
                right = self.expression(bp)
                left = s.Binary(tok.pos, op, left, right)

    def unary(self) -> s.Node:
        tok = self.peek()
        if tok.kind == OP and tok.value in ("+", "-"):
            self.next()
            operand = self.expression(_UNARY_BP)
            if tok.value == "-" and isinstance(operand, s.Literal) and \
                    isinstance(operand.value, (int, Decimal, Quantity)) and \
                    not isinstance(operand.value, bool):
                return s.Literal(tok.pos, -operand.value)
            return s.Unary(tok.pos, tok.value, operand)
        return self.postfix(self.term())

    def postfix(self, node: s.Node) -> s.Node:
        while True:
            tok = self.peek()
            if tok.kind == OP and tok.value == ".":
                self.next()
                node = s.Invoke(tok.pos, node, self.invocation())
            elif tok.kind == OP and tok.value == "[":
                self.next()
                index = self.expression(0)
                self.expect_op("]")
                node = s.Indexer(tok.pos, node, index)
            else:
                return node

    def type_specifier(self) -> str:
        tok = self.next()
        if tok.kind != IDENT:
            raise self.error("expected a type name", tok)
        name = tok.value
        while self.peek().kind == OP and self.peek().value == "." and \
                self.tokens[self.i + 1].kind == IDENT:
            self.next()
            name += "." + self.next().value
        return name

    def invocation(self) -> s.Node:
        tok = self.next()
        if tok.kind == SPECIAL:
            return s.Special(tok.pos, tok.value)
        if tok.kind != IDENT:
            raise self.error("expected a name after '.'", tok)
        if not tok.quoted and self.peek().kind == OP and self.peek().value == "(":
            return self.function(tok)
        return s.Identifier(tok.pos, tok.value)

    def function(self, name_tok: Token) -> s.Function:
        self.expect_op("(")
        args: list[s.Node] = []
        if not (self.peek().kind == OP and self.peek().value == ")"):
            args.append(self.expression(0))
            while self.peek().kind == OP and self.peek().value == ",":
                self.next()
                args.append(self.expression(0))
        self.expect_op(")")
        return s.Function(name_tok.pos, name_tok.value, tuple(args))

    def term(self) -> s.Node:
        tok = self.next()
        kind = tok.kind
        if kind == OP:
            if tok.value == "(":
                node = self.expression(0)
                self.expect_op(")")
                return node
            if tok.value == "{":
                self.expect_op("}")
                return s.Literal(tok.pos, None)
            raise self.error(f"unexpected {tok.value!r}", tok)
        if kind == STRING:
            return s.Literal(tok.pos, tok.value)
        if kind == NUMBER:
            return self.number(tok)
        if kind == DATETIME:
            try:
                return s.Literal(tok.pos, parse_literal(tok.value))
            except ValueError as exc:
                raise self.error(f"invalid date/time literal @{tok.value}: {exc}", tok) from None
        if kind == EXTERNAL:
            return s.External(tok.pos, tok.value)
        if kind == SPECIAL:
            return s.Special(tok.pos, tok.value)
        if kind == IDENT:
            if not tok.quoted:
                if tok.value in ("true", "false"):
                    return s.Literal(tok.pos, tok.value == "true")
                if self.peek().kind == OP and self.peek().value == "(":
                    return self.function(tok)
            return s.Identifier(tok.pos, tok.value)
        if kind == EOF:
            raise self.error("unexpected end of expression", tok)
        raise self.error(f"unexpected {tok.value!r}", tok)  # pragma: no cover

    def number(self, tok: Token) -> s.Literal:
        text = tok.value
        value: int | Decimal = Decimal(text) if "." in text else int(text)
        nxt = self.peek()
        if nxt.kind == STRING:  # 4 'mg'
            self.next()
            return s.Literal(tok.pos, Quantity(Decimal(value), nxt.value))
        if nxt.kind == IDENT and not nxt.quoted and nxt.value in CALENDAR_UNITS:  # 3 days
            self.next()
            return s.Literal(tok.pos, Quantity(Decimal(value), CALENDAR_UNITS[nxt.value]))
        return s.Literal(tok.pos, value)


def parse(text: str) -> s.Node:
    """The syntax tree of ``text``; raises FHIRPathError (with position) on a syntax error."""
    return _Parser(text).parse()
