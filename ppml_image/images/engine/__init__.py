"""The engine seam: the only room that talks to Docker (``core`` alone imports ``docker``).

Typed image info, tar streams, build contexts, image references, an image's
files as a tree, push and pull. May import :mod:`ppml_image.sgx.measure`
(trees) and the shared modules.
"""
