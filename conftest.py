"""pytest's root configuration: fixtures shared by every test folder."""

# The authoritative DNS fixture server (``dns_server``) for every test folder.
pytest_plugins = ["tests.dnsfixture"]
