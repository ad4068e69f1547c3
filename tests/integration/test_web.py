"""The page at `/` in real headless Chromium (Debian's, driven by Playwright) against the real
stack: uploads reach `indexed`, search finds the right file, an answer streams in and its
citation opens the right chunk, a deleted document leaves search, a rejected file shows the
server's message. It takes the screenshots the README shows: into docs/web/ with
`make screenshots` (WEB_SCREENSHOTS=docs/web), elsewhere into a temporary folder, so that
`make test` leaves the checkout as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, FilePayload, Page, expect, sync_playwright

from orchestrator.api.app import create_app
from orchestrator.cli.tritonserver import free_port
from orchestrator.settings import Settings
from tests.integration.conftest import search

pytestmark = pytest.mark.integration
SHOTS = Path(os.environ.get("WEB_SCREENSHOTS") or Path(tempfile.gettempdir()) / "tritonrag-web")
HARBOUR = b"The Aurora harbour master paints every mooring buoy bright orange each March."
ORCHARD = b"In the hill orchard the cider apples are pressed on the first frost of October."
LIMIT_KB = 200
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: scripts/system-deps.sh installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, stack: Settings) -> Iterator[Page]:
    context = browser.new_context(
        base_url=f"http://127.0.0.1:{stack.port}", viewport={"width": 1200, "height": 800}
    )
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations say yes
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], "the page's script failed"


def _new_collection(page: Page) -> str:
    name = f"web-{uuid.uuid4().hex[:8]}"
    page.goto("/")
    page.get_by_label("New collection").fill(name)
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#collection-title")).to_have_text(name)
    return name


def _upload(page: Page, files: list[tuple[str, bytes, str]]) -> None:
    payloads: list[FilePayload] = [{"name": n, "mimeType": t, "buffer": b} for n, b, t in files]
    page.locator("#file-input").set_input_files(payloads)


def _shot(page: Page, name: str, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=full_page)


def test_first_load_is_small_and_every_control_is_labelled(page: Page) -> None:
    sizes: list[int] = []
    page.on("response", lambda response: sizes.append(len(response.body())))
    page.goto("/")
    page.wait_for_load_state("networkidle")
    assert 0 < sum(sizes) < LIMIT_KB * 1024, sizes
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, button, [role=button]')]
            .filter(e => !(e.labels?.length || e.getAttribute('aria-label')
                          || e.getAttribute('aria-describedby') || e.textContent.trim()))
            .map(e => e.id || e.outerHTML)"""
    )
    assert unlabelled == []


def test_upload_search_ask_and_delete(page: Page, api: httpx.Client) -> None:
    name = _new_collection(page)
    _upload(page, [("harbour.txt", HARBOUR, "text/plain"), ("orchard.txt", ORCHARD, "text/plain")])
    states = page.locator("#uploads tbody td:nth-child(2)")
    expect(states).to_have_text(["indexed", "indexed"], timeout=WAIT_MS)
    expect(page.locator("#documents tbody tr")).to_have_count(2)
    expect(page.locator("#documents")).to_contain_text("harbour.txt")
    model = f"vectors of {Settings().embed_model} (384 dims"
    expect(page.locator("#collection-model")).to_contain_text(model, timeout=WAIT_MS)
    _shot(page, "documents")

    # A file the server refuses (415): its row shows the server's own message.
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    refused = api.post(
        f"/v1/collections/{name}/documents", files=[("files", ("photo.png", png, "image/png"))]
    )
    assert refused.status_code == 415
    _upload(page, [("photo.png", png, "image/png")])
    row = page.locator("#uploads tbody tr", has_text="photo.png")
    expect(row).to_contain_text("rejected")
    expect(row).to_contain_text(refused.json()["error"]["message"])

    page.get_by_role("tab", name="Search").click()
    page.get_by_role("searchbox", name="Search").fill("What colour are the mooring buoys?")
    page.get_by_role("button", name="Search", exact=True).click()
    first = page.locator("#hits .hit").first
    expect(first).to_contain_text("harbour.txt")
    expect(first).to_contain_text("bright orange")
    _shot(page, "search")

    page.get_by_role("tab", name="Ask").click()
    # Count how often the answer's text changes: a streamed answer arrives in many pieces.
    page.evaluate(
        """() => { window.updates = 0; new MutationObserver(() => window.updates++)
              .observe(document.getElementById('answer'),
                       {subtree: true, childList: true, characterData: true}); }"""
    )
    page.get_by_label("Question").fill("What colour does the harbour master paint the buoys?")
    page.get_by_role("button", name="Ask").click()
    citation = page.locator("#citations button").first
    expect(citation).to_contain_text("harbour.txt", timeout=WAIT_MS)
    assert page.evaluate("window.updates") > 2
    assert page.locator("#answer").inner_text().strip()
    # Grounding: every sentence marked supported or not, and a line that says how many (or,
    # when auto fell back to a quote, that the generated answer is kept below it).
    expect(page.locator("#answer .grounding-summary")).to_be_visible()
    marked = page.locator("#answer-text .supported, #answer-text .unsupported")
    fell_back = page.locator("#answer details.generated")
    assert marked.count() > 0 or fell_back.count() == 1
    if fell_back.count():
        expect(page.locator("#answer-text")).to_contain_text("[")  # the quote cites its source
    citation.click()
    expect(page.locator("#chunk")).to_be_visible()
    expect(page.locator("#chunk-title")).to_contain_text("harbour.txt")
    expect(page.locator("#chunk-text")).to_have_text(HARBOUR.decode())
    _shot(page, "ask")

    page.get_by_role("tab", name="Documents").click()
    page.get_by_role("button", name="Delete harbour.txt").click()
    expect(page.locator("#documents tbody tr")).to_have_count(1)
    assert all(hit["document_id"] != "harbour.txt" for hit in search(api, name, "buoys"))
    page.get_by_role("tab", name="Search").click()
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#hits")).not_to_contain_text("harbour.txt")

    page.get_by_role("button", name="Drop collection").click()  # confirmed by the dialog hook
    expect(page.locator("#collections")).not_to_contain_text(name)
    assert name not in api.get("/v1/collections").json()["data"]


