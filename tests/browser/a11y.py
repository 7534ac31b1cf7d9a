"""Accessibility checks in the browser: axe-core, the npm registry's package installed by
``make`` into ``tests/browser/node_modules`` (``npm ci`` from the lock file; never a CDN,
nothing fetched at run time), run on the page as it stands (after htmx swaps too).

The script is handed to the page through the DevTools protocol (Playwright's
``evaluate``), which the console's Content-Security-Policy does not govern: the console
itself still allows only its own files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"

_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.flatMap(v => v.nodes.map(
    n => `${v.id} (${v.impact}): ${v.help} at ${n.target.join(" ")}`));
}"""


def axe_violations(page: Any, source: str) -> list[str]:
    """Every axe-core violation on ``page`` (WCAG A/AA and best practices), one line each."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)
    return list(page.evaluate(_RUN))


def assert_accessible(page: Any, source: str, where: str) -> None:
    found = axe_violations(page, source)
    assert found == [], f"{where}: {found}"
