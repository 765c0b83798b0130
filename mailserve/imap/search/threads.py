"""THREAD (RFC 5256 §3: ORDEREDSUBJECT and REFERENCES) and the ``* THREAD`` payload (§4)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailserve.core.mime import decode_header_text
from mailserve.imap.search.context import SearchContext
from mailserve.imap.search.errors import SearchSyntaxError
from mailserve.imap.search.evaluation import _matching_indices
from mailserve.imap.search.keys import SearchKey
from mailserve.imap.search.values import fold, sent_timestamp

#: References kept per message (the first and the last ones): a hostile header with
#: thousands of ids must not make threading quadratic.
MAX_REFERENCES = 200

_REPLY_LEADER = re.compile(r"^(?:\s*(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)?:)", re.IGNORECASE)
_FWD_TRAILER = re.compile(r"\(fwd\)\s*$", re.IGNORECASE)


def is_reply_or_forward(subject: str | None) -> bool:
    """RFC 5256 §2.1: base-subject extraction removed a ``Re:``/``Fwd:`` leader, a
    ``(fwd)`` trailer, or a ``[fwd: ...]`` wrapper."""
    if not subject:
        return False
    text = decode_header_text(subject).strip()
    return bool(_REPLY_LEADER.match(text) or _FWD_TRAILER.search(text)
                or text[:5].lower() == "[fwd:")


@dataclass
class ThreadNode:
    """A node of a thread tree: ``number`` is None for a dummy (a missing parent)."""

    number: int | None
    children: list[ThreadNode] = field(default_factory=list)


class _Container:
    __slots__ = ("children", "index", "parent")

    def __init__(self, index: int | None = None) -> None:
        self.index = index
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def is_ancestor_of(self, other: _Container) -> bool:
        node: _Container | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link_child(self, child: _Container) -> bool:
        """Make ``child`` a child of this one unless that would form a loop."""
        if child is self or child.is_ancestor_of(self):
            return False
        child.unlink()
        child.parent = self
        self.children.append(child)
        return True


class _Threader:
    def __init__(self, context: SearchContext, indices: Iterable[int]) -> None:
        self.context = context
        self.indices = sorted(indices)

    def date_of(self, index: int) -> tuple[int, int]:
        """Sort key: sent date (RFC 5256 §2.2), then sequence order."""
        message = self.context.messages[index].message
        return sent_timestamp(self.context.parsed_at(index), message), index

    def container_date(self, container: _Container) -> tuple[int, int]:
        # a dummy sorts by its first child (RFC 5256 §3 REFERENCES steps 5 and 7)
        node = container
        while node.index is None and node.children:
            node = node.children[0]
        return self.date_of(node.index) if node.index is not None else (0, 0)

    def ordered_subject(self) -> list[_Container]:
        """ORDEREDSUBJECT: group by base subject; the first message of each group (by
        sent date) is the parent of all the others; groups ordered by their first message."""
        groups: dict[str, list[int]] = {}
        for i in self.indices:
            groups.setdefault(fold(self.context.parsed_at(i).base_subject), []).append(i)
        roots = []
        for members in groups.values():
            members.sort(key=self.date_of)
            root = _Container(members[0])
            for i in members[1:]:
                child = _Container(i)
                child.parent = root
                root.children.append(child)
            roots.append(root)
        roots.sort(key=self.container_date)
        return roots

    def references(self) -> list[_Container]:
        """The REFERENCES algorithm of RFC 5256 §3, steps 1 to 7."""
        table: dict[str, _Container] = {}
        order: list[_Container] = []
        # (1) link messages by their references
        for i in self.indices:
            parsed = self.context.parsed_at(i)
            message_id = parsed.message_id
            container = table.get(message_id) if message_id else None
            if container is None or container.index is not None:
                # no id, or a duplicate: the message gets a unique id of its own
                container = _Container(i)
                if message_id and message_id not in table:
                    table[message_id] = container
                order.append(container)
            else:
                container.index = i  # fills the dummy an earlier reference created
            refs = list(parsed.references) or list(parsed.in_reply_to[:1])
            if len(refs) > MAX_REFERENCES:
                refs = refs[: MAX_REFERENCES // 2] + refs[-MAX_REFERENCES // 2:]
            previous: _Container | None = None
            for ref in refs:
                ref_container = table.get(ref)
                if ref_container is None:
                    ref_container = table[ref] = _Container()
                    order.append(ref_container)
                # (1A) link in order, never changing an existing parent, never a loop
                if previous is not None and ref_container.parent is None:
                    previous.link_child(ref_container)
                previous = ref_container
            # (1B) the last reference is this message's parent (replacing any other)
            if previous is not None and previous is not container:
                if not container.is_ancestor_of(previous):
                    previous.link_child(container)
            elif previous is None:
                container.unlink()
        # (2) the root set; (3) the id table is no longer needed
        roots = [c for c in order if c.parent is None]
        # (4) prune dummies
        roots = self.prune(roots)
        # (5) sort the root set by sent date (a dummy by its first child)
        for root in roots:
            if root.index is None:
                root.children.sort(key=self.container_date)
        roots.sort(key=self.container_date)
        # (6) gather threads with the same base subject
        roots = self.merge_subjects(roots)
        # (7) sort every set of siblings, deepest first, then the root set
        stack = list(roots)
        visit: list[_Container] = []
        while stack:
            node = stack.pop()
            visit.append(node)
            stack.extend(node.children)
        for node in reversed(visit):
            node.children.sort(key=self.container_date)
        roots.sort(key=self.container_date)
        return roots

    def prune(self, roots: list[_Container]) -> list[_Container]:
        """Step 4: drop childless dummies; replace a dummy by its children, except at the
        root, where only a dummy with a single child is replaced.

        Children are pruned before their parents (a post-order walk without recursion,
        so a thread thousands of messages deep is fine).
        """
        order: list[_Container] = []
        stack = list(roots)
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.children)
        for node in reversed(order):
            kept: list[_Container] = []
            for child in node.children:
                if child.index is None:
                    for grandchild in child.children:
                        grandchild.parent = node
                    kept.extend(child.children)
                    child.children = []
                else:
                    kept.append(child)
            node.children = kept
        out: list[_Container] = []
        for root in roots:
            if root.index is None:
                if not root.children:
                    continue
                if len(root.children) == 1:
                    child = root.children[0]
                    child.parent = None
                    out.append(child)
                    continue
            out.append(root)
        return out

    def subject_of(self, container: _Container) -> tuple[str, bool]:
        node = container if container.index is not None else container.children[0]
        parsed = self.context.parsed_at(node.index)
        return fold(parsed.base_subject), is_reply_or_forward(parsed.envelope.subject)

    def merge_subjects(self, roots: list[_Container]) -> list[_Container]:
        """Step 6 of REFERENCES (RFC 5256 §3)."""
        table: dict[str, _Container] = {}
        for root in roots:  # (6A)
            subject, reply = self.subject_of(root)
            if not subject:
                continue
            current = table.get(subject)
            if current is None or current.index is not None and (
                root.index is None or (self.subject_of(current)[1] and not reply)
            ):
                table[subject] = root
        result: list[_Container | None] = list(roots)
        position = {id(c): at for at, c in enumerate(roots)}
        for root in roots:  # (6B)
            if result[position[id(root)]] is not root:
                continue  # already merged into another thread
            subject, reply = self.subject_of(root)
            target = table.get(subject) if subject else None
            if target is None or target is root:
                continue
            if target.index is None and root.index is None:
                for child in root.children:
                    child.parent = target
                target.children.extend(root.children)
                root.children = []
                result[position[id(root)]] = None
            elif target.index is None or (reply and not self.subject_of(target)[1]):
                result[position[id(root)]] = None
                root.parent = target
                target.children.append(root)
            else:
                dummy = _Container()
                at = position[id(target)]
                result[at] = dummy
                position[id(dummy)] = at
                result[position[id(root)]] = None
                for child in (target, root):
                    child.parent = dummy
                    dummy.children.append(child)
                table[subject] = dummy
        return [c for c in result if c is not None]

    def to_nodes(self, roots: list[_Container], uid: bool) -> list[ThreadNode]:
        messages = self.context.messages

        def number(c: _Container) -> int | None:
            if c.index is None:
                return None
            return messages[c.index].uid if uid else messages[c.index].seq

        out = []
        stack: list[tuple[_Container, ThreadNode]] = []
        for root in roots:
            node = ThreadNode(number(root))
            out.append(node)
            stack.append((root, node))
        while stack:
            container, node = stack.pop()
            for child in container.children:
                child_node = ThreadNode(number(child))
                node.children.append(child_node)
                stack.append((child, child_node))
        return out


async def thread(algorithm: str, key: SearchKey, context: SearchContext,
                 uid: bool = False) -> list[ThreadNode]:
    """THREAD: the matching messages as trees (RFC 5256 §3)."""
    indices = await _matching_indices(key, context)
    threader = _Threader(context, indices)
    name = algorithm.upper()
    if name == "ORDEREDSUBJECT":
        build = threader.ordered_subject
    elif name == "REFERENCES":
        build = threader.references
    else:
        raise SearchSyntaxError(f"unknown threading algorithm {algorithm}")
    return await context.blocking(lambda: threader.to_nodes(build(), uid))


def format_threads(nodes: Sequence[ThreadNode]) -> bytes:
    """The ``thread-list`` payload of ``* THREAD`` (RFC 5256 §4).

    A chain of single children is written flat (``(1 2 3)``); several children are each
    parenthesised (``(3 6 (4 23)(44 7 96))``); a dummy contributes no number
    (``((3)(5))``).  Built without recursion, so a deep thread cannot exhaust the stack.
    """
    out: list[str] = []
    # work items: a node to open, or a literal string to emit
    stack: list[Any] = []
    for node in reversed(nodes):
        stack.extend((")", node, "("))
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node = item
        pieces = []
        while True:
            if node.number is not None:
                pieces.append(str(node.number))
            if len(node.children) == 1 and node.number is not None:
                node = node.children[0]
                continue
            break
        text = " ".join(pieces)
        if node.children:
            if text:
                text += " "
            out.append(text)
            for child in reversed(node.children):
                stack.extend((")", child, "("))
        else:
            out.append(text)
    return "".join(out).encode("ascii")
