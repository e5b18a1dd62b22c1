"""Defaults that ``--help`` shows, in a module that imports nothing.

The command modules read them when the CLI starts; the library modules that
use them (images.custom, images.bootstrap, sgx.keys) import them from here,
so there is one value and starting the CLI loads no library code.
"""

DEFAULT_BASE = "ppml-image/base:latest"
DEFAULT_TAG = "ppml-image/custom:latest"
DEFAULT_TEMPLATE = "python-ml"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PASSPHRASE_ENV = "PPML_IMAGE_KEY_PASSPHRASE"
# Seconds a registry may stay silent during a pull or push (--registry-timeout):
# the engine sends progress while bytes move, so silence means no answer.
REGISTRY_TIMEOUT = 60
REGISTRY_TIMEOUT_MAX = 3600
# The most file bytes (as the tar headers declare them) read out of an image
# anyone can publish (--max-image-bytes): about three times the full Spark
# image. A sparse file is exported whole, so without a bound a 1 TB hole costs
# hours of hashing.
MAX_IMAGE_BYTES = 8 << 30
