"""SOURCE_DATE_EPOCH: the one clock of reproducible builds.

https://reproducible-builds.org/specs/source-date-epoch/ : a build that
embeds a date takes it from this variable when it is set, so that two builds
of the same sources are byte-identical. A malformed value is an error, never
silently replaced by "now".
"""

from __future__ import annotations

import datetime as dt
import os
import re

from ppml_image.errors import UsageError

ENV = "SOURCE_DATE_EPOCH"
_DIGITS = re.compile(r"[0-9]{1,12}")  # 12 digits reach past the year 9999


def source_date_epoch() -> dt.datetime | None:
    """The moment SOURCE_DATE_EPOCH names (UTC), or None when it is unset or empty."""
    value = os.environ.get(ENV, "")
    if value == "":
        return None
    if _DIGITS.fullmatch(value) is None:
        raise UsageError(f"{ENV}={value[:40]!r}: expected a whole number of seconds since "
                         "1970-01-01 UTC (as `date +%s` prints it)")
    try:
        return dt.datetime.fromtimestamp(int(value), dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise UsageError(f"{ENV}={value}: after the year 9999") from None
