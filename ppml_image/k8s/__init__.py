"""Kubernetes manifests: Secrets for Spark's security material, Spark pod templates."""
