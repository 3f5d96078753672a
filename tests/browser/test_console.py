"""The web console in a real headless Chromium (Debian's `chromium`), driven as a person would use it.

It signs in with a token, starts a training from the form, waits for it to complete, sees the loss curve
drawn from the progress events, then pastes log lines into the try page and sees their templates. The
screenshots are kept in the test's temporary directory (`console-*.png`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_END_NS, StartService
from training_controller.demo.samples import iter_documents

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "browser-test-token-0123456789"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.slow


def _playwright():
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # dev extra not installed
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
    return async_playwright


def utc_minute(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def sample_lines(logs: Path, start_ns: int, end_ns: int, count: int = 5) -> list[str]:
    """A few distinct log lines of the trained range, as a person would copy them."""
    lines: list[str] = []
    for doc in iter_documents(sorted(logs.glob("*.jsonl"))):
        if start_ns <= doc["timestamp"] < end_ns and not doc["log"].startswith("\t") and doc["log"] not in lines:
            lines.append(doc["log"])
        if len(lines) == count:
            break
    return lines


async def test_a_person_trains_a_model_watches_it_and_parses_lines_with_it(
    start_service: StartService, sample_logs: Path, tmp_path: Path
) -> None:
    async_playwright = _playwright()
    service = await start_service(logs=sample_logs, api_tokens=f"person:rw:{TOKEN}")
    url = f"http://127.0.0.1:{service.http.port}/"
    start_ns, end_ns = SAMPLE_END_NS - 30 * 60 * 10**9, SAMPLE_END_NS - 26 * 60 * 10**9
    lines = sample_lines(sample_logs, start_ns, end_ns)

    async with async_playwright() as p:
        browser = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 860},
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            await page.goto(url)
            await page.fill("#token", "not-the-token-at-all")
            await page.click("#signin-form button[type=submit]")
            await page.wait_for_selector(".error >> text=not valid")

            await page.fill("#token", TOKEN)
            await page.click("#signin-form button[type=submit]")
            await page.wait_for_selector("#trainings")

            await page.click("nav >> text=New training")
            await page.fill("#start", utc_minute(start_ns))
            await page.fill("#end", utc_minute(end_ns))
            await page.click("#start-training")
            await page.wait_for_url("**/#/trainings/*")
            run_id = page.url.rsplit("/", 1)[1]
            await page.wait_for_selector('h1 [data-state="completed"]', timeout=180_000)
            await page.wait_for_selector("#log >> text=the training has ended (succeeded)")
            points = await page.locator("#loss-curve circle.point").count()
            assert points >= 2, "the loss curve has no points"
            losses = [float(v) for v in await page.locator("#loss-curve circle.point").evaluate_all(
                "nodes => nodes.map(n => n.dataset.loss)")]
            assert losses[-1] < losses[0], losses  # the curve drawn is the training's
            await page.screenshot(path=str(tmp_path / "console-training.png"), full_page=True)

            await page.click("nav >> text=Models")
            await page.wait_for_selector(f'#models tr[data-model="{run_id}"] .badge')
            await page.screenshot(path=str(tmp_path / "console-models.png"), full_page=True)

            await page.click("nav >> text=Try it")
            await page.fill("#lines", "\n".join(lines))
            await page.click("#parse")
            await page.wait_for_selector("#predictions tbody tr", timeout=90_000)
            rows = page.locator("#predictions tbody tr")
            assert await rows.count() == len(lines)
            shown = await rows.locator("td:nth-child(1)").all_inner_texts()
            templates = await rows.locator("td:nth-child(2)").all_inner_texts()
            assert shown == lines
            assert all(t.strip() for t in templates)
            assert await page.locator("#results .template").count() == len(lines)
            await page.screenshot(path=str(tmp_path / "console-try.png"), full_page=True)

            await page.click("nav >> text=Trainings")
            await page.wait_for_selector(f'#trainings tr[data-run="{run_id}"] [data-state="completed"]')
            await page.screenshot(path=str(tmp_path / "console-trainings.png"), full_page=True)
        finally:
            await browser.close()
    for name in ("training", "models", "try", "trainings"):
        assert (tmp_path / f"console-{name}.png").stat().st_size > 10_000
