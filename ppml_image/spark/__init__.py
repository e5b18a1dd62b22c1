"""Spark security material: TLS keys and keystores, and the encrypted password."""
