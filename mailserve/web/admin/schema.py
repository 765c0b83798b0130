"""JSON Schema checking of API input, with the same schemas the OpenAPI document publishes.

Why our own checker: the OpenAPI document must describe the API *exactly* (issue: "describes it
exactly"), so every request body, path and query parameter is checked against the very schema
objects that are published.  The subset used is small -- ``type``, ``properties``, ``required``,
``additionalProperties: false``, ``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum``,
``enum``, ``items``, ``minItems``/``maxItems`` -- and is implemented here with the JSON Schema
meanings (draft 2020-12 §6, as referenced by OpenAPI 3.1): patterns are ECMA-262 regular
expressions, so ``$`` means the end of the text (Python's ``$`` would also match before a final
newline, and is rewritten to ``\\Z``).
"""

from __future__ import annotations

import functools
import re
from typing import Any

#: Deepest nesting a request body may have; a hostile ``[[[[...]]]]`` is refused before parsing
#: recursion gets near Python's limit.
MAX_DEPTH = 32


class SchemaError(ValueError):
    """A value does not match its schema; ``field`` is the dotted path of the culprit."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
               "array": "an array", "object": "an object"}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return False


def validate(value: Any, schema: dict[str, Any], path: str = "", depth: int = 0) -> Any:
    """Return ``value`` (integers normalised to ``int``) or raise :class:`SchemaError`."""
    where = path or "body"
    if depth > MAX_DEPTH:
        raise SchemaError(f"{where}: nested too deeply", path or None)
    if "oneOf" in schema:
        for option in schema["oneOf"]:
            try:
                return validate(value, option, path, depth + 1)
            except SchemaError:
                continue
        raise SchemaError(f"{where}: {_describe(value)} matches none of the allowed forms", path or None)
    kind = schema.get("type")
    if kind is not None and not _is_type(value, kind):
        raise SchemaError(f"{where}: expected {_TYPE_NAMES.get(kind, kind)}, got {_describe(value)}", path or None)
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        raise SchemaError(f"{where}: must be one of {allowed}", path or None)
    if kind == "integer":
        value = int(value)
    if kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{where}: must be at least {schema['minimum']}", path or None)
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{where}: must be at most {schema['maximum']}", path or None)
    elif kind == "string":
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise SchemaError(f"{where}: must be at least {schema['minLength']} characters", path or None)
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(f"{where}: must be at most {schema['maxLength']} characters", path or None)
        if "pattern" in schema and not _compiled(schema["pattern"]).search(value):
            hint = schema.get("description") or f"must match {schema['pattern']}"
            raise SchemaError(f"{where}: not valid ({hint})", path or None)
    elif kind == "array":
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(f"{where}: needs at least {schema['minItems']} items", path or None)
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(f"{where}: at most {schema['maxItems']} items", path or None)
        items = schema.get("items")
        if items is not None:
            value = [validate(item, items, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    elif kind == "object":
        properties = schema.get("properties", {})
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            raise SchemaError(f"{where}: needs at least {schema['minProperties']} fields", path or None)
        for name in schema.get("required", ()):
            if name not in value:
                field = f"{path}.{name}" if path else name
                raise SchemaError(f"{field}: is required", field)
        if schema.get("additionalProperties") is False:
            for name in value:
                if name not in properties:
                    field = f"{path}.{name}" if path else name
                    known = ", ".join(sorted(properties)) or "none"
                    raise SchemaError(f"{field}: unknown field (known fields: {known})", field)
        value = {name: validate(item, properties[name], f"{path}.{name}" if path else name, depth + 1)
                 if name in properties else item for name, item in value.items()}
    return value


# -- schema building blocks (published in the OpenAPI document) --------------------------------------

#: No look-ahead for the 253-octet bound (``maxLength`` says it), so test generators can produce
#: matching names efficiently.
DOMAIN_PATTERN = (r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
                  r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
#: Local parts as the directory accepts them, restricted to ASCII printable characters
#: (RFC 5321 §4.1.2 dot-atom and the specials our directory allows).
LOCAL_PATTERN = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}"
ADDRESS_PATTERN = "^" + LOCAL_PATTERN + "@" + DOMAIN_PATTERN[1:]
LOGIN_PATTERN = r"^[A-Za-z0-9._@+-]{1,255}$"
TEXT_PATTERN = r"^[^\u0000-\u001f\u007f]*$"
LABEL_PATTERN = r"^[^\u0000-\u001f\u007f]*[^\u0000-\u001f\u007f\s][^\u0000-\u001f\u007f]*$"
SELECTOR_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
PASSWORD_PATTERN = r"^[^\u0000]*$"

DOMAIN = {"type": "string", "pattern": DOMAIN_PATTERN, "maxLength": 253,
          "description": "a lower-case DNS domain name with at least one dot"}
#: RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its angle brackets, so an address is at most
#: 254 -- which also keeps its domain within the 253 of a DNS name.
ADDRESS = {"type": "string", "pattern": ADDRESS_PATTERN, "maxLength": 254,
           "description": "an email address local@domain (lower-case domain)"}
LOGIN = {"type": "string", "pattern": LOGIN_PATTERN, "description": "letters, digits and ._@+- only"}
TEXT = {"type": "string", "maxLength": 256, "pattern": TEXT_PATTERN, "description": "no control characters"}
LABEL = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": LABEL_PATTERN,
         "description": "1 to 100 printable characters, not only spaces"}
PASSWORD = {"type": "string", "minLength": 8, "maxLength": 1024, "pattern": PASSWORD_PATTERN,
            "description": "8 to 1024 characters"}
SELECTOR = {"type": "string", "pattern": SELECTOR_PATTERN, "maxLength": 63,
            "description": "a lower-case DNS label (RFC 6376 §3.1)"}
QUOTA = {"type": "integer", "minimum": 0, "maximum": 1 << 50, "description": "bytes; 0 means unlimited"}
ID = {"type": "integer", "minimum": 1, "maximum": (1 << 53) - 1}


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: dict[str, Any], **limits: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **limits}
