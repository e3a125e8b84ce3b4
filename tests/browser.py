"""What the browser tests share: JupyterLab in headless chromium, and how to read its page.

Starts JupyterLab on 127.0.0.1 (a free port, a random token, fresh settings and
workspaces) over a copy of the notebooks. Every notebook is opened and must show its
saved outputs, pictures included, and no error. In every notebook with an interactive
explorer, the cells its explorers need (tagged ``explorer`` in the cell's metadata) are
run in order (nbval has already run every cell of every notebook twice, so nothing else
is run again here), and every explorer must draw a picture and redraw it when any of its
controls moves. Screenshots go to test-artifacts/. The tests are in two files,
test_browser_outputs.py and test_browser_explorers.py, so that the two test processes
share the work; each starts a JupyterLab of its own.

Needs Debian's chromium (``apt-get install chromium``) and Playwright for Python
(installed with the course's test dependencies); without chromium the tests are
skipped with a message, except in CI, where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_S = 300  # the longest notebook with an explorer runs for about half a minute

if not Path(CHROMIUM).exists():
    message = ("browser tests need chromium at /usr/bin/chromium: "
               "sudo apt-get install chromium (Debian/Ubuntu)")
    if os.environ.get("CI"):
        raise RuntimeError(message)  # CI installs it (.ci/run); a skip would hide a failure
    pytest.skip(message, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# JupyterLab settings for a quiet, fully rendered page: no news pop-up, and every cell in
# the DOM (by default a long notebook only renders the cells in view).
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a copy of the notebooks (a run must not rewrite the originals)."""
    home = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", home / "notebooks")
    (home / "assets").symlink_to(ROOT / "assets")  # the notebooks load ../assets/...
    for name, values in SETTINGS.items():
        path = home / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
        f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home / 'notebooks'}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: open notebooks in one page
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root
    log = open(home / "jupyter.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {(home / 'jupyter.log').read_text()}")
            time.sleep(0.5)
    ROOTS[base] = home / "notebooks"
    yield base, token
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


ROOTS: dict[str, Path] = {}  # server address -> the folder it serves


def page_root(base: str) -> Path:
    return ROOTS[base]


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def prompts(page) -> list[str]:
    return page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()


def open_and_run(page, base: str, token: str, name: str, only: list[int] | None = None) -> int:
    """Open a notebook in a fresh workspace, clear its saved outputs, run its code cells in
    order: all of them, or the code cells numbered in ``only``. Returns how many ran.

    Clearing first matters: the committed outputs carry numbered prompts too, so only
    prompts numbered 1..n after a clear prove that this run executed those cells.
    The cells are run through JupyterLab's own commands (what its Run menu calls), one
    after the other, each once the one before has finished.
    """
    n_code_cells = len(saved(page_root(base) / name))
    chosen = list(range(n_code_cells)) if only is None else sorted(only)
    open_notebook(page, base, token, name, n_code_cells)
    page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext"
                           "?.session?.kernel?.connectionStatus === 'connected'", timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    wait_until(lambda: all(t.strip() in ("[ ]:", "") for t in prompts(page)), 30, "outputs to clear")
    page.evaluate("""chosen => {
        const app = window.jupyterapp;
        const notebook = app.shell.currentWidget.content;
        const code = notebook.widgets.filter(cell => cell.model.type === "code");
        window.runDone = (async () => {
            for (const i of chosen) {
                notebook.activeCellIndex = notebook.widgets.indexOf(code[i]);
                await app.commands.execute("notebook:run-cell", {activate: false});
            }
        })().then(() => "done", error => String(error));
    }""", chosen)
    number = dict(zip(chosen, range(1, len(chosen) + 1)))
    expected = [f"[{number[i]}]:" if i in number else "[ ]:" for i in range(n_code_cells)]
    # Stop waiting at the first error too: the cells after it never run.
    try:
        wait_until(lambda: [t.strip() for t in prompts(page)] == expected or cell_errors(page),
                   RUN_TIMEOUT_S, "the cells to run, in order")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{stall_report(page, base, token, name)}") from None
    return len(chosen)


