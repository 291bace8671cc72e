"""scripts/build-freeswitch.sh refuses missing or damaged sources before it builds (or installs)
anything. These need no FreeSWITCH and carry no `freeswitch` marker: they run with the main suite,
in well under a second (the sources checked here are small fake files)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-freeswitch.sh"
TARBALLS = (
    "sofia-sip-1.13.17.tar.xz",
    "spandsp-0c7bceb.tar.xz",
    "freeswitch-1.10.12.tar.xz",
    "drachtio-freeswitch-modules-88e1465.tar.xz",
)


def _run(tmp_path: Path, src: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FREESWITCH_SRC": str(src),
        "FREESWITCH_PREFIX": str(tmp_path / "prefix"),
        "FREESWITCH_BUILD_DIR": str(tmp_path / "build"),
    }
    env.pop("FREESWITCH_UNPINNED", None)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def _nothing_happened(tmp_path: Path) -> bool:
    return not (tmp_path / "prefix").exists() and not (tmp_path / "build").exists()


def test_a_missing_source_directory_is_an_error(tmp_path: Path):
    done = _run(tmp_path, tmp_path / "nowhere")
    assert done.returncode == 1
    assert f"no source directory {tmp_path / 'nowhere'}" in done.stderr
    assert _nothing_happened(tmp_path)


def test_a_missing_tarball_is_an_error_naming_it(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    for name in TARBALLS[:-1]:
        (src / name).write_bytes(b"x")
    done = _run(tmp_path, src)
    assert done.returncode == 1
    assert f"missing tarball {src / TARBALLS[-1]}" in done.stderr
    assert _nothing_happened(tmp_path)


def test_a_damaged_tarball_is_an_error_naming_it_and_its_checksum(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    for name in TARBALLS:
        (src / name).write_bytes(b"\xfd7zXZ\x00 truncated")
    done = _run(tmp_path, src)
    assert done.returncode == 1
    assert f"{src / TARBALLS[0]} is damaged or not the pinned one: sha256 " in done.stderr
    assert "FREESWITCH_UNPINNED=1" in done.stderr
    assert _nothing_happened(tmp_path)


def test_the_pinned_checksums_are_those_of_the_shared_sources():
    """SOURCES.txt's tarballs, when this machine has them, are the ones the script pins."""
    text = SCRIPT.read_text()
    for name in TARBALLS:
        assert f"_TARBALL={name}\n" in text
    shared = SCRIPT.parents[2] / "shared" / "freeswitch-src"
    if not shared.is_dir():
        return
    for name in TARBALLS:
        digest = hashlib.sha256((shared / name).read_bytes()).hexdigest()
        assert f"]={digest}\n" in text, name
