"""A reader for the libconfuse text that fwup stores as ``meta.conf``.

fwup writes its configuration back out with libconfuse's printer, so the
archive's ``meta.conf`` is a small regular language::

    key=value                     value: bare word, "double-quoted", 'single'
    key={v1,v2,...}               a list
    section "title" { ... }       a titled section (title optional)

Comments (``#``, ``//``, ``/* */``) are accepted as libconfuse does. In bare and
double-quoted values ``${NAME}`` is replaced from a variables mapping (libconfuse
expands environment variables; fwup sets ``FWUP_META_UUID`` and friends before
parsing) and ``\\$`` stands for a literal ``$``.

:func:`parse` returns a :class:`Section` tree or raises :class:`ConfuseError`.
"""

from __future__ import annotations

from collections.abc import Mapping

from nhlink_dbus.core.records import dataclass, field

Value = str
Entry = tuple[Value, ...]  # a scalar is a 1-tuple, a list has any length


class ConfuseError(ValueError):
    """Malformed libconfuse text; the message says where."""


@dataclass(slots=True)
class Section:
    """One section: its options in order (a key may repeat) and its children."""

    name: str
    title: str | None = None
    options: list[tuple[str, Entry, bool]] = field(default_factory=list)  # (key, value, is_list)
    children: list[Section] = field(default_factory=list)

    def get(self, key: str) -> Entry | None:
        """The last value set for ``key`` (libconfuse keeps the last)."""
        found: Entry | None = None
        for k, v, _ in self.options:
            if k == key:
                found = v
        return found

    def sections(self, name: str) -> list[Section]:
        return [c for c in self.children if c.name == name]


_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "f": "\f",
    "b": "\b",
    "a": "\a",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "$": "$",
}
_NOT_BARE = frozenset("=,{}\"'#")  # and white space: what ends a bare word


class _Lexer:
    def __init__(self, text: str, variables: Mapping[str, str]) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.vars = variables

    def error(self, msg: str) -> ConfuseError:
        return ConfuseError(f"meta.conf line {self.line}: {msg}")

    def skip_space(self) -> None:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\n":
                self.line += 1
                self.pos += 1
            elif ch in " \t\r":
                self.pos += 1
            elif ch == "#" or text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated comment")
                self.line += text.count("\n", self.pos, end)
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            got = self.peek() or "end of file"
            raise self.error(f"expected {ch!r}, found {got!r}")
        self.pos += 1

    def _expand(self, raw: str) -> str:
        """Each ``${NAME}`` becomes the variable's value ("" when unset)."""
        if "${" not in raw:
            return raw
        out: list[str] = []
        pos = 0
        while (start := raw.find("${", pos)) >= 0 and (end := raw.find("}", start + 2)) >= 0:
            out += (raw[pos:start], self.vars.get(raw[start + 2 : end], ""))
            pos = end + 1
        out.append(raw[pos:])
        return "".join(out)

    def word(self) -> str:
        """A bare word, or a quoted string."""
        ch = self.peek()
        if ch == '"':
            return self._dquoted()
        if ch == "'":
            return self._squoted()
        text, start = self.text, self.pos
        end = start
        while end < len(text) and text[end] not in _NOT_BARE and not text[end].isspace():
            end += 1
        if end == start:
            raise self.error(f"unexpected {ch or 'end of file'!r}")
        self.pos = end
        return self._expand(text[start:end].replace("\\$", "\x00")).replace("\x00", "$")

    def _dquoted(self) -> str:
        self.pos += 1
        out: list[str] = []
        text = self.text
        while True:
            if self.pos >= len(text):
                raise self.error("unterminated string")
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                break
            if ch == "\\" and self.pos + 1 < len(text):
                nxt = text[self.pos + 1]
                # \$ stays escaped until expansion has run, then becomes '$'
                out.append("\x00" if nxt == "$" else _ESCAPES.get(nxt, "\\" + nxt))
                self.pos += 2
                continue
            if ch == "\n":
                self.line += 1
            out.append(ch)
            self.pos += 1
        return self._expand("".join(out)).replace("\x00", "$")

    def _squoted(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise self.error("unterminated string")
        value = self.text[self.pos : end]
        self.line += value.count("\n")
        self.pos = end + 1
        return value


def parse(text: str, variables: Mapping[str, str] | None = None) -> Section:
    """Parse libconfuse text into a :class:`Section` named ``""`` (the root)."""
    lex = _Lexer(text, variables or {})
    root = Section("")
    _parse_body(lex, root, top=True)
    return root


def _parse_body(lex: _Lexer, section: Section, top: bool) -> None:
    while True:
        ch = lex.peek()
        if ch == "":
            if not top:
                raise lex.error("missing '}'")
            return
        if ch == "}":
            if top:
                raise lex.error("unexpected '}'")
            lex.pos += 1
            return
        name = lex.word()
        ch = lex.peek()
        if ch == "=" or (ch == "+" and lex.text.startswith("+=", lex.pos)):
            lex.pos += 1 if ch == "=" else 2
            if lex.peek() == "{":
                lex.pos += 1
                items: list[str] = []
                if lex.peek() == "}":
                    lex.pos += 1
                else:
                    while True:
                        items.append(lex.word())
                        sep = lex.peek()
                        lex.pos += 1
                        if sep == "}":
                            break
                        if sep != ",":
                            raise lex.error(f"expected ',' or '}}' in list {name!r}")
                section.options.append((name, tuple(items), True))
            else:
                section.options.append((name, (lex.word(),), False))
            continue
        title: str | None = None
        if ch not in ("{", ""):
            title = lex.word()
        lex.expect("{")
        child = Section(name, title)
        _parse_body(lex, child, top=False)
        section.children.append(child)
