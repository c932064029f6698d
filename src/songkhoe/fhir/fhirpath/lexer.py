"""FHIRPath tokens: the lexical rules of the N1 grammar.

FHIRPath N1 grammar (http://hl7.org/fhirpath/N1/grammar.html) and
N1 "Literals" (http://hl7.org/fhirpath/N1/#literals): identifiers (plain and `delimited`),
'strings' with escapes (\\' \\" \\` \\\\ \\/ \\f \\n \\r \\t \\uXXXX), numbers, @date / @dateTime /
@Ttime literals, %external constants, $this / $index / $total, comments (// and /* */), and the
operator punctuation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FHIRPathError

# Token kinds
IDENT = "ident"          # identifier or keyword (value: the name); delimited ones have quoted=True
STRING = "string"        # value: the unescaped text
NUMBER = "number"        # value: the literal text
DATETIME = "datetime"    # value: text after '@' (a date, a dateTime or 'T'-time)
EXTERNAL = "external"    # value: the name after '%'
SPECIAL = "special"      # $this, $index, $total (value: 'this' | 'index' | 'total')
OP = "op"                # punctuation and symbolic operators (value: the symbol)
EOF = "eof"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    value: str
    pos: int
    quoted: bool = False  # a `delimited` identifier (never a keyword)


_DATE = r"\d{4}(?:-\d{2}(?:-\d{2})?)?"
_TIME = r"\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?"
_TZ = r"(?:Z|[+-]\d{2}:\d{2})"
_DATETIME_RE = re.compile(rf"@(?:T{_TIME}|{_DATE}(?:T(?:{_TIME}{_TZ}?)?)?)")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WS_RE = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)+", re.DOTALL)
_OPS = ("<=", ">=", "!=", "!~", "=", "~", "<", ">", "+", "-", "*", "/", "|", "&", ".", ",",
        "(", ")", "[", "]", "{", "}")
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}


def _quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """Unescape a quoted string or delimited identifier starting at ``start`` (the quote)."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= n:
                break
            e = text[i + 1]
            if e == "u":
                hexdigits = text[i + 2:i + 6]
                if len(hexdigits) != 4 or not all(h in "0123456789abcdefABCDEF" for h in hexdigits):
                    raise FHIRPathError("invalid \\u escape", text, i)
                out.append(chr(int(hexdigits, 16)))
                i += 6
                continue
            if e not in _ESCAPES:
                raise FHIRPathError(f"invalid escape \\{e}", text, i)
            out.append(_ESCAPES[e])
            i += 2
            continue
        out.append(c)
        i += 1
    kind = "string" if quote == "'" else "delimited identifier"
    raise FHIRPathError(f"unterminated {kind}", text, start)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an EOF token; FHIRPathError on a lexical error."""
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while True:
        m = _WS_RE.match(text, i)
        if m:
            i = m.end()
        if i >= n:
            tokens.append(Token(EOF, "", n))
            return tokens
        c = text[i]
        if c == "'":
            value, end = _quoted(text, i, "'")
            tokens.append(Token(STRING, value, i))
            i = end
        elif c == "`":
            value, end = _quoted(text, i, "`")
            tokens.append(Token(IDENT, value, i, quoted=True))
            i = end
        elif c.isdigit():
            m = _NUMBER_RE.match(text, i)
            assert m
            tokens.append(Token(NUMBER, m.group(), i))
            i = m.end()
        elif c == "@":
            m = _DATETIME_RE.match(text, i)
            if not m:
                raise FHIRPathError("invalid date/time literal", text, i)
            tokens.append(Token(DATETIME, m.group()[1:], i))
            i = m.end()
        elif c == "%":
            if i + 1 < n and text[i + 1] in "'`":
                value, end = _quoted(text, i + 1, text[i + 1])
            else:
                m = _IDENT_RE.match(text, i + 1)
                if not m:
                    raise FHIRPathError("expected a name after '%'", text, i)
                value, end = m.group(), m.end()
            tokens.append(Token(EXTERNAL, value, i))
            i = end
        elif c == "$":
            m = _IDENT_RE.match(text, i + 1)
            if not m or m.group() not in ("this", "index", "total"):
                raise FHIRPathError("expected $this, $index or $total", text, i)
            tokens.append(Token(SPECIAL, m.group(), i))
            i = m.end()
        elif c.isalpha() or c == "_":
            m = _IDENT_RE.match(text, i)
            if not m:
                raise FHIRPathError(f"unexpected character {c!r}", text, i)
            tokens.append(Token(IDENT, m.group(), i))
            i = m.end()
        else:
            for op in _OPS:
                if text.startswith(op, i):
                    tokens.append(Token(OP, op, i))
                    i += len(op)
                    break
            else:
                raise FHIRPathError(f"unexpected character {c!r}", text, i)
