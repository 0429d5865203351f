"""Emulated backends, the load generator and benchmark reports."""
