"""Makes this interpreter look like a lent GPU machine's: omegaconf, hydra and antlr4 are not
installed, and solo_mixmask is not installed either (only a copy of the tree on ``sys.path`` has
it). Put this folder on ``PYTHONPATH``; site-packages' copies are hidden, what a process installs
elsewhere (the carried wheels) and puts on ``sys.path`` is found as usual."""

import importlib.machinery
import site
import sys

HIDDEN = ("omegaconf", "hydra", "antlr4", "solo_mixmask")
SITE = set(site.getsitepackages() + [site.getusersitepackages()])


class HideInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if "." in name or name not in HIDDEN:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if p not in SITE])
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (not on this machine)", name=name)
        return spec


sys.meta_path.insert(0, HideInstalled)
