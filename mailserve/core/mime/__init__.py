"""Message parsing at ingest: MIME structure with byte offsets, envelope, and derived fields.

A message is parsed exactly once, when it is stored.  Everything the access protocols need
later -- IMAP FETCH ENVELOPE / BODYSTRUCTURE / BODY[section] / BODY[HEADER.FIELDS], SORT and
THREAD keys, JMAP Email/get, the search indexer -- is derived from the ``ParsedMessage``
produced here plus byte-range reads of the raw message, never by re-parsing it.  That is
why every ``Part`` records the byte offsets of its header and body in the raw message.

Python's ``email`` package gives no offsets, so the structure is scanned here directly:

* a header block ends at the first empty line (RFC 5322 §2.1), or -- tolerantly, as
  Python's and Dovecot's parsers do -- at the first line that cannot be a header field;
* a multipart body is split at ``--boundary`` delimiter lines (RFC 2046 §5.1.1); the line
  break before a delimiter belongs to the delimiter, the preamble and epilogue to no part;
* message/rfc822 and message/global (RFC 6532 §3.5) bodies are parsed as messages.

Line endings are never rewritten: CRLF and bare LF both occur in stored mail and offsets
must stay exact.  Any byte string parses without raising.  Hostile input is bounded: the
nesting depth and the total number of parts are capped (the rest is kept as an opaque
leaf, as Dovecot does), header values are cut before they are parsed, and every scan is a
linear ``bytes.find`` walk.

Where things are
----------------
- :mod:`~mailserve.core.mime.parser` -- :func:`parse_message`, the entry point.
- :mod:`~mailserve.core.mime.records` -- the stored records (:class:`ParsedMessage`, :class:`Part`,
  :class:`Envelope`, :class:`Address`) and their compact wire form for the metadata store.
- :mod:`~mailserve.core.mime.scanner` -- the structure scanner: header blocks and boundary delimiters.
- :mod:`~mailserve.core.mime.headers` -- header blocks and field values;
  :mod:`~mailserve.core.mime.lexical` -- comments, CFWS and quoted strings (RFC 5322 §3.2).
- :mod:`~mailserve.core.mime.content_fields` -- Content-Type and friends (RFC 2045, RFC 2183, RFC 2231).
- :mod:`~mailserve.core.mime.addresses` -- address lists and the IMAP envelope.
- :mod:`~mailserve.core.mime.message_keys` -- message ids, dates and base subjects (RFC 5256).
- :mod:`~mailserve.core.mime.charsets` and :mod:`~mailserve.core.mime.encoded_words` -- header
  decoding (RFC 2047).
- :mod:`~mailserve.core.mime.transfer` -- transfer encodings (RFC 2045 §6).
- :mod:`~mailserve.core.mime.bodies` -- decoded bodies, text for the search index, the preview and
  the attachment flag; :mod:`~mailserve.core.mime.html_text` -- the visible text of HTML.
- :mod:`~mailserve.core.mime.limits` -- every bound on hostile input, in one place.

Import from :mod:`mailserve.core.mime` itself; the modules are its inside.
"""

from mailserve.core.mime.addresses import parse_address_list
from mailserve.core.mime.bodies import decode_part_body, extract_text
from mailserve.core.mime.encoded_words import decode_header_text
from mailserve.core.mime.html_text import html_to_text
from mailserve.core.mime.limits import (
    MAX_DEPTH,
    MAX_FIELD_VALUE,
    MAX_FIELDS,
    MAX_HEADER_CACHE,
    MAX_PARAMS,
    MAX_PARTS,
    PREVIEW_LENGTH,
    PREVIEW_SCAN,
)
from mailserve.core.mime.message_keys import base_subject, parse_date, parse_message_ids
from mailserve.core.mime.parser import parse_message
from mailserve.core.mime.records import (
    WIRE_VERSION,
    Address,
    AddressList,
    EncapsulatedMessage,
    Envelope,
    Params,
    ParsedMessage,
    Part,
)
from mailserve.core.mime.scanner import Boundaries
from mailserve.core.mime.transfer import UnknownTransferEncodingError

__all__ = [
    "MAX_DEPTH",
    "MAX_FIELDS",
    "MAX_FIELD_VALUE",
    "MAX_HEADER_CACHE",
    "MAX_PARAMS",
    "MAX_PARTS",
    "PREVIEW_LENGTH",
    "PREVIEW_SCAN",
    "WIRE_VERSION",
    "Address",
    "AddressList",
    "Boundaries",
    "EncapsulatedMessage",
    "Envelope",
    "Params",
    "ParsedMessage",
    "Part",
    "UnknownTransferEncodingError",
    "base_subject",
    "decode_header_text",
    "decode_part_body",
    "extract_text",
    "html_to_text",
    "parse_address_list",
    "parse_date",
    "parse_message",
    "parse_message_ids",
]
