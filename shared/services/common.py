from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from shared.config import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int

    @property
    def has_more(self) -> bool:
        return self.page * self.page_size < self.total


def paginate(db: Session, query: Select, *, page: int, page_size: int) -> Page:
    total = db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = list(db.scalars(query.limit(page_size).offset((page - 1) * page_size)))
    return Page(items=items, total=total, page=page, page_size=page_size)


def settings_of(db: Session) -> Settings:
    """The settings of the Database that opened this session (shared/db.py). A session
    made elsewhere has none: that is a bug, not a reason to run on defaults."""
    settings = db.info.get("settings")
    if settings is None:
        raise RuntimeError("this database session carries no settings: open it with Database")
    return settings
