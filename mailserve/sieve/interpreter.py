"""Compiles and runs Sieve scripts (RFC 5228 and the extensions listed in
``mailserve.sieve.extensions``).

``run`` is pure computation bounded by ``SieveLimits`` (steps, actions,
includes, regex time), so the delivery pipeline calls it through
``deferToThread``; it touches the outside world only through the
``SieveEnvironment`` callables.  Tracker updates (duplicate IDs, vacation
replies) are committed only when the script completes successfully, as
RFC 7352 §3 requires for duplicate.
"""

from __future__ import annotations

import datetime
import email.header
import email.utils
import hashlib
from dataclasses import dataclass, field

from twisted.logger import Logger

from mailserve.sieve import matching
from mailserve.sieve.environment import SieveEnvironment
from mailserve.sieve.errors import (
    SieveLimitExceeded,
    SieveRuntimeError,
    SieveSyntaxError,
)
from mailserve.sieve.message import (
    SieveMessage,
    decode_header_value,
    html_to_text,
    unfold,
)
from mailserve.sieve.parser import parse
from mailserve.sieve.result import (
    Action,
    AddHeader,
    DeleteHeader,
    Discard,
    Ereject,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)
from mailserve.sieve.validator import (
    _FIELD_NAME,
    PROTECTED_HEADERS,
    Node,
    is_valid_address,
    validate,
)

log = Logger()


@dataclass(frozen=True)
class SieveLimits:
    """Resource bounds for compiling and running one script.

    Defaults follow Pigeonhole's where it has one (script size 1 MiB,
    4 redirects, 32 actions, include depth 10, 4096-character variables).
    """

    max_script_size: int = 1024 * 1024
    max_nesting: int = 32
    max_steps: int = 100_000
    max_redirects: int = 4
    max_includes: int = 255
    max_include_depth: int = 10
    max_actions: int = 32
    max_header_edits: int = 64
    max_header_value_length: int = 2048
    max_variable_length: int = 4096
    max_variables: int = 255


@dataclass
class Script:
    """A compiled script: validated nodes and the extensions it required."""

    text: str
    nodes: list[Node]
    extensions: frozenset[str]


def compile_script(text: str, limits: SieveLimits | None = None) -> Script:
    """Parse and validate ``text``; raises ``SieveSyntaxError`` with line and
    column on any error, so ManageSieve can refuse the upload."""
    limits = limits or SieveLimits()
    if len(text.encode("utf-8", errors="surrogatepass")) > limits.max_script_size:
        raise SieveSyntaxError(f"script larger than {limits.max_script_size} bytes", 1, 1)
    nodes, extensions = validate(parse(text, limits.max_nesting))
    return Script(text, nodes, extensions)


def run(
    script: Script,
    message: SieveMessage,
    env: SieveEnvironment | None = None,
    limits: SieveLimits | None = None,
) -> SieveResult:
    """Execute ``script`` against ``message``.

    Never raises for script failures: a run-time error gives a result with
    ``error`` set and only the implicit keep (RFC 5228 §2.10.6).
    """
    execution = _Execution(message, env or SieveEnvironment(), limits or SieveLimits())
    try:
        execution.execute(script)
    except SieveRuntimeError as error:
        log.info("sieve script failed: {reason}", reason=str(error))
        return SieveResult([Keep((), implicit=True)], True, str(error), None)
    return execution.finish()


class _Stop(Exception):
    """``stop`` (RFC 5228 §3.3) unwinds to the top-level script."""


class _Return(Exception):
    """``return`` (RFC 6609 §3.3) unwinds to the including script."""


@dataclass
class _Frame:
    """Per-script state: local variables, match variables, and the names
    declared ``global`` (RFC 6609 §3.4)."""

    script: Script
    variables: dict[str, str] = field(default_factory=dict)
    match_variables: list[str] = field(default_factory=list)
    globals_declared: set[str] = field(default_factory=set)

    @property
    def uses_variables(self) -> bool:
        return "variables" in self.script.extensions


def _split_flags(values: list[str]) -> list[str]:
    """RFC 5232 §3: flag strings are space-separated lists; duplicates
    (compared case-insensitively) are dropped."""
    flags: list[str] = []
    seen: set[str] = set()
    for value in values:
        for flag in value.split():
            if flag.lower() not in seen:
                seen.add(flag.lower())
                flags.append(flag)
    return flags


