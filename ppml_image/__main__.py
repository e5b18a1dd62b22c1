"""``python -m ppml_image`` runs the CLI."""

from ppml_image.cli import main

main()
