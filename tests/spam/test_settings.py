"""rules.toml defaults, config overrides and their validation."""

from __future__ import annotations

import pytest

from mailserve.spam.settings import SpamSettingsError, default_rules_text, load_settings, merge_overrides


def test_shipped_rules_load_with_stalwart_thresholds():
    settings = load_settings()
    assert (settings.spam_threshold, settings.discard_threshold, settings.reject_threshold) == (5.0, 12.0, 15.0)
    assert settings.score("GTUBE") >= settings.reject_threshold
    assert next(band.rule for band in settings.bayes_bands) == "BAYES_00"
    zones = {dnsbl.zone: dnsbl for dnsbl in settings.dnsbls}
    assert zones["zen.spamhaus.org"].codes["127.0.0.2"] == "RBL_SPAMHAUS_SBL"
    assert zones["multi.surbl.org"].bitmask[8] == "SURBL_PHISH"
    assert "bit.ly" in settings.shorteners
    assert "[thresholds]" in default_rules_text()


def test_override_changes_only_given_keys():
    settings = load_settings({"thresholds": {"reject": 20}, "scores": {"BAYES_99": 4.2}})
    assert settings.reject_threshold == 20.0
    assert settings.discard_threshold == 12.0
    assert settings.score("BAYES_99") == 4.2
    assert settings.score("BAYES_95") == 3.5


def test_override_replaces_lists_whole():
    settings = load_settings({"urls": {"shorteners": ["sho.rt"]}, "allowlist": {"networks": ["198.51.100.0/24"]}})
    assert settings.shorteners == frozenset({"sho.rt"})
    assert [str(n) for n in settings.allow_networks] == ["198.51.100.0/24"]


def test_merge_is_recursive_and_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    merged = merge_overrides(base, {"a": {"c": 3}, "d": [2]})
    assert merged == {"a": {"b": 1, "c": 3}, "d": [2]}
    assert base == {"a": {"b": 1, "c": 2}, "d": [1]}


def test_every_problem_is_reported_with_its_key():
    with pytest.raises(SpamSettingsError) as caught:
        load_settings({
            "thresholds": {"spam": "high"},
            "scores": {"SPF_FAIL": True},
            "greylist": {"ipv4_prefix": 40},
            "allowlist": {"networks": ["not-a-net"]},
        })
    text = "\n".join(caught.value.issues)
    assert "spam.thresholds.spam" in text
    assert "spam.scores.SPF_FAIL" in text
    assert "spam.greylist.ipv4_prefix" in text
    assert "not-a-net" in text


def test_thresholds_must_be_ordered():
    with pytest.raises(SpamSettingsError, match="spam < discard <= reject"):
        load_settings({"thresholds": {"spam": 13.0}})


def test_unknown_section_is_refused():
    with pytest.raises(SpamSettingsError, match="spam.tresholds: unknown section"):
        load_settings({"tresholds": {"spam": 1}})


def test_dnsbl_answers_must_be_loopback_and_bits_single():
    with pytest.raises(SpamSettingsError) as caught:
        load_settings({"dnsbl": [
            {"zone": "bl.example", "kind": "ip", "codes": {"10.0.0.2": "X"}},
            {"zone": "dbl.example", "kind": "domain", "bitmask": {"3": "Y"}},
            {"zone": "odd.example", "kind": "asn", "codes": {"127.0.0.2": "Z"}},
        ]})
    text = "\n".join(caught.value.issues)
    assert "outside 127.0.0.0/8" in text
    assert "not a single bit" in text
    assert "expected \"ip\" or \"domain\"" in text


def test_rule_without_score_is_an_error():
    with pytest.raises(SpamSettingsError, match="spam.scores.MY_LIST: the rule has no score"):
        load_settings({"dnsbl": [{"zone": "bl.example", "kind": "ip", "codes": {"127.0.0.2": "MY_LIST"}}]})


def test_bad_toml_is_reported():
    with pytest.raises(SpamSettingsError, match="rules file"):
        load_settings(rules_text="[thresholds\nspam = 1")
