"""ppml-image: build, sign, measure and verify Gramine SGX images for ML workloads."""

__version__ = "0.1.0"
