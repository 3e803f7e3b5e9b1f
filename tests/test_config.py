"""Configuration: one place, file then environment, validated with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierwise.config import load
from tierwise.errors import ConfigError


def test_embedded_defaults(tmp_path: Path) -> None:
    s = load(environ={"TIERWISE_HOME": str(tmp_path)})
    assert [(t.name, t.model) for t in s.tiers] == [
        ("haiku", "claude-haiku-4-5"),
        ("sonnet", "claude-sonnet-4-6"),
        ("opus", "claude-opus-4-6"),
    ]
    assert s.default_tier == "sonnet"
    assert s.confidence_threshold == 0.7
    assert s.baseline_model() == "claude-opus-4-6"
    assert s.home == tmp_path
    assert s.use_simulated_provider()  # no API key in this environment
    assert s.tier("haiku").thinking is None
    assert s.tier("opus").thinking == {"type": "adaptive"}
    assert s.tier("opus").effort == "high"


def test_file_then_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "tierwise.toml"
    cfg.write_text(
        """
default_tier = "mid"
confidence_threshold = 0.5
baseline = "claude-opus-4-5"
[[tiers]]
name = "small"
model = "claude-haiku-4-5"
[[tiers]]
name = "mid"
model = "claude-sonnet-4-5"
thinking = { type = "enabled", budget_tokens = 2048 }
[[tiers]]
name = "big"
model = "claude-opus-4-6"
effort = "max"
[[tiers]]
name = "huge"
model = "claude-opus-5-5"
"""
    )
    env = {
        "TIERWISE_CONFIDENCE_THRESHOLD": "0.65",
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
    }
    s = load(cfg, environ=env)
    assert s.tier_names == ["small", "mid", "big", "huge"]
    assert s.confidence_threshold == 0.65  # environment wins over the file
    assert s.baseline_model() == "claude-opus-4-5"
    assert s.provider.base_url == "http://127.0.0.1:1"
    assert not s.use_simulated_provider()
    assert "sk-ant-secret" not in repr(s)  # the key is a SecretStr


def test_config_path_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('default_tier = "haiku"\n')
    assert load(environ={"TIERWISE_CONFIG": str(cfg)}).default_tier == "haiku"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('default_tier = "giant"', "default_tier 'giant' is not a configured tier"),
        ("confidence_threshold = 1.5", "confidence_threshold"),
        (
            'default_tier = "a"\n[[tiers]]\nname = "a"\nmodel = "claude-haiku-4-5"\n[[tiers]]\n'
            'name = "a"\nmodel = "x"\n',
            "repeated: a",
        ),
        ('[[tiers]]\nname = "Bad Name"\nmodel = "m"', "tiers.0.name"),
        ("surprise = 1", "surprise"),
        (
            '[[tiers]]\nname = "sonnet"\nmodel = "claude-haiku-4-5"\n'
            'thinking = {type = "adaptive"}',
            "tiers.sonnet.thinking: claude-haiku-4-5 does not accept thinking type 'adaptive'",
        ),
        (
            '[[tiers]]\nname = "sonnet"\nmodel = "claude-opus-4-7"\n'
            'thinking = {type = "enabled", budget_tokens = 4000}',
            "does not accept thinking type 'enabled'",
        ),
        (
            '[[tiers]]\nname = "sonnet"\nmodel = "claude-haiku-4-5"\neffort = "high"',
            "tiers.sonnet.effort: claude-haiku-4-5 does not accept effort 'high'",
        ),
        ('[[tiers]]\nname = "sonnet"\nmodel = "claude-sonnet-4-6"\neffort = "standard"', "effort"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_bad_configuration_names_what_is_wrong(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load(cfg, environ={})
    assert message in str(info.value)


def test_bad_environment_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"classifier\.kind"):
        load(environ={"TIERWISE_CLASSIFIER": "magic", "TIERWISE_HOME": str(tmp_path)})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load(tmp_path / "nope.toml", environ={})
