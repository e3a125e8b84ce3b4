"""Every notebook opens in JupyterLab, in a real browser, with its saved outputs and no error."""

import json

from browser import (  # noqa: F401  (lab and browser are fixtures)
    ARTIFACTS,
    NOTEBOOKS,
    browser,
    cell_errors,
    check_saved_outputs,
    lab,
    open_and_run,
    page_root,
    prompts,
    shut_down_kernels,
)


def test_every_notebook_opens_with_its_saved_outputs_and_no_error(lab, browser):  # noqa: F811
    """One JupyterLab page opens the notebooks one after the other, as a learner would."""
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{base}/lab/workspaces/saved-outputs?reset&token={token}")
        page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
        page.evaluate("() => window.jupyterapp.restored")
        ARTIFACTS.mkdir(exist_ok=True)
        for notebook in NOTEBOOKS:
            page.evaluate("""async path => {
                const app = window.jupyterapp;
                await app.commands.execute("application:close-all");
                await app.commands.execute("docmanager:open", {path});
            }""", notebook.name)
            check_saved_outputs(page, notebook)
            page.locator(".jp-Cell").first.scroll_into_view_if_needed()
            page.screenshot(path=ARTIFACTS / f"{notebook.stem}.png")
            page.locator(".jp-Cell").last.scroll_into_view_if_needed()
            page.screenshot(path=ARTIFACTS / f"{notebook.stem}-end.png")
    finally:
        shut_down_kernels(base, token)
        page.close()


def test_the_error_detector_sees_a_failing_cell(lab, browser):  # noqa: F811
    """The check above is only worth something if it can fail: run a notebook that raises."""
    base, token = lab
    cells = [{"cell_type": "code", "metadata": {}, "source": "print('fine')", "outputs": [],
              "execution_count": None},
             {"cell_type": "code", "metadata": {}, "source": "1 / 0", "outputs": [],
              "execution_count": None}]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                            "display_name": "Python 3 (ipykernel)"}}}
    (page_root(base) / "zz_raises.ipynb").write_text(json.dumps(notebook))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_and_run(page, base, token, "zz_raises.ipynb")
        errors = cell_errors(page)
        assert len(errors) == 1 and "ZeroDivisionError" in errors[0]
        assert prompts(page) == ["[1]:", "[2]:"]
    finally:
        shut_down_kernels(base, token)
        page.close()
