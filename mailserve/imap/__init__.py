"""imap."""
