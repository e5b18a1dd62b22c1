"""Container images: the Docker engine wrapper, the base image, custom images."""
