from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = REPO_ROOT / "policies"
BAD = REPO_ROOT / "tests" / "testdata" / "policies" / "bad"


@pytest.fixture
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Error messages carry the path as given; run from the repo root so they are stable."""
    monkeypatch.chdir(REPO_ROOT)
    return REPO_ROOT
