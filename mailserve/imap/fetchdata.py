"""FETCH data items built from the metadata cached at ingest (RFC 9051 §6.4.5, §7.5.2).

Nothing here re-parses a message: ENVELOPE and BODYSTRUCTURE come from the
``ParsedMessage`` stored when the message arrived, header subsets are cut from
``ParsedMessage.header`` (or from the part's header bytes, read by range), and every
other section is a byte range of the blob so big bodies are streamed, not loaded.

API (used by the IMAP session)
------------------------------
``envelope(parsed, utf8=False) -> bytes``
    The ENVELOPE s-expression, e.g. ``b'("date" "subject" ((NIL NIL "a" "b.c")) ...)'``.
``bodystructure(parsed, extensible=True, utf8=False) -> bytes``
    BODYSTRUCTURE (``extensible=True``) or BODY (``False``).
``parse_section(text, partial=None, binary=False) -> SectionSpec``
    ``text`` is what stood between the brackets of ``BODY[...]`` / ``BODY.PEEK[...]`` /
    ``BINARY[...]`` (e.g. ``"1.2.HEADER.FIELDS (From To)"``), ``partial`` the
    ``"<o.l>"``/``"o.l"`` suffix if any.  Raises ``SectionError`` (a ``ValueError``: answer BAD).
``body_section(parsed, spec) -> SectionRange``
    Resolves the spec against the message: ``SectionRange.data`` is set for small
    synthesized bytes; otherwise ``SectionRange.start``/``.length`` is a range of the blob
    and ``.header_fields``/``.exclude`` say to filter header fields from those bytes with
    ``filter_header``.  ``SectionRange.label`` is the item name to send back
    (``b"BODY[1.MIME]<0>"``).  A missing part yields empty data (RFC 9051 §6.4.5).
``await read_section(section, read_blob) -> bytes``
    The bytes of a ``SectionRange`` (``read_blob(offset, length) -> Deferred[bytes]``),
    with header filtering, BINARY decoding and the partial window applied.
``binary_size(parsed, spec, read_blob) -> Deferred[int]`` / ``async``
    BINARY.SIZE[part] (RFC 3516 §4.2): the decoded size; raises ``UnknownCTE``.
``filter_header(block, names, exclude) -> bytes``
    HEADER.FIELDS / HEADER.FIELDS.NOT on a raw header block, fields kept in message order.
``imap_string(value, utf8=False) -> bytes``, ``nstring(value, utf8=False) -> bytes``
    Quoted string when possible, literal otherwise (RFC 9051 §4.3); ``NIL`` for None.
"""
