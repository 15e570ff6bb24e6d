"""results.json records what produced it: package versions and the git revision (or "unknown")."""

from __future__ import annotations

import subprocess

import pytest

from rftt_plugin.evaluation.provenance import git_revision, package_versions


def test_versions_are_the_installed_ones():
    import numpy
    import torch

    v = package_versions()
    assert v["torch"] == torch.__version__ and v["numpy"] == numpy.__version__
    assert set(v) >= {"rftt-plugin", "torch", "verl", "transformers", "math-verify", "numpy", "ray"}
    assert all(isinstance(x, str) and x for x in v.values())


def _git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_git_revision_of_a_checkout_and_outside_one(tmp_path):
    outside = tmp_path / "unpacked"
    (outside / "rftt_plugin").mkdir(parents=True)
    (outside / "rftt_plugin" / "__init__.py").write_text("")
    assert git_revision(outside) == "unknown"  # no git checkout
    try:
        _git(outside, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    assert git_revision(outside) == "unknown"  # a repository that does not track the package
    _git(outside, "add", "rftt_plugin/__init__.py")
    _git(outside, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    sha = _git(outside, "rev-parse", "HEAD")
    assert len(sha) == 40 and git_revision(outside) == sha
    (outside / "rftt_plugin" / "__init__.py").write_text("# edited\n")
    assert git_revision(outside) == sha + "+dirty"
