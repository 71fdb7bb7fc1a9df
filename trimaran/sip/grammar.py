"""Small lexical helpers shared by the SIP parsers (RFC 3261 §25.1).

Everything here works on `str` already decoded from the wire and raises only
`SipParseError`. Parameters keep their order; a parameter without a value
(`;lr`) has the value `None`.
"""

from __future__ import annotations

import re

from trimaran.sip.errors import SipParseError

Params = tuple[tuple[str, str | None], ...]

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_TOKEN_FULL = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
# Characters allowed unquoted in a generic-param value (token / host / quoted-string).
_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+\Z")
# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")


def is_token(text: str) -> bool:
    """True when `text` is a non-empty RFC 3261 token."""
    return _TOKEN_FULL.match(text) is not None


def is_digits(text: str) -> bool:
    """True when `text` is 1*DIGIT in the ASCII sense (§25.1 DIGIT is %x30-39 only)."""
    return text.isascii() and text.isdigit()


def is_scheme(text: str) -> bool:
    """True when `text` is syntactically a URI scheme (RFC 3986 §3.1)."""
    return _SCHEME_RE.match(text) is not None


_SPECIALS: dict[str, re.Pattern[str]] = {}


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on `sep` where it is outside quoted strings and <...> brackets.

    RFC 3261 §7.3.1: comma-separated header values; `;` separated parameters.
    A backslash escapes the next character inside a quoted string (§25.1 quoted-pair).
    """
    if '"' not in text and "<" not in text and ">" not in text:
        return text.split(sep)
    specials = _SPECIALS.get(sep)
    if specials is None:
        specials = _SPECIALS[sep] = re.compile('["<>\\\\' + re.escape(sep) + "]")
    parts: list[str] = []
    depth = 0
    quoted = False
    escape_end = -1  # inside quotes, a special character before this offset is escaped
    start = 0
    for match in specials.finditer(text):
        i = match.start()
        ch = text[i]
        if quoted:
            if i < escape_end:
                continue
            if ch == "\\":
                escape_end = i + 2
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            if depth == 0:
                raise SipParseError(f"unbalanced '>' in {text[:80]!r}")
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise SipParseError(f"unterminated quoted string in {text[:80]!r}")
    if depth:
        raise SipParseError(f"unbalanced '<' in {text[:80]!r}")
    parts.append(text[start:])
    return parts


def unquote(text: str) -> str:
    """Remove the quotes and backslash escapes of a quoted-string (§25.1)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise SipParseError(f"bad quoted string {text[:80]!r}")
    inner = text[1:-1]
    out: list[str] = []
    escaped = False
    for ch in inner:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            raise SipParseError(f"stray quote in {text[:80]!r}")
        else:
            out.append(ch)
    if escaped:
        raise SipParseError(f"dangling escape in {text[:80]!r}")
    return "".join(out)


def quote(text: str) -> str:
    """Make a quoted-string, escaping backslash and double quote."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> Params:
    """Parse `;a=b;c;d="x y"` (leading `;` optional) into ordered pairs.

    Names are lower-cased (§7.3.1: parameter names are case-insensitive);
    quoted values are kept with their quotes so serialising is lossless.
    """
    text = text.strip()
    if not text:
        return ()
    if text[0] == ";":
        text = text[1:]
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for raw in split_outside_quotes(text, ";"):
        raw = raw.strip()
        if not raw:
            raise SipParseError("empty parameter")
        name, eq, value = raw.partition("=")
        name = name.strip().lower()
        if not is_token(name):
            raise SipParseError(f"bad parameter name {name[:40]!r}")
        if name in seen:
            raise SipParseError(f"duplicate parameter {name!r}")
        seen.add(name)
        if not eq:
            out.append((name, None))
            continue
        value = value.strip()
        if value.startswith('"'):
            unquote(value)  # validates
        elif not value or not _PARAM_VALUE_RE.match(value):
            raise SipParseError(f"bad value for parameter {name!r}")
        out.append((name, value))
    return tuple(out)


def format_params(params: Params) -> str:
    """Serialise parameters as `;a=b;c`."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def get_param(params: Params, name: str) -> str | None:
    """Value of parameter `name` (unquoted), "" when present without value, None if absent."""
    name = name.lower()
    for k, v in params:
        if k == name:
            if v is None:
                return ""
            return unquote(v) if v.startswith('"') else v
    return None


def has_param(params: Params, name: str) -> bool:
    """True when parameter `name` is present (with or without a value)."""
    name = name.lower()
    return any(k == name for k, _ in params)


def set_param(params: Params, name: str, value: str | None) -> Params:
    """Return `params` with `name` set to `value` (replacing, or appended)."""
    name = name.lower()
    out = [(k, v) for k, v in params if k != name]
    if len(out) == len(params):
        return (*params, (name, value))
    return tuple((k, value) if k == name else (k, v) for k, v in params)


def remove_param(params: Params, name: str) -> Params:
    """Return `params` without `name`."""
    name = name.lower()
    return tuple((k, v) for k, v in params if k != name)