def stall_report(page, base: str, token: str, name: str) -> str:
    """What a stalled run looked like: the page (a screenshot), the prompts, the kernels
    as the server sees them, and the end of JupyterLab's log."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{Path(name).stem}-stalled.png"
    page.screenshot(path=shot, full_page=True)
    try:
        with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=10) as response:
            kernels = json.load(response)
    except OSError as error:
        kernels = f"(the server did not answer: {error})"
    log = page_root(base).parent / "jupyter.log"
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    return (f"screenshot: {shot}\nprompts: {prompts(page)}\nkernels: {kernels}\n"
            f"JupyterLab's log, its end:\n{tail}")


def cell_errors(page) -> list[str]:
    """The text of every output that shows an exception (JupyterLab draws them as stderr)."""
    outputs = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return [text for text in outputs.all_inner_texts()
            if "Traceback" in text or re.search(r"^\w+(Error|Exception)\b", text, re.M)]


def settled(image, quiet_s: float = 0.3) -> str:
    """The picture once it has stopped changing for ``quiet_s`` seconds."""
    src = image.get_attribute("src")
    while True:
        time.sleep(quiet_s)
        now = image.get_attribute("src")
        if now == src:
            return src
        src = now


def picture_changes(page, image, act, what: str) -> None:
    before = settled(image)
    act()
    wait_until(lambda: image.get_attribute("src") != before, 30, f"the picture to redraw after {what}")
    settled(image)  # let any late redraw land before the next control moves


def exercise_explorer(page, box) -> list[str]:
    """Move every control the explorer has; each move must redraw the picture."""
    image = box.locator("img.widget-image")
    assert image.evaluate("img => img.naturalWidth") > 100, "the explorer's picture did not render"
    moved = []
    for i in range(box.locator(".noUi-handle").count()):
        handle = box.locator(".noUi-handle").nth(i)
        picture_changes(page, image, lambda: (handle.focus(), page.keyboard.press("ArrowRight")),
                        "a slider")
        moved.append("slider")
    selects = box.locator("select")
    for i in range(selects.count()):
        select = selects.nth(i)
        options = select.locator("option").all_inner_texts()
        if len(options) > 1:
            picture_changes(page, image, lambda: select.select_option(options[-1]), "a dropdown")
            moved.append("dropdown")
    checkboxes = box.locator("input[type=checkbox]")
    for i in range(checkboxes.count()):
        picture_changes(page, image, checkboxes.nth(i).click, "a checkbox")
        moved.append("checkbox")
    texts = box.locator("input[type=text]")
    if texts.count():
        field = texts.first
        picture_changes(page, image, lambda: (field.fill("O Romeo, Romeo!\\nwherefore art"),
                                              field.press("Enter")), "typing a line")
        moved.append("text")
        # A character outside the vocabulary: a message, and the picture stays.
        before = settled(image)
        field.fill("naïve")
        field.press("Enter")
        message = box.locator(".widget-html")
        wait_until(lambda: "not in the vocabulary" in message.first.inner_text(), 30,
                   "the explorer to name the unknown character")
        assert image.get_attribute("src") == before
    return moved


def explorer_cells(notebook: Path) -> list[int]:
    """The code cells (numbered from 0) tagged ``explorer``: the explorers and what they use."""
    return [i for i, c in enumerate(saved(notebook)) if "explorer" in c["metadata"].get("tags", [])]


def saved(notebook: Path) -> list[dict]:
    """The code cells of a notebook as committed."""
    return [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]


def open_notebook(page, base: str, token: str, name: str, n_code_cells: int) -> None:
    # A fresh workspace per notebook, so no dialog about another notebook's kernel.
    page.goto(f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    wait_until(lambda: len(prompts(page)) == n_code_cells, 60, "the notebook to render")


def check_saved_outputs(page, notebook: Path) -> None:
    """The notebook on the page shows what its file holds: prompts, outputs, pictures."""
    cells = saved(notebook)
    wait_until(lambda: len(prompts(page)) == len(cells), 60, f"{notebook.name} to render")
    assert prompts(page) == [f"[{c['execution_count']}]:" for c in cells], notebook.name
    shown = page.evaluate("""() => [...document.querySelectorAll(".jp-CodeCell .jp-OutputArea")]
        .map(area => area.querySelectorAll(".jp-OutputArea-output").length)""")
    assert [n > 0 for n in shown] == [bool(c["outputs"]) for c in cells], notebook.name
    errors = cell_errors(page)
    assert not errors, f"{notebook.name}: a cell shows an error:\n{errors[0][:1000]}"
    expected = sum("image/png" in o.get("data", {}) for c in cells for o in c["outputs"])
    drawn = """() => [...document.querySelectorAll(".jp-OutputArea-output img")]
        .map(img => img.complete && img.naturalWidth > 0)"""
    assert len(page.evaluate(drawn)) == expected, notebook.name
    wait_until(lambda: all(page.evaluate(drawn)), 10, f"every saved picture of {notebook.name} to show")


def shut_down_kernels(base: str, token: str) -> None:
    """Free the CPU and memory of the notebook just run before the next one starts."""
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10) as response:
        sessions = json.load(response)
    for session in sessions:
        request = urllib.request.Request(f"{base}/api/sessions/{session['id']}?token={token}",
                                         method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()
