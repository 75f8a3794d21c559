from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base


class SessionStatusCounts(Base):
    """Sessions per pool, day of creation (UTC) and status, with the summed run time of the
    COMPLETED ones: kept by database triggers on `sessions` (migration 0010) in the
    transaction of each change, so `GET /sessions/statistics` adds up a few rows a day
    instead of scanning every session."""

    __tablename__ = "session_status_counts"
    __table_args__ = (Index("ix_session_status_counts_created_on", "created_on"),)

    pool: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_on: Mapped[date] = mapped_column(Date, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # COMPLETED sessions with both started_at and completed_at, and their summed run time.
    timed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    run_microseconds: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
