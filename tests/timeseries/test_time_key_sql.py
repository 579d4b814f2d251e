"""Time keys back to timestamptz in SQL (the chunk ranges of orochi.chunks)
do not depend on the session's time zone."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("utc", ["2024-01-01 00:00:00", "2024-07-01 00:00:00", "2024-03-10 07:30:00.000001",
                                 "1969-12-31 23:59:59.999999", "1901-06-15 12:00:00"])
def test_time_key_to_timestamptz(db, zone, utc):
    db.execute("SELECT set_config('TimeZone', %s, false)", [zone])
    key = db.execute("SELECT ((extract(epoch FROM %s::timestamp) * 1000000)::bigint)", [utc]).fetchone()[0]
    got = db.execute("SELECT orochi._time_key_to_timestamptz(%s) = (%s::timestamp AT TIME ZONE 'UTC')",
                     [key, utc]).fetchone()[0]
    assert got, f"key {key} of {utc} UTC in session zone {zone}"
