"""Configuration: one place, file then environment, validated with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierwise.config import load, prepare_paths, revalidate
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
        ('default_tier = "giant"', "default_tier (in "),
        ('default_tier = "giant"', "'giant' is not a configured tier; use one of: haiku, sonnet"),
        ("confidence_threshold = 1.5", "confidence_threshold"),
        (
            'default_tier = "a"\n[[tiers]]\nname = "a"\nmodel = "claude-haiku-4-5"\n[[tiers]]\n'
            'name = "a"\nmodel = "x"\n',
            "repeated: a",
        ),
        ('[[tiers]]\nname = "Bad Name"\nmodel = "m"', "tiers[0].name = 'Bad Name'"),
        ("surprise = 1", "surprise"),
        (
            '[[tiers]]\nname = "sonnet"\nmodel = "claude-haiku-4-5"\n'
            'thinking = {type = "adaptive"}',
            "claude-haiku-4-5 does not accept thinking type 'adaptive'",
        ),
        (
            '[[tiers]]\nname = "sonnet"\nmodel = "claude-opus-4-7"\n'
            'thinking = {type = "enabled", budget_tokens = 4000}',
            "does not accept thinking type 'enabled'",
        ),
        (
            '[[tiers]]\nname = "sonnet"\nmodel = "claude-haiku-4-5"\neffort = "high"',
            "tiers.sonnet.effort (in ",
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


# -- every problem names the setting, where its value came from, and what is accepted ----------
@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        (
            '[gateway]\nfallback_chain = { opus = ["sonet"] }',
            {},
            "gateway.fallback_chain.opus (in {file}): 'sonet': not a configured tier; "
            "use any of: haiku, sonnet, opus",
        ),
        (
            '[gateway]\nfallback_chain = { big = ["haiku"] }',
            {},
            "gateway.fallback_chain.big (in {file}): 'big' is not a configured tier",
        ),
        (
            "",
            {"TIERWISE_BASELINE": "gpt-4"},
            "baseline (from $TIERWISE_BASELINE): no price for 'gpt-4'",
        ),
        (
            "",
            {"TIERWISE_DEFAULT_TIER": "giant"},
            "default_tier (from $TIERWISE_DEFAULT_TIER): 'giant' is not a configured tier",
        ),
        (
            "",
            {"TIERWISE_REDIS_URL": "notaurl"},
            "budgets.redis_url = 'notaurl' (from $TIERWISE_REDIS_URL): not a Redis URL",
        ),
        (
            '[budgets]\nredis_url = "localhost:6379"',
            {},
            "budgets.redis_url = 'localhost:6379' (in {file}): not a Redis URL",
        ),
        (
            "",
            {"TIERWISE_DB": "mysql://me:hunter2@db/x"},
            "ledger.url = 'mysql://me:***@db/x' (from $TIERWISE_DB): not a ledger URL",
        ),
        (
            "",
            {"ANTHROPIC_BASE_URL": "api.anthropic.com"},
            "provider.base_url = 'api.anthropic.com' (from $ANTHROPIC_BASE_URL): not an HTTP URL",
        ),
        (
            "",
            {"TIERWISE_HOME": "{file}"},
            "home = '{file}' (from $TIERWISE_HOME): {file} exists and is not a directory",
        ),
        (
            "",
            {"TIERWISE_DB": "sqlite:///{file}/ledger.db"},
            "ledger.url = 'sqlite:///{file}/ledger.db' (from $TIERWISE_DB): {file} is a file",
        ),
        (
            "[gateway]\nport = 0",
            {},
            "gateway.port = 0 (in {file}): must be greater than or equal to 1",
        ),
        ('[gateway]\nhost = ""', {}, "gateway.host = '' (in {file})"),
        ("[provider]\napi_key = 5", {}, "provider.api_key = '***' (in {file})"),
        (
            "[ledger]\nsurprise = 1",
            {},
            "ledger.surprise (in {file}): unknown setting; [ledger] takes: enabled, url,",
        ),
        ("gateway = 3", {}, "gateway = 3 (in {file}): must be a table ([gateway])"),
        ('[[tiers]]\nname = "a"', {}, "tiers[0].model (in {file}): required, but not set"),
        (
            "",
            {"TIERWISE_PRICES_FILE": "/nonexistent/prices.toml"},
            "prices_file (from $TIERWISE_PRICES_FILE): cannot read price catalogue",
        ),
    ],
)
def test_each_problem_is_one_line_naming_setting_and_origin(
    tmp_path: Path, toml: str, env: dict[str, str], expected: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    env = {k: v.format(file=cfg) for k, v in env.items()}
    with pytest.raises(ConfigError) as info:
        load(cfg, environ=env)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert expected.format(file=cfg) in message
    assert "hunter2" not in message


def test_several_problems_give_one_line_each(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("confidence_threshold = 7\n[gateway]\nport = 99999\nworkers = 0\n")
    with pytest.raises(ConfigError) as info:
        load(cfg, environ={})
    lines = str(info.value).splitlines()
    assert [line.split(" ")[0] for line in lines] == [
        "confidence_threshold",
        "gateway.port",
        "gateway.workers",
    ]


def test_missing_file_names_what_named_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml \(\$TIERWISE_CONFIG\): No such file"):
        load(environ={"TIERWISE_CONFIG": str(tmp_path / "nope.toml")})


def test_revalidate_checks_sections_changed_with_model_copy(tmp_path: Path) -> None:
    # model_copy(update=...) does not validate: `serve --port 99999` once got through it and
    # uvicorn listened on 99999 % 65536 = 34463.
    settings = load(environ={"TIERWISE_HOME": str(tmp_path)})
    for update, field in (({"port": 99999}, "gateway.port"), ({"workers": 0}, "gateway.workers")):
        with pytest.raises(ConfigError, match=field):
            revalidate(settings, gateway=settings.gateway.model_copy(update=update))
    chain = settings.gateway.model_copy(update={"fallback_chain": {"opus": ["nope"]}})
    with pytest.raises(ConfigError, match=r"gateway\.fallback_chain\.opus"):
        revalidate(settings, gateway=chain)


def test_prepare_paths_names_the_setting(tmp_path: Path) -> None:
    settings = load(environ={"TIERWISE_HOME": str(tmp_path / "home")})
    prepare_paths(settings)
    assert (tmp_path / "home").is_dir()
    bad = load(environ={"TIERWISE_HOME": str(tmp_path), "TIERWISE_DB": "sqlite:////proc/nope/x.db"})
    with pytest.raises(ConfigError, match=r"ledger\.url \(\$TIERWISE_DB\): cannot create"):
        prepare_paths(bad)
