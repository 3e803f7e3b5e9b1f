"""One error path for the CLI: every mistake a user can make (a flag, an environment variable,
a configuration setting, a path, a service) ends in one line per problem naming the setting,
exit code 2 and no traceback; ``tierwise --debug`` adds the traceback.

The cases from the issue run as real subprocesses; the table over every setting of the
configuration model runs the CLI's entry point in this process (hundreds of cases).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel, SecretStr

from tests.test_serve import free_port
from tierwise import config as config_mod
from tierwise.cli import main

TIERWISE = str(Path(sys.executable).parent / "tierwise")


def run(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    clean |= {"TIERWISE_HOME": str(home), "COLUMNS": "80", **env}
    return subprocess.run(
        [TIERWISE, *args], capture_output=True, text=True, env=clean, timeout=60, check=False
    )


def assert_one_line_error(stderr: str, *names: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# -- the issue's cases, as a user runs them --------------------------------------------------
@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["serve", "--log-level", "loud"], {}, ["--log-level", "'loud'", "warning"]),
        (
            ["serve"],
            {"TIERWISE_REDIS_URL": "notaurl"},
            ["budgets.redis_url", "$TIERWISE_REDIS_URL"],
        ),
        (
            ["route", "hi"],
            {"TIERWISE_HOME": "/etc/passwd"},
            ["home", "$TIERWISE_HOME", "not a directory"],
        ),
        (
            ["route", "hi"],
            {"TIERWISE_DB": "sqlite:////proc/nope/x.db"},
            ["ledger.url", "$TIERWISE_DB", "cannot create directory /proc/nope"],
        ),
        (["demo", "--live"], {}, ["--live", "ANTHROPIC_API_KEY"]),
    ],
)  # fmt: skip
def test_issue_cases_end_in_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], names: list[str]
) -> None:
    proc = run(*args, home=tmp_path, **env)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, *names)
    assert proc.stdout == ""


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run("--debug", "route", "hi", home=tmp_path, TIERWISE_DB="sqlite:////proc/nope/x.db")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    proc = run("--version", home=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"tierwise {version('tierwise')}\n")


def test_demo_live_with_a_key_calls_the_api(tmp_path: Path, fake_anthropic: Any) -> None:
    proc = run(
        "demo",
        "--live",
        home=tmp_path,
        ANTHROPIC_API_KEY=fake_anthropic.api_key,
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATED" not in proc.stdout
    assert len(fake_anthropic.requests) >= 4


# -- in process: the entry point with this test's environment ----------------------------------
def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in [*config_mod._ENV_MAP, "TIERWISE_CONFIG"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TIERWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "80")
    return tmp_path / "home"


# A leaf setting: its place in the file ("gateway", "port") and its declared type.
Leaf = tuple[tuple[str | int, ...], Any, Any]


def leaves(
    model: type[BaseModel] = config_mod.Settings, at: tuple[str | int, ...] = ()
) -> list[Leaf]:
    out: list[Leaf] = []
    for name, field in model.model_fields.items():
        loc = (*at, name)
        inner = typing.get_args(field.annotation) or (field.annotation,)
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and typing.get_origin(field.annotation) is list:
            out += leaves(nested[0], (*loc, 0))  # [[tiers]]: the first entry
        elif nested:
            out += leaves(nested[0], loc)
        else:
            out.append((loc, field.annotation, field))
    return out


def wrong_type(annotation: Any) -> Any:
    """A value of the wrong type for ``annotation`` (as TOML can write it)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return "no-such-choice"
    if args and typing.get_origin(annotation) not in (list, dict):
        return wrong_type(args[0])
    if annotation is bool:
        return "maybe"
    if annotation in (int, float):
        return "lots"
    if annotation in (str, SecretStr, Path):
        return 12345
    return "not-a-table-or-list"


