"""solo-mixmask: MixMask for Siamese self-supervised learning, in the solo-learn style.

Layers, lowest first, one a line; a module imports from its own layer and lower ones, never from
a higher one, and no import, at module level or inside a function, closes a cycle
(``tests/test_import_layers.py`` reads this list and holds every module to it):

    __init__, __version__, errors, utils, backbones
    config, losses
    data, mixmask
    methods, solo
    engine
    eval
    zoo
    cli, __main__

``utils`` holds what any layer may use (collectives, optimisers, the KNN metric, feature
extraction); ``config`` the schemas (the only place a default lives), the validator, the checks
and the dataset table; ``data`` reads and checks the images (``sources``), crops them (the recipe
and its one batched implementation) and builds a run's loaders by ``data.format``
(``pipeline.PIPELINES``, each builder taking the config's data-side values resolved once into a
``spec.LoaderSpec``); ``mixmask`` the masks and branches; ``methods`` the models (``solo``
the same branches in solo-learn's classes), each taking the validated config whole, as
solo-learn's methods do, and handing its parts their sections; ``engine`` trains on Lightning,
its Trainer built from the typed Trainer section (``config.schema.trainer_section``); ``eval``
runs the offline protocols; ``cli`` is the ``solo-mixmask`` command.
"""

from .__version__ import __version__

__all__ = ["__version__"]
