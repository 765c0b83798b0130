"""The visible text of HTML, for the search index and the JMAP preview.

A linear scan rather than an HTML parser: the input is untrusted and only the words matter.
"""

from __future__ import annotations

import html
import re

_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "footer",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "td", "th", "tr", "ul", "title",
})
_TAG_NAME = re.compile(r"</?\s*([a-zA-Z][a-zA-Z0-9]*)")


def html_to_text(markup: str) -> str:
    """Visible text of HTML: tags removed, script/style/comments dropped, entities decoded.

    A single linear scan (no backtracking regex over the whole document), so hostile
    markup cannot make it slow.  Block-level tags become line breaks so words do not run
    together; inline tags vanish.
    """
    out: list[str] = []
    lowered = markup.lower()
    pos = 0
    length = len(markup)
    while pos < length:
        lt = markup.find("<", pos)
        if lt < 0:
            out.append(markup[pos:])
            break
        out.append(markup[pos:lt])
        following = markup[lt + 1:lt + 2]
        if not (following.isalpha() or following in ("/", "!", "?")):
            out.append("<")  # a bare "<" in text, not markup
            pos = lt + 1
            continue
        if markup.startswith("<!--", lt):
            close = markup.find("-->", lt + 4)
            pos = length if close < 0 else close + 3
            continue
        gt = markup.find(">", lt + 1)
        if gt < 0:
            break
        match = _TAG_NAME.match(markup, lt, gt)
        if match is None:
            if markup.startswith("<!", lt) or markup.startswith("<?", lt):
                pos = gt + 1
            else:
                out.append("<")
                pos = lt + 1
            continue
        name = match.group(1).lower()
        pos = gt + 1
        if name in ("script", "style", "head") and not markup.startswith("</", lt):
            close = lowered.find("</" + name, pos)
            if close < 0:
                pos = length
            else:
                end = markup.find(">", close)
                pos = length if end < 0 else end + 1
            continue
        if name in _BLOCK_TAGS:
            out.append("\n")
    return html.unescape("".join(out))
