"""The chapters with interactive explorers, run in JupyterLab: every control must redraw."""

import pytest
from browser import (  # noqa: F401  (lab and browser are fixtures)
    ARTIFACTS,
    NOTEBOOKS,
    browser,
    cell_errors,
    exercise_explorer,
    explorer_cells,
    lab,
    open_and_run,
    saved,
    shut_down_kernels,
)

WITH_EXPLORERS = [p for p in NOTEBOOKS if any("Explorer(" in "".join(c["source"]) for c in saved(p))]


def test_the_chapters_with_explorers_are_found_and_each_explorer_is_tagged_to_run():
    assert [p.stem[:2] for p in WITH_EXPLORERS] == ["03", "04", "08"]
    for notebook in WITH_EXPLORERS:
        cells = saved(notebook)
        tagged = explorer_cells(notebook)
        assert [i for i, c in enumerate(cells) if "Explorer(" in "".join(c["source"])], notebook.name
        assert all(i in tagged for i, c in enumerate(cells) if "Explorer(" in "".join(c["source"]))
        assert len(tagged) < len(cells)  # the point: not the whole notebook


@pytest.mark.parametrize("notebook", WITH_EXPLORERS, ids=lambda p: p.stem)
def test_notebook_runs_in_jupyterlab_and_its_explorers_respond(lab, browser, notebook):  # noqa: F811
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_and_run(page, base, token, notebook.name, only=explorer_cells(notebook))
        errors = cell_errors(page)
        assert not errors, f"{notebook.name}: a cell shows an error:\n{errors[0][:1000]}"

        explorers = page.locator(".widget-vbox").filter(has=page.locator("img.widget-image"))
        expected = sum("Explorer(" in "".join(c["source"]) for c in saved(notebook))
        assert explorers.count() == expected, f"{expected} explorers in the notebook, " \
                                              f"{explorers.count()} on the page"
        ARTIFACTS.mkdir(exist_ok=True)
        for i in range(explorers.count()):
            box = explorers.nth(i)
            box.scroll_into_view_if_needed()
            box.screenshot(path=ARTIFACTS / f"{notebook.stem}-explorer{i}-before.png")
            moved = exercise_explorer(page, box)
            assert moved, "an explorer with no controls"
            box.screenshot(path=ARTIFACTS / f"{notebook.stem}-explorer{i}-after.png")
    finally:
        shut_down_kernels(base, token)
        page.close()
