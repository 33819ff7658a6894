"""The offline base images are built from verified Debian packages only.

These run debootstrap's first stage for real (``--print-debs``: the suite's Release and
package lists fetched from DEBIAN_MIRROR and checked, nothing installed, a few seconds): with
Debian's archive keyring it goes on, with any other it stops. No Docker needed.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from stack import base_images, harness_config

pytestmark = pytest.mark.integration


def first_stage(root: Path) -> subprocess.CompletedProcess[str]:
    """The build's own debootstrap command, stopped once it has the verified package list."""
    command = base_images.debootstrap_command(base_images.NGINX, root)
    command.insert(1, "--print-debs")
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_the_build_checks_the_release_signature_with_debians_keyring(tmp_path: Path) -> None:
    """The command forces the signature check over https; with the archive keyring it passes."""
    command = base_images.debootstrap_command(base_images.NGINX, tmp_path / "root")
    assert "--force-check-gpg" in command
    assert f"--keyring={base_images.DEBIAN_KEYRING}" in command
    assert base_images.DEBIAN_MIRROR.startswith("https://")
    result = first_stage(tmp_path / "root")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nginx" in result.stdout.split()


def test_a_release_the_keyring_cannot_verify_stops_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyring without Debian's keys (here: empty): debootstrap refuses, nothing is built."""
    empty = tmp_path / "empty.gpg"
    empty.touch()
    monkeypatch.setattr(base_images, "DEBIAN_KEYRING", str(empty))
    result = first_stage(tmp_path / "root")
    assert result.returncode != 0
    assert "Release signed by unknown key" in result.stdout + result.stderr


def test_missing_verification_tools_fail_clearly_without_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keyring and no root to install it: one error naming what is missing and what to do."""
    monkeypatch.setattr(base_images, "DEBIAN_KEYRING", str(tmp_path / "absent.gpg"))
    monkeypatch.setattr(base_images.os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match=r"cannot be built with verified packages") as error:
        base_images.debootstrap_command(base_images.NGINX, tmp_path / "root")
    assert "absent.gpg" in str(error.value) and "debian-archive-keyring" in str(error.value)


def test_ci_pulls_a_present_base_image_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """WSGW_PULL_BASE_IMAGES=1 pulls the official base although a copy is present (no
    registry answers here, so the engine's pull is replaced by a recorder)."""
    pulled: list[str] = []
    monkeypatch.setattr(base_images, "image_exists", lambda reference: True)
    monkeypatch.setattr(base_images, "_pull", lambda reference: pulled.append(reference) or True)
    unset = replace(harness_config.current(), base_images={}, pull_base_images=False)
    monkeypatch.setattr(harness_config, "current", lambda: unset)
    assert base_images.resolve(base_images.NGINX) == base_images.NGINX.official
    assert pulled == [], "without the setting, a present copy is used as it is"
    monkeypatch.setattr(harness_config, "current", lambda: replace(unset, pull_base_images=True))
    assert base_images.resolve(base_images.NGINX) == base_images.NGINX.official
    assert pulled == [base_images.NGINX.official]
