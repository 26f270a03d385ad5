"""Configuration: Hydra composition (``loading``), the schemas (``schema`` for pretraining,
``eval_schema``, ``branches``; each method's ``method_kwargs`` beside the method), the validator
(``validation``), the checks across keys (``pretrain``), solo-learn's unused keys (``solo_keys``)
and the dataset table (``datasets``)."""

from .loading import load_config, select

__all__ = ["load_config", "select"]
