"""Business logic. Functions take the SQLAlchemy session first, keyword-only, and never
commit: the request or job that calls them commits once."""
