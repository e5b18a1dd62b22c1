"""--registry-timeout: whole seconds from 1 to 3600, refused otherwise in one line (exit 2).

The deadline itself is tested on a real engine against a silent registry in
test_publish.py; here, only what is accepted, by the CLI and by the library.
"""

from __future__ import annotations

import pytest
from conftest import assert_one_line_error, run_cli

from ppml_image.errors import UsageError
from ppml_image.images.engine.reference import check_registry_timeout

COMMANDS = [
    ["verify", "127.0.0.1:5000/ppml-test/x:1", "--pull"],
    ["attest", "record", "127.0.0.1:5000/ppml-test/x:1", "--pull"],
    ["sign-image", "ppml-test/x:1-unsigned", "--key", "k.pem", "--push"],
    ["build-custom", "--key", "k.pem", "--tag", "127.0.0.1:5000/ppml-test/x:1", "--push"],
    ["build-base", "--os-image", "127.0.0.1:5000/ppml-test/os:1"],
]


@pytest.mark.parametrize("value", ["0", "-5", "3601", "1.5", "sixty", ""])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_the_cli_refuses_a_bad_deadline_before_any_work(command: list[str], value: str) -> None:
    result = run_cli(*command, "--registry-timeout", value)
    assert result.returncode == 2, result
    assert_one_line_error(result, "--registry-timeout")


@pytest.mark.parametrize("value", [0, -1, 3601, 1.5, "60", True, None])
def test_the_library_refuses_what_is_not_whole_seconds_in_range(value: object) -> None:
    with pytest.raises(UsageError, match="--registry-timeout"):
        check_registry_timeout(value)


@pytest.mark.parametrize("value", [1, 60, 3600])
def test_the_library_accepts_whole_seconds_in_range(value: int) -> None:
    assert check_registry_timeout(value) == value


def test_the_library_functions_check_it_before_any_work() -> None:
    from ppml_image.images.enclave.custom import Publish
    from ppml_image.images.enclave.verify import verify_image

    with pytest.raises(UsageError, match="--registry-timeout"):
        verify_image("ppml-test/x:1", pull=True, registry_timeout=0)  # no engine asked
    with pytest.raises(UsageError, match="--registry-timeout"):
        Publish(push=True, registry_timeout=3601).check("127.0.0.1:5000/ppml-test/x:1", None)
