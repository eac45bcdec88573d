"""soundscape: make long audio searchable with SQL."""

__version__ = "0.1.0"
