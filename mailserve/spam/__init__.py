"""The built-in spam filter: a composite, explainable score per message.

Signals: a Bayesian classifier (global and per account, :mod:`.bayes`, :mod:`.store`),
DNS block- and allowlists (:mod:`.dnsbl`), header, content, greeting and authentication
rules (:mod:`.rules`), greylisting and sender reputation (:mod:`.filter`).  Weights,
lists and thresholds live in ``rules.toml`` (overridable from the ``[spam]`` config
section).  The SMTP pipeline uses :class:`SpamVerdictStage`; IMAP trains through
``SpamFilter.training_hook``; ``mailserve spam train`` lives in :mod:`.cli`.
"""

from mailserve.spam.filter import SpamFilter
from mailserve.spam.settings import SpamSettings, SpamSettingsError, load_settings
from mailserve.spam.verdict import RuleHit, SpamAction, SpamContext, SpamVerdict

__all__ = [
    "RuleHit",
    "SpamAction",
    "SpamContext",
    "SpamFilter",
    "SpamSettings",
    "SpamSettingsError",
    "SpamVerdict",
    "load_settings",
]
