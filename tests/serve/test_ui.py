"""The web UI end to end in headless Chromium (Debian's, driven by Playwright; no browser download).

Each view is screenshotted into tests/artifacts/ui/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serving import live_server, make_adapter

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/install_chromium.sh)")


@pytest.fixture(scope="module")
def lineage():
    """A small family in the (test session's) registry: a base model, a fine-tune with a score."""
    from lmstack import registry

    base = registry.record("model", "/tmp/ui-test/base", name="ui-base", operation="pull")
    tuned = registry.record("adapter", "/tmp/ui-test/tuned", name="ui-tuned", operation="sft", parents=[base])
    registry.add_score(tuned, "perplexity", 12.5, dataset="lmstack:general_heldout")
    return base, tuned


@pytest.fixture(scope="module")
def page(byte_bundle, tmp_path_factory, lineage):
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("ui-adapter")
    make_adapter(byte_bundle, folder / "helper", seed=3, base="tiny-bytes")
    profile = tmp_path_factory.mktemp("chromium-profile")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live_server(byte_bundle, adapters={"helper": folder / "helper"}) as server, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=["--headless", *FLAGS],
            viewport={"width": 1280, "height": 800})
        tab = context.new_page()
        tab.goto(server.url + "/")
        tab.server = server
        yield tab
        context.close()


def test_the_chat_playground_streams_the_servers_answer(page):
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#model option").all_inner_texts() == ["test-model"]
    assert page.locator("#adapter option").all_inner_texts()[1:] == ["helper"]
    page.fill("#max-tokens", "12")
    page.fill("#prompt", "Hello there")
    page.click("#send")
    page.wait_for_selector(".message.assistant .meta")
    shown = page.locator(".message.assistant .text").inner_text()
    expected = page.server.client().chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "Hello there"}], max_tokens=12, temperature=0,
        top_p=1).choices[0].message.content
    assert shown == expected.strip() or shown == expected
    assert "12 tokens" in page.locator(".message.assistant .meta").inner_text()
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)


def test_the_structured_output_toggle_gives_json(page):
    page.click("#reset")
    page.select_option("#adapter", "helper")
    page.check("#structured")
    schema = {"type": "object", "properties": {"mood": {"enum": ["calm", "glad"]}}, "required": ["mood"],
              "additionalProperties": False}
    page.fill("#schema", json.dumps(schema))
    page.fill("#max-tokens", "40")
    page.fill("#prompt", "How do you feel?")
    page.click("#send")
    page.wait_for_selector(".message.assistant .meta")
    answer = json.loads(page.locator(".message.assistant .text").inner_text())
    assert answer["mood"] in ("calm", "glad")
    page.screenshot(path=str(ARTIFACTS / "chat-structured.png"), full_page=True)


def test_registry_views_show_models_scores_and_the_family_tree(page, lineage):
    base, tuned = lineage
    page.click("nav button[data-view=models]")
    page.wait_for_selector(f"#models-table td:text-is('{tuned}')")
    assert not page.locator("#view-chat").is_visible()
    assert page.locator("#models-table tbody tr", has_text=tuned).inner_text().count(base) == 1
    page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)
    page.click("nav button[data-view=scores]")
    row = page.locator("#scores-table tbody tr", has_text=tuned)
    assert "perplexity" in row.inner_text() and "12.5" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "scores.png"), full_page=True)
    page.click("nav button[data-view=tree]")
    child = page.locator(f"#tree li:has(> .node[data-id='{base}']) > ul > li > .node[data-id='{tuned}']")
    assert child.count() == 1 and "perplexity 12.5" in child.inner_text()
    page.screenshot(path=str(ARTIFACTS / "tree.png"), full_page=True)
