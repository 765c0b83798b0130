"""Semantic checks run when a script is uploaded (RFC 5228 §2.10.5: errors in
a script are reported before it is ever run).

The command table below is the grammar of every command and test we
implement: its tagged arguments (with the extension each needs and the
group of mutually exclusive tags it belongs to), its positional arguments,
and whether it takes tests or a block.  ``validate`` turns the syntax tree
into ``Node`` objects the interpreter executes, so run time never re-checks
argument shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailserve.sieve.errors import SieveRuntimeError, SieveSyntaxError
from mailserve.sieve.extensions import SUPPORTED_EXTENSIONS, expand_requirements
from mailserve.sieve.matching import (
    COMPARATORS,
    RELATIONAL_OPERATORS,
    MatchSpec,
    compile_regex,
)
from mailserve.sieve.nodes import Command, Number, StringList, Tag, Test

STRING = "string"
STRINGS = "string-list"
NUMBER = "number"


@dataclass(frozen=True)
class TagSpec:
    """One tagged argument: its value kind (``None`` for a bare flag), the
    extension that defines it, and its exclusion group."""

    argument: str | None = None
    extension: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Spec:
    """The shape of one command or test."""

    extension: str | None = None
    tags: dict[str, TagSpec] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    #: How many leading (``setflag [var] flags``) or trailing
    #: (``deleteheader name [patterns]``) positionals may be left out.
    optional_leading: int = 0
    optional_trailing: int = 0
    #: "none", "one" (if, not) or "list" (anyof, allof)
    tests: str = "none"
    block: bool = False
    #: Tags of which exactly one must be present (size :over/:under).
    required_group: str | None = None


_COMPARATOR = {"comparator": TagSpec(STRING, None, "comparator")}
_MATCH = {
    "is": TagSpec(None, None, "match"),
    "contains": TagSpec(None, None, "match"),
    "matches": TagSpec(None, None, "match"),
    "regex": TagSpec(None, "regex", "match"),
    "count": TagSpec(STRING, "relational", "match"),
    "value": TagSpec(STRING, "relational", "match"),
}
_ADDRESS_PART = {
    "all": TagSpec(None, None, "address-part"),
    "localpart": TagSpec(None, None, "address-part"),
    "domain": TagSpec(None, None, "address-part"),
    "user": TagSpec(None, "subaddress", "address-part"),
    "detail": TagSpec(None, "subaddress", "address-part"),
}
_INDEX = {"index": TagSpec(NUMBER, "index"), "last": TagSpec(None, "index")}
_FLAGS = {"flags": TagSpec(STRINGS, "imap4flags")}

COMMANDS: dict[str, Spec] = {
    "require": Spec(positional=(STRINGS,)),
    "if": Spec(tests="one", block=True),
    "elsif": Spec(tests="one", block=True),
    "else": Spec(block=True),
    "stop": Spec(),
    "keep": Spec(tags=dict(_FLAGS)),
    "discard": Spec(),
    "redirect": Spec(tags={"copy": TagSpec(None, "copy")}, positional=(STRING,)),
    "fileinto": Spec(
        "fileinto",
        tags={"copy": TagSpec(None, "copy"), "create": TagSpec(None, "mailbox"), **_FLAGS},
        positional=(STRING,),
    ),
    "reject": Spec("reject", positional=(STRING,)),
    "ereject": Spec("ereject", positional=(STRING,)),
    "vacation": Spec(
        "vacation",
        tags={
            "days": TagSpec(NUMBER, None, "period"),
            "seconds": TagSpec(NUMBER, "vacation-seconds", "period"),
            "subject": TagSpec(STRING),
            "from": TagSpec(STRING),
            "addresses": TagSpec(STRINGS),
            "mime": TagSpec(None),
            "handle": TagSpec(STRING),
        },
        positional=(STRING,),
    ),
    "setflag": Spec("imap4flags", positional=(STRING, STRINGS), optional_leading=1),
    "addflag": Spec("imap4flags", positional=(STRING, STRINGS), optional_leading=1),
    "removeflag": Spec("imap4flags", positional=(STRING, STRINGS), optional_leading=1),
    "set": Spec(
        "variables",
        tags={
            "lower": TagSpec(None, None, "case"),
            "upper": TagSpec(None, None, "case"),
            "lowerfirst": TagSpec(None, None, "first"),
            "upperfirst": TagSpec(None, None, "first"),
            "quotewildcard": TagSpec(None, None, "quote"),
            "quoteregex": TagSpec(None, "regex", "quote"),
            "length": TagSpec(None),
        },
        positional=(STRING, STRING),
    ),
    "include": Spec(
        "include",
        tags={
            "personal": TagSpec(None, None, "location"),
            "global": TagSpec(None, None, "location"),
            "once": TagSpec(None),
            "optional": TagSpec(None),
        },
        positional=(STRING,),
    ),
    "return": Spec("include"),
    "global": Spec("include", positional=(STRINGS,)),
    "addheader": Spec("editheader", tags={"last": TagSpec(None)}, positional=(STRING, STRING)),
    "deleteheader": Spec(
        "editheader",
        tags={"index": TagSpec(NUMBER), "last": TagSpec(None), **_COMPARATOR, **_MATCH},
        positional=(STRING, STRINGS),
        optional_trailing=1,
    ),
}

TESTS: dict[str, Spec] = {
    "address": Spec(tags={**_COMPARATOR, **_ADDRESS_PART, **_MATCH, **_INDEX}, positional=(STRINGS, STRINGS)),
    "envelope": Spec(
        "envelope", tags={**_COMPARATOR, **_ADDRESS_PART, **_MATCH}, positional=(STRINGS, STRINGS)
    ),
    "header": Spec(tags={**_COMPARATOR, **_MATCH, **_INDEX}, positional=(STRINGS, STRINGS)),
    "exists": Spec(positional=(STRINGS,)),
    "size": Spec(
        tags={"over": TagSpec(NUMBER, None, "size"), "under": TagSpec(NUMBER, None, "size")},
        required_group="size",
    ),
    "true": Spec(),
    "false": Spec(),
    "not": Spec(tests="one"),
    "anyof": Spec(tests="list"),
    "allof": Spec(tests="list"),
    "body": Spec(
        "body",
        tags={
            **_COMPARATOR,
            **_MATCH,
            "raw": TagSpec(None, None, "transform"),
            "content": TagSpec(STRINGS, None, "transform"),
            "text": TagSpec(None, None, "transform"),
        },
        positional=(STRINGS,),
    ),
    "date": Spec(
        "date",
        tags={
            "zone": TagSpec(STRING, None, "zone"),
            "originalzone": TagSpec(None, None, "zone"),
            **_COMPARATOR,
            **_MATCH,
            **_INDEX,
        },
        positional=(STRING, STRING, STRINGS),
    ),
    "currentdate": Spec(
        "date",
        tags={"zone": TagSpec(STRING, None, "zone"), **_COMPARATOR, **_MATCH},
        positional=(STRING, STRINGS),
    ),
    "hasflag": Spec(
        "imap4flags", tags={**_COMPARATOR, **_MATCH}, positional=(STRINGS, STRINGS), optional_leading=1
    ),
    "string": Spec("variables", tags={**_COMPARATOR, **_MATCH}, positional=(STRINGS, STRINGS)),
    "mailboxexists": Spec("mailbox", positional=(STRINGS,)),
    "duplicate": Spec(
        "duplicate",
        tags={
            "handle": TagSpec(STRING),
            "header": TagSpec(STRING, None, "id"),
            "uniqueid": TagSpec(STRING, None, "id"),
            "seconds": TagSpec(NUMBER),
            "last": TagSpec(None),
        },
    ),
    "spamtest": Spec(
        "spamtest",
        tags={"percent": TagSpec(None, "spamtestplus"), **_COMPARATOR, **_MATCH},
        positional=(STRING,),
    ),
    "virustest": Spec("virustest", tags={**_COMPARATOR, **_MATCH}, positional=(STRING,)),
}

DATE_PARTS = (
    "year", "month", "day", "date", "julian", "hour", "minute", "second",
    "time", "iso8601", "std11", "zone", "weekday",
)  # fmt: skip

#: RFC 5322 §3.6.8 field-name: printable US-ASCII except ':'.
_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_ZONE = re.compile(r"^[+-]\d{4}$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: The body excludes "$", "{" and "}" so that in "${hex:4${hex:30}}" the inner, valid sequence is
#: the one decoded (RFC 5228 §2.4.2.4 gives exactly this example; the result is "${hex:40}").
_ENCODED_CHARACTER = re.compile(r"\$\{(hex|unicode):([^${}]*)\}", re.IGNORECASE)
#: A namespaced variable reference (RFC 5229 §3): ``${namespace.name}``.
_NAMESPACED_VARIABLE = re.compile(r"\$\{((?:[A-Za-z_][A-Za-z0-9_]*\.)+[A-Za-z_][A-Za-z0-9_]*)\}")

#: Header fields a script may never delete (RFC 5293 §7; Pigeonhole agrees).
PROTECTED_HEADERS = frozenset({"received", "auto-submitted"})


@dataclass
class Node:
    """A validated command or test, ready to execute.

    ``tags`` maps tag name to its value (``True`` for bare tags); ``args`` are
    the positional arguments (``list[str]`` for strings and lists, ``int`` for
    numbers).  ``branches`` is set on ``if`` and holds the whole
    if/elsif/else chain as ``(test or None, block)`` pairs.
    """

    name: str
    line: int
    column: int
    tags: dict[str, object] = field(default_factory=dict)
    args: list[object] = field(default_factory=list)
    tests: list[Node] = field(default_factory=list)
    block: list[Node] | None = None
    branches: list[tuple[Node | None, list[Node]]] = field(default_factory=list)
    match: MatchSpec | None = None


def _decode_encoded_characters(value: str, line: int, column: int) -> str:
    """RFC 5228 §2.4.2.4 encoded-character: ``${hex:..}`` and ``${unicode:..}``.
    Malformed sequences are left as they are, as the RFC requires."""

    def replace(found: re.Match[str]) -> str:
        kind, body = found.group(1).lower(), found.group(2)
        words = body.split()
        if not words or any(not re.fullmatch(r"[0-9A-Fa-f]+", word) for word in words):
            return found.group(0)
        if kind == "hex":
            if any(len(word) > 2 and word.lstrip("0") and len(word.lstrip("0")) > 2 for word in words):
                return found.group(0)
            try:
                return bytes(int(word, 16) for word in words).decode("utf-8")
            except (UnicodeDecodeError, ValueError):
                raise SieveSyntaxError("encoded-character does not decode to UTF-8", line, column) from None
        characters = []
        for word in words:
            code = int(word, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                # RFC 5228 §2.4.2.4: an invalid Unicode scalar is an error.
                raise SieveSyntaxError(f"invalid unicode character U+{word}", line, column)
            characters.append(chr(code))
        return "".join(characters)

    return _ENCODED_CHARACTER.sub(replace, value)


class Validator:
    """Checks one script against the command table and the ``require`` list."""

    def __init__(self) -> None:
        self.required: set[str] = set()
        self.extensions: frozenset[str] = frozenset()

    def validate(self, commands: tuple[Command, ...]) -> list[Node]:
        nodes = self._block(commands, top_level=True)
        return nodes

    def _has(self, extension: str) -> bool:
        return extension in self.extensions

    def _need(self, extension: str | None, what: str, line: int, column: int) -> None:
        if extension is not None and not self._has(extension):
            raise SieveSyntaxError(f"{what} requires require \"{extension}\"", line, column)

    def _block(self, commands: tuple[Command, ...], top_level: bool = False) -> list[Node]:
        nodes: list[Node] = []
        requires_allowed = top_level
        previous: Node | None = None
        for command in commands:
            if command.name == "require":
                if not requires_allowed:
                    # RFC 5228 §3.2: require only at the start of the script.
                    raise SieveSyntaxError(
                        "require must come before any other command", command.line, command.column
                    )
                self._require(command)
                continue
            requires_allowed = False
            if command.name in ("elsif", "else"):
                if previous is None or previous.name != "if" or previous.branches[-1][0] is None:
                    raise SieveSyntaxError(
                        f"{command.name} without a preceding if/elsif", command.line, command.column
                    )
                node = self._command(command)
                previous.branches.append((node.tests[0] if node.tests else None, node.block or []))
                continue
            node = self._command(command)
            if node.name == "if":
                node.branches = [(node.tests[0], node.block or [])]
            nodes.append(node)
            previous = node
        return nodes

    def _require(self, command: Command) -> None:
        node = self._shape(command, COMMANDS["require"], "command")
        for name in node.args[0]:  # type: ignore[union-attr]
            if name not in SUPPORTED_EXTENSIONS:
                # RFC 5228 §3.2: an unknown required extension fails the script.
                raise SieveSyntaxError(f"unsupported extension \"{name}\"", command.line, command.column)
            self.required.add(name)
        self.extensions = expand_requirements(self.required)

    def _command(self, command: Command) -> Node:
        spec = COMMANDS.get(command.name)
        if spec is None:
            if command.name in TESTS:
                raise SieveSyntaxError(f"'{command.name}' is a test, not a command", command.line, command.column)
            raise SieveSyntaxError(f"unknown command '{command.name}'", command.line, command.column)
        self._need(spec.extension, f"command '{command.name}'", command.line, command.column)
        node = self._shape(command, spec, "command")
        if spec.block:
            if command.block is None:
                raise SieveSyntaxError(f"command '{command.name}' needs a block", command.line, command.column)
            node.block = self._block(command.block)
        elif command.block is not None:
            raise SieveSyntaxError(f"command '{command.name}' takes no block", command.line, command.column)
        self._check_command(node)
        return node

    def _test(self, test: Test) -> Node:
        spec = TESTS.get(test.name)
        if spec is None:
            if test.name in COMMANDS:
                raise SieveSyntaxError(f"'{test.name}' is a command, not a test", test.line, test.column)
            raise SieveSyntaxError(f"unknown test '{test.name}'", test.line, test.column)
        self._need(spec.extension, f"test '{test.name}'", test.line, test.column)
        node = self._shape(test, spec, "test")
        self._check_test(node)
        return node

    def _shape(self, item: Command | Test, spec: Spec, kind: str) -> Node:
        """Check tags, positional arguments and nested tests against ``spec``."""
        node = Node(item.name, item.line, item.column)
        positional: list[StringList | Number] = []
        groups: dict[str, str] = {}
        arguments = list(item.arguments)
        index = 0
        while index < len(arguments):
            argument = arguments[index]
            index += 1
            if isinstance(argument, Tag):
                if positional:
                    # RFC 5228 §2.6.2: tagged arguments precede positional ones.
                    raise SieveSyntaxError(
                        f"tag ':{argument.name}' after positional arguments of '{item.name}'",
                        argument.line,
                        argument.column,
                    )
                tag_spec = spec.tags.get(argument.name)
                if tag_spec is None:
                    raise SieveSyntaxError(
                        f"unknown tag ':{argument.name}' for {kind} '{item.name}'", argument.line, argument.column
                    )
                self._need(tag_spec.extension, f"tag ':{argument.name}'", argument.line, argument.column)
                if argument.name in node.tags:
                    raise SieveSyntaxError(f"tag ':{argument.name}' given twice", argument.line, argument.column)
                if tag_spec.group is not None:
                    if tag_spec.group in groups:
                        raise SieveSyntaxError(
                            f"tag ':{argument.name}' conflicts with ':{groups[tag_spec.group]}'",
                            argument.line,
                            argument.column,
                        )
                    groups[tag_spec.group] = argument.name
                if tag_spec.argument is None:
                    node.tags[argument.name] = True
                else:
                    if index >= len(arguments) or isinstance(arguments[index], Tag):
                        raise SieveSyntaxError(
                            f"tag ':{argument.name}' needs a {tag_spec.argument} argument",
                            argument.line,
                            argument.column,
                        )
                    node.tags[argument.name] = self._value(arguments[index], tag_spec.argument, f"tag ':{argument.name}'")  # type: ignore[arg-type]
                    index += 1
            else:
                positional.append(argument)
        if spec.required_group is not None and spec.required_group not in groups:
            raise SieveSyntaxError(f"{kind} '{item.name}' needs :over or :under", item.line, item.column)
        kinds = list(spec.positional)
        if len(positional) > len(kinds) or len(positional) < len(kinds) - spec.optional_leading - spec.optional_trailing:
            expected = len(kinds) - spec.optional_leading - spec.optional_trailing
            count = f"{expected}" if expected == len(kinds) else f"{expected} to {len(kinds)}"
            raise SieveSyntaxError(
                f"{kind} '{item.name}' takes {count} positional argument(s), got {len(positional)}",
                item.line,
                item.column,
            )
        if spec.optional_leading and len(positional) < len(kinds):
            kinds = kinds[len(kinds) - len(positional) :]
            node.args.append(None)
        for argument, expected_kind in zip(positional, kinds, strict=False):
            node.args.append(self._value(argument, expected_kind, f"{kind} '{item.name}'"))
        tests = item.tests
        if spec.tests == "none" and tests:
            raise SieveSyntaxError(f"{kind} '{item.name}' takes no test", tests[0].line, tests[0].column)
        if spec.tests == "one" and (len(tests) != 1 or item.test_list):
            raise SieveSyntaxError(f"{kind} '{item.name}' needs exactly one test", item.line, item.column)
        if spec.tests == "list" and not item.test_list:
            raise SieveSyntaxError(f"{kind} '{item.name}' needs a test list", item.line, item.column)
        node.tests = [self._test(test) for test in tests]
        return node

    def _value(self, argument: StringList | Number, expected: str, what: str) -> object:
        if expected == NUMBER:
            if not isinstance(argument, Number):
                raise SieveSyntaxError(f"{what} expects a number", argument.line, argument.column)
            return argument.value
        if not isinstance(argument, StringList):
            raise SieveSyntaxError(f"{what} expects a {expected}", argument.line, argument.column)
        if expected == STRING and (argument.bracketed or len(argument.values) != 1):
            raise SieveSyntaxError(f"{what} expects a single string, not a list", argument.line, argument.column)
        values = list(argument.values)
        if self._has("encoded-character"):
            values = [_decode_encoded_characters(value, argument.line, argument.column) for value in values]
        if self._has("variables"):
            for value in values:
                self._check_namespaces(value, argument)
        return values[0] if expected == STRING else values

    def _check_namespaces(self, value: str, argument: StringList) -> None:
        """RFC 5229 §3: "References to namespaces without a prior require statement for the
        relevant extension MUST cause an error." The one namespace mailserve knows is
        ``global``, which include brings (RFC 6609 §3.5)."""
        for found in _NAMESPACED_VARIABLE.finditer(value):
            namespace = found.group(1).split(".", 1)[0].lower()
            if namespace == "global" and self._has("include"):
                continue
            raise SieveSyntaxError(
                f"variable {found.group(0)} is in the unknown namespace '{namespace}'", argument.line, argument.column
            )

    # -- per-command checks ---------------------------------------------------
    def _constant(self, value: str) -> bool:
        return not (self._has("variables") and "${" in value)

    def _error(self, node: Node, message: str) -> SieveSyntaxError:
        return SieveSyntaxError(message, node.line, node.column)

    def _check_match(self, node: Node) -> None:
        # RFC 5235 §3.1: spamtest and virustest compare numerically by default.
        default = "i;ascii-numeric" if node.name in ("spamtest", "virustest") else "i;ascii-casemap"
        comparator = str(node.tags.get("comparator", default))
        if comparator not in COMPARATORS:
            raise self._error(node, f"unknown comparator \"{comparator}\"")
        if comparator == "i;ascii-numeric" and "comparator" in node.tags and not self._has("comparator-i;ascii-numeric"):
            raise self._error(node, 'comparator "i;ascii-numeric" requires require "comparator-i;ascii-numeric"')
        match_type = next((name for name in ("is", "contains", "matches", "regex", "count", "value") if name in node.tags), "is")
        relation = ""
        if match_type in ("count", "value"):
            relation = str(node.tags[match_type]).lower()
            if relation not in RELATIONAL_OPERATORS:
                # RFC 5231 §5: the relational operator must be one of these.
                raise self._error(node, f"unknown relational operator \"{relation}\"")
        if comparator == "i;ascii-numeric" and match_type in ("contains", "matches", "regex"):
            # RFC 4790 §9.1: i;ascii-numeric supports equality and ordering only.
            raise self._error(node, f"comparator i;ascii-numeric cannot be used with :{match_type}")
        node.match = MatchSpec(match_type, comparator, relation)

    def _check_regex_keys(self, node: Node, keys: list[str]) -> None:
        if node.match is not None and node.match.match_type == "regex":
            for key in keys:
                if self._constant(key):
                    try:
                        compile_regex(key, node.match.comparator)
                    except SieveRuntimeError as error:
                        raise self._error(node, error.message) from None

    def _check_test(self, node: Node) -> None:
        name = node.name
        if any(tag in node.tags for tag in ("comparator", "is", "contains", "matches", "regex", "count", "value")) or name in (
            "address", "envelope", "header", "body", "date", "currentdate", "hasflag", "string", "spamtest", "virustest",
        ):  # fmt: skip
            self._check_match(node)
        if "last" in node.tags and "index" not in node.tags and name in ("address", "header", "date"):
            raise self._error(node, ":last requires :index")  # RFC 5260 §6
        if "index" in node.tags and int(node.tags["index"]) < 1:  # type: ignore[call-overload]
            raise self._error(node, ":index must be at least 1")
        if name in ("address", "header", "exists", "date"):
            names = node.args[0] if isinstance(node.args[0], list) else [node.args[0]]
            for header in names:  # type: ignore[union-attr]
                if self._constant(header) and not _FIELD_NAME.match(header):
                    raise self._error(node, f"invalid header name \"{header}\"")
        if name == "envelope":
            for part in node.args[0]:  # type: ignore[union-attr]
                if self._constant(part) and part.lower() not in ("from", "to"):
                    raise self._error(node, f"unsupported envelope part \"{part}\"")  # RFC 5228 §5.4
        if name in ("date", "currentdate"):
            part = node.args[1 if name == "date" else 0]
            if self._constant(str(part)) and str(part).lower() not in DATE_PARTS:
                raise self._error(node, f"unknown date part \"{part}\"")  # RFC 5260 §4.2
            zone = node.tags.get("zone")
            if isinstance(zone, str) and self._constant(zone) and not _ZONE.match(zone):
                raise self._error(node, f"invalid time zone \"{zone}\"")
        if name in ("not", "anyof", "allof") and not node.tests:
            raise self._error(node, f"test '{name}' needs a test")
        if name == "hasflag" and node.args[0] is not None:
            for variable in node.args[0]:  # type: ignore[union-attr]
                self._check_variable_name(node, variable)
        if name == "duplicate" and "seconds" in node.tags and "duplicate" not in self.extensions:
            raise self._error(node, "duplicate requires require \"duplicate\"")
        keys = node.args[-1] if node.args and isinstance(node.args[-1], list) else []
        self._check_regex_keys(node, keys)  # type: ignore[arg-type]

    def _check_variable_name(self, node: Node, name: str) -> None:
        if not _VARIABLE_NAME.match(name):
            raise self._error(node, f"invalid variable name \"{name}\"")  # RFC 5229 §3

    def _check_command(self, node: Node) -> None:
        name = node.name
        if name in ("setflag", "addflag", "removeflag") and node.args[0] is not None:
            self._need("variables", "a flag variable", node.line, node.column)
            self._check_variable_name(node, str(node.args[0]))
        if name == "set":
            variable = str(node.args[0])
            if not self._constant(variable) or not _VARIABLE_NAME.match(variable):
                raise self._error(node, f"invalid variable name \"{variable}\"")
        if name == "global":
            self._need("variables", "command 'global'", node.line, node.column)  # RFC 6609 §3.4
            for variable in node.args[0]:  # type: ignore[union-attr]
                if not _VARIABLE_NAME.match(variable):
                    raise self._error(node, f"invalid variable name \"{variable}\"")
        if name == "include":
            script_name = str(node.args[0])
            if not script_name or "/" in script_name or not self._constant(script_name):
                # RFC 6609 §3.2: the name is a constant and names one script.
                raise self._error(node, f"invalid script name \"{script_name}\"")
        if name == "redirect":
            address = str(node.args[0])
            if self._constant(address) and not is_valid_address(address):
                raise self._error(node, f"invalid redirect address \"{address}\"")  # RFC 5228 §4.2
        if name in ("addheader", "deleteheader"):
            header = str(node.args[0])
            if self._constant(header) and not _FIELD_NAME.match(header):
                raise self._error(node, f"invalid header name \"{header}\"")
            if name == "deleteheader":
                self._check_match(node)
                if "last" in node.tags and "index" not in node.tags:
                    raise self._error(node, ":last requires :index")  # RFC 5293 §5
                if "index" in node.tags and int(node.tags["index"]) < 1:  # type: ignore[call-overload]
                    raise self._error(node, ":index must be at least 1")
                if len(node.args) > 1:
                    self._check_regex_keys(node, node.args[1])  # type: ignore[arg-type]
        if name in ("fileinto", "keep") and "flags" in node.tags:
            pass
        if name == "vacation":
            handle = node.tags.get("from")
            if isinstance(handle, str) and self._constant(handle) and not is_valid_address(_bare_address(handle)):
                raise self._error(node, f"invalid :from address \"{handle}\"")  # RFC 5230 §4.4


_ADDR_SPEC = re.compile(r"^[^\s@<>()\[\],;:\"]+(\.[^\s@<>()\[\],;:\"]+)*@[A-Za-z0-9.\-\[\]:]+$|^\"[^\"]*\"@[A-Za-z0-9.\-\[\]:]+$")


def is_valid_address(address: str) -> bool:
    """A usable RFC 5322 addr-spec (``local@domain``) for redirect/vacation."""
    return bool(_ADDR_SPEC.match(address.strip()))


def _bare_address(value: str) -> str:
    """The addr-spec inside ``Name <addr>``, or the value itself."""
    if "<" in value and value.rstrip().endswith(">"):
        return value[value.rindex("<") + 1 : value.rstrip().rindex(">")]
    return value


def validate(commands: tuple[Command, ...]) -> tuple[list[Node], frozenset[str]]:
    """Validate a parsed script; returns the executable nodes and the set of
    required extensions (with implied ones)."""
    validator = Validator()
    nodes = validator.validate(commands)
    return nodes, validator.extensions
