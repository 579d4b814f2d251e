"""Fixtures of the jobs tests: a user procedure whose behaviour the test
steers through a heap table."""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def steered_procedure(db: psycopg.Connection) -> str:
    """``public.steered(job_id, config)``: appends (job_id, config) to ``job_log``,
    then fails with ``job_control.fail_with`` when it is not NULL.  Returns its name."""
    db.execute("CREATE TABLE job_log (job_id int, config jsonb, at timestamptz DEFAULT clock_timestamp())")
    db.execute("CREATE TABLE job_control (fail_with text)")
    db.execute("INSERT INTO job_control VALUES (NULL)")
    db.execute("""
        CREATE PROCEDURE public.steered(job_id int, config jsonb) LANGUAGE plpgsql AS $$
        DECLARE
            failure text;
        BEGIN
            INSERT INTO job_log (job_id, config) VALUES (job_id, config);
            SELECT fail_with INTO failure FROM job_control;
            IF failure IS NOT NULL THEN
                RAISE EXCEPTION '%', failure USING ERRCODE = 'P0001';
            END IF;
        END $$""")
    return "public.steered"
