"""Kubernetes manifests: Secrets for Spark's security material, Spark pod templates.

May import ``spark`` and the shared modules.
"""

# `k8s secrets` and `k8s spark-templates` may share one output folder (the
# README's k8s/): each keeps the other's files and replaces only its own.
SECRET_FILES = ("keys.yaml", "password.yaml", "spark-secret.yaml", "kms-secret.yaml",
                "kubeconfig-secret.yaml")
TEMPLATE_FILES = ("spark-driver-template.yaml", "spark-executor-template.yaml",
                  "spark-security.conf")
