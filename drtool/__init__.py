"""drtool: backup and disaster-recovery automation for PostgreSQL."""

__version__ = "0.2.0"
