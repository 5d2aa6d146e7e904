"""Go-style durations ("30s", "15m", "24h", "7d", "1h30m") used by policy files.

Durations stay strings in the model (so diffs and canonical forms show what the author
wrote) and are converted to seconds only where a number is needed.
"""

from __future__ import annotations

import re

# Units a policy author can use. "d" is not Go, but "7d" reads better than "168h" in a
# cooldown and Alertmanager/Prometheus accept it too.
_UNIT_SECONDS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# One or more <number><unit> parts, optionally signed as a whole. The JSON Schema uses the
# same pattern so editors flag garbage; the sign is allowed there so that "-1h" gets the
# clearer "must be positive" message from parse_positive_duration instead of a regex dump.
DURATION_PATTERN = r"^-?([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(DURATION_PATTERN)


class DurationError(ValueError):
    """A duration string that cannot be used; the message is meant for the policy author."""


def parse_duration(text: str) -> float:
    """Return the duration in seconds (may be zero or negative: callers decide)."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise DurationError(
            f'invalid duration "{text}": use a number and a unit, e.g. "30s", "15m", "24h", "7d"'
        )
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(text))


def parse_positive_duration(text: str) -> float:
    """Seconds for a window/SLA/lease/cooldown, which only make sense when > 0."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise DurationError(f'duration must be positive, got "{text}"')
    return seconds
