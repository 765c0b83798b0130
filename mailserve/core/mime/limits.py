"""The bounds that keep one hostile message from costing more than linear time and memory.

Every scan in this package is bounded by one of these: how deep structures nest, how many
parts and header fields are looked at, how much of a value is parsed, how much text a
preview decodes.  They live together so the limits can be read -- and reviewed -- in one
place (Dovecot's ``max_total_mime_parts`` and friends play the same role).
"""

from __future__ import annotations

#: Nesting of multiparts and encapsulated messages beyond which a part is an opaque leaf.
MAX_DEPTH = 50
#: Parts per message beyond which no further delimiters are recognised (Dovecot's
#: ``max_total_mime_parts`` default); the rest of a multipart stays in its last part.
MAX_PARTS = 10_000
#: Bytes of the top-level header block kept in ``ParsedMessage.header``.
MAX_HEADER_CACHE = 64 * 1024
#: Bytes of one header field value that are parsed (longer values are cut).
MAX_FIELD_VALUE = 128 * 1024
#: Header fields per header block that are looked at.
MAX_FIELDS = 10_000
#: Characters of preview text (JMAP ``preview`` is at most 256, RFC 8621 §4.1.4).
PREVIEW_LENGTH = 256
#: Raw body bytes decoded to build the preview.
PREVIEW_SCAN = 16 * 1024
#: Parameters per structured header field that are kept.
MAX_PARAMS = 64
