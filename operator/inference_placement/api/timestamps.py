"""RFC 3339 timestamps as status and Events carry them (whole seconds, UTC, ``Z``). Pure: no clock here."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_time", "parse_time"]


def format_time(moment: datetime) -> str:
    """``2026-11-22T12:00:00Z``; a naive ``moment`` is taken as UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(stamp: str | None) -> datetime | None:
    """The aware UTC time of an RFC 3339 stamp; None for a missing or unreadable one (never raises)."""
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)