def out_of_range(field: Any) -> list[Any]:
    values: list[Any] = []
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            values.append(typing.cast(float, rule.ge) - 1)
        elif isinstance(rule, annotated_types.Gt):
            values.append(rule.gt)
        elif isinstance(rule, annotated_types.Le):
            values.append(typing.cast(float, rule.le) + 1)
        elif isinstance(rule, annotated_types.Lt):
            values.append(rule.lt)
        elif isinstance(rule, annotated_types.MinLen):
            values.append("" if field.annotation is str else [])
    return values


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def toml_with(loc: tuple[str | int, ...], value: Any) -> str:
    """A configuration file setting ``loc`` to ``value`` (everything else valid)."""
    if loc[0] == "tiers" and len(loc) > 2:
        tiers = [{"name": t.name, "model": t.model} for t in config_mod._default_tiers()]
        tiers[0][str(loc[2])] = value
        return "".join(
            "[[tiers]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items()) for t in tiers
        )
    if len(loc) == 1:
        return f"{loc[0]} = {toml_value(value)}\n"
    return f"[{'.'.join(map(str, loc[:-1]))}]\n{loc[-1]} = {toml_value(value)}\n"


def shown(loc: tuple[str | int, ...]) -> str:
    return "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc)
    )


CASES = (
    [
        pytest.param(loc, value, id=f"{shown(loc)}={value!r}")
        for loc, annotation, field in leaves()
        for value in [wrong_type(annotation), *out_of_range(field)]
    ]
    + [
        pytest.param(("tiers",), [], id="tiers=[]"),
        pytest.param(("tiers",), "haiku", id="tiers='haiku'"),
    ]
    + [
        pytest.param((*section, "surprise"), 1, id=f"{shown(section) or 'top'}.surprise")
        for section in [(), *sorted({loc[:-1] for loc, _, _ in leaves() if len(loc) > 1})]
    ]
)


def test_the_table_covers_every_setting() -> None:
    covered = {p.values[0] for p in CASES}
    assert {loc for loc, _, _ in leaves()} <= covered
    assert len(CASES) > 80


@pytest.mark.parametrize(("loc", "value"), CASES)
def test_every_setting_with_a_bad_value(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    loc: tuple[str | int, ...],
    value: Any,
) -> None:
    monkeypatch.delenv("TIERWISE_HOME")  # the file's own `home` must not be overridden
    cfg = home.parent / "bad.toml"
    cfg.write_text(toml_with(loc, value))
    code, out, err = cli(capsys, "prices", "--config", str(cfg))
    assert code == 2, err
    assert out == ""
    line = assert_one_line_error(err, shown(loc), str(cfg))
    assert "12345" not in line or "api_key" not in line  # a secret's value is never echoed


# Each environment variable with a value that is wrong for it.
BAD_ENV = {
    "TIERWISE_HOME": ("/etc/passwd", "not a directory"),
    "TIERWISE_DEFAULT_TIER": ("giant", "not a configured tier"),
    "TIERWISE_CONFIDENCE_THRESHOLD": ("high", "valid number"),
    "TIERWISE_BASELINE": ("gpt-4", "no price"),
    "TIERWISE_CLASSIFIER": ("magic", "'learned'"),
    "TIERWISE_PROVIDER": ("openai", "'anthropic'"),
    "TIERWISE_PRICES_FILE": ("/nonexistent/prices.toml", "cannot read"),
    "TIERWISE_DB": ("mysql://db/x", "not a ledger URL"),
    "TIERWISE_REDIS_URL": ("localhost:6379", "not a Redis URL"),
    "TIERWISE_SESSIONS_REDIS_URL": ("localhost:6379", "not a Redis URL"),
    "TIERWISE_MODEL": ("local-9999", "local-9999"),
    "TIERWISE_BUDGET_ON_EXCEEDED": ("panic", "'downgrade'"),
    "TIERWISE_SHADOW": ("maybe", "valid boolean"),
    "ANTHROPIC_BASE_URL": ("api.anthropic.com", "not an HTTP URL"),
    "TIERWISE_CONFIG": ("/nonexistent/tierwise.toml", "No such file"),
}


