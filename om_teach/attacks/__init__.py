"""Attacks the course runs against unprotected releases, to show what a defence must stop."""
