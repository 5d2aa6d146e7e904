"""FEEDBACKLOOP_CONSOLE_CORS_ORIGINS: a comma list of origins, each scheme, host and port alone."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from feedbackloop.config import Settings


def test_origins_are_split_and_trimmed() -> None:
    settings = Settings(console_cors_origins=" https://shop.example, http://localhost:3000 ,")
    assert settings.console_cors_origin_list == ("https://shop.example", "http://localhost:3000")
    assert Settings().console_cors_origin_list == ()


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "https://shop.example/",
        "https://shop.example/path",
        "shop.example",
        "ftp://shop.example",
        "https://u@shop.example",
    ],
)
def test_anything_but_an_origin_is_refused(origin: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(console_cors_origins=f"https://ok.example,{origin}")
    assert f"{origin!r} is not an origin like https://shop.example or http://localhost:3000" in str(
        raised.value
    )