def _fixed_zone(zone: str) -> datetime.timezone:
    sign = -1 if zone[0] == "-" else 1
    minutes = int(zone[1:3]) * 60 + int(zone[3:5])
    return datetime.timezone(sign * datetime.timedelta(minutes=minutes))


def _zone_text(moment: datetime.datetime) -> str:
    offset = moment.utcoffset() or datetime.timedelta(0)
    total = int(offset.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{sign}{total // 60:02d}{total % 60:02d}"


def date_part(moment: datetime.datetime, part: str) -> str:
    """The ``part`` of ``moment`` as RFC 5260 §4.2 spells it."""
    part = part.lower()
    if part == "year":
        return f"{moment.year:04d}"
    if part == "month":
        return f"{moment.month:02d}"
    if part == "day":
        return f"{moment.day:02d}"
    if part == "date":
        return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    if part == "julian":
        # Modified Julian Day: days since 1858-11-17.
        return str((moment.date() - datetime.date(1858, 11, 17)).days)
    if part == "hour":
        return f"{moment.hour:02d}"
    if part == "minute":
        return f"{moment.minute:02d}"
    if part == "second":
        return f"{moment.second:02d}"
    if part == "time":
        return f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    if part == "iso8601":
        zone = _zone_text(moment)
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + zone[:3] + ":" + zone[3:]
    if part == "std11":
        return email.utils.format_datetime(moment)
    if part == "zone":
        return _zone_text(moment)
    if part == "weekday":
        return str((moment.weekday() + 1) % 7)  # 0 = Sunday
    raise SieveRuntimeError(f"unknown date part \"{part}\"")


_NOT_A_PERSON = ("mailer-daemon", "listserv", "majordomo")
_LIST_HEADERS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post", "list-owner", "list-archive")


class _Execution:
    """One run of one top-level script (plus its includes) on one message."""

    def __init__(self, message: SieveMessage, env: SieveEnvironment, limits: SieveLimits) -> None:
        self.message = message
        self.env = env
        self.limits = limits
        self.actions: list[Action] = []
        self.implicit_keep = True
        self.flags: list[str] = []
        self.headers = list(message.headers)
        self.headers_edited = False
        self.header_edits = 0
        self.steps = 0
        self.redirects = 0
        self.includes = 0
        self.include_stack: list[tuple[str, str]] = []
        self.included_once: set[tuple[str, str]] = set()
        self.include_cache: dict[tuple[str, str], Script] = {}
        self.global_variables: dict[str, str] = {}
        self.pending_records: list[tuple[str, str, int, bool]] = []
        self.vacation_sent = False

    # -- driver -------------------------------------------------------------
    def execute(self, script: Script) -> None:
        try:
            self._block(_Frame(script), script.nodes)
        except (_Stop, _Return):
            pass

    def finish(self) -> SieveResult:
        for tracker_name, key, seconds, refresh in self.pending_records:
            tracker = getattr(self.env, tracker_name)
            if tracker is not None:
                tracker.record(key, seconds, refresh)
        actions = list(self.actions)
        if self.implicit_keep and not any(
            isinstance(action, FileInto) and action.mailbox.upper() == "INBOX" for action in actions
        ):
            # RFC 5228 §2.10.2 with RFC 5232 §3: the implicit keep carries the
            # current value of the internal flags variable.
            actions.append(Keep(tuple(self.flags), implicit=True))
        headers = list(self.headers) if self.headers_edited else None
        return SieveResult(actions, self.implicit_keep, None, headers)

    def _step(self, node: Node | None = None) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise SieveLimitExceeded(
                f"script exceeded {self.limits.max_steps} execution steps",
                node.line if node else 0,
                node.column if node else 0,
            )

    def _block(self, frame: _Frame, nodes: list[Node]) -> None:
        for node in nodes:
            self._step(node)
            handler = getattr(self, f"do_{node.name}")
            try:
                handler(frame, node)
            except SieveRuntimeError as error:
                if error.line:
                    raise
                raise type(error)(error.message, node.line, node.column) from None

    # -- strings and variables (RFC 5229) --------------------------------------
    def _expand(self, frame: _Frame, value: str) -> str:
        """Variable substitution (RFC 5229 §3): ``${name}``, ``${global.name}``,
        ``${N}``; the substituted text is not scanned again."""
        if not frame.uses_variables or "${" not in value:
            return value
        out: list[str] = []
        position = 0
        while True:
            start = value.find("${", position)
            if start < 0:
                out.append(value[position:])
                break
            end = value.find("}", start + 2)
            if end < 0:
                out.append(value[position:])
                break
            name = value[start + 2 : end]
            replacement = self._lookup(frame, name)
            if replacement is None:
                out.append(value[position : start + 2])
                position = start + 2
                continue
            out.append(value[position:start])
            out.append(replacement)
            position = end + 1
        return "".join(out)

    def _lookup(self, frame: _Frame, name: str) -> str | None:
        if name.isdigit():
            number = int(name)
            return frame.match_variables[number] if number < len(frame.match_variables) else ""
        parts = name.split(".")
        if not all(part and (part[0].isalpha() or part[0] == "_") and part.replace("_", "a").isalnum() and part.isascii() for part in parts):
            return None
        lowered = name.lower()
        if len(parts) == 2 and parts[0].lower() == "global" and "include" in frame.script.extensions:
            return self.global_variables.get(parts[1].lower(), "")
        if len(parts) > 1:
            return ""  # RFC 5229 §3: an unsupported namespace expands to nothing
        if lowered in frame.globals_declared:
            return self.global_variables.get(lowered, "")
        return frame.variables.get(lowered, "")

    def _assign(self, frame: _Frame, name: str, value: str) -> None:
        value = value[: self.limits.max_variable_length]  # RFC 5229 §6: values may be truncated
        lowered = name.lower()
        store = self.global_variables if lowered in frame.globals_declared else frame.variables
        if lowered not in store and len(store) >= self.limits.max_variables:
            raise SieveLimitExceeded(f"more than {self.limits.max_variables} variables")
        store[lowered] = value

    def _string(self, frame: _Frame, value: object) -> str:
        return self._expand(frame, str(value))

    def _strings(self, frame: _Frame, values: object) -> list[str]:
        return [self._expand(frame, str(value)) for value in values]  # type: ignore[union-attr]

    # -- matching --------------------------------------------------------------
    def _match(self, frame: _Frame, node: Node, values: list[str], keys: list[str]) -> bool:
        assert node.match is not None
        matcher = matching.Matcher(node.match, lambda: self._step(node))
        matched, captures = matcher.match(values, keys)
        if matched and captures is not None and node.match.match_type in ("matches", "regex"):
            frame.match_variables = captures  # RFC 5229 §3.2
        return matched

    # -- control commands (RFC 5228 §3) -----------------------------------------
    def do_if(self, frame: _Frame, node: Node) -> None:
        for test, block in node.branches:
            if test is None or self._test(frame, test):
                self._block(frame, block)
                return

    def do_stop(self, frame: _Frame, node: Node) -> None:
        raise _Stop()

    # -- actions (RFC 5228 §4 and extensions) --------------------------------------
    def _add_action(self, action: Action) -> None:
        if len(self.actions) >= self.limits.max_actions:
            raise SieveLimitExceeded(f"more than {self.limits.max_actions} actions")
        self.actions.append(action)

    def _has_reject(self) -> bool:
        return any(isinstance(action, (Reject, Ereject)) for action in self.actions)

    def _store(self, mailbox: str, flags: tuple[str, ...], copy: bool, create: bool, explicit_keep: bool) -> None:
        if self._has_reject():
            # RFC 5429 §2.1: reject cannot be combined with delivering actions.
            raise SieveRuntimeError("reject cannot be combined with keep or fileinto")
        if not copy:
            self.implicit_keep = False
        inbox = mailbox.upper() == "INBOX"
        for position, action in enumerate(self.actions):
            same = (
                isinstance(action, Keep) and inbox
                or isinstance(action, FileInto) and (action.mailbox == mailbox or inbox and action.mailbox.upper() == "INBOX")
            )
            if same:
                # RFC 5228 §2.10.3: the message is stored once per mailbox; the
                # later flags win, as in Pigeonhole.
                if isinstance(action, Keep):
                    self.actions[position] = Keep(flags)
                else:
                    self.actions[position] = FileInto(action.mailbox, flags, action.copy and copy, action.create or create)
                return
        if explicit_keep:
            self._add_action(Keep(flags))
        else:
            self._add_action(FileInto(mailbox, flags, copy, create))

    def _flags_argument(self, frame: _Frame, node: Node) -> tuple[str, ...]:
        if "flags" in node.tags:
            return tuple(_split_flags(self._strings(frame, node.tags["flags"])))
        if "imap4flags" in frame.script.extensions:
            return tuple(self.flags)  # RFC 5232 §3: default is the internal variable
        return ()

    def do_keep(self, frame: _Frame, node: Node) -> None:
        self._store("INBOX", self._flags_argument(frame, node), False, False, True)

    def do_fileinto(self, frame: _Frame, node: Node) -> None:
        mailbox = self._string(frame, node.args[0])
        if not mailbox or "\x00" in mailbox:
            raise SieveRuntimeError(f"invalid mailbox name \"{mailbox}\"")
        create = bool(node.tags.get("create"))
        self._store(mailbox, self._flags_argument(frame, node), bool(node.tags.get("copy")), create, False)

    def do_discard(self, frame: _Frame, node: Node) -> None:
        self.implicit_keep = False  # RFC 5228 §4.4
        if not any(isinstance(action, Discard) for action in self.actions):
            self._add_action(Discard())

    def do_redirect(self, frame: _Frame, node: Node) -> None:
        address = self._string(frame, node.args[0]).strip()
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1]
        if not is_valid_address(address):
            raise SieveRuntimeError(f"invalid redirect address \"{address}\"")
        if self._has_reject():
            raise SieveRuntimeError("reject cannot be combined with redirect")  # RFC 5429 §2.1
        copy = bool(node.tags.get("copy"))
        if not copy:
            self.implicit_keep = False
        for position, action in enumerate(self.actions):
            if isinstance(action, Redirect) and action.address == address:
                if action.copy and not copy:
                    self.actions[position] = Redirect(address, False)
                return  # RFC 5228 §2.10.3: one redirect per address
        self.redirects += 1
        if self.redirects > self.limits.max_redirects:
            raise SieveLimitExceeded(f"more than {self.limits.max_redirects} redirects")
        self._add_action(Redirect(address, copy))

    def _reject(self, action: Reject | Ereject) -> None:
        if self._has_reject():
            raise SieveRuntimeError("only one reject or ereject per message")  # RFC 5429 §2.1
        for other in self.actions:
            if isinstance(other, (Keep, FileInto, Redirect)):
                raise SieveRuntimeError("reject cannot be combined with keep, fileinto or redirect")
            if isinstance(other, Vacation):
                raise SieveRuntimeError("reject cannot be combined with vacation")
        self.implicit_keep = False  # RFC 5429 §2.1: reject cancels the implicit keep
        self._add_action(action)

    def do_reject(self, frame: _Frame, node: Node) -> None:
        self._reject(Reject(self._string(frame, node.args[0])))

    def do_ereject(self, frame: _Frame, node: Node) -> None:
        self._reject(Ereject(self._string(frame, node.args[0])))

    # -- imap4flags (RFC 5232) ----------------------------------------------------
    def _flag_edit(self, frame: _Frame, node: Node, edit: str) -> None:
        variable, values = node.args[0], self._strings(frame, node.args[1])
        given = _split_flags(values)
        current = (
            _split_flags([self._lookup(frame, str(variable).lower()) or ""]) if variable is not None else list(self.flags)
        )
        if edit == "set":
            updated = given
        elif edit == "add":
            updated = _split_flags(current + given)
        else:
            removed = {flag.lower() for flag in given}
            updated = [flag for flag in current if flag.lower() not in removed]
        if variable is None:
            self.flags = updated
        else:
            self._assign(frame, str(variable), " ".join(updated))

    def do_setflag(self, frame: _Frame, node: Node) -> None:
        self._flag_edit(frame, node, "set")

    def do_addflag(self, frame: _Frame, node: Node) -> None:
        self._flag_edit(frame, node, "add")

    def do_removeflag(self, frame: _Frame, node: Node) -> None:
        self._flag_edit(frame, node, "remove")

    # -- variables (RFC 5229 §4) ---------------------------------------------------
    def do_set(self, frame: _Frame, node: Node) -> None:
        value = self._string(frame, node.args[1])
        tags = node.tags
        # RFC 5229 §4.1: modifiers apply from highest precedence (40) down.
        if tags.get("lower"):
            value = value.lower()
        if tags.get("upper"):
            value = value.upper()
        if tags.get("lowerfirst"):
            value = value[:1].lower() + value[1:]
        if tags.get("upperfirst"):
            value = value[:1].upper() + value[1:]
        if tags.get("quotewildcard"):
            value = "".join("\\" + char if char in "*?\\" else char for char in value)
        if tags.get("quoteregex"):
            value = "".join("\\" + char if char in "\\^$.[]|()?*+{}" else char for char in value)
        if tags.get("length"):
            value = str(len(value))
        self._assign(frame, str(node.args[0]), value)

    # -- include (RFC 6609) ----------------------------------------------------------
    def do_include(self, frame: _Frame, node: Node) -> None:
        name = str(node.args[0])
        location = "global" if node.tags.get("global") else "personal"
        key = (location, name)
        if node.tags.get("once") and key in self.included_once:
            return  # RFC 6609 §3.2: :once includes a script only once per run
        if key in self.include_stack:
            raise SieveRuntimeError(f"include loop: script \"{name}\" includes itself")  # RFC 6609 §3.2
        if len(self.include_stack) >= self.limits.max_include_depth:
            raise SieveLimitExceeded(f"includes nested deeper than {self.limits.max_include_depth}")
        self.includes += 1
        if self.includes > self.limits.max_includes:
            raise SieveLimitExceeded(f"more than {self.limits.max_includes} includes")
        script = self.include_cache.get(key)
        if script is None:
            text = self.env.include_resolver(name, location)
            if text is None:
                if node.tags.get("optional"):
                    return  # RFC 6609 §3.2: a missing :optional script is skipped
                raise SieveRuntimeError(f"included {location} script \"{name}\" does not exist")
            try:
                script = compile_script(text, self.limits)
            except SieveSyntaxError as error:
                raise SieveRuntimeError(f"included script \"{name}\" is invalid: {error}") from None
            self.include_cache[key] = script
        self.included_once.add(key)
        self.include_stack.append(key)
        try:
            self._block(_Frame(script), script.nodes)
        except _Return:
            pass
        finally:
            self.include_stack.pop()

    def do_return(self, frame: _Frame, node: Node) -> None:
        raise _Return()

    def do_global(self, frame: _Frame, node: Node) -> None:
        for name in node.args[0]:  # type: ignore[union-attr]
            lowered = str(name).lower()
            if lowered in frame.variables and lowered not in frame.globals_declared:
                # RFC 6609 §3.4: a local variable cannot become global later.
                raise SieveRuntimeError(f"variable \"{name}\" is already local")
            frame.globals_declared.add(lowered)

    # -- editheader (RFC 5293) ---------------------------------------------------------
    def _count_edit(self) -> None:
        self.header_edits += 1
        if self.header_edits > self.limits.max_header_edits:
            raise SieveLimitExceeded(f"more than {self.limits.max_header_edits} header edits")

    def do_addheader(self, frame: _Frame, node: Node) -> None:
        name = self._string(frame, node.args[0])
        value = self._string(frame, node.args[1])
        if not _FIELD_NAME.match(name):
            raise SieveRuntimeError(f"invalid header name \"{name}\"")
        if len(value) > self.limits.max_header_value_length:
            raise SieveRuntimeError(f"header value longer than {self.limits.max_header_value_length}")
        self._count_edit()
        value = " ".join(part.strip(" \t") for part in value.replace("\r\n", "\n").split("\n"))
        if not value.isascii():
            # RFC 5293 §4: non-ASCII values are encoded per RFC 2047.
            value = email.header.Header(value, "utf-8", header_name=name).encode()
        if node.tags.get("last"):
            self.headers.append((name, value))
        else:
            self.headers.insert(0, (name, value))
        self.headers_edited = True
        self._add_action(AddHeader(name, value, bool(node.tags.get("last"))))

    def do_deleteheader(self, frame: _Frame, node: Node) -> None:
        name = self._string(frame, node.args[0])
        if not _FIELD_NAME.match(name):
            raise SieveRuntimeError(f"invalid header name \"{name}\"")
        self._count_edit()
        if name.lower() in PROTECTED_HEADERS:
            return  # RFC 5293 §7: Received and Auto-Submitted are never deleted
        patterns = self._strings(frame, node.args[1]) if len(node.args) > 1 else None
        positions = [index for index, (field_name, _) in enumerate(self.headers) if field_name.lower() == name.lower()]
        if "index" in node.tags:
            number = int(node.tags["index"])  # type: ignore[call-overload]
            ordered = list(reversed(positions)) if node.tags.get("last") else positions
            positions = [ordered[number - 1]] if number <= len(ordered) else []
        doomed = []
        for position in positions:
            if patterns is None or self._match(frame, node, [decode_header_value(self.headers[position][1])], patterns):
                doomed.append(position)
        for position in sorted(doomed, reverse=True):
            del self.headers[position]
        if doomed:
            self.headers_edited = True
            self._add_action(DeleteHeader(name, len(doomed)))

    # -- vacation (RFC 5230, RFC 6131) ----------------------------------------------------
    def _addresses_in(self, names: tuple[str, ...]) -> list[str]:
        raw_values = [value for field_name, value in self.headers if field_name.lower() in names]
        return [address.lower() for _, address in email.utils.getaddresses([unfold(v) for v in raw_values]) if address]

    def do_vacation(self, frame: _Frame, node: Node) -> None:
        if self._has_reject():
            raise SieveRuntimeError("vacation cannot be combined with reject")  # RFC 5429 §2.1
        if self.vacation_sent:
            raise SieveRuntimeError("only one vacation action per message")
        self.vacation_sent = True
        tags = node.tags
        reason = self._string(frame, node.args[0])
        subject_given = self._string(frame, tags["subject"]) if "subject" in tags else None
        from_given = self._string(frame, tags["from"]) if "from" in tags else None
        mime = bool(tags.get("mime"))
        if "seconds" in tags:
            seconds = int(tags["seconds"])  # type: ignore[call-overload]
            # RFC 6131 §2: 0 means always reply; otherwise clamp like :days.
            if seconds:
                seconds = min(max(seconds, self.env.vacation_min_seconds), self.env.vacation_max_seconds)
        else:
            days = int(tags.get("days", 7))  # type: ignore[call-overload]  # RFC 5230 §4.1 default
            seconds = min(max(days * 86400, self.env.vacation_min_seconds), self.env.vacation_max_seconds)
        if "handle" in tags:
            handle = self._string(frame, tags["handle"])
        else:
            # RFC 5230 §4.2: without :handle, the reply is identified by its content.
            handle = reason + (subject_given or "") + (from_given or "<default-from>") + ("<MIME>" if mime else "<NO-MIME>")
        sender = self.message.envelope_from.strip().strip("<>")
        if not self._vacation_allowed(frame, node, sender):
            return
        tracking_key = "vacation:" + hashlib.sha256(f"{handle}\0{sender.lower()}".encode()).hexdigest()
        tracker = self.env.vacation_tracker
        if seconds and tracker is not None and tracker.seen(tracking_key):
            return  # RFC 5230 §4.1: already answered this sender within the period
        if seconds:
            self.pending_records.append(("vacation_tracker", tracking_key, seconds, True))
        if subject_given is None:
            original = self.message.header_values("subject")
            subject = "Auto: " + original[0] if original else "Automated reply"  # RFC 5230 §4.3 (suggested)
        else:
            subject = subject_given
        message_id = self.message.header_values("message-id")
        references = self.message.header_values("references")
        in_reply_to = message_id[0] if message_id else ""
        self._add_action(
            Vacation(
                to=sender,
                from_address=from_given or self.message.envelope_to,
                subject=subject,
                body=reason,
                mime=mime,
                handle=handle,
                seconds=seconds,
                in_reply_to=in_reply_to,
                references=" ".join(filter(None, [references[0] if references else "", in_reply_to])),
            )
        )

    def _vacation_allowed(self, frame: _Frame, node: Node, sender: str) -> bool:
        """The RFC 5230 §4.5-§4.6 and RFC 3834 §2 conditions for replying."""
        if not sender:
            return False  # null reverse-path: a bounce or notification
        local = sender.rpartition("@")[0].lower() if "@" in sender else sender.lower()
        if local in _NOT_A_PERSON or local.startswith("owner-") or local.endswith("-request"):
            return False
        for value in self.message.header_values("auto-submitted"):
            if value.split(";")[0].strip().lower() != "no":
                return False
        for value in self.message.header_values("precedence"):
            if value.strip().lower() in ("bulk", "list", "junk"):
                return False
        names = {field_name.lower() for field_name, _ in self.headers}
        if any(header in names for header in _LIST_HEADERS):
            return False
        mine = {self.message.envelope_to.lower(), *(address.lower() for address in self.env.user_addresses)}
        if "addresses" in node.tags:
            mine.update(address.lower() for address in self._strings(frame, node.tags["addresses"]))
        mine.discard("")
        if sender.lower() in mine:
            return False  # never answer ourselves
        recipients = self._addresses_in(("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"))
        return any(address in mine for address in recipients)

    # -- tests -----------------------------------------------------------------------------
    def _test(self, frame: _Frame, node: Node) -> bool:
        self._step(node)
        return bool(getattr(self, f"test_{node.name}")(frame, node))

    def test_true(self, frame: _Frame, node: Node) -> bool:
        return True

    def test_false(self, frame: _Frame, node: Node) -> bool:
        return False

    def test_not(self, frame: _Frame, node: Node) -> bool:
        return not self._test(frame, node.tests[0])

    def test_anyof(self, frame: _Frame, node: Node) -> bool:
        return any(self._test(frame, test) for test in node.tests)

    def test_allof(self, frame: _Frame, node: Node) -> bool:
        return all(self._test(frame, test) for test in node.tests)

    def _header_fields(self, frame: _Frame, node: Node, names: list[str]) -> list[str]:
        """Raw values of the named fields, narrowed by :index/:last (RFC 5260 §6)."""
        values: list[str] = []
        for name in names:
            lowered = name.lower()
            fields = [value for field_name, value in self.headers if field_name.lower() == lowered]
            if "index" in node.tags:
                number = int(node.tags["index"])  # type: ignore[call-overload]
                ordered = list(reversed(fields)) if node.tags.get("last") else fields
                fields = [ordered[number - 1]] if number <= len(ordered) else []
            values.extend(fields)
        return values

    def test_header(self, frame: _Frame, node: Node) -> bool:
        names = self._strings(frame, node.args[0])
        values = [decode_header_value(value) for value in self._header_fields(frame, node, names)]
        return self._match(frame, node, values, self._strings(frame, node.args[1]))

    def test_exists(self, frame: _Frame, node: Node) -> bool:
        present = {field_name.lower() for field_name, _ in self.headers}
        return all(name.lower() in present for name in self._strings(frame, node.args[0]))

    def test_size(self, frame: _Frame, node: Node) -> bool:
        if "over" in node.tags:
            return self.message.size > int(node.tags["over"])  # type: ignore[call-overload]
        return self.message.size < int(node.tags["under"])  # type: ignore[call-overload]

    def _address_part(self, node: Node, address: str) -> str | None:
        """RFC 5228 §2.7.4 and RFC 5233 §4 address parts; ``None`` when the
        part does not exist (a :detail of an address without separator)."""
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
        tags = node.tags
        if tags.get("localpart"):
            return local
        if tags.get("domain"):
            return domain
        separator = self.env.subaddress_separator
        if tags.get("user"):
            return local.split(separator, 1)[0]
        if tags.get("detail"):
            return local.split(separator, 1)[1] if separator in local else None
        return address

    def test_address(self, frame: _Frame, node: Node) -> bool:
        names = self._strings(frame, node.args[0])
        raw_values = [unfold(value) for value in self._header_fields(frame, node, names)]
        values: list[str] = []
        for _, address in email.utils.getaddresses(raw_values):
            if not address:
                continue
            part = self._address_part(node, address)
            if part is not None:
                values.append(part)
        return self._match(frame, node, values, self._strings(frame, node.args[1]))

    def test_envelope(self, frame: _Frame, node: Node) -> bool:
        values: list[str] = []
        for part in self._strings(frame, node.args[0]):
            part = part.lower()
            address = self.message.envelope_from if part == "from" else self.message.envelope_to if part == "to" else None
            if address is None:
                raise SieveRuntimeError(f"unsupported envelope part \"{part}\"")
            address = address.strip().strip("<>")
            if not address:
                # RFC 5228 §5.4: the null reverse-path compares as "" for :all.
                if not any(node.tags.get(tag) for tag in ("localpart", "domain", "user", "detail")):
                    values.append("")
                continue
            value = self._address_part(node, address)
            known = self.env.envelope_to_parts
            if part == "to" and known is not None and (node.tags.get("user") or node.tags.get("detail")):
                # RFC 5233 §4: the delivery agent knows how it split the recipient.
                value = known[0] if node.tags.get("user") else known[1]
            if value is not None:
                values.append(value)
        return self._match(frame, node, values, self._strings(frame, node.args[1]))

    def test_body(self, frame: _Frame, node: Node) -> bool:
        keys = self._strings(frame, node.args[0])
        if node.tags.get("raw"):
            values = [self.message.raw_body()]
        else:
            wanted = self._strings(frame, node.tags["content"]) if "content" in node.tags else ["text"]
            values = []
            for part in self.message.body_parts():
                main_type = part.content_type.split("/")[0]
                for kind in wanted:
                    kind = kind.lower().strip()
                    if kind == "" or kind == part.content_type or ("/" not in kind and kind == main_type):
                        text = part.text
                        if "content" not in node.tags and part.content_type == "text/html":
                            text = html_to_text(text)  # RFC 5173 §5.3: :text is text
                        values.append(text)
                        break
        return self._match(frame, node, values, keys)

    def _zone_for(self, frame: _Frame, node: Node) -> datetime.tzinfo | None:
        if "zone" in node.tags:
            zone = self._string(frame, node.tags["zone"])
            if len(zone) != 5 or zone[0] not in "+-" or not zone[1:].isdigit():
                raise SieveRuntimeError(f"invalid time zone \"{zone}\"")
            return _fixed_zone(zone)
        if node.tags.get("originalzone"):
            return None
        return self.env.now().tzinfo or datetime.UTC

    def test_date(self, frame: _Frame, node: Node) -> bool:
        header = self._string(frame, node.args[0])
        part = self._string(frame, node.args[1])
        zone = self._zone_for(frame, node)
        values: list[str] = []
        for raw in self._header_fields(frame, node, [header]):
            text = unfold(raw)
            if header.lower() == "received":
                text = text.rpartition(";")[2].strip()  # RFC 5260 §4: the date after the last ';'
            try:
                moment = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                continue  # RFC 5260 §4: an unparsable date makes the test false
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            if zone is not None:
                moment = moment.astimezone(zone)
            values.append(date_part(moment, part))
        return self._match(frame, node, values, self._strings(frame, node.args[2]))

    def test_currentdate(self, frame: _Frame, node: Node) -> bool:
        part = self._string(frame, node.args[0])
        moment = self.env.now()
        zone = self._zone_for(frame, node)
        if zone is not None:
            moment = moment.astimezone(zone)
        return self._match(frame, node, [date_part(moment, part)], self._strings(frame, node.args[1]))

    def test_hasflag(self, frame: _Frame, node: Node) -> bool:
        if node.args[0] is None:
            flags = list(self.flags)
        else:
            flags = _split_flags([self._lookup(frame, str(name).lower()) or "" for name in node.args[0]])  # type: ignore[union-attr]
        return self._match(frame, node, flags, self._strings(frame, node.args[1]))

    def test_string(self, frame: _Frame, node: Node) -> bool:
        values = self._strings(frame, node.args[0])
        assert node.match is not None
        if node.match.match_type == "count":
            values = [value for value in values if value]  # RFC 5229 §5: empty strings do not count
        return self._match(frame, node, values, self._strings(frame, node.args[1]))

    def test_mailboxexists(self, frame: _Frame, node: Node) -> bool:
        return all(self.env.mailbox_exists(name) for name in self._strings(frame, node.args[0]))  # RFC 5490 §3.1

    def test_duplicate(self, frame: _Frame, node: Node) -> bool:
        tags = node.tags
        if "uniqueid" in tags:
            unique = self._string(frame, tags["uniqueid"])
        else:
            name = self._string(frame, tags.get("header", "Message-ID"))
            values = [decode_header_value(value) for field_name, value in self.headers if field_name.lower() == name.lower()]
            if not values:
                return False  # RFC 7352 §3.1: nothing to compare
            unique = values[0].strip()
        handle = self._string(frame, tags["handle"]) if "handle" in tags else ""
        seconds = int(tags.get("seconds", 12 * 3600))  # type: ignore[call-overload]
        key = "duplicate:" + hashlib.sha256(f"{handle}\0{unique}".encode()).hexdigest()
        tracker = self.env.duplicate_tracker
        seen = tracker.seen(key) if tracker is not None else False
        # RFC 7352 §3: the ID is stored only if the script completes.
        self.pending_records.append(("duplicate_tracker", key, seconds, bool(tags.get("last"))))
        return seen

    def test_spamtest(self, frame: _Frame, node: Node) -> bool:
        if node.tags.get("percent"):
            value = str(self.env.spam_percent) if self.env.spam_percent is not None else "0"
        else:
            value = str(self.env.spam_score) if self.env.spam_score is not None else "0"  # RFC 5235 §3.2
        return self._match(frame, node, [value], [self._string(frame, node.args[0])])

    def test_virustest(self, frame: _Frame, node: Node) -> bool:
        value = str(self.env.virus_score) if self.env.virus_score is not None else "0"  # RFC 5235 §3.4
        return self._match(frame, node, [value], [self._string(frame, node.args[0])])
