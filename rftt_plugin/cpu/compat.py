"""Which verl versions the CPU support was tested on, and the signature guard for patches.

Policy (documented in docs/dry-run-cpu.md):

* Public registrations (platform, engines, rollout replica) are applied on every verl version:
  they use verl's own registries and cannot silently change verl's behaviour.
* The two patches of private verl symbols (B3, B8 in docs/dry-run-cpu.md) and the insertion
  into the private rollout-adapter dict are applied only on the verl versions in
  ``TESTED_VERL_VERSIONS``. On any other version they are **skipped with a warning** that names
  the patch and the environment variable that forces it (``RFTT_CPU_UNTESTED_VERL=apply``).
  Skipping instead of raising keeps GPU users of a newer verl unaffected; a CPU run then fails
  at the first place verl needs the patch, and ``rftt doctor`` / ``rftt_plugin.cpu.status()``
  show why.
* Whenever a patch *is* applied (tested version or forced), the signature of what it replaces is
  checked first with ``inspect.signature``; a mismatch raises :class:`PatchSignatureError`, so a
  verl upgrade fails loudly instead of being patched wrongly.
"""

from __future__ import annotations

import inspect
import os
from typing import Callable

TESTED_VERL_VERSIONS: tuple[str, ...] = ("0.9.1",)

# Set to "apply" to apply the private patches on an untested verl version (signatures are still
# checked). Any other value, or unset: skip them with a warning.
UNTESTED_ENV = "RFTT_CPU_UNTESTED_VERL"


class PatchSignatureError(RuntimeError):
    """The verl symbol a CPU patch replaces no longer looks like the one the patch was written for."""


def verl_version() -> str:
    """verl's version without importing anything heavy (verl is already imported when we run)."""
    import sys

    module = sys.modules.get("verl")
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    from importlib.metadata import version as dist_version

    return dist_version("verl")


def version_is_tested(version: str | None = None) -> bool:
    return (version or verl_version()) in TESTED_VERL_VERSIONS


def private_patches_allowed(version: str | None = None) -> tuple[bool, str]:
    """Return (allowed, reason) for patching private verl symbols on this verl version."""
    version = version or verl_version()
    if version in TESTED_VERL_VERSIONS:
        return True, f"verl {version} is a tested version"
    if os.environ.get(UNTESTED_ENV, "").strip().lower() == "apply":
        return True, f"verl {version} is untested; applied because {UNTESTED_ENV}=apply"
    return False, (
        f"verl {version} is not a tested version ({', '.join(TESTED_VERL_VERSIONS)}); skipped. "
        f"Set {UNTESTED_ENV}=apply to apply it anyway (signatures are still checked)."
    )


def parameter_names(obj: Callable) -> tuple[str, ...]:
    return tuple(inspect.signature(obj).parameters)


def require_signature(obj: Callable, expected: tuple[str, ...], what: str) -> None:
    """Raise :class:`PatchSignatureError` unless ``obj``'s parameters are exactly ``expected``.

    Names and order are compared (not annotations): that is what the replacement relies on.
    """
    try:
        actual = parameter_names(obj)
    except (TypeError, ValueError) as exc:  # builtins or odd callables
        raise PatchSignatureError(f"cannot read the signature of {what}: {exc}") from exc
    if actual != tuple(expected):
        raise PatchSignatureError(
            f"{what} has parameters {actual}, but rftt_plugin's CPU patch was written for {tuple(expected)} "
            f"(verl {TESTED_VERL_VERSIONS}). verl changed: update rftt_plugin/cpu/patches.py, or run without "
            f"the CPU platform (VERL_PLATFORM=<accelerator>)."
        )
