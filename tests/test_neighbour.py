"""The suite runs next to a hostile neighbour (tests/neighbour.py): check that it is there."""

from __future__ import annotations

import os

import pytest
from conftest import SESSION, SESSION_LABEL

pytestmark = pytest.mark.docker


@pytest.mark.skipif(os.environ.get("PPML_TEST_NEIGHBOUR", "1") == "0",
                    reason="PPML_TEST_NEIGHBOUR=0")
def test_the_neighbour_is_on_the_engine(neighbour: None, docker_client) -> None:
    from neighbour import NEIGHBOUR_LABEL

    mine = docker_client.api.images(filters={"label": [f"{SESSION_LABEL}={SESSION}",
                                                       f"{NEIGHBOUR_LABEL}=1"]})
    # The unrelated build carries the same labels: pick the hostile image by its tag.
    hostile = [i for i in mine if any(t.startswith("ppml-neighbour/hostile:")
                                      for t in i.get("RepoTags") or ())]
    assert hostile, "the hostile neighbour image was not built"
    config = docker_client.api.inspect_image(hostile[0]["Id"])["Config"]
    assert "/data" in (config.get("Volumes") or {})