def test_a_hundred_uploads_keep_the_page_responsive(page: Page) -> None:
    _new_collection(page)
    # Long tasks (> 50 ms on the main thread) while 100 files upload and index.
    page.evaluate(
        """() => { window.longest = 0; new PerformanceObserver(list => {
              for (const e of list.getEntries())
                window.longest = Math.max(window.longest, e.duration);
            }).observe({type: 'longtask'}); }"""
    )
    files = [
        (f"note-{i:03}.txt", f"Note {i}: shelf {i % 7}.".encode(), "text/plain") for i in range(100)
    ]
    _upload(page, files)
    states = page.locator("#uploads tbody td:nth-child(2)")
    expect(states).to_have_count(100)
    page.get_by_role("tab", name="Search").click()  # the page answers while uploads run
    expect(page.locator("#view-search")).to_be_visible(timeout=1000)
    page.get_by_role("tab", name="Documents").click()
    expect(states.nth(9)).to_have_text("indexed", timeout=WAIT_MS)
    _shot(page, "uploads", full_page=False)  # mid-way: states, speed and ETA
    expect(states).to_have_text(["indexed"] * 100, timeout=300_000)
    assert page.evaluate("window.longest") < 200


@contextmanager
def _keyed_api(stack: Settings, keys: dict[str, str]) -> Iterator[str]:
    """A second API process on the running stack, with API keys on (served by uvicorn)."""
    settings = stack.model_copy(update={"api_keys": keys, "port": free_port()})
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.1)
    assert server.started, "the keyed API did not start"
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_an_api_key_is_asked_for_and_kept_in_the_tab_only(
    browser: Browser, stack: Settings
) -> None:
    with _keyed_api(stack, {"web-key": "web-team"}) as url:
        context = browser.new_context(base_url=url)
        page = context.new_page()
        page.goto("/")
        dialog = page.get_by_role("dialog", name="API key")
        expect(dialog).to_be_visible()
        page.get_by_label("Key", exact=True).fill("not-a-key")
        page.get_by_role("button", name="Continue").click()
        expect(dialog).to_contain_text("That key was refused.")
        page.get_by_label("Key", exact=True).fill("web-key")
        page.get_by_role("button", name="Continue").click()
        expect(dialog).to_be_hidden()
        # Uploads and their job event streams carry the key.
        page.get_by_label("New collection").fill("keyed")
        page.get_by_role("button", name="Create").click()
        _upload(page, [("keyed.txt", b"Only the web team can read this line.", "text/plain")])
        expect(page.locator("#uploads tbody td:nth-child(2)")).to_have_text(
            ["indexed"], timeout=WAIT_MS
        )
        assert page.evaluate("sessionStorage.getItem('tritonrag-api-key')") == "web-key"
        assert page.evaluate("localStorage.length") == 0
        context.close()

        fresh = browser.new_context(base_url=url).new_page()  # a new session asks again
        fresh.goto("/")
        expect(fresh.get_by_role("dialog", name="API key")).to_be_visible()
        fresh.context.close()
