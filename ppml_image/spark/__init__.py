"""Spark's security material: TLS keystores, passwords, properties files.

May import only the shared modules.
"""
