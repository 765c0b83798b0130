"""POP3 (RFC 1939) with CAPA (RFC 2449), SASL (RFC 5034) and STLS (RFC 2595) over the mail core.

``factory.build(server, listener)`` is the listener builder; ``protocol.POP3Session`` is one
connection; ``maildrop`` holds the per-session snapshot of INBOX and the one-session-per-maildrop
lock; ``transfer`` streams message bytes with line-ending normalisation and dot-stuffing.
"""
