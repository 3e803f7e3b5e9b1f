"""End to end in headless Chromium: traffic through the full gateway (keys, a budget, a
failure, feedback), then the dashboard in a real browser shows what `tierwise report --json`
and `tierwise report --quality --json` say. Saves artifacts/dashboard.png.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Without them
the test is skipped with the reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import Settings, load
from tierwise.gateway.server import make_app
from tierwise.keys import KeyStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TIERWISE = str(Path(sys.executable).parent / "tierwise")
PROMPTS = [
    "Translate 'good night' into Italian",
    "Format this record as JSON: name Ann, age 31, city Oslo",
    "What is the capital of Portugal?",
    "Write a Python function that merges two sorted lists into one sorted list",
    "Summarise the plot of Hamlet in three sentences",
    "Fix the bug in this function: def add(a, b): return a - b",
    "Review this distributed architecture for race conditions and consistency issues",
    "Audit this login handler for SQL injection and timing attacks",
    "Design a novel algorithm for scheduling GPU jobs across a heterogeneous cluster",
]


def _browser_or_skip() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    reason = (
        f"headless browser test needs {', '.join(missing)} "
        "(apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never download anything
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1440,1000",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def cli_json(settings: Settings, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(settings.home)}
    proc = subprocess.run(
        [TIERWISE, "report", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def shown_number(text: str) -> Decimal:
    """The number a cell shows ("$0.012345", "1,234", "45.1%")."""
    cleaned = re.sub(r"[^0-9.\-]", "", text)
    return Decimal(cleaned)


def close_to(text: str, exact: str) -> bool:
    """The shown, rounded text is the exact value to the precision shown."""
    shown = shown_number(text)
    decimals = len(text.rsplit(".", 1)[1].rstrip("%")) if "." in text else 0
    return abs(shown - Decimal(exact)) <= Decimal(1).scaleb(-decimals) / 2 + Decimal("1e-12")


def test_dashboard_in_chromium_matches_the_report(
    driver: Any, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings = load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": fake_anthropic.api_key,
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        }
    )
    keys = KeyStore(settings)
    search, _ = keys.create("search-bot", budget_usd="0.25", period="day")
    support, _ = keys.create("support-app")
    ops, _ = keys.create("ops", role="admin")  # sees every key's requests
    keys.close()

    with ServerThread(make_app(settings)) as srv:
        rated: list[tuple[str, str, str]] = []  # (key, request id, tier)
        for i in range(30):
            key = search if i % 3 else support
            client = anthropic.Anthropic(base_url=srv.base_url, api_key=key, max_retries=0)
            if i == 7:
                fake_anthropic.script(model_glob="claude-*", status=500, times=4)
            try:
                raw = client.messages.with_raw_response.create(
                    model="auto",
                    max_tokens=200,
                    messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                )
            except anthropic.APIStatusError:
                continue  # recorded as a failure: the dashboard shows it
            rated.append(
                (key, raw.headers["x-tierwise-request-id"], raw.headers["x-tierwise-tier"])
            )
        for n, (key, rid, tier) in enumerate(rated[:18]):
            score = 0.35 if tier == "haiku" and n % 2 else 0.9
            reply = httpx.post(
                srv.base_url + "/v1/feedback",
                headers={"x-api-key": key},
                json={"request_id": rid, "score": score},
            )
            assert reply.status_code == 200, reply.text

        # The first load carries the key once; the page then lives on its session cookie.
        driver.get(f"{srv.base_url}/dashboard?since=all&key={ops}")
        assert driver.current_url == f"{srv.base_url}/dashboard?since=all"
        WebDriverWait(driver, 15).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-generated-at")
        )
        cookies = driver.get_cookies()
        assert [c["name"] for c in cookies] == ["tierwise_dashboard"]
        assert cookies[0]["httpOnly"] and ops not in cookies[0]["value"]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not [e for e in errors if "401" not in e["message"]], errors

        report = cli_json(settings, "--since", "all", "--by", "key")
        quality = cli_json(settings, "--since", "all", "--quality")

        def exact(selector: str) -> tuple[str, str]:
            el = driver.find_element(By.CSS_SELECTOR, selector)
            return el.text, el.get_attribute("data-exact")

        text, value = exact("#kpi-requests")
        assert value == str(report["total_requests"]) and text == f"{report['total_requests']:,}"
        for selector, field in (
            ("#kpi-cost", "total_cost_usd"),
            ("#kpi-baseline", "baseline_cost_usd"),
            ("#kpi-saved", "saved_usd"),
        ):
            text, value = exact(selector)
            assert value == report[field], (selector, value, report[field])
            assert close_to(text, report[field]), (selector, text, report[field])
        text, value = exact("#kpi-saved-pct")
        assert float(value) == report["saved_pct"] and close_to(text, str(report["saved_pct"]))
        sub = driver.find_element(By.ID, "kpi-requests-sub").text
        assert sub.startswith(f"{report['by_status']['ok']} ok · {report['by_status']['error']}")
        assert report["by_status"]["error"] >= 1

        # request share per tier
        for tier, row in report["by_tier"].items():
            base = f"#share-table tr[data-tier='{tier}']"
            assert exact(base + " .requests")[1] == str(row["requests"])
            text, value = exact(base + " .cost")
            assert value == row["cost_usd"] and close_to(text, row["cost_usd"])
        # top keys by spend, with the budget
        for name, group in report["groups"].items():
            text, value = exact(f"#keys-table tr[data-key='{name}'] .cost")
            assert value == group["cost_usd"] and close_to(text, group["cost_usd"])
        budget_row = driver.find_element(By.CSS_SELECTOR, "#keys-table tr[data-key='search-bot']")
        assert "$0.25 / day" in budget_row.text
        # quality per tier
        assert quality["overall"]["total"] == 18
        for tier, row in quality["tiers"].items():
            base = f"#quality-table tr[data-tier='{tier}']"
            text, value = exact(base + " .avg")
            assert float(value) == row["avg_satisfaction"]
            assert close_to(text, str(row["avg_satisfaction"]))
            assert exact(base + " .total")[1] == str(row["total"])
            assert exact(base + " .below")[1] == str(row["below_threshold"])
        # recent decisions: newest first, every row of this small window
        rows = driver.find_elements(By.CSS_SELECTOR, "#recent-table tbody tr")
        assert len(rows) == report["total_requests"]
        assert rows[0].get_attribute("data-request-id") != rows[-1].get_attribute("data-request-id")
        # the charts were drawn
        assert driver.find_elements(By.CSS_SELECTOR, "#chart-spend svg rect")
        assert driver.find_elements(By.CSS_SELECTOR, "#chart-savings svg polyline")
        arcs = driver.find_elements(
            By.CSS_SELECTOR, "#chart-share svg path, #chart-share svg circle"
        )
        assert len(arcs) >= 2

        # it refreshes itself: new traffic appears without reloading the page
        before = driver.find_element(By.TAG_NAME, "body").get_attribute("data-generated-at")
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=support, max_retries=0)
        client.messages.create(
            model="auto", max_tokens=50, messages=[{"role": "user", "content": PROMPTS[0]}]
        )
        driver.find_element(By.CSS_SELECTOR, "#windows button[data-since='all']").click()
        WebDriverWait(driver, 15).until(
            lambda d: (
                d.find_element(By.TAG_NAME, "body").get_attribute("data-generated-at") != before
            )
        )
        WebDriverWait(driver, 5).until(
            lambda d: (
                d.find_element(By.ID, "kpi-requests").get_attribute("data-exact")
                == str(report["total_requests"] + 1)
            )
        )

        # a full-page screenshot, as a laptop would show it
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1440, min(int(height) + 20, 4000))
        time.sleep(0.4)  # let the charts re-render at the final size
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