def test_every_environment_variable_has_a_case() -> None:
    # ANTHROPIC_API_KEY: any string is a well-formed key (the API judges it)
    assert set(BAD_ENV) == {*config_mod._ENV_MAP, "TIERWISE_CONFIG"} - {"ANTHROPIC_API_KEY"}


@pytest.mark.parametrize(("var", "value", "problem"), [(k, *v) for k, v in BAD_ENV.items()])
def test_every_environment_variable_with_a_bad_value(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    var: str,
    value: str,
    problem: str,
) -> None:
    monkeypatch.setenv(var, value)
    code, out, err = cli(capsys, "prices")
    assert (code, out) == (2, ""), err
    assert_one_line_error(err, f"${var}", problem)


# -- flags and arguments -------------------------------------------------------------------
FLAG_CASES = [
    (["serve", "--port", "99999"], ["--port", "65535"]),
    (["serve", "--port", "0"], ["--port", "greater than or equal to 1"]),
    (["serve", "--workers", "0"], ["--workers"]),
    (["serve", "--log-level", "loud"], ["--log-level"]),
    (["serve", "--host", "999.1.1.1"], ["--host", "999.1.1.1", "127.0.0.1"]),
    (["route", "--tier", "giant", "hi"], ["--tier", "haiku, sonnet, opus"]),
    (["route", "--max-tokens", "0", "hi"], ["--max-tokens"]),
    (["route"], ["PROMPT", "--input"]),
    (["route", "--input", "{tmp}/none.jsonl"], ["none.jsonl", "cannot read"]),
    (["route", "--input", "{tmp}/empty.jsonl"], ["empty.jsonl", "no prompts"]),
    (["route", "--json=true", "hi"], ["--json", "does not take a value"]),
    (["report", "--since", "yesterday"], ["--since", "'yesterday'", "7d"]),
    (["report", "--by", "colour"], ["--by", "tier, model"]),
    (["report", "--baseline", "gpt-4"], ["--baseline", "'gpt-4'"]),
    (["keys", "create", "--name", "k", "--period", "week"], ["--period", "'week'"]),
    (["keys", "create", "--name", "k", "--budget-usd", "lots"], ["--budget-usd"]),
    (["keys", "revoke", "nobody"], ["'nobody'", "keys list"]),
    (["prices", "--wdie"], ["--wdie"]),
    (["nosuchcommand"], ["nosuchcommand"]),
]


@pytest.mark.parametrize(("args", "names"), FLAG_CASES, ids=[" ".join(a) for a, _ in FLAG_CASES])
def test_flag_mistakes(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], names: list[str]
) -> None:
    tmp = home.parent
    (tmp / "empty.jsonl").write_text("\n\n")
    code, out, err = cli(capsys, *(a.format(tmp=tmp) for a in args))
    assert (code, out) == (2, ""), err
    assert_one_line_error(err, *(n.format(tmp=tmp) for n in names))


def test_serve_refuses_an_unreachable_redis(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("TIERWISE_REDIS_URL", url)
    code, _, err = cli(capsys, "serve", "--port", str(free_port()))
    assert code == 2
    assert_one_line_error(err, "budgets.redis_url ($TIERWISE_REDIS_URL)", url, "does not answer")


@pytest.mark.parametrize("args", [["report"], ["keys", "list"], ["route", "--tier", "haiku", "hi"]])
def test_commands_name_the_ledger_setting_when_postgresql_does_not_answer(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    url = f"postgresql://tierwise:secret@127.0.0.1:{free_port()}/ledger"
    monkeypatch.setenv("TIERWISE_DB", url)
    code, out, err = cli(capsys, *args)
    assert (code, out) == (2, "")
    line = assert_one_line_error(err, "ledger.url ($TIERWISE_DB)", "does not answer")
    assert "secret" not in line and "tierwise:***@" in line
