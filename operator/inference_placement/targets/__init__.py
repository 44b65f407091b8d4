"""Placement targets behind one small interface (``base.Target``): cluster, Cloud Run, Lambda."""
