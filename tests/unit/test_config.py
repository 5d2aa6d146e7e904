"""Settings: environment over file over defaults, and the README documents every one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from feedbackloop.config import Settings, is_loopback

README = Path(__file__).resolve().parents[2] / "README.md"


def test_environment_wins_over_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "feedbackloop.yaml"
    config.write_text("port: 6000\nmax_page_size: 20\n")
    monkeypatch.setenv("FEEDBACKLOOP_CONFIG_FILE", str(config))
    monkeypatch.setenv("FEEDBACKLOOP_PORT", "7000")
    settings = Settings()
    assert settings.port == 7000
    assert settings.max_page_size == 20
    assert settings.default_page_size == 50


def test_unknown_setting_in_the_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "feedbackloop.yaml"
    config.write_text("prot: 6000\n")
    monkeypatch.setenv("FEEDBACKLOOP_CONFIG_FILE", str(config))
    with pytest.raises(ValueError, match=r"unknown settings: prot"):
        Settings()


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACKLOOP_POLICIES_DIR", "")
    monkeypatch.setenv("FEEDBACKLOOP_DATABASE_URL", "")
    settings = Settings(data_dir=Path("/srv/fl"))
    assert settings.policies_dir is None
    assert settings.effective_database_url == "sqlite:////srv/fl/feedbackloop.db"
    assert settings.effective_milvus_uri == "/srv/fl/milvus.db"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_readme_documents_every_setting() -> None:
    documented = set(re.findall(r"`(FEEDBACKLOOP_[A-Z_]+)`", README.read_text()))
    settings = {f"FEEDBACKLOOP_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set()
    # And nothing documented that is not a setting, beyond the variables read elsewhere: the CLI's
    # server and key, the settings file itself, and the test suite's PostgreSQL URL, fuzz run and
    # browser (the console's browser tests).
    read_elsewhere = {
        "FEEDBACKLOOP_SERVER",
        "FEEDBACKLOOP_API_KEY",
        "FEEDBACKLOOP_CONFIG_FILE",
        "FEEDBACKLOOP_TEST_POSTGRES_URL",
        "FEEDBACKLOOP_FUZZ_ITERATIONS",
        "FEEDBACKLOOP_FUZZ_SEED",
        "FEEDBACKLOOP_CHROMIUM",
        "FEEDBACKLOOP_REQUIRE_BROWSER",
        "FEEDBACKLOOP_SCREENSHOTS",
    }
    assert documented - settings - read_elsewhere == set()
