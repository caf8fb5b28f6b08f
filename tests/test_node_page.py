"""The node's status page in headless Chromium (Debian's, driven by playwright): it lists the
public models and their versions by content address, and no private model."""

from __future__ import annotations

import shutil

import pytest

from om_teach.node.client import NodeClient
from om_teach.node.process import NodeProcess

from .node_helpers import prepare, weights

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_the_status_page_lists_public_models_and_versions(tmp_path):
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed (make installs it as root)")
    from playwright.sync_api import sync_playwright

    tokens = prepare(tmp_path)
    with NodeProcess(tmp_path) as node:
        c = NodeClient(node.url, tokens["both"])
        c.create_model("shown", "digits-mlp", public=True)
        c.create_model("hidden", "digits-mlp")
        cids = [c.upload("shown", weights(seed))["cid"] for seed in (0, 1)]
        c.upload("hidden", weights(2))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page()
                page.goto(node.url + "/")
                page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
                rows = page.locator("#models tbody tr").all_inner_texts()
                protocol = page.inner_text("#protocol")
            finally:
                browser.close()
    assert protocol == "1"
    assert len(rows) == 2 and all(r.startswith("shown") for r in rows)
    assert [cid in row for cid, row in zip(cids, rows, strict=True)] == [True, True]
    assert not any("hidden" in r for r in rows)
